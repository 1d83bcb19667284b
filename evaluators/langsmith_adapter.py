"""Our evaluators in the forms `langsmith.evaluate` accepts.

- `reference_evaluator(e)`: `(inputs, outputs, reference_outputs) -> {"results": [...]}`, the
  documented row form, for `evaluators=`. Benchmark metadata (`carb_tuples`,
  `benchie_clusters`) is read from `reference_outputs` besides `triples`, where `push_dataset`
  puts it.
- `metadata_evaluator(e)`: the same with `example` added, for examples that keep benchmark
  metadata in their metadata (pushed by earlier versions, or made outside triplesmith), which
  the documented form cannot see. `row_evaluators` picks this form only for such data.
- `summary_evaluator(e)`: `(inputs, outputs, reference_outputs)` over lists, for
  `summary_evaluators=` (`examples` added in the same case as above).

A result is `{"key", "score", "comment"}`; an evaluator error becomes `{"key", "score": None,
"comment": <error>, "extra": {"error": True}}`, the shape LangSmith itself gives a failed
evaluator. A failed run gets no results: it is an error, not a score. LangSmith hands these
forms `run.outputs or {}`, so empty outputs (the target raised) read as a failed run, and a run
whose target caught its error carries it in `outputs.error`. None of these raise.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langsmith import schemas

from triplesmith.data.langsmith_datasets import (
    LANGSMITH_KEYS,
    OWN_KEYS,
    example_from_fields,
)
from triplesmith.evaluators.base import (
    Evaluator,
    Feedback,
    RunOutputs,
    error_feedback,
    run_error,
    safe_evaluate,
    safe_summarise,
)
from triplesmith.schema import Example

RowEvaluator = Callable[..., dict[str, Any]]
SummaryEvaluator = Callable[..., dict[str, Any]]

EVALUATOR_KEY = "triplesmith_evaluator"
"""The metadata key of an evaluation result that names the evaluator that gave it."""


def example_from_langsmith(example: schemas.Example) -> Example:
    """Our `Example` from a LangSmith example (its metadata read as well)."""
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


def _answer(outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Outputs as LangSmith hands them to an evaluator; none at all means the target raised."""
    return dict(outputs) if outputs else {"triples": [], "error": "the run returned no outputs"}


def _reference_example(
    position: int,
    inputs: Mapping[str, Any] | None,
    reference_outputs: Mapping[str, Any] | None,
    known: Mapping[str, Example],
) -> Example:
    """Our `Example` from what the documented form sees. It carries no example id: an example
    of the run (`known`, by sentence) keeps its id and source; else it is named by position."""
    example = example_from_fields(f"example-{position}", inputs, reference_outputs, {})
    same = known.get(example.sentence)
    if same is None:
        return example
    return example.model_copy(update={"id": same.id, "source": same.source})


def keeps_metadata(examples: Sequence[schemas.Example]) -> bool:
    """True when some example keeps benchmark metadata outside its outputs, so evaluators
    need the `example` to see it."""
    skipped = (*OWN_KEYS, *LANGSMITH_KEYS)
    return any(set(e.metadata or {}) - set(skipped) for e in examples)


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


def _results(feedback: Sequence[Feedback], evaluator: Evaluator | None = None) -> dict[str, Any]:
    identity = evaluator.identity if evaluator is not None else None
    return {"results": [feedback_to_result(f, identity) for f in feedback]}


def _score_row(
    evaluator: Evaluator,
    inputs: Mapping[str, Any] | None,
    outputs: Mapping[str, Any] | None,
    reference_outputs: Mapping[str, Any] | None,
    example: schemas.Example | None = None,
    known: Mapping[str, Example] | None = None,
) -> dict[str, Any]:
    try:
        if example is not None:
            ours = example_from_langsmith(example)
        else:
            ours = _reference_example(0, inputs, reference_outputs, known or {})
    except Exception as exc:
        return _results(error_feedback(evaluator.keys or (evaluator.name,), exc), evaluator)
    return _results(safe_evaluate(evaluator, _answer(outputs), ours), evaluator)


def reference_evaluator(evaluator: Evaluator, known: Sequence[Example] = ()) -> RowEvaluator:
    """`evaluator` as an `(inputs, outputs, reference_outputs)` LangSmith row evaluator;
    `known`: the examples being run, whose ids the evaluator sees (found by sentence)."""
    by_sentence = {e.sentence: e for e in known}

    def evaluate_reference(
        inputs: dict[str, Any], outputs: dict[str, Any], reference_outputs: dict[str, Any]
    ) -> dict[str, Any]:
        return _score_row(evaluator, inputs, outputs, reference_outputs, known=by_sentence)

    evaluate_reference.__name__ = evaluator.name
    return evaluate_reference


