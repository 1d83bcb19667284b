"""CaRB scoring: token-level tuple matching, the precision-recall curve over confidence, its AUC.

A re-implementation of CaRB's reference scorer (dair-iitd/CaRB `carb.py` with its default
`binary_linient_tuple_match`) that gives its figures on its shipped system outputs.
"""

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.carb_formats import (
    CONTEXT_MARK,
    CarbTuple,
    PredictionFormat,
    read_carb_gold,
    read_carb_predictions,
)
from triplesmith.schema import Example, Triple

__all__ = [
    "CarbScore",
    "CarbTuple",
    "PredictionFormat",
    "carb_example_scores",
    "carb_sentence_key",
    "read_carb_gold",
    "read_carb_predictions",
    "score_carb",
    "score_carb_examples",
]

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_PTB_ESCAPES = (
    ("(", "-LRB-"),
    (")", "-RRB-"),
    ("[", "-LSB-"),
    ("]", "-RSB-"),
    ("{", "-LCB-"),
    ("}", "-RCB-"),
)
_SAID_VERBS = ("said", "told", "added", "adds", "says")
_FORMS_OF_BE = frozenset({"be", "is", "am", "are", "was", "were", "been", "being"})
_PREPOSITIONS = frozenset(
    "above across against along among around at before behind below beneath beside between by "
    "for from in into near of off on to toward under upon with within".split()
)


class CarbScore(BaseModel):
    """CaRB's figures: area under the PR curve and the best-F1 point on it.

    `curve` holds one (precision, recall) point per distinct confidence, lowest confidence
    first, then the (1.0, 0.0) point the AUC adds; `threshold` is the confidence of the best-F1
    point. `unmatched_sentences` counts predicted sentences absent from the gold (not scored).
    Precision is at most 1; recall, F1 and AUC can exceed 1 as in the reference, whose "be"
    bonus (see `_match_args`) can count a gold form of "be" twice.
    """

    auc: float
    precision: float
    recall: float
    f1: float
    threshold: float | None
    unmatched_sentences: int = 0
    curve: list[tuple[float, float]]


def carb_sentence_key(sentence: str) -> str:
    """CaRB's sentence key: no spaces, PTB bracket escapes undone, ASCII punctuation removed."""
    key = sentence.replace(" ", "")
    for bracket, escape in _PTB_ESCAPES:
        key = key.replace(escape, bracket)
    return _PUNCTUATION.sub("", key)


@dataclass(frozen=True, slots=True)
class _View:
    """A tuple as the matcher sees it: relation tokens and at most two argument token bags
    (arg1, and every later argument joined), plus the reversed bags for "said" relations."""

    relation: str
    relation_bag: Counter[str]
    relation_len: int
    args: tuple[tuple[Counter[str], int], ...]
    reversed_args: tuple[tuple[Counter[str], int], ...]
    confidence: float


def _bag(tokens: list[str]) -> tuple[Counter[str], int]:
    return Counter(tokens), len(tokens)


def _view(extraction: CarbTuple) -> _View:
    tokens = [arg.split() for arg in extraction.args]
    if len(tokens) >= 2:
        rest = [word for arg in tokens[1:] for word in arg]
        args = (_bag(tokens[0]), _bag(rest))
        reversed_args = (args[1], args[0])
    else:
        args = reversed_args = tuple(_bag(arg) for arg in tokens)
    words = extraction.relation.split()
    return _View(
        relation=extraction.relation,
        relation_bag=Counter(words),
        relation_len=len(words),
        args=args,
        reversed_args=reversed_args,
        confidence=extraction.confidence,
    )


def _overlap(gold: Counter[str], predicted: Counter[str]) -> int:
    """Matched tokens: each gold token consumes one equal predicted token (case-sensitive)."""
    return sum(min(count, predicted[word]) for word, count in gold.items() if word in predicted)


