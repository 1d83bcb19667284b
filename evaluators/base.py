"""What every evaluator shares: the feedback it returns, the run outputs it reads, its interface.

An evaluator scores one run's outputs against one example (`evaluate`, per example) and, when it
has corpus-level figures, the whole dataset at once (`summarise`). `safe_evaluate` and
`safe_summarise` turn an evaluator that raises into error feedback, so one bad example never
stops a run.

A failed run (its model call raised: `error` is set) is not an answer: it is never scored.
`safe_evaluate` gives it no feedback, `safe_summarise` leaves it out of the corpus figures, and
`read_prediction` refuses it, so an evaluator called directly cannot score it either.
"""

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from triplesmith.chains.extraction import Extraction
from triplesmith.errors import EvaluatorError
from triplesmith.schema import Example, Triple

logger = logging.getLogger(__name__)

RunOutputs = Extraction | Mapping[str, Any]
"""A run's outputs: an `Extraction`, or its JSON dict (`Extraction.to_output()`), optionally
with `"tags": [{"name", "evidence", "span"}, ...]` added by the graph's triage node."""


class Feedback(BaseModel):
    """One metric for one example (or, from `summarise`, for a whole dataset).

    `score` is a finite float, or None when the evaluator failed; then `error` says why.
    """

    model_config = ConfigDict(frozen=True)

    key: str
    score: float | None = None
    comment: str | None = None
    error: str | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value:
            raise ValueError("feedback key must be a non-empty string")
        return value

    @field_validator("score")
    @classmethod
    def _score(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"score must be a finite number, got {value}")
        return value


class FailedRunError(EvaluatorError):
    """The run failed (its model call raised), so it has no answer to score."""


class Prediction(BaseModel):
    """The part of a successful run's outputs that evaluators read.

    `complete` is True when the answer parsed fully; `tags` is None when the outputs carry no
    `tags` entry (no triage ran), else the tag names.
    """

    triples: list[Triple]
    confidences: list[float] | None = None
    complete: bool = False
    tags: list[str] | None = None


def run_error(outputs: Any) -> str | None:
    """The error of a failed run (an `Extraction` or its JSON dict with `error` set), else None."""
    if isinstance(outputs, Extraction):
        return outputs.error
    if isinstance(outputs, Mapping) and outputs.get("error") not in (None, ""):
        return str(outputs["error"])
    return None


def read_prediction(outputs: RunOutputs) -> Prediction:
    """Read an `Extraction` or its JSON dict; a failed run raises `FailedRunError`, a malformed
    dict `EvaluatorError`."""
    error = run_error(outputs)
    if error is not None:
        raise FailedRunError(f"the run failed, so it has no score: {error}")
    if isinstance(outputs, Extraction):
        outputs = outputs.model_dump(include={"triples", "confidences", "diagnostics", "error"})
    if not isinstance(outputs, Mapping):
        raise EvaluatorError(
            f"run outputs must be an Extraction or its JSON dict, got {type(outputs).__name__}"
        )
    triples = _read_triples(outputs.get("triples"))
    confidences = outputs.get("confidences")
    if confidences is not None and (
        not isinstance(confidences, list) or len(confidences) != len(triples)
    ):
        raise EvaluatorError(
            f"outputs.confidences must be null or a list of {len(triples)} numbers "
            f"(one per triple), got {confidences!r:.80}"
        )
    diagnostics = outputs.get("diagnostics")
    complete = isinstance(diagnostics, Mapping) and diagnostics.get("complete") is True
    try:
        return Prediction(
            triples=triples,
            confidences=confidences,
            complete=complete,
            tags=_read_tags(outputs.get("tags")),
        )
    except ValidationError as exc:
        raise EvaluatorError(
            f"outputs.confidences must be numbers: {exc.errors()[0]['msg']}"
        ) from exc


def _read_triples(raw: Any) -> list[Triple]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise EvaluatorError(
            f'outputs.triples must be a list of {{"s", "relation", "object"}}, '
            f"got {type(raw).__name__}"
        )
    triples = []
    for index, item in enumerate(raw):
        try:
            triples.append(item if isinstance(item, Triple) else Triple.model_validate(item))
        except ValidationError as exc:
            raise EvaluatorError(
                f'outputs.triples[{index}] must be {{"s", "relation", "object"}} with non-empty '
                f"strings, got {item!r:.80}"
            ) from exc
    return triples


