"""OpenAI fine-tuning data: export examples as chat JSONL and validate such a file line by line.

The format is the reference workflow's: one `{"messages": [user, assistant]}` object a line, the
user turn `USER_TEMPLATE` and the assistant turn the gold triples as compact JSON, optionally
preceded by the system prompt.
"""

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from triplesmith.chains.prompt import answer_text, build_messages
from triplesmith.data.jsonl import describe_validation_error, write_lines_atomic
from triplesmith.data.lines import read_lines
from triplesmith.errors import DatasetError
from triplesmith.schema import Example

# OpenAI refuses a training file with fewer examples; it suggests starting with 50.
OPENAI_MIN_EXAMPLES = 10
MAX_ERRORS_SHOWN = 10


class ChatMessage(BaseModel):
    """One message of a chat fine-tuning example (the keys OpenAI accepts for text chats)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None
    weight: Literal[0, 1] | None = None

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be non-empty text")
        return value


class ChatExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage]


class AnswerTriple(BaseModel):
    """A triple in an assistant answer: exactly the shared keys, non-empty strings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    s: str = Field(pattern=r"\S")
    relation: str = Field(pattern=r"\S")
    object: str = Field(pattern=r"\S")


class Answer(BaseModel):
    triples: list[AnswerTriple]


class OpenAIFileReport(BaseModel):
    """What `validate_openai_file` found in a valid file."""

    path: str
    examples: int
    with_system: int
    triples: int
    warnings: list[str] = Field(default_factory=list)


def export_openai(
    examples: Sequence[Example], n: int | None, seed: int, system: bool = False
) -> list[dict[str, Any]]:
    """A seeded draw of `n` examples with gold triples (all of them when `n` is None), as chat records."""
    if not examples:
        raise DatasetError("the dataset is empty; nothing to export")
    usable = [e for e in examples if e.triples]
    if n is None:
        n = len(usable)
    if n < 1:
        raise DatasetError(f"--n must be at least 1, got {n}")
    if n > len(usable):
        raise DatasetError(
            f"asked for {n} examples but the dataset has only {len(usable)} with gold triples "
            f"(of {len(examples)}); use --n {len(usable)} or a larger dataset"
        )
    chosen = random.Random(seed).sample(usable, n)
    return [
        {
            "messages": [
                *build_messages(example.sentence, system=system),
                {"role": "assistant", "content": answer_text(example.triples)},
            ]
        }
        for example in chosen
    ]


def write_openai_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object a line, atomically (a temporary file renamed into place)."""
    write_lines_atomic(path, (json.dumps(record, ensure_ascii=False) for record in records))


def _check_line(line: str) -> tuple[ChatExample, int]:
    """The parsed example and its triple count, or ValueError saying what is wrong."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f'expected a JSON object with "messages", got {type(row).__name__}')
    try:
        example = ChatExample.model_validate(row)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None
    roles = [m.role for m in example.messages]
    if not roles:
        raise ValueError('"messages" is empty; expected a user message and the assistant answer')
    if "system" in roles[1:]:
        raise ValueError(f"a system message may only come first, got roles {roles}")
    if roles[-1] != "assistant":
        raise ValueError(f"the last message must be the assistant's answer, got roles {roles}")
    if "user" not in roles:
        raise ValueError(f"no user message, got roles {roles}")
    triples = 0
    for index, message in enumerate(example.messages):
        if message.role != "assistant":
            continue
        try:
            answer = Answer.model_validate({"triples": json.loads(message.content)})
        except json.JSONDecodeError as exc:
            problem = f"invalid JSON: {exc.msg}"
        except ValidationError as exc:
            problem = describe_validation_error(exc).split(", got")[0]
        else:
            triples += len(answer.triples)
            continue
        raise ValueError(
            f"messages.{index}: the assistant answer must be a JSON list of "
            f'{{"s", "relation", "object"}} strings ({problem}), got {message.content[:60]!r}'
        )
    return example, triples


def validate_openai_file(path: Path, require_minimum: bool = False) -> OpenAIFileReport:
    """Check every line of a chat fine-tuning file; DatasetError lists the bad lines as file:line.

    Fewer than OpenAI's minimum of 10 examples is a warning, or an error with `require_minimum`
    (OpenAI would fail the job at its file validation step).
    """
    path = Path(path)
    errors: list[str] = []
    examples = with_system = triples = 0
    blank: list[int] = []
    for number, line in read_lines(path):
        if not line.strip():
            blank.append(number)
            continue
        if blank:
            errors.extend(f"{path}:{b}: blank line inside the file" for b in blank)
            blank = []
        try:
            example, count = _check_line(line)
        except ValueError as exc:
            errors.append(f"{path}:{number}: {exc}")
            continue
        examples += 1
        triples += count
        with_system += example.messages[0].role == "system"
    if errors:
        shown = "\n".join(errors[:MAX_ERRORS_SHOWN])
        more = len(errors) - MAX_ERRORS_SHOWN
        tail = f"\n... and {more} more" if more > 0 else ""
        raise DatasetError(
            f"{path}: {len(errors)} invalid line(s) in the OpenAI fine-tuning file:\n{shown}{tail}\n"
            "fix them or re-export with: triplesmith openai export"
        )
    if examples == 0:
        raise DatasetError(f"{path}: no examples; export some with: triplesmith openai export")
    warnings = []
    if examples < OPENAI_MIN_EXAMPLES:
        message = (
            f"{path}: {examples} example(s); OpenAI fine-tuning needs at least "
            f"{OPENAI_MIN_EXAMPLES} (50 to 100 is where it starts to help)"
        )
        if require_minimum:
            raise DatasetError(message + "; export more with: triplesmith openai export --n 50")
        warnings.append(message)
    return OpenAIFileReport(
        path=str(path),
        examples=examples,
        with_system=with_system,
        triples=triples,
        warnings=warnings,
    )
