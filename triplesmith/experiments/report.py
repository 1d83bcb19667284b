"""The comparison report: report.md, report.html, PNG plots and CSV tables in one folder.

Plots use matplotlib's object API (`Figure`, Agg canvas), so no display and no global pyplot
state are involved. The failure analysis shows, for every tag seen, a few real examples per
chain with the sentence, the raw output and the triage evidence.
"""

import html
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from matplotlib.figure import Figure

from triplesmith.evaluators.format_validity import TAG_PREFIX

if TYPE_CHECKING:
    from triplesmith.experiments.compare import ComparisonResult

EXAMPLES_PER_TAG = 3
RAW_CHARS = 400
SCORE_PLOT_METRICS = 4


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def score_table(result: "ComparisonResult") -> pd.DataFrame:
    """Per chain: examples, errors (failed model calls, not scored), and each per-example
    metric's mean over the scored examples as `mean [low, high]` (95 % CI)."""
    table = result.table
    shown = pd.DataFrame(index=table.index)
    shown["n"] = table["n"].astype(int).astype(str)
    shown["errors"] = table["errors"].astype(int).astype(str)
    for metric in result.metrics:
        shown[metric] = [
            f"{_number(m)} [{_number(lo)}, {_number(hi)}]" if not math.isnan(m) else "n/a"
            for m, lo, hi in zip(
                table[metric], table[f"{metric}_low"], table[f"{metric}_high"], strict=True
            )
        ]
    return shown


def corpus_table(result: "ComparisonResult") -> pd.DataFrame:
    """Per chain: the corpus-level figures (CaRB AUC and F1, BenchIE, micro-averaged F1)."""
    table = result.table
    return pd.DataFrame(
        {metric: [_number(v) for v in table[metric]] for metric in result.summary_metrics},
        index=table.index,
    )


def cost_table(result: "ComparisonResult") -> pd.DataFrame:
    """Per chain: mean latency, mean tokens and the estimated cost of the run."""
    table = result.table
    return pd.DataFrame(
        {
            "latency_s (mean)": [_number(v, 2) for v in table["latency_s"]],
            "tokens_in (mean)": [_number(v, 1) for v in table["tokens_in"]],
            "tokens_out (mean)": [_number(v, 1) for v in table["tokens_out"]],
            "cost_usd (total)": [_number(v, 4) for v in table["cost_usd"]],
        },
        index=table.index,
    )


def tag_table(result: "ComparisonResult") -> pd.DataFrame:
    """Per chain: the share of examples with each triage tag."""
    table = result.table
    return pd.DataFrame(
        {
            tag: [
                "n/a" if math.isnan(v) else f"{100 * v:.0f} %" for v in table[f"{TAG_PREFIX}{tag}"]
            ]
            for tag in result.tags
        },
        index=table.index,
    )


def paired_table(result: "ComparisonResult") -> pd.DataFrame:
    paired = result.paired
    return pd.DataFrame(
        {
            "chain": paired["chain"],
            "metric": paired["metric"],
            "difference [95 % CI]": [
                f"{_number(d, 3)} [{_number(lo, 3)}, {_number(hi, 3)}]"
                for d, lo, hi in zip(
                    paired["mean_difference"], paired["low"], paired["high"], strict=True
                )
            ],
            "p (Wilcoxon)": [_number(p, 4) for p in paired["p_value"]],
            "n": paired["n"].astype(str),
        }
    )


def correlation_table(result: "ComparisonResult") -> pd.DataFrame:
    corr = result.correlations
    return pd.DataFrame(
        {
            "chain": corr["chain"],
            "judge vs": corr["exact_metric"],
            "Spearman rho": [_number(r) for r in corr["rho"]],
            "p": [_number(p, 4) for p in corr["p_value"]],
            "n": corr["n"].astype(str),
        }
    )


