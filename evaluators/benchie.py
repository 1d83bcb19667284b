"""BenchIE's fact-synset scorer: an extraction is correct when it equals a triple of a gold cluster,
with any of that triple's `[optional]` tokens left out; reproduces BenchIE's published P/R/F1.

Counting follows BenchIE's reference code (gkiril/benchie, `src/scores.py`): a true positive is a
gold cluster matched by at least one extraction (a cluster counts once however many extractions
match it), a false positive an extraction that matches no cluster of its sentence, so
precision = matched clusters / (matched clusters + false positives) and recall = matched clusters /
all gold clusters. Extractions of sentences absent from the gold are left out of both, and counted.
"""

import functools
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from triplesmith.errors import EvaluatorError
from triplesmith.schema import Triple

RawTriple = tuple[str, str, str]

_SENTENCE_LINE = re.compile(r"^sent_id:(?P<id>[^\t]*)\t(?P<sentence>.*)$")
# BenchIE writes "1--> Cluster 2:"; one English header lacks the space ("78-->Cluster 6:").
_CLUSTER_LINE = re.compile(r"^\S+?\s*-->\s*Cluster\s+\d+\s*:$")
_ARROW = " --> "
_BRACKETS = re.compile(r"[\[\]]")
# BenchIE expands every combination (2**k forms for k optional units) without a limit; the most
# in its English gold is 10 units. Past 20 (a million forms) we refuse rather than hang.
_MAX_OPTIONAL_UNITS = 20


class BenchieSentence(BaseModel):
    """One gold sentence: its fact synsets (clusters) of raw triples, `[optional]` tokens kept."""

    sent_id: int
    sentence: str
    clusters: list[list[RawTriple]]


class BenchieScore(BaseModel):
    """Micro-averaged BenchIE scores with the counts they come from.

    `correct` is the number of matched clusters (BenchIE's true positives), `false_positives`
    the extractions matching no cluster, `extractions` the extractions scored (those of gold
    sentences), `clusters` all gold clusters; `unmatched_sentences` is the number of predicted
    sentence ids that are not in the gold, whose `ignored_extractions` are not scored.
    """

    precision: float
    recall: float
    f1: float
    correct: int
    false_positives: int
    extractions: int
    clusters: int
    unmatched_sentences: int = 0
    ignored_extractions: int = 0


def read_benchie_gold(path: str | Path) -> dict[int, BenchieSentence]:
    """Read a BenchIE gold file (`sent_id:N<TAB>sentence`, `N--> Cluster K:`, `s --> r --> o`)
    with the dataset reader (`triplesmith.data.benchie`: one reader per gold format), keyed by
    sent_id."""
    from triplesmith.data.benchie import read_benchie_gold as read_examples

    gold: dict[int, BenchieSentence] = {}
    for example in read_examples(Path(path)):
        sent_id = int(example.meta["benchie_sent_id"])
        clusters = [[tuple(triple) for triple in c] for c in example.meta["benchie_clusters"]]
        gold[sent_id] = BenchieSentence(
            sent_id=sent_id, sentence=example.sentence, clusters=clusters
        )
    return gold


