import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.statistics import bootstrap_ci, paired_test, spearman

SCORES = np.random.default_rng(7).uniform(0.2, 0.8, size=40).tolist()


def test_interval_contains_the_mean_and_is_reproducible():
    interval = bootstrap_ci(SCORES)
    assert interval.low < interval.mean < interval.high
    assert interval.mean == pytest.approx(np.mean(SCORES))
    assert interval.n == 40
    assert bootstrap_ci(SCORES) == interval  # seeded


def test_interval_width_matches_the_normal_approximation():
    # For 40 roughly uniform scores the percentile bootstrap is close to mean ± 1.96·SE.
    interval = bootstrap_ci(SCORES, resamples=4000)
    half_width = 1.96 * np.std(SCORES, ddof=1) / math.sqrt(len(SCORES))
    assert (interval.high - interval.low) / 2 == pytest.approx(half_width, rel=0.15)


def test_missing_scores_are_left_out():
    interval = bootstrap_ci([1.0, None, 0.0, float("nan"), 0.5])
    assert interval.n == 3
    assert interval.mean == 0.5


def test_constant_and_single_scores_give_a_point_interval():
    assert bootstrap_ci([0.5, 0.5, 0.5]).model_dump(include={"low", "high"}) == {
        "low": 0.5,
        "high": 0.5,
    }
    assert bootstrap_ci([0.25]).low == bootstrap_ci([0.25]).high == 0.25


def test_no_scores_is_a_clear_error():
    with pytest.raises(EvaluatorError, match="at least one score"):
        bootstrap_ci([None, None])


def test_identical_chains_are_not_different():
    result = paired_test(SCORES, SCORES)
    assert result.p_value == pytest.approx(1.0)
    assert result.mean_difference == 0.0
    assert result.low == result.high == 0.0


def test_clearly_better_chain_is_significant_with_a_positive_interval():
    rng = np.random.default_rng(1)
    better = [s + 0.1 + 0.02 * rng.standard_normal() for s in SCORES]
    result = paired_test(SCORES, better)
    assert result.p_value < 0.05
    assert 0 < result.low < result.mean_difference < result.high
    assert result.mean_difference == pytest.approx(np.mean(np.subtract(better, SCORES)))


def test_noise_alone_is_not_significant():
    rng = np.random.default_rng(2)
    noisy = [s + 0.05 * rng.standard_normal() for s in SCORES]
    result = paired_test(SCORES, noisy)
    assert result.p_value > 0.05
    assert result.low < 0 < result.high


def test_paired_test_drops_examples_missing_on_either_side():
    result = paired_test([0.1, None, 0.3, 0.4], [0.2, 0.5, None, 0.6])
    assert result.n == 2
    assert result.mean_difference == pytest.approx(0.15)


def test_paired_test_needs_the_same_examples():
    with pytest.raises(EvaluatorError, match="same examples"):
        paired_test([0.1, 0.2], [0.1])


def test_spearman_of_monotone_scores_is_one():
    judge = [0.1, 0.4, 0.35, 0.9, 0.7]
    exact = [j**2 for j in judge]
    correlation = spearman(judge, exact)
    assert correlation.rho == pytest.approx(1.0)
    assert correlation.n == 5
    assert spearman(judge, [-e for e in exact]).rho == pytest.approx(-1.0)


def test_spearman_is_undefined_for_constant_scores():
    correlation = spearman([0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4])
    assert correlation.rho is None and correlation.p_value is None


def test_scores_must_be_numbers():
    with pytest.raises(EvaluatorError, match="numbers or None"):
        bootstrap_ci([0.1, "high"])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_interval_always_brackets_the_mean(values):
    interval = bootstrap_ci(values, resamples=200)
    assert interval.low - 1e-9 <= interval.mean <= interval.high + 1e-9
    assert min(values) - 1e-9 <= interval.low and interval.high <= max(values) + 1e-9
