"""Triple precision, recall and F1 with normalised fuzzy matching of each field.

Fields are normalised with `normalise_sentence` (case, Unicode form, punctuation, whitespace).
A predicted triple matches a gold triple when each of its three fields has a rapidfuzz `ratio`
of at least the threshold (`Settings.triple_match_threshold`, 0–100) with the gold field;
the exact variant asks for identical normalised fields. Matching is one-to-one: the most pairs
possible, ties broken by the highest total similarity.

Precision over an answer with no triples is undefined: such an example gets no precision
feedback, so a chain's mean precision is over the answers that had triples (an empty answer
counted as precise would make a chain that answers nothing look precise). With no gold, recall is
1.0. F1 is 1.0 when both sides are empty and 0.0 when exactly one is. A failed run (the model
call raised) is not an empty answer: it is never scored (`read_prediction` refuses it, and the
harness skips it).
"""

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel
from rapidfuzz import fuzz
from rapidfuzz.process import cdist
from scipy.optimize import linear_sum_assignment

from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.base import Evaluator, Feedback, RunOutputs, read_prediction
from triplesmith.schema import Example, Triple
from triplesmith.settings import get_settings
from triplesmith.text import normalise_sentence

EXACT = 100.0


class TripleScores(BaseModel):
    """Precision, recall and F1 with the counts they come from; `precision` is None when
    nothing was predicted."""

    precision: float | None
    recall: float
    f1: float
    matched: int
    predicted: int
    gold: int


def _fields(triples: Sequence[Triple]) -> list[list[str]]:
    """Normalised subjects, relations and objects, one list per field."""
    normalised = [[normalise_sentence(field) for field in t.as_tuple()] for t in triples]
    return [[row[i] for row in normalised] for i in range(3)]


def match_triples(
    predicted: Sequence[Triple], gold: Sequence[Triple], threshold: float
) -> list[tuple[int, int]]:
    """One-to-one matches as (predicted index, gold index) pairs."""
    if not 0 <= threshold <= EXACT:
        raise EvaluatorError(f"triple match threshold must be within 0–100, got {threshold}")
    if not predicted or not gold:
        return []
    similarity = np.stack(
        [
            cdist(p, g, scorer=fuzz.ratio, dtype=np.float64)
            for p, g in zip(_fields(predicted), _fields(gold), strict=True)
        ]
    )
    if threshold >= EXACT:
        eligible = (similarity == EXACT).all(axis=0)
    else:
        eligible = (similarity >= threshold).all(axis=0)
    # Cardinality first: a pair is worth 1 plus a share of its similarity too small for any
    # number of better-matching pairs to outweigh one more pair.
    mean_similarity = similarity.mean(axis=0) / EXACT
    weight = np.where(eligible, 1.0 + mean_similarity / (min(eligible.shape) + 1), 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if eligible[r, c]]


def scores_from_counts(matched: int, predicted: int, gold: int) -> TripleScores:
    """Precision, recall and F1 under the empty-side conventions of this module."""
    precision = matched / predicted if predicted else None
    recall = matched / gold if gold else 1.0
    if precision is None:
        f1 = 0.0 if gold else 1.0
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TripleScores(
        precision=precision, recall=recall, f1=f1, matched=matched, predicted=predicted, gold=gold
    )


def triple_scores(
    predicted: Sequence[Triple], gold: Sequence[Triple], threshold: float | None = None
) -> TripleScores:
    """Per-example triple scores; `threshold` defaults to `Settings.triple_match_threshold`."""
    if threshold is None:
        threshold = get_settings().triple_match_threshold
    matches = match_triples(predicted, gold, threshold)
    return scores_from_counts(len(matches), len(predicted), len(gold))


class TripleF1Evaluator(Evaluator):
    """`triple-f1` (fuzzy) or `triple-f1-exact`: per-example P/R/F1, micro-averaged in summary."""

    def __init__(self, threshold: float | None = None, exact: bool = False) -> None:
        if exact:
            threshold = EXACT
        elif threshold is None:
            threshold = get_settings().triple_match_threshold
        if not 0 <= threshold <= EXACT:
            raise EvaluatorError(f"triple match threshold must be within 0–100, got {threshold}")
        self.threshold = float(threshold)
        # Part of `identity`: answers scored when an empty answer's precision counted as 1.0
        # are scored again under this rule, not reused from a store.
        self.empty_precision = "undefined"
        self.name = "triple-f1-exact" if exact else "triple-f1"
        prefix = "triple_exact" if exact else "triple"
        self.keys = tuple(f"{prefix}_{m}" for m in ("precision", "recall", "f1"))
        self.summary_keys = tuple(f"{prefix}_micro_{m}" for m in ("precision", "recall", "f1"))

    def _scores(self, outputs: RunOutputs, example: Example) -> TripleScores:
        return triple_scores(read_prediction(outputs).triples, example.triples, self.threshold)

    def evaluate(self, outputs: RunOutputs, example: Example) -> list[Feedback]:
        return _feedback(self.keys, self._scores(outputs, example))

    def summarise(
        self, outputs_list: Sequence[RunOutputs], examples: Sequence[Example]
    ) -> list[Feedback]:
        per_example = [self._scores(o, e) for o, e in zip(outputs_list, examples, strict=True)]
        s = scores_from_counts(
            sum(x.matched for x in per_example),
            sum(x.predicted for x in per_example),
            sum(x.gold for x in per_example),
        )
        return _feedback(self.summary_keys, s)


def _feedback(keys: Sequence[str], s: TripleScores) -> list[Feedback]:
    """Feedback for (precision, recall, F1) keys; no precision feedback when it is undefined
    (left out, not an error: nothing was predicted, so there is nothing to be precise about)."""
    comment = f"{s.matched} matched of {s.predicted} predicted, {s.gold} gold"
    values = (s.precision, s.recall, s.f1)
    return [
        Feedback(key=key, score=value, comment=comment)
        for key, value in zip(keys, values, strict=True)
        if value is not None
    ]
