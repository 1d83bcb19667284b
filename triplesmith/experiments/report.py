"""The comparison report: report.md, report.html, PNG plots and CSV tables in one folder.

report.html is for a browser: it opens with the verdict when there is one, names chains
readably (the spec on hover), keeps every table inside the page width, and links each chain's
scores to its examples (raw answer, parsed triples, gold, tags). It is one self-contained file
(inline CSS and a few lines of inline JS; plots as PNG files beside it). report.md holds the
same figures for reading in a repository. Plots use matplotlib's object API (`Figure`, Agg
canvas), so no display and no global pyplot state are involved.
"""

import html
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pandas as pd
from markdown_it import MarkdownIt
from matplotlib.figure import Figure

from triplesmith.chains.spec import ChainSpec, parse_spec
from triplesmith.errors import ChainError, TrainingError
from triplesmith.evaluators.format_validity import TAG_PREFIX
from triplesmith.models import EMBEDDED_MODELS
from triplesmith.settings import get_settings
from triplesmith.training.manifest import read_manifest

if TYPE_CHECKING:
    from triplesmith.experiments.compare import ComparisonResult

EXAMPLES_PER_TAG = 3
RAW_CHARS = 400
EXAMPLE_RAW_CHARS = 4000
SCORE_PLOT_METRICS = 4
WITH_TRIPLES = "answers with triples"
# Precision is undefined for an empty answer: its mean is over the answers with triples.
PRECISION_METRICS = ("triple_precision", "triple_exact_precision")
PROVIDER_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic", "ollama": "Ollama"}
ADAPTER_METHODS = {"lora": "LoRA", "qlora": "QLoRA"}


# --- chain names ---------------------------------------------------------------------------------


def chain_name(spec: str, metadata: Mapping[str, Any] | None = None) -> str:
    """A readable name for a chain, free of the machine's folders: `few-shot
    SmolLM2-135M-Instruct (k=3)`, `fine-tuned SmolLM2-135M-Instruct (LoRA)`, `zero-shot
    gpt-4o-mini (OpenAI)`. `metadata` is the experiment's (its settings give the default k)."""
    try:
        parsed = parse_spec(spec)
    except ChainError:  # a hand-made chain with a free-form spec
        return spec.split("+", 1)[0]
    model, where = _model_and_host(parsed)
    options = parsed.options
    if parsed.kind == "few-shot":
        settings = (metadata or {}).get("settings") or {}
        k = options.get("k", settings.get("few_shot_k", get_settings().few_shot_k))
        details = [f"k={k}", *(["similar shots"] if options.get("similar") else []), where]
        return f"few-shot {model} ({', '.join(d for d in details if d)})"
    if parsed.kind == "hf":
        adapter = options.get("adapter")
        if adapter is None:
            return f"zero-shot {model} (transformers)"
        return f"fine-tuned {model} ({_adapter_method(str(adapter), metadata)})"
    kind = "fine-tuned" if parsed.kind == "openai-ft" else parsed.kind
    return f"{kind} {model}" + (f" ({where})" if where else "")


def _model_and_host(parsed: ChainSpec) -> tuple[str, str]:
    """The model's short name and where it runs (a provider, or a server's host)."""
    model, provider = parsed.model, ""
    if model in EMBEDDED_MODELS:
        model = EMBEDDED_MODELS[model]["hub_id"]
    elif model.startswith("ft:"):  # ft:BASE:ORG:SUFFIX:ID
        model, provider = model.split(":")[1], "openai"
    elif ":" in model and "/" not in model.split(":", 1)[0]:
        provider, model = model.split(":", 1)
    if parsed.kind == "openai-ft" and not provider:
        provider = "openai"
    model = model.rstrip("/").rsplit("/", 1)[-1] or model  # a folder or a Hub id: its last part
    base_url = parsed.options.get("base_url")
    if base_url:
        parts = urlsplit(str(base_url))
        host = parts.hostname or ""
        return model, f"{host}:{parts.port}" if parts.port else host
    return model, PROVIDER_NAMES.get(provider, provider)


