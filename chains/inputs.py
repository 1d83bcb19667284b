"""What every chain accepts: `{"sentence": str}` (or a bare string), optionally a repair turn."""

from typing import Any

from pydantic import BaseModel

from triplesmith.errors import ChainError
from triplesmith.text import collapse_whitespace


class ChainInput(BaseModel):
    """A validated chain input. `repair` is `{"output": bad answer, "error": parser's message}`."""

    sentence: str
    repair: dict[str, str] | None = None


def coerce_input(value: Any) -> ChainInput:
    """Validate a chain input before any model call; a clear ChainError names what is wrong."""
    if isinstance(value, ChainInput):
        return value
    if isinstance(value, str):
        value = {"sentence": value}
    if not isinstance(value, dict):
        raise ChainError(
            f'chain input must be {{"sentence": "..."}} or a string, got {type(value).__name__}'
        )
    sentence = value.get("sentence")
    if not isinstance(sentence, str):
        raise ChainError(f'chain input needs "sentence" as a string, got {sentence!r}')
    sentence = collapse_whitespace(sentence)
    if not sentence:
        raise ChainError(
            "the sentence is empty or whitespace only; give a sentence to extract from"
        )
    repair = value.get("repair")
    if repair is not None and not (
        isinstance(repair, dict)
        and isinstance(repair.get("output"), str)
        and isinstance(repair.get("error"), str)
    ):
        raise ChainError('chain input "repair" must be {"output": str, "error": str}')
    return ChainInput(sentence=sentence, repair=repair)