def failure_examples(result: "ComparisonResult") -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(tag, chain, up to EXAMPLES_PER_TAG examples) for every tag seen, commonest tag first."""
    examples = result.examples
    if examples.empty or not result.tags:
        return []
    counts = {
        tag: int(examples["tags"].map(lambda t, tag=tag: tag in t).sum()) for tag in result.tags
    }
    found = []
    for tag in sorted((t for t in counts if counts[t]), key=lambda t: -counts[t]):
        for chain in result.chains:
            rows = examples[
                (examples["chain"] == chain) & examples["tags"].map(lambda t, tag=tag: tag in t)
            ]
            if len(rows):
                picked = rows.head(EXAMPLES_PER_TAG).to_dict("records")
                found.append((tag, chain, picked))
    return found


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _truncate(text: str) -> str:
    text = text or ""
    return text if len(text) <= RAW_CHARS else text[:RAW_CHARS] + " …"


def _header(result: "ComparisonResult") -> list[str]:
    n = int(result.table["n"].max()) if len(result.table) else 0
    errors = int(result.table["errors"].sum()) if len(result.table) else 0
    failed = (
        f" {errors} examples failed (the model call raised): they are counted under errors, "
        "not scored, and the next run of the same comparison retries them."
        if errors
        else ""
    )
    return [
        f"# Chain comparison on `{result.dataset}`",
        "",
        f"{len(result.chains)} chains, {n} examples; generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. Means with percentile-bootstrap "
        "95 % intervals; corpus-level figures (CaRB AUC/F1, BenchIE, micro F1) have none." + failed,
        "",
    ]


def render_markdown(result: "ComparisonResult", plots: dict[str, str] | None = None) -> str:
    """The report as Markdown; `plots` maps a plot's title to its file name beside the report."""
    lines = _header(result)
    lines += [
        "## Scores (mean per example, 95 % CI)",
        "",
        score_table(result).to_markdown(disable_numparse=True),
        "",
    ]
    if result.summary_metrics:
        lines += [
            "## Corpus-level figures",
            "",
            corpus_table(result).to_markdown(disable_numparse=True),
            "",
        ]
    lines += ["## Speed and cost", "", cost_table(result).to_markdown(disable_numparse=True), ""]
    if result.tags:
        lines += [
            "## Failure tags (share of examples)",
            "",
            tag_table(result).to_markdown(disable_numparse=True),
            "",
        ]
    if len(result.paired):
        lines += [f"## Paired tests against `{result.baseline or result.chains[0]}`", ""]
        lines += [paired_table(result).to_markdown(index=False, disable_numparse=True), ""]
    if len(result.correlations):
        lines += ["## Judge against the exact scorers (per-example Spearman)", ""]
        lines += [correlation_table(result).to_markdown(index=False, disable_numparse=True), ""]
    for title, name in (plots or {}).items():
        lines += [f"![{title}]({name})", ""]
    analysis = failure_examples(result)
    if analysis:
        lines += ["## Failure analysis", ""]
        current = None
        for tag, chain, rows in analysis:
            if tag != current:
                lines += [f"### `{tag}`", ""]
                current = tag
            lines += [f"**{chain}**", ""]
            for row in rows:
                raw = _truncate(row["raw"])
                fence = "`" * max(3, _longest_backtick_run(raw) + 1)
                lines += [
                    f"- `{row['example_id']}`: {row['sentence']}",
                    f"  - evidence: {row['evidence'].get(tag) or '—'}",
                    "  - raw output:",
                    "",
                    f"    {fence}text",
                    *[f"    {line}" for line in raw.splitlines() or [""]],
                    f"    {fence}",
                ]
            lines.append("")
    lines += ["## Experiments", ""]
    for label, experiment in zip(result.chains, result.experiments, strict=True):
        meta = experiment.record.metadata
        lines.append(
            f"- **{label}**: key `{experiment.key}`, model `{meta.get('model')}`, adapter "
            f"`{meta.get('adapter_hash')}`, prompt `{meta.get('prompt_id')}`, dataset hash "
            f"`{meta.get('dataset_hash')}`, commit `{meta.get('git_commit')}`; "
            f"{experiment.ran} run now, {experiment.skipped} reused from the store "
            f"`{experiment.store}`, {experiment.failed} failed"
            + (f"; LangSmith: {experiment.langsmith_url}" if experiment.langsmith_url else "")
        )
    return "\n".join(lines) + "\n"


def _html_table(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_html(index=index, escape=True, border=0, classes="table")


def render_html(result: "ComparisonResult", plots: dict[str, str] | None = None) -> str:
    """The report as one self-contained HTML page (plots linked beside it)."""
    e = html.escape
    header = _header(result)
    parts = [f"<h1>{e(header[0].removeprefix('# '))}</h1>", f"<p>{e(header[2])}</p>"]
    parts += ["<h2>Scores (mean per example, 95 % CI)</h2>", _html_table(score_table(result))]
    if result.summary_metrics:
        parts += ["<h2>Corpus-level figures</h2>", _html_table(corpus_table(result))]
    parts += ["<h2>Speed and cost</h2>", _html_table(cost_table(result))]
    if result.tags:
        parts += ["<h2>Failure tags (share of examples)</h2>", _html_table(tag_table(result))]
    if len(result.paired):
        parts += [f"<h2>Paired tests against {e(result.baseline or result.chains[0])}</h2>"]
        parts += [_html_table(paired_table(result), index=False)]
    if len(result.correlations):
        parts += ["<h2>Judge against the exact scorers (per-example Spearman)</h2>"]
        parts += [_html_table(correlation_table(result), index=False)]
    for title, name in (plots or {}).items():
        image = f'<img src="{e(name)}" alt="{e(title)}">'
        parts.append(f"<figure>{image}<figcaption>{e(title)}</figcaption></figure>")
    analysis = failure_examples(result)
    if analysis:
        parts.append("<h2>Failure analysis</h2>")
        current = None
        for tag, chain, rows in analysis:
            if tag != current:
                parts.append(f"<h3>{e(tag)}</h3>")
                current = tag
            parts.append(f"<h4>{e(chain)}</h4><ul>")
            for row in rows:
                parts.append(
                    f"<li><code>{e(row['example_id'])}</code>: {e(row['sentence'])}<br>"
                    f"evidence: {e(row['evidence'].get(tag) or '—')}"
                    f"<pre>{e(_truncate(row['raw']))}</pre></li>"
                )
            parts.append("</ul>")
    style = (
        "body{font-family:sans-serif;max-width:80em;margin:2em auto;padding:0 1em}"
        ".table{border-collapse:collapse}.table td,.table th{padding:.25em .6em;"
        "border-bottom:1px solid #ddd;text-align:right}pre{background:#f6f6f6;padding:.5em;"
        "white-space:pre-wrap}img{max-width:100%}"
    )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(header[0].removeprefix('# '))}</title><style>{style}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


