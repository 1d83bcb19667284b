"""`compare`: several chains over one dataset with the same evaluators, side by side.

Each chain runs as a resumable experiment (`run_experiment`); the comparison is built from the
stored examples: per-metric means with bootstrap 95 % intervals, the corpus-level figures,
failure-tag rates, latency, tokens and an estimated cost, a paired test of each chain against
the first, and the judge's rank correlation with the exact scorers when both ran.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from triplesmith.chains.base import ExtractionChain
from triplesmith.chains.spec import parse_spec
from triplesmith.errors import EvaluatorError, ExperimentError
from triplesmith.evaluators.format_validity import TAG_PREFIX, TRIAGE_TAGS
from triplesmith.evaluators.statistics import (
    PairedComparison,
    bootstrap_ci,
    paired_test,
    spearman,
)
from triplesmith.experiments.inputs import resolve_evaluators
from triplesmith.experiments.langsmith_setup import (
    check_reachable,
    experiment_client,
    langsmith_configured,
)
from triplesmith.experiments.result import ExperimentResult
from triplesmith.experiments.runner import run_experiment
from triplesmith.experiments.store import ExperimentStore, StoredExample
from triplesmith.run_config import RunConfig

# OpenAI list prices in USD per million tokens (input, output), as published in 2025; a
# fine-tuned model's inference price is under "ft:". Local models cost 0; other chat models
# have no known price. Pass `prices=` to compare() to override or extend.
OPENAI_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "ft:gpt-4o-mini": (0.30, 1.20),
    "ft:gpt-4o": (3.75, 15.00),
    "ft:gpt-4.1-nano": (0.20, 0.80),
    "ft:gpt-4.1-mini": (0.80, 3.20),
    "ft:gpt-4.1": (3.00, 12.00),
    "ft:gpt-3.5-turbo": (3.00, 6.00),
}
# The exact scorers the judge is correlated with, when present.
EXACT_METRICS = ("triple_f1", "triple_exact_f1", "carb_example_f1", "benchie_example_f1")
# The headline metric of plots: the first present.
PRIMARY_METRICS = ("triple_f1", "judge", "carb_example_f1", "benchie_example_f1", "format")

CompareProgress = Callable[[str, int, int], None]
"""Called with (chain, examples finished, examples in the run)."""


def price_of(metadata: Mapping[str, Any], prices: Mapping[str, tuple[float, float]]) -> Any:
    """(input, output) USD per million tokens for an experiment's model, or None if unknown."""
    provider = metadata.get("provider")
    if provider == "local":
        return (0.0, 0.0)
    model = str(metadata.get("model") or "")
    if provider != "openai" or not model:
        return prices.get(model)
    if model in prices:
        return prices[model]
    fine_tuned = model.startswith("ft:")
    base = model.removeprefix("ft:")
    candidates = [
        name
        for name in prices
        if name.startswith("ft:") == fine_tuned and base.startswith(name.removeprefix("ft:"))
    ]
    return prices[max(candidates, key=len)] if candidates else None


@dataclass
class ComparisonResult:
    """The comparison of several chains on one dataset.

    table: one row per chain (index `chain`): `n` examples stored, `errors` among them whose
        model call failed (not scored: every metric is over the other n - errors); for each
        per-example metric its mean and bootstrap 95 % interval (`M`, `M_low`, `M_high`); the
        corpus-level figures (`carb_auc`, `carb_f1`, `benchie_f1`, `triple_micro_f1`, ...);
        `tag:NAME` rates; `latency_s` (mean seconds from an example's start to its answer: in a
        batch, the batch's time), `s_per_sentence` (the wall time spent answering, batches
        counted once, over the examples), `tokens_in`, `tokens_out` (means per example) and
        `cost_usd` (the run's total, NaN when the price is unknown).
    per_example: long form, one row per (chain, example, feedback key): `score`, `error`.
    examples: one row per (chain, example): sentence, raw output, triples, tags with evidence.
    paired: each chain against the baseline (the first unless chosen), per metric: mean
        difference, its interval, p-value.
    correlations: Spearman's rho of the judge against each exact scorer, per chain and pooled.
    """

    dataset: str
    chains: list[str]
    metrics: list[str]
    summary_metrics: list[str]
    tags: list[str]
    table: pd.DataFrame
    per_example: pd.DataFrame
    examples: pd.DataFrame
    paired: pd.DataFrame
    correlations: pd.DataFrame
    experiments: list[ExperimentResult] = field(default_factory=list)
    baseline: str = ""  # the chain the paired tests are against

    @property
    def primary_metric(self) -> str | None:
        return next((m for m in PRIMARY_METRICS if m in self.metrics), None) or next(
            iter(self.metrics), None
        )

    def to_markdown(self) -> str:
        from triplesmith.experiments.report import render_markdown

        return render_markdown(self)

    def to_html(self) -> str:
        from triplesmith.experiments.report import render_html

        return render_html(self)

    def write(self, out_dir: str | Path, verdict: str | None = None) -> dict[str, Path]:
        """Write report.md, report.html, the plots and the tables (CSV), `verdict` (Markdown)
        opening both reports; returns the paths."""
        from triplesmith.experiments.report import write_report

        return write_report(self, Path(out_dir), verdict=verdict)