def _adapter_method(adapter: str, metadata: Mapping[str, Any] | None) -> str:
    """`LoRA` or `QLoRA` from the adapter's manifest when it can be read here, else `adapter`
    with the short hash the experiment recorded."""
    try:
        method = read_manifest(adapter).method
        return ADAPTER_METHODS.get(method, method)
    except (TrainingError, OSError, ValueError):
        digest = str((metadata or {}).get("adapter_hash") or "")[:8]
        return f"adapter {digest}".strip()


def _short_value(value: Any) -> str:
    text = str(value)
    if text.startswith(("http://", "https://")):
        return urlsplit(text).netloc.rsplit("@", 1)[-1]
    return text.rstrip("/").rsplit("/", 1)[-1] if "/" in text else text


def chain_names(result: "ComparisonResult") -> list[str]:
    """Readable, distinct names for `result.chains`, in their order. Chains whose names would
    be equal get the spec options that tell them apart (folders by their last part), then a
    number."""
    specs = _specs(result)
    experiments = result.experiments if len(result.experiments) == len(specs) else []
    metadata = [e.record.metadata for e in experiments] or [{}] * len(specs)
    names = [chain_name(s, m) for s, m in zip(specs, metadata, strict=True)]
    for name in set(names):
        group = [i for i, n in enumerate(names) if n == name]
        if len(group) < 2:
            continue
        options = [_options(specs[i]) for i in group]
        keys = sorted({k for o in options for k in o})
        differing = [k for k in keys if len({str(o.get(k)) for o in options}) > 1]
        for i, opts in zip(group, options, strict=True):
            shown = [f"{k}={_short_value(opts[k])}" for k in differing if k in opts]
            if shown:
                names[i] = f"{name} [{', '.join(shown)}]"
    counts, seen = Counter(names), Counter[str]()
    for i, name in enumerate(names):
        if counts[name] > 1:
            seen[name] += 1
            names[i] = f"{name} #{seen[name]}"
    return names


def _specs(result: "ComparisonResult") -> list[str]:
    """The spec of each chain (a label may carry a `#2` when a spec ran twice)."""
    if len(result.experiments) == len(result.chains):
        return [e.chain for e in result.experiments]
    return list(result.chains)


def _options(spec: str) -> dict[str, Any]:
    try:
        return dict(parse_spec(spec).options)
    except ChainError:
        return {}


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _in_order(metrics: Sequence[str]) -> list[str]:
    """The metrics with each `X_precision` just before its `X_recall`: a chain whose first
    answers were empty (no precision) must not move the precision column to the end."""
    ordered = [
        m
        for m in metrics
        if not (m.endswith("_precision") and m.removesuffix("_precision") + "_recall" in metrics)
    ]
    for metric in metrics:
        recall = metric.removesuffix("_precision") + "_recall"
        if metric.endswith("_precision") and recall in ordered:
            ordered.insert(ordered.index(recall), metric)
    return ordered


def derived_from(result: "ComparisonResult") -> dict[str, list[str]]:
    """Chains made from other chains' scores (the mean of training seeds): label -> the labels
    of the chains it comes from. They have scores but no answers of their own."""
    if len(result.experiments) != len(result.chains):
        return {}
    by_key = {e.key: label for label, e in zip(result.chains, result.experiments, strict=True)}
    return {
        label: [by_key.get(key, key) for key in e.record.metadata["seeds"]]
        for label, e in zip(result.chains, result.experiments, strict=True)
        if e.record.metadata.get("seeds")
    }


def answers_with_triples(result: "ComparisonResult") -> list[int | None]:
    """Per chain, in order: the answers with at least one triple (a failed run is no answer);
    None for a chain with no answers of its own (`derived_from`)."""
    examples = result.examples
    derived = derived_from(result)
    counts = pd.Series(dtype=int)
    if not examples.empty:
        answered = examples["error"].isna() & examples["triples"].map(lambda t: bool(t))
        counts = examples[answered].groupby("chain").size()
    return [None if c in derived else int(counts.get(c, 0)) for c in result.chains]


