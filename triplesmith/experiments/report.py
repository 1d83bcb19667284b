"""The comparison report: report.md, report.html, PNG plots and CSV tables in one folder.
report.html is for a browser: it opens with the verdict when there is one, names chains
readably (the spec on hover), keeps every table inside the page width, and links each chain's
scores to its examples (raw answer, parsed triples, gold, tags). It is one self-contained file
(inline CSS and a few lines of inline JS; plots as PNG files beside it). report.md holds the
same figures for reading in a repository. Plots use matplotlib's object API (`Figure`, Agg
canvas), so no display and no global pyplot state are involved.
"""

import re
from pathlib import Path

from triplesmith.experiments.report_html import render_html
from triplesmith.experiments.report_names import Comparison, chain_name, chain_names
from triplesmith.experiments.report_plots import write_plots
from triplesmith.experiments.report_tables import (
    PRECISION_NOTE,
    SPREAD_NOTE,
    corpus_table,
    correlation_table,
    cost_table,
    failure_examples,
    has_precision,
    has_spread,
    paired_table,
    score_table,
    summary_sentence,
    tag_table,
    truncate,
)

__all__ = [
    "Comparison",
    "chain_name",
    "chain_names",
    "corpus_table",
    "cost_table",
    "render_html",
    "render_markdown",
    "score_table",
    "tag_table",
    "write_plots",
    "write_report",
]


def longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def render_markdown(
    result: Comparison, plots: dict[str, str] | None = None, *, verdict: str | None = None
) -> str:
    """The report as Markdown; `plots` maps a plot's title to its file name beside the report;
    `verdict` (Markdown, e.g. the study's "Prompt or fine-tune?") comes first."""
    lines = [verdict.strip("\n"), ""] if verdict else []
    lines += [f"# Chain comparison on `{result.dataset}`", "", summary_sentence(result), ""]
    lines += ["## Scores (mean per example, 95 % CI)", ""]
    if has_precision(result):
        lines += [PRECISION_NOTE, ""]
    if has_spread(result):
        lines += [SPREAD_NOTE, ""]
    lines += [score_table(result).to_markdown(disable_numparse=True), ""]
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
                raw = truncate(row["raw"])
                fence = "`" * max(3, longest_backtick_run(raw) + 1)
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
    names = chain_names(result)
    for label, name, experiment in zip(result.chains, names, result.experiments, strict=False):
        meta = experiment.record.metadata
        lines.append(
            f"- **{name}** (`{label}`): key `{experiment.key}`, model `{meta.get('model')}`, "
            f"adapter `{meta.get('adapter_hash')}`, prompt `{meta.get('prompt_id')}`, dataset "
            f"hash `{meta.get('dataset_hash')}`, commit `{meta.get('git_commit')}`; "
            f"{experiment.ran} run now, {experiment.skipped} reused from the store "
            f"`{experiment.store}`, {experiment.failed} failed"
            + (f"; LangSmith: {experiment.langsmith_url}" if experiment.langsmith_url else "")
        )
    return "\n".join(lines) + "\n"


# --- HTML ----------------------------------------------------------------------------------------


def write_report(result: Comparison, out_dir: Path, verdict: str | None = None) -> dict[str, Path]:
    """report.md, report.html, the plots, table.csv and per_example.csv under `out_dir`.

    verdict: Markdown that opens both reports, before the comparison (the study's answer to
    "Prompt or fine-tune?", `triplesmith.verdict.verdict_lines` joined by newlines).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, out_dir)
    paths = {name: out_dir / name for name in plots.values()}
    markdown = render_markdown(result, plots, verdict=verdict)
    (out_dir / "report.md").write_text(markdown, encoding="utf-8")
    (out_dir / "report.html").write_text(
        render_html(result, plots, verdict=verdict), encoding="utf-8"
    )
    result.table.to_csv(out_dir / "table.csv")
    result.per_example.to_csv(out_dir / "per_example.csv", index=False)
    for name in ("report.md", "report.html", "table.csv", "per_example.csv"):
        paths[name] = out_dir / name
    return paths
