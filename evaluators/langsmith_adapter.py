"""Our evaluators in the forms `langsmith.evaluate` accepts.

- `row_evaluator(e)`: `(run, example) -> {"results": [...]}`, for `evaluators=`; it reads the
  example's metadata, where `carb_tuples` and `benchie_clusters` travel (see
  `triplesmith/data/langsmith_datasets.py`).
- `reference_evaluator(e)`: `(inputs, outputs, reference_outputs) -> {"results": [...]}`, the
  openevals-style form; benchmark metadata, if any, is read from `reference_outputs`.
- `summary_evaluator(e)`: `(runs, examples) -> {"results": [...]}`, for `summary_evaluators=`.

A result is `{"key", "score", "comment"}`; an evaluator error becomes `{"key", "score": None,
"comment": <error>, "extra": {"error": True}}`, the shape LangSmith itself gives a failed
evaluator. A failed run (the target raised, or its outputs carry `error`) gets no results: it
is an error, not a score. None of these raise.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langsmith import schemas

from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.base import (
    Evaluator,
    Feedback,
    error_feedback,
    safe_evaluate,
    safe_summarise,
)
from triplesmith.schema import Example, Triple

RowEvaluator = Callable[[schemas.Run, schemas.Example], dict[str, Any]]
ReferenceEvaluator = Callable[..., dict[str, Any]]
SummaryEvaluator = Callable[[Sequence[schemas.Run], Sequence[schemas.Example]], dict[str, Any]]

# Metadata keys our dataset push adds that are not part of `Example.meta`.
_OWN_KEYS = ("triplesmith_id", "source")


def example_from_fields(
    example_id: str,
    inputs: Mapping[str, Any] | None,
    outputs: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    source: str = "langsmith",
) -> Example:
    """Our `Example` from LangSmith's parts: `inputs.sentence`, `outputs.triples`, metadata."""
    inputs, outputs, metadata = inputs or {}, outputs or {}, metadata or {}
    sentence = inputs.get("sentence")
    if not isinstance(sentence, str) or not sentence.strip():
        raise EvaluatorError(f"LangSmith example {example_id}: inputs.sentence must be a sentence")
    triples = outputs.get("triples", [])
    if not isinstance(triples, list):
        raise EvaluatorError(
            f"LangSmith example {example_id}: outputs.triples must be a list of "
            f'{{"s", "relation", "object"}}, got {type(triples).__name__}'
        )
    try:
        gold = [Triple.model_validate(t) for t in triples]
    except ValueError as exc:
        raise EvaluatorError(
            f"LangSmith example {example_id}: outputs.triples holds a bad triple: {exc}"
        ) from None
    return Example(
        id=str(metadata.get("triplesmith_id", example_id)),
        sentence=sentence,
        triples=gold,
        source=str(metadata.get("source", source)),
        meta={k: v for k, v in metadata.items() if k not in _OWN_KEYS},
    )


def example_from_langsmith(example: schemas.Example) -> Example:
    """Our `Example` from a LangSmith example pushed by `push_dataset`."""
    return example_from_fields(str(example.id), example.inputs, example.outputs, example.metadata)


def outputs_from_run(run: schemas.Run) -> dict[str, Any]:
    """A run's outputs, with the run's error when it failed (a failed run is never scored);
    a run without outputs reads as a failed extraction."""
    if not run.outputs:
        return {"triples": [], "error": run.error or "the run returned no outputs"}
    outputs = dict(run.outputs)
    if run.error and not outputs.get("error"):
        outputs["error"] = run.error
    return outputs


def feedback_to_result(feedback: Feedback, evaluator: str | None = None) -> dict[str, Any]:
    """One LangSmith evaluation result from one `Feedback`; `evaluator` (the identity of the
    evaluator that gave it) travels in the result's metadata."""
    result: dict[str, Any] = {"key": feedback.key, "score": feedback.score}
    if feedback.error is not None:
        result.update(score=None, comment=feedback.error, extra={"error": True})
    else:
        result["comment"] = feedback.comment
    if evaluator is not None:
        result["metadata"] = {EVALUATOR_KEY: evaluator}
    return result


EVALUATOR_KEY = "triplesmith_evaluator"
"""The metadata key of an evaluation result that names the evaluator that gave it."""


def _results(feedback: Sequence[Feedback], evaluator: Evaluator | None = None) -> dict[str, Any]:
    identity = evaluator.identity if evaluator is not None else None
    return {"results": [feedback_to_result(f, identity) for f in feedback]}


def row_evaluator(evaluator: Evaluator) -> RowEvaluator:
    """`evaluator` as a `(run, example)` LangSmith row evaluator."""

    def evaluate_row(run: schemas.Run, example: schemas.Example) -> dict[str, Any]:
        try:
            ours = example_from_langsmith(example)
        except Exception as exc:
            return _results(error_feedback(evaluator.keys, exc), evaluator)
        return _results(safe_evaluate(evaluator, outputs_from_run(run), ours), evaluator)

    evaluate_row.__name__ = evaluator.name
    return evaluate_row


def reference_evaluator(evaluator: Evaluator) -> ReferenceEvaluator:
    """`evaluator` as an `(inputs, outputs, reference_outputs)` LangSmith row evaluator.

    This form sees no example metadata: `reference_outputs` keys besides `triples`
    (`carb_tuples`, `benchie_clusters`) become the example's meta.
    """

    def evaluate_reference(
        inputs: dict[str, Any], outputs: dict[str, Any], reference_outputs: dict[str, Any]
    ) -> dict[str, Any]:
        reference = reference_outputs or {}
        meta = {k: v for k, v in reference.items() if k != "triples"}
        try:
            ours = example_from_fields("reference", inputs, reference, meta)
        except Exception as exc:
            return _results(error_feedback(evaluator.keys, exc))
        return _results(safe_evaluate(evaluator, outputs or {}, ours))

    evaluate_reference.__name__ = evaluator.name
    return evaluate_reference


def summary_evaluator(evaluator: Evaluator) -> SummaryEvaluator:
    """`evaluator`'s corpus-level figures as a `(runs, examples)` LangSmith summary evaluator."""

    def summarise_runs(
        runs: Sequence[schemas.Run], examples: Sequence[schemas.Example]
    ) -> dict[str, Any]:
        try:
            ours = [example_from_langsmith(e) for e in examples]
        except Exception as exc:
            return _results(error_feedback(evaluator.summary_keys, exc))
        return _results(safe_summarise(evaluator, [outputs_from_run(r) for r in runs], ours))

    summarise_runs.__name__ = f"{evaluator.name}_summary"
    return summarise_runs


def langsmith_evaluators(
    evaluators: Sequence[Evaluator],
) -> tuple[list[RowEvaluator], list[SummaryEvaluator]]:
    """`(evaluators=, summary_evaluators=)` for `langsmith.evaluate`; evaluators without
    corpus-level figures get no summary evaluator."""
    rows = [row_evaluator(e) for e in evaluators]
    summaries = [summary_evaluator(e) for e in evaluators if e.summary_keys]
    return rows, summaries
