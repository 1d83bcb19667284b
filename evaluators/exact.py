"""The benchmark-exact scorers, CaRB and BenchIE, as evaluators.

Per example they give precision, recall and F1 (keys `carb_example_*`, `benchie_example_*`) for
per-example statistics; over a dataset (`summarise`) they give the benchmark's own figures
(`carb_auc`, `carb_f1`, `carb_precision`, `carb_recall`; `benchie_precision`, `benchie_recall`,
`benchie_f1`), which are not the means of the per-example ones.
"""

from collections.abc import Sequence

from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.base import Evaluator, Feedback, RunOutputs, read_prediction
from triplesmith.evaluators.benchie import (
    BenchieSentence,
    benchie_example_scores,
    score_benchie,
)
from triplesmith.evaluators.carb import carb_example_scores, score_carb_examples
from triplesmith.schema import Example, Triple

_PRF = ("precision", "recall", "f1")


def scored_triples(outputs: RunOutputs) -> list[tuple[Triple, float]]:
    """(triple, confidence) pairs; every confidence is 1.0 when the chain gave none."""
    prediction = read_prediction(outputs)
    confidences = prediction.confidences
    if confidences is None:
        confidences = [1.0] * len(prediction.triples)
    return list(zip(prediction.triples, confidences, strict=True))


def _check_aligned(outputs_list: Sequence[RunOutputs], examples: Sequence[Example]) -> None:
    if len(outputs_list) != len(examples):
        raise EvaluatorError(
            f"summarise needs one outputs per example, got {len(outputs_list)} outputs "
            f"for {len(examples)} examples"
        )


class CarbEvaluator(Evaluator):
    """CaRB: per-example P/R/F1 at the lowest threshold, the AUC and best-F1 over a dataset.

    The gold is `meta["carb_tuples"]` when present (n-ary), else the example's triples.
    """

    def __init__(self, binary: bool = False) -> None:
        self.binary = binary
        self.name = "carb-binary" if binary else "carb"
        self.keys = tuple(f"carb_example_{m}" for m in _PRF)
        self.summary_keys = ("carb_auc", "carb_f1", "carb_precision", "carb_recall")

    def evaluate(self, outputs: RunOutputs, example: Example) -> list[Feedback]:
        scores = carb_example_scores(example, scored_triples(outputs), binary=self.binary)
        comment = f"{scores['n_predicted']} predicted, {scores['n_gold']} gold tuples"
        return [Feedback(key=f"carb_example_{m}", score=scores[m], comment=comment) for m in _PRF]

    def summarise(
        self, outputs_list: Sequence[RunOutputs], examples: Sequence[Example]
    ) -> list[Feedback]:
        _check_aligned(outputs_list, examples)
        predictions = {
            example.id: scored_triples(outputs)
            for outputs, example in zip(outputs_list, examples, strict=True)
        }
        score = score_carb_examples(examples, predictions, binary=self.binary)
        comment = f"best-F1 threshold {score.threshold}, {len(examples)} examples"
        return [
            Feedback(key="carb_auc", score=score.auc, comment=comment),
            Feedback(key="carb_f1", score=score.f1, comment=comment),
            Feedback(key="carb_precision", score=score.precision, comment=comment),
            Feedback(key="carb_recall", score=score.recall, comment=comment),
        ]


def _clusters(example: Example) -> list[list[tuple[str, str, str]]] | None:
    raw = example.meta.get("benchie_clusters")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(
        isinstance(cluster, list) and all(_is_raw_triple(t) for t in cluster) for cluster in raw
    ):
        raise EvaluatorError(
            f"example {example.id}: meta['benchie_clusters'] must be a list of clusters, each a "
            f"list of [subject, relation, object] strings, got {raw!r:.80}"
        )
    return [[(t[0], t[1], t[2]) for t in cluster] for cluster in raw]


def _is_raw_triple(item: object) -> bool:
    return (
        isinstance(item, list | tuple)
        and len(item) == 3
        and all(isinstance(slot, str) for slot in item)
    )


class BenchieEvaluator(Evaluator):
    """BenchIE on the examples that carry `meta["benchie_clusters"]`; others get no feedback."""

    name = "benchie"
    keys = tuple(f"benchie_example_{m}" for m in _PRF)
    summary_keys = tuple(f"benchie_{m}" for m in _PRF)

    def evaluate(self, outputs: RunOutputs, example: Example) -> list[Feedback]:
        clusters = _clusters(example)
        if clusters is None:
            return []
        triples = read_prediction(outputs).triples
        scores = benchie_example_scores(clusters, triples)
        comment = (
            f"{scores['correct']} of {scores['clusters']} fact synsets found, "
            f"{scores['false_positives']} of {scores['extractions']} extractions wrong"
        )
        return [
            Feedback(key=f"benchie_example_{m}", score=scores[m], comment=comment) for m in _PRF
        ]

    def summarise(
        self, outputs_list: Sequence[RunOutputs], examples: Sequence[Example]
    ) -> list[Feedback]:
        _check_aligned(outputs_list, examples)
        gold: dict[int, BenchieSentence] = {}
        predicted: dict[int, list[tuple[str, str, str]]] = {}
        for outputs, example in zip(outputs_list, examples, strict=True):
            clusters = _clusters(example)
            if clusters is None:
                continue
            index = len(gold)
            gold[index] = BenchieSentence(
                sent_id=index, sentence=example.sentence, clusters=clusters
            )
            predicted[index] = [t.as_tuple() for t in read_prediction(outputs).triples]
        if not gold:
            return []
        score = score_benchie(gold, predicted)
        comment = (
            f"{score.correct} of {score.clusters} fact synsets found over {len(gold)} sentences, "
            f"{score.false_positives} of {score.extractions} extractions wrong"
        )
        return [
            Feedback(key=f"benchie_{m}", score=getattr(score, m), comment=comment) for m in _PRF
        ]
