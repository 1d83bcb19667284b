"""The mean of several training seeds' experiments, as one more chain of a comparison.

Per example, each metric is the mean over the seeds that scored it, so the paired tests (and
the study's verdict) compare a baseline with the seeds' mean; corpus figures are the mean over
seeds, and the comparison's table gets their spread (`M_sd`, the sample standard deviation
across seeds) beside them.
"""

import math
import statistics
from collections.abc import Sequence

from triplesmith.errors import ExperimentError
from triplesmith.evaluators.base import Feedback
from triplesmith.experiments.compare import ComparisonResult
from triplesmith.experiments.result import ExperimentResult
from triplesmith.experiments.store import ExperimentRecord, StoredExample


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def mean_of_seeds(seeds: Sequence[ExperimentResult], label: str) -> ExperimentResult:
    """One experiment whose per-example scores and corpus figures are the seeds' means (over the
    examples every seed answered); its rows carry no answers of their own."""
    if len(seeds) < 2:
        raise ExperimentError("a mean of seeds needs at least two experiments")
    by_id = [{row.example_id: row for row in seed.rows if not row.failed} for seed in seeds]
    common = [row for row in seeds[0].rows if all(row.example_id in rows for rows in by_id)]
    rows = []
    for row in common:
        keys = dict.fromkeys(f.key for rows in by_id for f in rows[row.example_id].feedback)
        feedback = []
        for key in keys:
            value = _mean([rows[row.example_id].score(key) for rows in by_id])
            feedback.append(
                Feedback(key=key, score=value)
                if value is not None
                else Feedback(key=key, error="no seed scored it")
            )
        rows.append(
            StoredExample(
                experiment=label,
                example_id=row.example_id,
                position=row.position,
                example=row.example,
                outputs={},
                feedback=feedback,
            )
        )
    keys = dict.fromkeys(f.key for seed in seeds for f in seed.summary)
    summary = []
    for key in keys:
        value = _mean([next((f.score for f in s.summary if f.key == key), None) for s in seeds])
        if value is not None:
            summary.append(Feedback(key=key, score=value, comment=f"mean of {len(seeds)} seeds"))
    record = ExperimentRecord(
        key=label,
        name=label,
        chain=label,
        dataset=seeds[0].record.dataset,
        metadata={"seeds": [s.key for s in seeds], "provider": "local"},
    )
    return ExperimentResult(
        record=record,
        rows=rows,
        summary=summary,
        skipped=len(rows),
        ran=0,
        total=len(rows),
        store=seeds[0].store,
    )


def add_spread(comparison: ComparisonResult, label: str, seeds: Sequence[str]) -> None:
    """In the table's row `label` (the mean), the columns the mean's rows cannot give (tag
    rates, speed, tokens, cost) become the seeds' mean, and every figure gets `_sd`, its
    spread across the seed rows `seeds`."""
    table = comparison.table
    measured = [c for c in table.columns if not c.endswith(("_low", "_high")) and c != "n"]
    for column in measured:
        values = [float(table.loc[seed, column]) for seed in seeds]
        finite = [v for v in values if not math.isnan(v)]
        if column.startswith("tag:") or column in (
            "errors", "latency_s", "s_per_sentence", "tokens_in", "tokens_out", "cost_usd",
        ):  # fmt: skip
            table.loc[label, column] = sum(finite) / len(finite) if finite else math.nan
        table.loc[label, f"{column}_sd"] = (
            statistics.stdev(finite) if len(finite) >= 2 else math.nan
        )