def _match_args(
    gold: _View, predicted: _View, args: tuple[tuple[Counter[str], int], ...]
) -> tuple[float, float]:
    matched = _overlap(gold.relation_bag, predicted.relation_bag)
    # A predicted "be" left over after the token match matches any form of "be" in the gold,
    # even one already matched: the reference does not use the gold word up, so a pair's recall
    # (and CaRB's recall, F1, AUC) can exceed 1, e.g. gold "is" against predicted "is be".
    spare_be = predicted.relation_bag["be"] - min(
        gold.relation_bag["be"], predicted.relation_bag["be"]
    )
    if spare_be > 0 and not _FORMS_OF_BE.isdisjoint(gold.relation_bag):
        matched += 1
    if matched == 0:
        return (0.0, 0.0)
    precision_num, precision_den = matched, predicted.relation_len
    recall_num, recall_den = matched, gold.relation_len
    for i, (gold_bag, gold_len) in enumerate(gold.args):
        if i >= len(args):
            return (0.0, 0.0)
        predicted_bag, predicted_len = args[i]
        common = _overlap(gold_bag, predicted_bag)
        precision_num += common
        precision_den += predicted_len
        recall_num += common
        recall_den += gold_len
    return (
        precision_num / precision_den if precision_den else 0.0,
        recall_num / recall_den if recall_den else 0.0,
    )


def _match(gold: _View, predicted: _View) -> tuple[float, float]:
    """(precision, recall) of a predicted tuple against a gold one; (0, 0) if the relations
    share no token or the prediction lacks an argument the gold has. For "said"-type gold
    relations the prediction's arguments may also be read in reverse order."""
    straight = _match_args(gold, predicted, predicted.args)
    if not any(verb in gold.relation for verb in _SAID_VERBS):
        return straight
    return max(straight, _match_args(gold, predicted, predicted.reversed_args))


def _greedy_precision(scores: list[list[tuple[float, float]]], active: list[int]) -> float:
    """Sum of precisions of a one-to-one matching built by repeatedly taking the best remaining
    (gold, predicted) pair; ties go to the earlier gold tuple, then the earlier prediction."""
    pairs = sorted((-scores[i][j][0], i, j) for i in range(len(scores)) for j in active)
    rows: set[int] = set()
    cols: set[int] = set()
    total = 0.0
    for negative_precision, i, j in pairs:
        if i in rows or j in cols:
            continue
        rows.add(i)
        cols.add(j)
        total += -negative_precision
        if len(rows) == len(scores) or len(cols) == len(active):
            break
    return total


def _sentence_points(
    gold: list[_View], predicted: list[_View]
) -> Iterable[tuple[float, float, int, float]]:
    """For each distinct confidence c in the sentence: (c, precision numerator, number of
    predictions with confidence >= c, recall numerator) over those predictions."""
    scores = [[_match(g, p) for p in predicted] for g in gold]
    confidences = [p.confidence for p in predicted]
    for threshold in sorted(set(confidences)):
        active = [j for j, c in enumerate(confidences) if c >= threshold]
        recall = 0.0
        for row in scores:
            recall += max(row[j][1] for j in active)
        yield threshold, _greedy_precision(scores, active), len(active), recall


def _by_key(tuples: Mapping[str, Sequence[CarbTuple]]) -> dict[str, list[CarbTuple]]:
    # Sentences equal under the key are merged (the reference would keep only the last one).
    keyed: dict[str, list[CarbTuple]] = {}
    for sentence, extractions in tuples.items():
        keyed.setdefault(carb_sentence_key(sentence), []).extend(extractions)
    return keyed