# --- plots ---------------------------------------------------------------------------------------


def _score_plot(result: "ComparisonResult", path: Path) -> bool:
    metrics = [m for m in result.metrics if not m.endswith(("_precision", "_recall"))]
    metrics = metrics[:SCORE_PLOT_METRICS]
    if not metrics:
        return False
    figure = Figure(figsize=(4.2 * len(metrics), 0.5 * len(result.chains) + 2.5), layout="tight")
    scores = result.per_example
    for i, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), i + 1)
        data = [
            scores[(scores["chain"] == c) & (scores["metric"] == metric)]["score"].dropna()
            for c in result.chains
        ]
        axes.boxplot(
            [list(d) or [math.nan] for d in data], orientation="horizontal", showmeans=True
        )
        axes.set_yticks(
            range(1, len(result.chains) + 1), result.chains if i == 0 else [""] * len(result.chains)
        )
        axes.set_xlim(-0.05, 1.05)
        axes.set_title(metric)
    figure.suptitle("Per-example scores by chain")
    figure.savefig(path, dpi=120)
    return True


def _tag_plot(result: "ComparisonResult", path: Path) -> bool:
    if not result.tags:
        return False
    figure = Figure(figsize=(8, 0.45 * len(result.tags) * max(1, len(result.chains) / 2) + 1.5))
    axes = figure.add_subplot(1, 1, 1)
    height = 0.8 / len(result.chains)
    for i, chain in enumerate(result.chains):
        rates = [100 * result.table.loc[chain, f"{TAG_PREFIX}{t}"] for t in result.tags]
        positions = [j + i * height for j in range(len(result.tags))]
        axes.barh(positions, rates, height=height, label=chain)
    axes.set_yticks([j + 0.4 - height / 2 for j in range(len(result.tags))], result.tags)
    axes.invert_yaxis()
    axes.set_xlabel("examples with the tag (%)")
    axes.set_title("Failure tags by chain")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def _quality_plot(result: "ComparisonResult", path: Path) -> bool:
    metric = result.primary_metric
    if metric is None:
        return False
    table = result.table
    costs = table["cost_usd"]
    use_cost = bool(costs.notna().all() and (costs > 0).any())
    x_cost = costs if use_cost else table["tokens_in"] + table["tokens_out"]
    panels = [
        ("mean latency per example (s)", table["latency_s"]),
        ("estimated cost of the run (USD)" if use_cost else "tokens per example", x_cost),
    ]
    figure = Figure(figsize=(11, 4.2), layout="tight")
    for i, (label, xs) in enumerate(panels):
        axes = figure.add_subplot(1, 2, i + 1)
        means = table[metric]
        errors = [means - table[f"{metric}_low"], table[f"{metric}_high"] - means]
        axes.errorbar(xs, means, yerr=errors, fmt="o", capsize=4)
        for chain, x, y in zip(table.index, xs, means, strict=True):
            axes.annotate(chain, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        axes.set_xlabel(label)
        axes.set_ylabel(f"{metric} (mean, 95 % CI)")
        axes.set_ylim(-0.02, 1.02)
    figure.suptitle(f"Quality against speed and cost ({metric})")
    figure.savefig(path, dpi=120)
    return True


def write_plots(result: "ComparisonResult", out_dir: Path) -> dict[str, str]:
    """Write the plots that apply; returns {title: file name}."""
    plots = {}
    for title, name, draw in (
        ("Score distribution per chain", "scores.png", _score_plot),
        ("Failure tags per chain", "tags.png", _tag_plot),
        ("Quality against latency and cost", "quality.png", _quality_plot),
    ):
        if draw(result, out_dir / name):
            plots[title] = name
    return plots


def write_report(result: "ComparisonResult", out_dir: Path) -> dict[str, Path]:
    """report.md, report.html, the plots, table.csv and per_example.csv under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, out_dir)
    paths = {name: out_dir / name for name in plots.values()}
    (out_dir / "report.md").write_text(render_markdown(result, plots), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(result, plots), encoding="utf-8")
    result.table.to_csv(out_dir / "table.csv")
    result.per_example.to_csv(out_dir / "per_example.csv", index=False)
    for name in ("report.md", "report.html", "table.csv", "per_example.csv"):
        paths[name] = out_dir / name
    return paths