def _read_tags(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise EvaluatorError(f"outputs.tags must be a list of tags, got {type(raw).__name__}")
    names = []
    for index, tag in enumerate(raw):
        name = tag if isinstance(tag, str) else _field(tag, "name")
        if not isinstance(name, str) or not name:
            raise EvaluatorError(
                f'outputs.tags[{index}] must be a tag name or {{"name", "evidence", "span"}}, '
                f"got {tag!r:.80}"
            )
        names.append(name)
    return names


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


class Evaluator(ABC):
    """A scorer of run outputs against examples.

    `keys` are the feedback keys `evaluate` emits (error feedback uses them too);
    `summary_keys` those `summarise` emits, empty when it has no corpus-level figures.
    """

    name: str
    keys: tuple[str, ...]
    summary_keys: tuple[str, ...] = ()

    @abstractmethod
    def evaluate(self, outputs: RunOutputs, example: Example) -> list[Feedback]:
        """Feedback for one example's outputs."""

    def summarise(
        self, outputs_list: Sequence[RunOutputs], examples: Sequence[Example]
    ) -> list[Feedback]:
        """Corpus-level feedback over a dataset; `outputs_list[i]` belongs to `examples[i]`."""
        return []

    @property
    def identity(self) -> str:
        """The name and the parameters that decide the scores (`triple-f1(threshold=85.0)`):
        stored scores are reused only for the same identity, so a changed threshold re-scores."""
        params = [
            f"{name}={_plain(value)}"
            for name, value in sorted(vars(self).items())
            if not name.startswith("_") and name not in ("name", "keys", "summary_keys")
        ]
        return f"{self.name}({', '.join(params)})" if params else self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _plain(value: Any) -> str:
    """A parameter as text: plain values as they are, a model by its name (never its keys)."""
    if value is None or isinstance(value, str | int | float | bool):
        return repr(value)
    if isinstance(value, list | tuple | frozenset | set):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return "[" + ", ".join(_plain(v) for v in items) + "]"
    for attribute in ("model_name", "model", "model_id"):
        name = getattr(value, attribute, None)
        if isinstance(name, str):
            return f"{type(value).__name__}:{name}"
    return type(value).__name__


def error_feedback(keys: Sequence[str], exc: BaseException) -> list[Feedback]:
    """One error feedback per key, naming the exception."""
    message = f"{type(exc).__name__}: {exc}"
    return [Feedback(key=key, error=message) for key in keys]


def safe_evaluate(evaluator: Evaluator, outputs: RunOutputs, example: Example) -> list[Feedback]:
    """`evaluator.evaluate`, with an exception turned into error feedback for each of its keys;
    no feedback at all for a failed run (it is counted as an error, never scored)."""
    if run_error(outputs) is not None:
        return []
    try:
        feedback = evaluator.evaluate(outputs, example)
        _check_feedback(evaluator, feedback)
        return feedback
    except Exception as exc:  # one example's failure is recorded, never fatal
        logger.warning("evaluator %s failed on example %s: %s", evaluator.name, example.id, exc)
        return error_feedback(evaluator.keys or (evaluator.name,), exc)


def safe_summarise(
    evaluator: Evaluator, outputs_list: Sequence[RunOutputs], examples: Sequence[Example]
) -> list[Feedback]:
    """`evaluator.summarise` over the runs that answered (failed runs are left out; none left,
    no feedback), with an exception turned into error feedback for its summary keys."""
    try:
        if len(outputs_list) != len(examples):
            raise EvaluatorError(
                f"summarise needs one outputs per example, got {len(outputs_list)} outputs "
                f"for {len(examples)} examples"
            )
        answered = [(o, e) for o, e in zip(outputs_list, examples, strict=True) if not run_error(o)]
        if not answered:
            return []
        feedback = evaluator.summarise([o for o, _ in answered], [e for _, e in answered])
        _check_feedback(evaluator, feedback)
        return feedback
    except Exception as exc:
        logger.warning("evaluator %s failed to summarise: %s", evaluator.name, exc)
        return error_feedback(evaluator.summary_keys or (evaluator.name,), exc)


def _check_feedback(evaluator: Evaluator, feedback: Any) -> None:
    if not isinstance(feedback, list) or not all(isinstance(f, Feedback) for f in feedback):
        raise EvaluatorError(
            f"evaluator {evaluator.name!r} must return a list of Feedback, "
            f"got {type(feedback).__name__}"
        )


def evaluate_all(
    evaluators: Sequence[Evaluator], outputs: RunOutputs, example: Example
) -> list[Feedback]:
    """Every evaluator's feedback for one example, failures recorded as error feedback."""
    return [f for evaluator in evaluators for f in safe_evaluate(evaluator, outputs, example)]


def summarise_all(
    evaluators: Sequence[Evaluator], outputs_list: Sequence[RunOutputs], examples: Sequence[Example]
) -> list[Feedback]:
    """Every evaluator's corpus-level feedback, failures recorded as error feedback."""
    return [
        f
        for evaluator in evaluators
        if evaluator.summary_keys
        for f in safe_summarise(evaluator, outputs_list, examples)
    ]