def read_benchie_predictions(path: str | Path) -> dict[int, list[RawTriple]]:
    """Read system extractions, one `sent_id<TAB>subject<TAB>relation<TAB>object` a line."""
    path = Path(path)
    predicted: dict[int, list[RawTriple]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 4:
                raise EvaluatorError(
                    f"{path}:{number}: expected 4 tab-separated fields "
                    f"`sent_id<TAB>subject<TAB>relation<TAB>object`, got {len(fields)}"
                )
            try:
                sent_id = int(fields[0])
            except ValueError:
                raise EvaluatorError(
                    f"{path}:{number}: sent_id must be an integer, got {fields[0]!r}"
                ) from None
            triple = (fields[1].strip(), fields[2].strip(), fields[3].strip())
            predicted.setdefault(sent_id, []).append(triple)
    return predicted


def expand_optional_tokens(slot: str) -> frozenset[str]:
    """Every surface form of a gold slot: each `[optional]` unit kept or left out, brackets removed.

    Tokenisation follows BenchIE: the slot is split on single spaces; a token with `[` opens an
    optional unit that runs to the next token containing `]`; a token holding both brackets
    (`Crozier[,]`) is one optional unit as a whole; a stray `]` token or an unclosed `[` token is
    dropped. Forms are whitespace-stripped, as BenchIE compares them.
    """
    return _slot_forms(slot)


@functools.lru_cache(maxsize=65536)
def _slot_forms(slot: str) -> frozenset[str]:
    units = _slot_units(slot)
    optional = [index for index, unit in enumerate(units) if "[" in unit]
    if len(optional) > _MAX_OPTIONAL_UNITS:
        raise EvaluatorError(
            f"gold slot {slot[:60]!r} has {len(optional)} optional [units]; at most "
            f"{_MAX_OPTIONAL_UNITS} can be expanded, so split it into several gold triples"
        )
    forms = set()
    for dropped_count in range(len(optional) + 1):
        for dropped in itertools.combinations(optional, dropped_count):
            kept = " ".join(unit for index, unit in enumerate(units) if index not in dropped)
            forms.add(_BRACKETS.sub("", kept).strip())
    return frozenset(forms)


def _slot_units(slot: str) -> list[str]:
    tokens = slot.split(" ")
    units: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if "[" not in token:
            if "]" not in token:
                units.append(token)
            index += 1
        elif "]" in token:
            units.append(token)
            index += 1
        else:
            close = next((j for j in range(index + 1, len(tokens)) if "]" in tokens[j]), None)
            if close is None:
                index += 1
                continue
            units.append(" ".join(tokens[index : close + 1]))
            # BenchIE visits the closing token again: dropped unless it also opens a unit.
            index = close
    return units


def _as_raw(triple: Any) -> RawTriple:
    if isinstance(triple, Triple):
        return triple.as_tuple()
    if isinstance(triple, Mapping):
        triple = tuple(triple.get(key) for key in ("s", "relation", "object"))
    if (
        isinstance(triple, str)
        or len(triple) != 3
        or not all(isinstance(slot, str) for slot in triple)
    ):
        raise EvaluatorError(f"expected a (subject, relation, object) of strings, got {triple!r}")
    return (triple[0], triple[1], triple[2])


def triple_matches_cluster(
    triple: Sequence[str] | Triple, cluster: Iterable[Sequence[str]]
) -> bool:
    """Whether an extraction equals some surface form of some gold triple of `cluster`."""
    subject, relation, obj = (slot.strip() for slot in _as_raw(triple))
    for gold_triple in cluster:
        gold_subject, gold_relation, gold_object = _as_raw(gold_triple)
        if (
            subject in _slot_forms(gold_subject)
            and relation in _slot_forms(gold_relation)
            and obj in _slot_forms(gold_object)
        ):
            return True
    return False


def _count_sentence(
    clusters: Sequence[Iterable[Sequence[str]]], predicted: Iterable[Any]
) -> tuple[int, int, int]:
    """(matched clusters, false positives, extractions) for one sentence.

    Like BenchIE, an extraction credits the first cluster it matches. (BenchIE's index lookup
    compares unstripped strings and, when only a stripped form matches, credits the last cluster;
    that never happens on the shipped outputs, and this scorer credits the matching one.)
    """
    matched: set[int] = set()
    false_positives = extractions = 0
    for triple in predicted:
        extractions += 1
        hit = next((i for i, c in enumerate(clusters) if triple_matches_cluster(triple, c)), None)
        if hit is None:
            false_positives += 1
        else:
            matched.add(hit)
    return len(matched), false_positives, extractions


def _score(
    correct: int, false_positives: int, extractions: int, clusters: int, **extra: int
) -> BenchieScore:
    # BenchIE reports 0.0 where a denominator is zero.
    precision = correct / (correct + false_positives) if correct + false_positives else 0.0
    recall = correct / clusters if clusters else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BenchieScore(
        precision=precision,
        recall=recall,
        f1=f1,
        correct=correct,
        false_positives=false_positives,
        extractions=extractions,
        clusters=clusters,
        **extra,
    )


def score_benchie(
    gold: Mapping[int, BenchieSentence], predicted: Mapping[int, Sequence[Any]]
) -> BenchieScore:
    """Micro-averaged BenchIE precision, recall and F1 of `predicted` against `gold`."""
    correct = false_positives = extractions = 0
    for sent_id, sentence in gold.items():
        matched, wrong, scored = _count_sentence(sentence.clusters, predicted.get(sent_id, ()))
        correct += matched
        false_positives += wrong
        extractions += scored
    unknown = [sent_id for sent_id in predicted if sent_id not in gold]
    return _score(
        correct,
        false_positives,
        extractions,
        sum(len(sentence.clusters) for sentence in gold.values()),
        unmatched_sentences=len(unknown),
        ignored_extractions=sum(len(predicted[sent_id]) for sent_id in unknown),
    )


def benchie_example_scores(
    clusters: Sequence[Iterable[Sequence[str]]], predicted: Iterable[Any]
) -> dict[str, Any]:
    """BenchIE scores and counts for one sentence.

    `clusters` is a list of clusters of `[s, relation, object]` triples (the shape of
    `Example.meta["benchie_clusters"]`); `predicted` holds tuples, `Triple`s or
    `{"s", "relation", "object"}` dicts. Summing the counts over sentences gives `score_benchie`.
    """
    clusters = list(clusters)
    return _score(*_count_sentence(clusters, predicted), len(clusters)).model_dump()
