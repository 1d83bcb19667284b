"""The report's tables, built from a comparison: scores, corpus figures, speed and cost, tags,
paired tests, correlations, and the failure examples."""

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from triplesmith.evaluators.format_validity import TAG_PREFIX
from triplesmith.experiments.report_names import Comparison

EXAMPLES_PER_TAG = 3
RAW_CHARS = 400
WITH_TRIPLES = "answers with triples"
# Precision is undefined for an empty answer: its mean is over the answers with triples.
PRECISION_METRICS = ("triple_precision", "triple_exact_precision")


def format_number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def spread(table: pd.DataFrame, metric: str) -> list[str]:
    """Per chain: " ± SD" when the chain is a mean over training seeds (`M_sd`, the sample
    standard deviation of the seeds' figures; experiments/seeds.py), else ""."""
    return [chain_spread(table, chain, metric) for chain in table.index]


def chain_spread(table: pd.DataFrame, chain: str, metric: str) -> str:
    """ " ± SD" of one chain's `metric` when it is a mean over training seeds, else ""."""
    column = f"{metric}_sd"
    value = table.loc[chain, column] if column in table.columns else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f" ± {value:.3f}"


SPREAD_NOTE = (
    "A mean over training seeds shows ± the sample standard deviation of the seeds' figures "
    "(the 95 % CI is over the sentences)."
)


def has_spread(result: Comparison) -> bool:
    return any(column.endswith("_sd") for column in result.table.columns)


def in_order(metrics: Sequence[str]) -> list[str]:
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


def derived_from(result: Comparison) -> dict[str, list[str]]:
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


def answers_with_triples(result: Comparison) -> list[int | None]:
    """Per chain, in order: the answers with at least one triple (a failed run is no answer);
    None for a chain with no answers of its own (`derived_from`)."""
    examples = result.examples
    derived = derived_from(result)
    counts = pd.Series(dtype=int)
    if not examples.empty:
        answered = examples["error"].isna() & examples["triples"].map(lambda t: bool(t))
        counts = examples[answered].groupby("chain").size()
    return [None if c in derived else int(counts.get(c, 0)) for c in result.chains]


def score_table(result: Comparison) -> pd.DataFrame:
    """Per chain: examples, errors (failed model calls, not scored), and each per-example
    metric's mean over the scored examples as `mean [low, high]` (95 % CI). Triple precision
    is followed by the count of answers with triples, the examples its mean is over."""
    table = result.table
    shown = pd.DataFrame(index=table.index)
    shown["n"] = table["n"].astype(int).astype(str)
    shown["errors"] = table["errors"].astype(int).astype(str)
    counted = False
    for metric in in_order(result.metrics):
        shown[metric] = [
            f"{format_number(m)} [{format_number(lo)}, {format_number(hi)}]{sd}"
            if not math.isnan(m)
            else "n/a"
            for m, lo, hi, sd in zip(
                table[metric],
                table[f"{metric}_low"],
                table[f"{metric}_high"],
                spread(table, metric),
                strict=True,
            )
        ]
        if metric in PRECISION_METRICS and not counted:
            shown[WITH_TRIPLES] = [
                "n/a" if n is None else str(n) for n in answers_with_triples(result)
            ]
            counted = True
    return shown


def corpus_table(result: Comparison) -> pd.DataFrame:
    """Per chain: the corpus-level figures (CaRB AUC and F1, BenchIE, micro-averaged F1)."""
    table = result.table
    return pd.DataFrame(
        {
            metric: [
                format_number(v) + sd
                for v, sd in zip(table[metric], spread(table, metric), strict=True)
            ]
            for metric in in_order(result.summary_metrics)
        },
        index=table.index,
    )


def cost_table(result: Comparison) -> pd.DataFrame:
    """Per chain: mean latency, mean tokens and the estimated cost of the run."""
    table = result.table
    return pd.DataFrame(
        {
            "latency_s (mean)": [format_number(v, 2) for v in table["latency_s"]],
            "tokens_in (mean)": [format_number(v, 1) for v in table["tokens_in"]],
            "tokens_out (mean)": [format_number(v, 1) for v in table["tokens_out"]],
            "cost_usd (total)": [format_number(v, 4) for v in table["cost_usd"]],
        },
        index=table.index,
    )


def tag_table(result: Comparison) -> pd.DataFrame:
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


def paired_table(result: Comparison) -> pd.DataFrame:
    paired = result.paired
    return pd.DataFrame(
        {
            "chain": paired["chain"],
            "metric": paired["metric"],
            "difference [95 % CI]": [
                f"{format_number(d, 3)} [{format_number(lo, 3)}, {format_number(hi, 3)}]"
                for d, lo, hi in zip(
                    paired["mean_difference"], paired["low"], paired["high"], strict=True
                )
            ],
            "p (Wilcoxon)": [format_number(p, 4) for p in paired["p_value"]],
            "n": paired["n"].astype(str),
        }
    )


def correlation_table(result: Comparison) -> pd.DataFrame:
    corr = result.correlations
    return pd.DataFrame(
        {
            "chain": corr["chain"],
            "judge vs": corr["exact_metric"],
            "Spearman rho": [format_number(r) for r in corr["rho"]],
            "p": [format_number(p, 4) for p in corr["p_value"]],
            "n": corr["n"].astype(str),
        }
    )


def failure_examples(result: Comparison) -> list[tuple[str, str, list[dict[str, Any]]]]:
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


def truncate(text: str) -> str:
    text = text or ""
    return text if len(text) <= RAW_CHARS else text[:RAW_CHARS] + " …"


def summary_sentence(result: Comparison) -> str:
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


def has_precision(result: Comparison) -> bool:
    return any(m in PRECISION_METRICS for m in result.metrics)