def metadata_evaluator(evaluator: Evaluator) -> RowEvaluator:
    """`evaluator` as an `(inputs, outputs, reference_outputs, example)` row evaluator.

    LangSmith's documented form hands an evaluator no example metadata; datasets pushed by
    earlier versions of triplesmith, and ones made elsewhere, keep `carb_tuples` and
    `benchie_clusters` there, so for them the evaluator also takes the `example` (a form
    `langsmith.evaluate` supports) and reads its metadata as well as its outputs.
    """

    def evaluate_with_example(
        inputs: dict[str, Any],
        outputs: dict[str, Any],
        reference_outputs: dict[str, Any],
        example: schemas.Example,
    ) -> dict[str, Any]:
        return _score_row(evaluator, inputs, outputs, reference_outputs, example)

    evaluate_with_example.__name__ = evaluator.name
    return evaluate_with_example


def summary_evaluator(
    evaluator: Evaluator,
    *,
    earlier: Sequence[tuple[RunOutputs, Example]] = (),
    complete_at: int | None = None,
    with_examples: bool = False,
    known: Sequence[Example] = (),
) -> SummaryEvaluator:
    """`evaluator`'s corpus-level figures as a LangSmith summary evaluator.

    earlier: answers of the same experiment made by earlier runs (a resumed experiment), which
        the corpus figures cover too.
    complete_at: when given, figures are given only once that many answers are there (earlier
        and this run's, failed runs left out): a corpus figure over part of the corpus would
        read as the experiment's.
    with_examples: take `examples` as well, for data that keeps metadata there (see
        `metadata_evaluator`).
    known: the examples being run, whose ids the evaluator sees (see `reference_evaluator`).
    """
    by_sentence = {e.sentence: e for e in known}

    def summarise(
        outputs: Sequence[Mapping[str, Any]],
        reference_outputs: Sequence[Mapping[str, Any]],
        inputs: Sequence[Mapping[str, Any]],
        examples: Sequence[schemas.Example] | None,
    ) -> dict[str, Any]:
        try:
            if examples is not None:
                ours = [example_from_langsmith(e) for e in examples]
            else:
                ours = [
                    _reference_example(n, i, r, by_sentence)
                    for n, (i, r) in enumerate(zip(inputs, reference_outputs, strict=True))
                ]
        except Exception as exc:
            return _results(error_feedback(evaluator.summary_keys, exc))
        answers = [_answer(o) for o in outputs]
        everything = [o for o, _ in earlier] + answers, [e for _, e in earlier] + ours
        if complete_at is not None:
            answered = sum(run_error(o) is None for o in everything[0])
            if answered < complete_at:
                return {"results": []}
        return _results(safe_summarise(evaluator, *everything))

    if with_examples:

        def summarise_examples(
            inputs: list[dict[str, Any]],
            outputs: list[dict[str, Any]],
            reference_outputs: list[dict[str, Any]],
            examples: list[schemas.Example],
        ) -> dict[str, Any]:
            return summarise(outputs, reference_outputs, inputs, examples)

        function: SummaryEvaluator = summarise_examples
    else:

        def summarise_references(
            inputs: list[dict[str, Any]],
            outputs: list[dict[str, Any]],
            reference_outputs: list[dict[str, Any]],
        ) -> dict[str, Any]:
            return summarise(outputs, reference_outputs, inputs, None)

        function = summarise_references
    function.__name__ = f"{evaluator.name}_summary"
    return function


def langsmith_evaluators(
    evaluators: Sequence[Evaluator],
    examples: Sequence[schemas.Example] = (),
    *,
    earlier: Sequence[tuple[RunOutputs, Example]] = (),
    complete_at: int | None = None,
    known: Sequence[Example] = (),
) -> tuple[list[RowEvaluator], list[SummaryEvaluator]]:
    """`(evaluators=, summary_evaluators=)` for `langsmith.evaluate` over `examples`: the
    `(inputs, outputs, reference_outputs)` form, with `example` added only when some example
    keeps metadata outside its outputs; evaluators without corpus-level figures get no summary
    evaluator. `earlier` and `complete_at` are `summary_evaluator`'s, `known` the examples
    being run (their ids reach the evaluators)."""
    with_example = keeps_metadata(examples)
    if with_example:
        rows = [metadata_evaluator(e) for e in evaluators]
    else:
        rows = [reference_evaluator(e, known) for e in evaluators]
    summaries = [
        summary_evaluator(
            e, earlier=earlier, complete_at=complete_at, with_examples=with_example, known=known
        )
        for e in evaluators
        if e.summary_keys
    ]
    return rows, summaries