def _labels(experiments: Sequence[ExperimentResult]) -> list[str]:
    labels: list[str] = []
    for experiment in experiments:
        label = experiment.chain
        if label in labels:
            label = f"{label} #{sum(1 for x in labels if x.startswith(label)) + 1}"
        labels.append(label)
    return labels


def _interval(scores: Sequence[float | None]) -> tuple[float, float, float]:
    try:
        interval = bootstrap_ci(scores)
    except EvaluatorError:  # no score at all (every evaluation failed)
        return (math.nan, math.nan, math.nan)
    return (interval.mean, interval.low, interval.high)


def _row(
    experiment: ExperimentResult,
    metrics: Sequence[str],
    tags: Sequence[str],
    prices: Mapping[str, tuple[float, float]],
) -> dict[str, Any]:
    rows = experiment.rows
    row: dict[str, Any] = {"n": len(rows), "errors": experiment.failed}
    for metric in metrics:
        mean, low, high = _interval(experiment.scores(metric))
        row.update({metric: mean, f"{metric}_low": low, f"{metric}_high": high})
    for feedback in experiment.summary:
        row[feedback.key] = math.nan if feedback.score is None else feedback.score
    triaged = [r for r in rows if r.tags is not None]
    for tag in tags:
        row[f"{TAG_PREFIX}{tag}"] = (
            sum(tag in (r.tags or []) for r in triaged) / len(triaged) if triaged else math.nan
        )
    latencies = [r.latency_s for r in rows if r.latency_s is not None]
    row["latency_s"] = sum(latencies) / len(latencies) if latencies else math.nan
    row["s_per_sentence"] = busy_seconds(rows) / len(rows) if rows else math.nan
    row["tokens_in"] = sum(r.tokens_in for r in rows) / len(rows) if rows else math.nan
    row["tokens_out"] = sum(r.tokens_out for r in rows) / len(rows) if rows else math.nan
    price = price_of(experiment.record.metadata, prices)
    row["cost_usd"] = (
        sum(r.tokens_in * price[0] + r.tokens_out * price[1] for r in rows) / 1e6
        if price is not None
        else math.nan
    )
    return row


def busy_seconds(rows: Sequence[StoredExample]) -> float:
    """The wall time the chain spent answering these rows: the union of each row's interval
    (its answer's time back from when it finished), so sentences answered together in one batch
    count once, and the pauses between resumed runs not at all."""
    spans = sorted(
        (end - row.latency_s, end)
        for row in rows
        if row.latency_s is not None
        for end in [datetime.fromisoformat(row.finished).timestamp()]
    )
    total, reach = 0.0, -math.inf
    for start, end in spans:
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _ordered_keys(experiments: Sequence[ExperimentResult], summary: bool) -> list[str]:
    """Feedback keys in the evaluators' order: read from the fullest feedback lists first (an
    answer without triples has no precision, and must not push it to the end)."""
    lists = (
        [e.summary for e in experiments]
        if summary
        else [r.feedback for e in experiments for r in e.rows]
    )
    keys: dict[str, None] = {}
    for feedback in sorted(lists, key=len, reverse=True):
        for f in feedback:
            if not f.key.startswith(TAG_PREFIX):
                keys.setdefault(f.key)
    return list(keys)


