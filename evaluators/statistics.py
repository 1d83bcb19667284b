"""Honest numbers for per-example scores: bootstrap intervals, paired tests, rank correlation.

Every function takes per-example scores in which a missing score (None or NaN, e.g. an evaluator
error) is left out, and reports how many values it used. Resampling is seeded, so the same scores
give the same interval.
"""

import math
import warnings
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel
from scipy import stats

from triplesmith.errors import EvaluatorError

RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0

Scores = Sequence[float | None]


class Interval(BaseModel):
    """The mean of `n` scores with its bootstrap confidence interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE


class PairedComparison(BaseModel):
    """Chain B against chain A on the same examples.

    `mean_difference` is mean(B − A) over the `n` examples both scored, with its bootstrap
    interval [low, high]; `p_value` is the two-sided Wilcoxon signed-rank test of the
    differences (1.0 when every difference is zero).
    """

    mean_difference: float
    low: float
    high: float
    p_value: float
    n: int
    confidence: float = CONFIDENCE
    method: str = "wilcoxon signed-rank; percentile bootstrap of the mean difference"


class Correlation(BaseModel):
    """Spearman's rank correlation of `n` paired scores; None where it is undefined (n < 3, or a
    side constant)."""

    rho: float | None
    p_value: float | None
    n: int


def _floats(values: Scores, what: str) -> list[float]:
    """The scores as floats, NaN standing for a missing one."""
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
        raise EvaluatorError(f"{what} must be a sequence of numbers, got {type(values).__name__}")
    try:
        return [math.nan if v is None else float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise EvaluatorError(f"{what} must hold numbers or None: {exc}") from None


def _array(values: Scores, what: str) -> np.ndarray:
    array = np.array(_floats(values, what), dtype=float)
    return array[~np.isnan(array)]


def _paired(a: Scores, b: Scores) -> tuple[np.ndarray, np.ndarray]:
    left = np.array(_floats(a, "scores A"), dtype=float)
    right = np.array(_floats(b, "scores B"), dtype=float)
    if len(left) != len(right):
        raise EvaluatorError(
            f"paired scores need the same examples on both sides, "
            f"got {len(left)} and {len(right)} scores"
        )
    keep = ~np.isnan(left) & ~np.isnan(right)
    return left[keep], right[keep]


def _mean_interval(
    values: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    if len(values) < 2 or np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_ci(
    values: Scores,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """The mean with a percentile-bootstrap confidence interval (seeded)."""
    array = _array(values, "scores")
    if not len(array):
        raise EvaluatorError("a confidence interval needs at least one score, got none")
    low, high = _mean_interval(array, resamples, confidence, seed)
    return Interval(
        mean=float(array.mean()), low=low, high=high, n=len(array), confidence=confidence
    )


def paired_test(
    a: Scores,
    b: Scores,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PairedComparison:
    """B against A on the same examples (`a[i]` and `b[i]` score example i)."""
    left, right = _paired(a, b)
    if not len(left):
        raise EvaluatorError("a paired test needs at least one example scored on both sides")
    differences = right - left
    low, high = _mean_interval(differences, resamples, confidence, seed)
    if np.all(differences == 0):
        p_value = 1.0
    else:
        p_value = float(stats.wilcoxon(differences).pvalue)
    return PairedComparison(
        mean_difference=float(differences.mean()),
        low=low,
        high=high,
        p_value=p_value,
        n=len(differences),
        confidence=confidence,
    )


def spearman(a: Scores, b: Scores) -> Correlation:
    """Spearman's rho between two per-example scores, e.g. the judge's and an exact scorer's."""
    left, right = _paired(a, b)
    if len(left) < 3 or np.all(left == left[0]) or np.all(right == right[0]):
        return Correlation(rho=None, p_value=None, n=len(left))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        result = stats.spearmanr(left, right)
    return Correlation(rho=float(result.statistic), p_value=float(result.pvalue), n=len(left))