def score_table(result: "ComparisonResult") -> pd.DataFrame:
    """Per chain: examples, errors (failed model calls, not scored), and each per-example
    metric's mean over the scored examples as `mean [low, high]` (95 % CI). Triple precision
    is followed by the count of answers with triples, the examples its mean is over."""
    table = result.table
    shown = pd.DataFrame(index=table.index)
    shown["n"] = table["n"].astype(int).astype(str)
    shown["errors"] = table["errors"].astype(int).astype(str)
    counted = False
    for metric in _in_order(result.metrics):
        shown[metric] = [
            f"{_number(m)} [{_number(lo)}, {_number(hi)}]" if not math.isnan(m) else "n/a"
            for m, lo, hi in zip(
                table[metric], table[f"{metric}_low"], table[f"{metric}_high"], strict=True
            )
        ]
        if metric in PRECISION_METRICS and not counted:
            shown[WITH_TRIPLES] = [
                "n/a" if n is None else str(n) for n in answers_with_triples(result)
            ]
            counted = True
    return shown


def corpus_table(result: "ComparisonResult") -> pd.DataFrame:
    """Per chain: the corpus-level figures (CaRB AUC and F1, BenchIE, micro-averaged F1)."""
    table = result.table
    return pd.DataFrame(
        {
            metric: [_number(v) for v in table[metric]]
            for metric in _in_order(result.summary_metrics)
        },
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


def _summary_sentence(result: "ComparisonResult") -> str:
    n = int(result.table["n"].max()) if len(result.table) else 0
    errors = int(result.table["errors"].sum()) if len(result.table) else 0
    failed = (
        f" {errors} examples failed (the model call raised): they are counted under errors, "
        "not scored, and the next run of the same comparison retries them."
        if errors
        else ""
    )
    return (
        f"{len(result.chains)} chains, {n} examples; generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. Means with percentile-bootstrap "
        "95 % intervals; corpus-level figures (CaRB AUC/F1, BenchIE, micro F1) have none." + failed
    )


PRECISION_NOTE = (
    "An answer with no triples has no precision: triple precision is the mean over the "
    f"*{WITH_TRIPLES}*, and that column counts them."
)


def _has_precision(result: "ComparisonResult") -> bool:
    return any(m in PRECISION_METRICS for m in result.metrics)


def render_markdown(
    result: "ComparisonResult", plots: dict[str, str] | None = None, *, verdict: str | None = None
) -> str:
    """The report as Markdown; `plots` maps a plot's title to its file name beside the report;
    `verdict` (Markdown, e.g. the study's "Prompt or fine-tune?") comes first."""
    lines = [verdict.strip("\n"), ""] if verdict else []
    lines += [f"# Chain comparison on `{result.dataset}`", "", _summary_sentence(result), ""]
    lines += ["## Scores (mean per example, 95 % CI)", ""]
    if _has_precision(result):
        lines += [PRECISION_NOTE, ""]
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

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_OUTCOMES = {"met": "good", "beaten": "good", "not met": "bad", "not reached": "bad"}
_STYLE = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;max-width:76em;
margin:0 auto;padding:1em 1.5em 4em;overflow-wrap:break-word}
h1{font-size:1.5em;margin:1.2em 0 .3em}h2{font-size:1.2em;margin:1.6em 0 .4em}
h3{font-size:1.05em}h4{font-size:1em;margin:.8em 0 .3em}
a{color:#0b57d0}code{font-size:.9em;overflow-wrap:anywhere}
.verdict{border:2px solid #2e7d4f;border-radius:8px;background:#f4faf6;padding:.2em 1.2em .8em;
margin:1em 0 2em}.verdict h1{margin-top:.6em}.verdict h2{margin-top:.8em}
.good{color:#1a7f37}.bad{color:#c62828}
.note{color:#555;font-size:.9em;margin:.2em 0 .6em}
.table-box{max-width:100%;overflow-x:auto;margin:.4em 0 1.2em}
table{border-collapse:collapse;font-size:.9em}
th,td{padding:.3em .55em;border-bottom:1px solid #e3e3e3;text-align:right;vertical-align:top}
thead th{background:#f3f4f6;font-weight:600;text-align:center;vertical-align:bottom}
tbody th{text-align:left;font-weight:600;min-width:11em;max-width:22em}
th[title]{cursor:help}
.chain-link{color:inherit;text-decoration:none;border-bottom:1px dotted #888}
td a{color:inherit;text-decoration:none}td a:hover,.chain-link:hover{color:#0b57d0}
td.text,.verdict td:first-child,.verdict th:first-child{text-align:left}
.ci{display:block;font-size:.8em;color:#666;white-space:nowrap}
img{max-width:100%;height:auto}figure{margin:1em 0}
pre{background:#f6f6f6;padding:.5em;margin:0;white-space:pre-wrap;overflow-wrap:anywhere;
max-height:24em;overflow:auto;font-size:.85em}
details.chain{border:1px solid #ddd;border-radius:8px;margin:.6em 0;padding:.4em .9em}
details.chain>summary{cursor:pointer}
details.provenance>summary{cursor:pointer;color:#555}
.example{border-top:1px solid #eee;padding:.7em 0}
.example .sentence{margin:0 0 .3em}
.scores{font-size:.85em;color:#444;margin:.2em 0 .5em}
.panes{display:grid;grid-template-columns:repeat(auto-fit,minmax(17em,1fr));gap:.8em}
.pane-title{font-size:.8em;text-transform:uppercase;letter-spacing:.04em;color:#666;
margin:0 0 .2em}
table.triples{width:100%;table-layout:fixed;font-size:.85em}
table.triples td{text-align:left;overflow-wrap:anywhere;border-bottom:1px solid #eee}
.tag{display:inline-block;background:#fdecea;color:#8a1c1c;border-radius:4px;padding:0 .4em;
margin:0 .3em .2em 0;font-size:.85em}
.none{color:#888;font-style:italic}
"""
# Opening a link to a chain's examples (or one example) opens the <details> around it.
_SCRIPT = """
function reveal(){var id=decodeURIComponent(location.hash.slice(1));
var t=id&&document.getElementById(id);if(!t)return;
for(var d=t.closest('details');d;d=d.parentElement&&d.parentElement.closest('details'))d.open=true;
t.scrollIntoView();}
addEventListener('hashchange',reveal);addEventListener('DOMContentLoaded',reveal);
"""


@dataclass(frozen=True)
class _Chain:
    """A chain as the HTML report shows it."""

    name: str
    spec: str
    anchor: str


def _chains(result: "ComparisonResult") -> dict[str, _Chain]:
    return {
        label: _Chain(name, spec, f"examples-{i + 1}")
        for i, (label, name, spec) in enumerate(
            zip(result.chains, chain_names(result), _specs(result), strict=True)
        )
    }


def _chain_cell(chains: Mapping[str, _Chain], label: str) -> str:
    e = html.escape
    chain = chains.get(label)
    if chain is None:  # a row that is no chain ("all chains")
        return f'<th scope="row">{e(label)}</th>'
    return (
        f'<th scope="row" title="{e(chain.spec)}"><a class="chain-link" '
        f'href="#{chain.anchor}">{e(chain.name)}</a></th>'
    )


def _chain_ref(chain: _Chain) -> str:
    e = html.escape
    return (
        f'<a class="chain-link" href="#{chain.anchor}" title="{e(chain.spec)}">{e(chain.name)}</a>'
    )


def _value_cell(text: str) -> str:
    """`mean [low, high]` as the mean over its interval in small type; other text as it is."""
    found = re.fullmatch(r"(\S+) (\[[^\]]*\])", text)
    if found:
        return f'{html.escape(found[1])}<span class="ci">{html.escape(found[2])}</span>'
    return html.escape(text)


def _column_head(name: str) -> str:
    # Long metric names may break after an underscore, so a column is as wide as its numbers.
    return html.escape(name).replace("_", "_<wbr>")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Cells are HTML already; the table scrolls inside its own box, never the page."""
    header = "".join(f"<th>{_column_head(h)}</th>" for h in head)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return (
        f'<div class="table-box"><table><thead><tr>{header}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _frame_html(frame: pd.DataFrame, chains: Mapping[str, _Chain], *, link: bool = False) -> str:
    """A per-chain table: chains by name (spec on hover); `link` makes each value lead to the
    chain's examples."""
    rows = []
    for label, values in zip(frame.index, frame.itertuples(index=False), strict=True):
        chain = chains.get(label)
        cells = [_chain_cell(chains, label)]
        for value in values:
            text = _value_cell(str(value))
            if link and chain is not None:
                text = f'<a href="#{chain.anchor}" title="examples of {html.escape(chain.name)}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        rows.append(cells)
    return _table(["chain", *frame.columns], rows)


def _long_frame_html(
    frame: pd.DataFrame, chains: Mapping[str, _Chain], text: Sequence[str] = ()
) -> str:
    """A table with a `chain` column (paired tests, correlations); `text` names the columns
    of words (left-aligned), the others hold figures."""

    def cell(column: str, value: Any) -> str:
        if column == "chain":
            return _chain_cell(chains, str(value))
        kind = ' class="text"' if column in text else ""
        return f"<td{kind}>{_value_cell(str(value))}</td>"

    rows = [
        [cell(column, value) for column, value in zip(frame.columns, values, strict=True)]
        for values in frame.itertuples(index=False)
    ]
    return _table(list(frame.columns), rows)


def _verdict_html(verdict: str) -> str:
    body = _MARKDOWN.render(verdict)
    body = body.replace("<table>", '<div class="table-box"><table>')
    body = body.replace("</table>", "</table></div>")
    for outcome, kind in _OUTCOMES.items():
        body = body.replace(
            f"<strong>{outcome}</strong>", f'<strong class="{kind}">{outcome}</strong>'
        )
    return f'<section class="verdict" id="verdict">\n{body}</section>'


def _triples_html(triples: Any) -> str:
    e = html.escape
    if not isinstance(triples, list) or not triples:
        return '<p class="none">none</p>'
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{e(str(t.get(k, '')) if isinstance(t, Mapping) else str(t))}</td>"
            for k in ("s", "relation", "object")
        )
        + "</tr>"
        for t in triples
    )
    return f'<table class="triples">{rows}</table>'


def _example_anchors(
    result: "ComparisonResult", chains: Mapping[str, _Chain]
) -> dict[tuple[str, str], str]:
    """(chain, example id) -> the id of the example's block in the HTML report."""
    anchors: dict[tuple[str, str], str] = {}
    if result.examples.empty:
        return anchors
    for label, group in result.examples.groupby("chain", sort=False):
        chain = chains.get(str(label))
        if chain is not None:
            for i, example_id in enumerate(group["example_id"]):
                anchors[(str(label), str(example_id))] = f"{chain.anchor}-{i + 1}"
    return anchors


def _examples_html(
    result: "ComparisonResult",
    chains: Mapping[str, _Chain],
    anchors: Mapping[tuple[str, str], str],
) -> str:
    """Every example of every chain, one closed <details> per chain."""
    e = html.escape
    examples = result.examples
    if examples.empty:
        return ""
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for row in result.per_example.itertuples(index=False):
        if not (isinstance(row.score, float) and math.isnan(row.score)):
            scores.setdefault((row.chain, str(row.example_id)), {})[row.metric] = row.score
    with_triples = dict(zip(result.chains, answers_with_triples(result), strict=True))
    derived = derived_from(result)
    parts = [
        "<h2>Examples</h2>",
        '<p class="note">Every example of each chain: the raw answer, the triples parsed from '
        "it, the gold triples, the scores and the failure tags (hover a tag for its evidence). "
        "A chain's name or score in the tables above opens its examples here.</p>",
    ]
    for label, chain in chains.items():
        rows = examples[examples["chain"] == label]
        failed = int(rows["error"].notna().sum())
        summary = f'<strong title="{e(chain.spec)}">{e(chain.name)}</strong>'
        if label in derived:
            sources = ", ".join(
                _chain_ref(chains[c]) if c in chains else e(c) for c in derived[label]
            )
            parts.append(
                f'<details class="chain" id="{chain.anchor}"><summary>{summary}: no answers of '
                f"its own; its scores are the means of {sources}</summary></details>"
            )
            continue
        parts.append(
            f'<details class="chain" id="{chain.anchor}"><summary>{summary}: {len(rows)} '
            f"examples, {with_triples[label]} {WITH_TRIPLES}, {failed} failed</summary>"
        )
        for row in rows.to_dict("records"):
            example_id = str(row["example_id"])
            found = scores.get((label, example_id), {})
            shown = " · ".join(
                f"{e(metric)} <b>{_number(found[metric])}</b>"
                for metric in _in_order(result.metrics)
                if metric in found
            )
            tags = "".join(
                f'<span class="tag" title="{e(str(row["evidence"].get(tag) or ""))}">{e(tag)}</span>'
                for tag in row["tags"]
            )
            error = row.get("error")
            if isinstance(error, str) and error:
                raw = f"the model call failed, so this example is not scored: {error}"
            else:
                raw = str(row.get("raw") or "")
                if len(raw) > EXAMPLE_RAW_CHARS:
                    raw = (
                        raw[:EXAMPLE_RAW_CHARS]
                        + f" … ({len(raw) - EXAMPLE_RAW_CHARS} more characters)"
                    )
            triples = row.get("triples") or []
            gold = row.get("gold") or []
            parts.append(
                f'<article class="example" id="{anchors[(label, example_id)]}">'
                f'<p class="sentence"><code>{e(example_id)}</code> {e(str(row["sentence"]))}</p>'
                f'<p class="scores">{shown or "not scored"} {tags}</p><div class="panes">'
                f'<div><p class="pane-title">raw answer</p><pre>{e(raw)}</pre></div>'
                f'<div><p class="pane-title">parsed triples ({len(triples)})</p>'
                f"{_triples_html(triples)}</div>"
                f'<div><p class="pane-title">gold ({len(gold)})</p>{_triples_html(gold)}</div>'
                "</div></article>"
            )
        parts.append("</details>")
    return "\n".join(parts)


def _failure_html(
    result: "ComparisonResult",
    chains: Mapping[str, _Chain],
    anchors: Mapping[tuple[str, str], str],
) -> list[str]:
    e = html.escape
    analysis = failure_examples(result)
    if not analysis:
        return []
    parts = ["<h2>Failure analysis</h2>"]
    current = None
    for tag, label, rows in analysis:
        if tag != current:
            parts.append(f"<h3>{e(tag)}</h3>")
            current = tag
        chain = chains.get(label)
        parts.append(f"<h4>{_chain_ref(chain) if chain else e(label)}</h4><ul>")
        for row in rows:
            example_id = str(row["example_id"])
            anchor = anchors.get((label, example_id))
            ref = f'<a href="#{anchor}">{e(example_id)}</a>' if anchor else e(example_id)
            parts.append(
                f"<li><code>{ref}</code>: {e(row['sentence'])}<br>"
                f"evidence: {e(row['evidence'].get(tag) or '—')}"
                f"<pre>{e(_truncate(row['raw']))}</pre></li>"
            )
        parts.append("</ul>")
    return parts


def _provenance_html(result: "ComparisonResult", chains: Mapping[str, _Chain]) -> list[str]:
    e = html.escape
    if len(result.experiments) != len(result.chains):
        return []
    items = []
    for label, experiment in zip(result.chains, result.experiments, strict=True):
        meta = experiment.record.metadata
        url = experiment.langsmith_url
        items.append(
            f"<li><strong>{e(chains[label].name)}</strong>: spec <code>{e(experiment.chain)}</code>, "
            f"key <code>{e(experiment.key)}</code>, model <code>{e(str(meta.get('model')))}</code>, "
            f"adapter <code>{e(str(meta.get('adapter_hash')))}</code>, prompt "
            f"<code>{e(str(meta.get('prompt_id')))}</code>, dataset hash "
            f"<code>{e(str(meta.get('dataset_hash')))}</code>, commit "
            f"<code>{e(str(meta.get('git_commit')))}</code>; {experiment.ran} run now, "
            f"{experiment.skipped} reused from the store <code>{e(str(experiment.store))}</code>, "
            f"{experiment.failed} failed"
            + (f'; LangSmith: <a href="{e(url)}">{e(url)}</a>' if url else "")
            + "</li>"
        )
    return [
        '<details class="provenance"><summary>Experiments: specs, keys, hashes, stores</summary>',
        f"<ul>{''.join(items)}</ul></details>",
    ]


def render_html(
    result: "ComparisonResult", plots: dict[str, str] | None = None, *, verdict: str | None = None
) -> str:
    """The report as one self-contained HTML page (plots linked beside it); `verdict`
    (Markdown, e.g. the study's "Prompt or fine-tune?") opens the page."""
    e = html.escape
    chains = _chains(result)
    anchors = _example_anchors(result, chains)
    dataset = str(result.dataset)
    short = dataset.rstrip("/").rsplit("/", 1)[-1] or dataset
    title = f"Chain comparison on {short}"
    parts = [_verdict_html(verdict)] if verdict else []
    parts += [
        f'<h1>Chain comparison on <code title="{e(dataset)}">{e(short)}</code></h1>',
        f"<p>{e(_summary_sentence(result))}</p>",
        "<h2>Scores (mean per example, 95 % CI)</h2>",
    ]
    if _has_precision(result):
        note = _MARKDOWN.renderInline(PRECISION_NOTE)
        parts.append(f'<p class="note">{note} A chain\'s name or score opens its examples.</p>')
    parts.append(_frame_html(score_table(result), chains, link=True))
    if result.summary_metrics:
        parts += ["<h2>Corpus-level figures</h2>", _frame_html(corpus_table(result), chains)]
    parts += ["<h2>Speed and cost</h2>", _frame_html(cost_table(result), chains)]
    if result.tags:
        parts += [
            "<h2>Failure tags (share of examples)</h2>",
            _frame_html(tag_table(result), chains, link=True),
        ]
    if len(result.paired):
        baseline = chains.get(result.baseline or result.chains[0])
        against = _chain_ref(baseline) if baseline else e(result.baseline)
        parts += [f"<h2>Paired tests against {against}</h2>"]
        parts += [_long_frame_html(paired_table(result), chains, text=["metric"])]
    if len(result.correlations):
        parts += ["<h2>Judge against the exact scorers (per-example Spearman)</h2>"]
        parts += [_long_frame_html(correlation_table(result), chains, text=["judge vs"])]
    for plot_title, name in (plots or {}).items():
        image = f'<img src="{e(name)}" alt="{e(plot_title)}">'
        parts.append(f"<figure>{image}<figcaption>{e(plot_title)}</figcaption></figure>")
    parts += _failure_html(result, chains, anchors)
    parts.append(_examples_html(result, chains, anchors))
    parts += _provenance_html(result, chains)
    body = "\n".join(p for p in parts if p)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


# --- plots ---------------------------------------------------------------------------------------


def _score_plot(result: "ComparisonResult", path: Path) -> bool:
    metrics = [m for m in result.metrics if not m.endswith(("_precision", "_recall"))]
    metrics = metrics[:SCORE_PLOT_METRICS]
    if not metrics:
        return False
    figure = Figure(figsize=(4.2 * len(metrics), 0.5 * len(result.chains) + 2.5), layout="tight")
    names = chain_names(result)
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
            range(1, len(result.chains) + 1), names if i == 0 else [""] * len(result.chains)
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
    for i, (chain, name) in enumerate(zip(result.chains, chain_names(result), strict=True)):
        rates = [100 * result.table.loc[chain, f"{TAG_PREFIX}{t}"] for t in result.tags]
        positions = [j + i * height for j in range(len(result.tags))]
        axes.barh(positions, rates, height=height, label=name)
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
        for name, x, y in zip(chain_names(result), xs, means, strict=True):
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
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


def write_report(
    result: "ComparisonResult", out_dir: Path, verdict: str | None = None
) -> dict[str, Path]:
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