def _tags(experiments: Sequence[ExperimentResult]) -> list[str]:
    seen = {t for e in experiments for r in e.rows for t in (r.tags or [])}
    if not any(r.tags is not None for e in experiments for r in e.rows):
        return []
    return [t for t in TRIAGE_TAGS] + sorted(seen - set(TRIAGE_TAGS))


def _aligned(
    a: ExperimentResult, b: ExperimentResult, metric: str
) -> tuple[list[float | None], list[float | None]]:
    right = {r.example_id: r.score(metric) for r in b.rows}
    ids = [r.example_id for r in a.rows if r.example_id in right]
    left = {r.example_id: r.score(metric) for r in a.rows}
    return [left[i] for i in ids], [right[i] for i in ids]


def paired_tests(
    a: ExperimentResult, b: ExperimentResult, metrics: Sequence[str]
) -> dict[str, PairedComparison]:
    """`b` against `a` on the examples both scored, per metric (metrics no example has on both
    sides are left out)."""
    tests = {}
    for metric in metrics:
        try:
            tests[metric] = paired_test(*_aligned(a, b, metric))
        except EvaluatorError:
            continue
    return tests


def _check_baseline(baseline: int, count: int) -> None:
    if not 0 <= baseline < count:
        raise ExperimentError(f"baseline {baseline} is not one of the {count} chains compared")


def _paired(
    experiments: Sequence[ExperimentResult],
    labels: Sequence[str],
    metrics: Sequence[str],
    baseline: int = 0,
) -> pd.DataFrame:
    records = []
    for index, (experiment, label) in enumerate(zip(experiments, labels, strict=True)):
        if index == baseline:
            continue
        for metric, test in paired_tests(experiments[baseline], experiment, metrics).items():
            records.append(
                {
                    "chain": label,
                    "baseline": labels[baseline],
                    "metric": metric,
                    **test.model_dump(),
                }
            )
    columns = ["chain", "baseline", "metric", "mean_difference", "low", "high", "p_value", "n"]
    return pd.DataFrame(records, columns=columns + ["confidence", "method"])


def _correlations(
    experiments: Sequence[ExperimentResult], labels: Sequence[str], metrics: Sequence[str]
) -> pd.DataFrame:
    records = []
    if "judge" in metrics:
        for exact in (m for m in EXACT_METRICS if m in metrics):
            pooled: tuple[list[float | None], list[float | None]] = ([], [])
            for experiment, label in zip(experiments, labels, strict=True):
                judge, other = experiment.scores("judge"), experiment.scores(exact)
                pooled[0].extend(judge)
                pooled[1].extend(other)
                rho = spearman(judge, other)
                records.append({"chain": label, "exact_metric": exact, **rho.model_dump()})
            rho = spearman(*pooled)
            records.append({"chain": "all chains", "exact_metric": exact, **rho.model_dump()})
    return pd.DataFrame(records, columns=["chain", "exact_metric", "rho", "p_value", "n"])


def _long(experiments: Sequence[ExperimentResult], labels: Sequence[str]) -> pd.DataFrame:
    records = [
        {
            "chain": label,
            "example_id": row.example_id,
            "metric": f.key,
            "score": math.nan if f.score is None else f.score,
            "error": f.error,
        }
        for experiment, label in zip(experiments, labels, strict=True)
        for row in experiment.rows
        for f in row.feedback
    ]
    return pd.DataFrame(records, columns=["chain", "example_id", "metric", "score", "error"])


def _wide(experiments: Sequence[ExperimentResult], labels: Sequence[str]) -> pd.DataFrame:
    records = []
    for experiment, label in zip(experiments, labels, strict=True):
        for row in experiment.rows:
            outputs = row.outputs
            tags = outputs.get("tags") if isinstance(outputs.get("tags"), list) else []
            records.append(
                {
                    "chain": label,
                    "example_id": row.example_id,
                    "sentence": row.example.sentence,
                    "raw": outputs.get("raw", ""),
                    "triples": outputs.get("triples", []),
                    "gold": [t.model_dump() for t in row.example.triples],
                    "tags": row.tags or [],
                    "evidence": {
                        t.get("name"): t.get("evidence") for t in tags if isinstance(t, dict)
                    },
                    "error": row.error,
                    "latency_s": row.latency_s,
                    "tokens_in": row.tokens_in,
                    "tokens_out": row.tokens_out,
                }
            )
    return pd.DataFrame(records)