def _binarise(extractions: list[CarbTuple]) -> list[CarbTuple]:
    """CaRB's `--binary` rewriting, quirk included.

    An n-ary (a1, r, a2, ..., an) is meant to become (a1, r, a2) and (a1, "r a2 [prep]", ak)
    for each k > 2; the reference mutates one shared copy inside its loop, so it yields n-1
    copies of the last rewrite only. Its --binary figures measure exactly that, so do we.
    """
    binary: list[CarbTuple] = []
    for extraction in extractions:
        args = extraction.args
        if len(args) <= 2:
            binary.append(extraction)
            continue
        words = args[-1].split()
        relation = f"{extraction.relation} {args[1]}"
        if words and words[0].lower() in _PREPOSITIONS:
            relation += f" {words[0]}"
            words = words[1:]
        last = extraction.model_copy(
            update={"relation": relation, "args": (args[0], " ".join(words))}
        )
        binary.extend([last] * (len(args) - 1))
    return binary


def _auc(recall: list[float], precision: list[float]) -> float:
    """Trapezoidal area under precision over recall, as `sklearn.metrics.auc` computes it."""
    x, y = np.asarray(recall), np.asarray(precision)
    steps = np.diff(x)
    direction = -1.0 if np.any(steps < 0) else 1.0
    if direction < 0 and not np.all(steps <= 0):
        raise EvaluatorError("CaRB recall is not monotone in the confidence; this is a scorer bug")
    return float(direction * np.trapezoid(y, x))


def score_carb(
    gold: Mapping[str, Sequence[CarbTuple]],
    predicted: Mapping[str, Sequence[CarbTuple]],
    binary: bool = False,
) -> CarbScore:
    """Score `predicted` against `gold` (both keyed by sentence) as CaRB's reference scorer does.

    Each distinct predicted confidence is a threshold; at each, precision sums the greedy
    one-to-one matches over predictions at or above it, recall sums each gold tuple's best
    match over all gold tuples. `binary=True` is the reference's `--binary` option.
    """
    gold_keyed, predicted_keyed = _by_key(gold), _by_key(predicted)
    if binary:
        gold_keyed = {key: _binarise(tuples) for key, tuples in gold_keyed.items()}
        predicted_keyed = {key: _binarise(tuples) for key, tuples in predicted_keyed.items()}
    unmatched = sum(1 for key in predicted_keyed if key not in gold_keyed)
    thresholds = sorted({t.confidence for tuples in predicted_keyed.values() for t in tuples})
    if not thresholds:
        return CarbScore(
            auc=0.0,
            precision=0.0,
            recall=0.0,
            f1=0.0,
            threshold=None,
            unmatched_sentences=unmatched,
            curve=[],
        )
    position = {confidence: i for i, confidence in enumerate(thresholds)}
    size = len(thresholds)
    precision_num, precision_den = np.zeros(size), np.zeros(size)
    recall_num, recall_den = np.zeros(size), np.zeros(size)
    for key, gold_tuples in gold_keyed.items():
        gold_views = [_view(t) for t in gold_tuples]
        predicted_views = [_view(t) for t in predicted_keyed.get(key, [])]
        start = 0
        # A sentence's figures at threshold t are those at its lowest confidence >= t.
        for confidence, prec, count, rec in _sentence_points(gold_views, predicted_views):
            stop = position[confidence] + 1
            precision_num[start:stop] += prec
            precision_den[start:stop] += count
            recall_num[start:stop] += rec
            start = stop
        recall_den += len(gold_views)

    precision = [a / b if b > 0 else 1.0 for a, b in zip(precision_num, precision_den, strict=True)]
    recall = [a / b if b > 0 else 0.0 for a, b in zip(recall_num, recall_den, strict=True)]
    f1 = [
        2 * p * r / (p + r) if p + r > 0 else math.nan
        for p, r in zip(precision, recall, strict=True)
    ]
    best = None if all(math.isnan(v) for v in f1) else int(np.nanargmax(f1))
    curve = [(float(p), float(r)) for p, r in zip(precision, recall, strict=True)]
    return CarbScore(
        auc=_auc(recall + [0.0], precision + [1.0]),
        precision=float(precision[best]) if best is not None else 0.0,
        recall=float(recall[best]) if best is not None else 0.0,
        f1=float(f1[best]) if best is not None else 0.0,
        threshold=thresholds[best] if best is not None else None,
        unmatched_sentences=unmatched,
        curve=[*curve, (1.0, 0.0)],
    )


