"""CI gates on a comparison: a metric below a floor (`--fail-under triple_f1=0.5`), or a chain
significantly worse than a baseline (`--fail-if-worse BASELINE`, paired test at p < 0.05).

A gate that fails is one line naming the chain, the metric and the figures; the CLI prints the
lines and exits 1.
"""

import math
from collections.abc import Sequence

from pydantic import BaseModel

from triplesmith.errors import ExperimentError
from triplesmith.experiments.compare import ComparisonResult, paired_tests
from triplesmith.experiments.result import ExperimentResult
from triplesmith.run_config import RunConfig

P_THRESHOLD = 0.05


class Floor(BaseModel):
    """`metric` must reach `minimum` (a column of the comparison's table)."""

    metric: str
    minimum: float


def parse_floors(texts: Sequence[str]) -> list[Floor]:
    """`["triple_f1=0.5", "carb_f1=0.4"]` as floors; a malformed one is an error naming it."""
    floors = []
    for text in texts:
        metric, sep, value = text.partition("=")
        try:
            minimum = float(value)
        except ValueError:
            minimum = math.nan
        if not sep or not metric.strip() or not math.isfinite(minimum):
            raise ExperimentError(
                f"--fail-under {text!r}: expected METRIC=VALUE, e.g. triple_f1=0.5"
            )
        floors.append(Floor(metric=metric.strip(), minimum=minimum))
    return floors


def below_floors(
    comparison: ComparisonResult, floors: Sequence[Floor], chains: Sequence[str] | None = None
) -> list[str]:
    """One line per (chain, floor) not reached; `chains` (labels) default to every chain. A
    metric the comparison does not have is an error naming the ones it has."""
    table = comparison.table
    failures = []
    for floor in floors:
        if floor.metric not in table.columns:
            known = [*comparison.metrics, *comparison.summary_metrics]
            raise ExperimentError(
                f"--fail-under {floor.metric}: no such figure in this comparison; it has "
                f"{', '.join(known)}"
            )
        for chain in chains or comparison.chains:
            value = float(table.loc[chain, floor.metric])
            if not value >= floor.minimum:  # NaN (nothing scored) fails too
                failures.append(
                    f"gate failed: {chain}: {floor.metric} {value:.4f} is below {floor.minimum}"
                )
    return failures


def worse_than(
    baseline: ExperimentResult,
    comparison: ComparisonResult,
    chains: Sequence[str] | None = None,
) -> list[str]:
    """One line per (chain, metric) where the chain is worse than `baseline` on the examples
    both scored: a negative mean difference with a paired Wilcoxon p below 0.05."""
    failures = []
    labels = dict(zip(comparison.chains, comparison.experiments, strict=True))
    for chain in chains or comparison.chains:
        experiment = labels[chain]
        if experiment.key == baseline.key:
            continue
        for metric, test in paired_tests(baseline, experiment, comparison.metrics).items():
            if test.mean_difference < 0 and test.p_value < P_THRESHOLD:
                failures.append(
                    f"gate failed: {chain}: {metric} worse than {baseline.chain} "
                    f"({test.mean_difference:+.4f} over {test.n} examples, p = {test.p_value:.2g})"
                )
    return failures


def baseline_experiment(
    comparison: ComparisonResult, name: str, config: RunConfig
) -> ExperimentResult:
    """The baseline named by `--fail-if-worse`: one of the compared chains (its label or spec),
    or the key of a stored experiment (scored with this run's evaluators, nothing generated)."""
    for label, experiment in zip(comparison.chains, comparison.experiments, strict=True):
        if name in (label, experiment.chain, experiment.key):
            return experiment
    from triplesmith.experiments.scoring import rescore

    return rescore(name, config)