def build_comparison(
    experiments: Sequence[ExperimentResult],
    dataset: str,
    prices: Mapping[str, tuple[float, float]] | None = None,
    baseline: int = 0,
) -> ComparisonResult:
    """The comparison of finished experiments; `baseline` is the index of the one the paired
    tests are against."""
    if not experiments:
        raise ExperimentError("a comparison needs at least one experiment")
    _check_baseline(baseline, len(experiments))
    prices = {**OPENAI_PRICES, **(prices or {})}
    labels = _labels(experiments)
    metrics = _ordered_keys(experiments, summary=False)
    summary_metrics = _ordered_keys(experiments, summary=True)
    tags = _tags(experiments)
    table = pd.DataFrame(
        [_row(e, metrics, tags, prices) for e in experiments],
        index=pd.Index(labels, name="chain"),
    )
    return ComparisonResult(
        dataset=dataset,
        chains=labels,
        metrics=metrics,
        summary_metrics=summary_metrics,
        tags=tags,
        table=table,
        per_example=_long(experiments, labels),
        examples=_wide(experiments, labels),
        paired=_paired(experiments, labels, metrics, baseline),
        correlations=_correlations(experiments, labels, metrics),
        experiments=list(experiments),
        baseline=labels[baseline],
    )


def compare(
    chains: Sequence[str | ExtractionChain] | str,
    dataset: str | Path | Sequence[Any],
    config: RunConfig | str | Sequence[Any] | None = None,
    *,
    prices: Mapping[str, tuple[float, float]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: CompareProgress | None = None,
    **options: Any,
) -> ComparisonResult:
    """Run every chain over the dataset (resumably, see `run_experiment`) and compare them.

    chains: spec strings (or a comma-separated string) or ExtractionChains.
    config: the run's `RunConfig`, or evaluator names (`"carb,benchie,triple-f1,format,judge"`)
        as a shorthand; `options` are RunConfig fields over it (`store=`, `limit=`,
        `baseline=` the chain the paired tests are against, its index or spec, ...).
    prices: USD per million (input, output) tokens by model name, over `OPENAI_PRICES`.
    """
    config = RunConfig.of(config, **options)
    if isinstance(chains, str):
        chains = [c.strip() for c in chains.split(",") if c.strip()]
    if not chains:
        raise ExperimentError("compare needs at least one chain, e.g. ['few-shot:smollm2']")
    for chain in chains:  # every spec is checked before the first chain runs
        if isinstance(chain, str):
            parse_spec(chain)
    names = [chain if isinstance(chain, str) else chain.spec for chain in chains]
    baseline = config.baseline
    if isinstance(baseline, str):
        if baseline not in names:
            raise ExperimentError(
                f"baseline {baseline!r} is not one of the chains compared: {', '.join(names)}"
            )
        baseline = names.index(baseline)
    _check_baseline(baseline, len(names))  # before any chain runs
    scorers = resolve_evaluators(config.evaluators, config.judge_model)
    if langsmith_configured() if config.upload is None else config.upload:
        check_reachable(experiment_client(True, config.client))  # before any chain runs
    label = str(dataset) if isinstance(dataset, str | Path) else "examples"
    opened = not isinstance(config.store, ExperimentStore)
    db = ExperimentStore(config.store) if opened else config.store
    run = config.model_copy(update={"store": db, "evaluators": scorers})
    try:
        experiments = []
        for chain in chains:
            name = chain if isinstance(chain, str) else chain.spec
            experiments.append(
                run_experiment(
                    chain,
                    dataset,
                    run,
                    metadata=metadata,
                    progress=(lambda d, t, n=name: progress(n, d, t)) if progress else None,
                )
            )
    finally:
        if opened:
            db.close()
    return build_comparison(experiments, label, prices, baseline)