def _gold_tuples(example: Example) -> list[CarbTuple]:
    """The example's CaRB gold: `meta["carb_tuples"]` (n-ary) if present, else its triples."""
    raw = example.meta.get("carb_tuples")
    if raw is None:
        return [CarbTuple(relation=t.relation, args=(t.s, t.object)) for t in example.triples]
    tuples = []
    for item in raw if isinstance(raw, list) else [raw]:
        relation = item.get("relation") if isinstance(item, dict) else None
        args = item.get("args") if isinstance(item, dict) else None
        if (
            not isinstance(relation, str)
            or not isinstance(args, list | tuple)
            or not all(isinstance(arg, str) for arg in args)
        ):
            raise EvaluatorError(
                f"example {example.id}: meta['carb_tuples'] must be a list of "
                f'{{"relation": str, "args": [str, ...]}}, got {item!r}'
            )
        kept = tuple(arg for arg in args if CONTEXT_MARK not in arg)
        tuples.append(CarbTuple(relation=relation, args=kept))
    return tuples


def _predicted_tuples(
    example_id: str, predicted: Sequence[tuple[Triple, float]]
) -> list[CarbTuple]:
    tuples = []
    for triple, confidence in predicted:
        if not isinstance(confidence, int | float) or not math.isfinite(confidence):
            raise EvaluatorError(
                f"example {example_id}: confidence must be a finite number, got {confidence!r}"
            )
        tuples.append(
            CarbTuple(
                relation=triple.relation, args=(triple.s, triple.object), confidence=confidence
            )
        )
    return tuples


def score_carb_examples(
    examples: Iterable[Example],
    predictions: Mapping[str, Sequence[tuple[Triple, float]]],
    binary: bool = False,
) -> CarbScore:
    """CaRB over a dataset: `predictions` maps example id to (triple, confidence) pairs.

    Examples without predictions count against recall; ids that are not examples are
    counted in `unmatched_sentences` and not scored.
    """
    gold: dict[str, list[CarbTuple]] = {}
    sentence_of: dict[str, str] = {}
    for example in examples:
        gold.setdefault(example.sentence, []).extend(_gold_tuples(example))
        sentence_of[example.id] = example.sentence
    predicted: dict[str, list[CarbTuple]] = {}
    unknown = 0
    for example_id, pairs in predictions.items():
        if example_id not in sentence_of:
            unknown += 1
            continue
        predicted.setdefault(sentence_of[example_id], []).extend(
            _predicted_tuples(example_id, pairs)
        )
    score = score_carb(gold, predicted, binary=binary)
    return score.model_copy(update={"unmatched_sentences": score.unmatched_sentences + unknown})


def carb_example_scores(
    example: Example, predicted: Sequence[tuple[Triple, float]], binary: bool = False
) -> dict[str, Any]:
    """One example's CaRB precision, recall and F1 with every prediction counted (the lowest
    threshold), for per-example statistics. With no predictions precision is 1.0, as in CaRB."""
    gold_tuples = _gold_tuples(example)
    predicted_tuples = _predicted_tuples(example.id, predicted)
    if binary:
        gold_tuples, predicted_tuples = _binarise(gold_tuples), _binarise(predicted_tuples)
    gold_views = [_view(t) for t in gold_tuples]
    predicted_views = [_view(t.model_copy(update={"confidence": 0.0})) for t in predicted_tuples]
    # With every confidence set to 0 there is one point: all predictions count.
    points = list(_sentence_points(gold_views, predicted_views))
    precision_num = points[0][1] if points else 0.0
    recall_num = points[0][3] if points else 0.0
    precision = precision_num / len(predicted_views) if predicted_views else 1.0
    recall = recall_num / len(gold_views) if gold_views else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n_gold": len(gold_views),
        "n_predicted": len(predicted_views),
    }
