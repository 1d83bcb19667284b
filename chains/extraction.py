"""What a chain returns for one sentence: the raw answer, the triples, and how it went."""

from typing import Any

from pydantic import BaseModel, Field

from triplesmith.chains.parser import ParseDiagnostics
from triplesmith.chains.prompt import PROMPT_ID
from triplesmith.schema import Triple


class Extraction(BaseModel):
    """One chain's answer for one sentence.

    `confidences[i]` is `triples[i]`'s confidence from its tokens' log-probs (their mean over its
    span by default; `+confidence=`, chains/confidence.py) when the model gave log-probs (the `hf`
    chain does), else None. `error` is set, and `triples` empty, when
    the model call failed; a batch keeps going past such a sentence. `finish_reason` says why a
    local model's answer ended: `stop` (by itself), `length` (the token budget), `repeat` (a
    loop rule cut it at a repeated item); None when the model does not say.
    """

    chain: str
    sentence: str
    raw: str = ""
    triples: list[Triple] = Field(default_factory=list)
    confidences: list[float] | None = None
    diagnostics: ParseDiagnostics = Field(default_factory=ParseDiagnostics)
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    prompt_id: str = PROMPT_ID
    model: str | None = None
    adapter_hash: str | None = None
    structured: bool = False
    finish_reason: str | None = None

    @property
    def parsed(self) -> bool:
        """True when the answer parsed fully (no error, nothing unparseable left)."""
        return self.error is None and self.diagnostics.complete

    def to_output(self) -> dict[str, Any]:
        """The JSON form used as a run's outputs (LangSmith, the store, the graph's state)."""
        return self.model_dump(mode="json")
