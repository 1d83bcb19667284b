"""report.html: one self-contained page for a browser (inline CSS, a few lines of inline JS,
plots as PNG files beside it): the verdict first, chains by readable name, every table inside
the page width, each chain's scores linked to its examples."""

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from markdown_it import MarkdownIt

from triplesmith.experiments.report_names import Comparison, chain_names, specs_of
from triplesmith.experiments.report_tables import (
    PRECISION_NOTE,
    SPREAD_NOTE,
    WITH_TRIPLES,
    answers_with_triples,
    corpus_table,
    correlation_table,
    cost_table,
    derived_from,
    failure_examples,
    format_number,
    has_precision,
    has_spread,
    in_order,
    paired_table,
    score_table,
    summary_sentence,
    tag_table,
    truncate,
)

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


EXAMPLE_RAW_CHARS = 4000


@dataclass(frozen=True)
class _Chain:
    """A chain as the HTML report shows it."""

    name: str
    spec: str
    anchor: str


def _chains(result: Comparison) -> dict[str, _Chain]:
    return {
        label: _Chain(name, spec, f"examples-{i + 1}")
        for i, (label, name, spec) in enumerate(
            zip(result.chains, chain_names(result), specs_of(result), strict=True)
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
    result: Comparison, chains: Mapping[str, _Chain]
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
    result: Comparison,
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
                f"{e(metric)} <b>{format_number(found[metric])}</b>"
                for metric in in_order(result.metrics)
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
    result: Comparison,
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
                f"<pre>{e(truncate(row['raw']))}</pre></li>"
            )
        parts.append("</ul>")
    return parts


def _provenance_html(result: Comparison, chains: Mapping[str, _Chain]) -> list[str]:
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
    result: Comparison, plots: dict[str, str] | None = None, *, verdict: str | None = None
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
        f"<p>{e(summary_sentence(result))}</p>",
        "<h2>Scores (mean per example, 95 % CI)</h2>",
    ]
    if has_precision(result):
        note = _MARKDOWN.renderInline(PRECISION_NOTE)
        parts.append(f'<p class="note">{note} A chain\'s name or score opens its examples.</p>')
    if has_spread(result):
        parts.append(f'<p class="note">{e(SPREAD_NOTE)}</p>')
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
