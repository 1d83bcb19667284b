"""The prompt chain on any LangChain chat model (OpenAI, Anthropic, Ollama, fine-tuned OpenAI...).

When the model supports structured output, the answer is requested as a pydantic list of
triples (tool calling; a JSON-schema `response_format` on an OpenAI-compatible server given by
`+base_url`); otherwise, or when that fails, the text answer goes through the parser. A chain
may instead send a `response_format` of its own (the bare triple-list schema for a fine-tuned
model served by vLLM, llama.cpp or `triplesmith serve`) and parse the text it constrains. Token
counts come from the model's usage metadata, per-triple confidences from log-probs when the
provider returns them (OpenAI does with `logprobs=True`).
"""

import json
import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables.config import get_executor_for_config
from pydantic import BaseModel, Field

from triplesmith.chains.base import ExtractionChain
from triplesmith.chains.confidence import span_confidences
from triplesmith.chains.extraction import Extraction
from triplesmith.chains.inputs import ChainInput
from triplesmith.chains.prompt import build_messages
from triplesmith.chains.shots import ShotSelector


class TripleItem(BaseModel):
    """One knowledge-graph triple."""

    s: str = Field(description="the subject: the main entity the statement is about")
    relation: str = Field(description="the relationship between the subject and the object")
    object: str = Field(description="the entity or concept the subject is related to")


class TripleList(BaseModel):
    """The triples stated by the sentence."""

    triples: list[TripleItem]


def message_text(message: Any) -> str:
    """The text of a chat answer (string content, or the text parts of a content list)."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in content
            if isinstance(part, str) or isinstance(part, dict)
        )
    return str(content)


def _logprobs(message: AIMessage) -> tuple[list[str], list[float]]:
    content = (message.response_metadata or {}).get("logprobs") or {}
    tokens = content.get("content") if isinstance(content, dict) else None
    if not tokens:
        return [], []
    return [t.get("token", "") for t in tokens], [float(t.get("logprob", 0.0)) for t in tokens]


class ChatChain(ExtractionChain):
    """Extraction with a chat model; `batch()` runs the requests concurrently."""

    def __init__(
        self,
        spec: str,
        model: BaseChatModel,
        shots: ShotSelector | None = None,
        structured: bool | None = None,
        model_name: str | None = None,
        max_concurrency: int = 4,
        structured_method: str | None = "function_calling",
        response_format: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.model: Any = (
            model if response_format is None else model.bind(response_format=response_format)
        )
        self.shots = shots
        self.model_name = model_name or getattr(model, "model_name", None) or type(model).__name__
        self.max_concurrency = max_concurrency
        self.structured_model = (
            self._structured(model, structured_method)
            if structured is not False and response_format is None
            else None
        )

    @staticmethod
    def _structured(model: BaseChatModel, method: str | None) -> Any:
        """The structured-output runnable; `method` None keeps the model's own default."""
        kwargs = {} if method is None else {"method": method}
        try:
            return model.with_structured_output(TripleList, include_raw=True, **kwargs)
        except (NotImplementedError, AttributeError, ValueError, TypeError):
            return None

    def messages(self, item: ChainInput) -> list[dict[str, str]]:
        shots = self.shots.for_sentence(item.sentence) if self.shots else []
        return build_messages(item.sentence, shots, repair=item.repair)

    def _extract_many(self, inputs: list[ChainInput]) -> list[Extraction]:
        runner = self.structured_model or self.model
        prompts = [self.messages(item) for item in inputs]
        started = time.perf_counter()

        def ask(messages: list[dict[str, str]]) -> Any:
            try:
                return runner.invoke(messages)
            except Exception as exc:  # recorded on this sentence's Extraction
                return exc

        with get_executor_for_config({"max_concurrency": self.max_concurrency}) as executor:
            answers = list(executor.map(ask, prompts))
        latency = (time.perf_counter() - started) / max(len(inputs), 1)
        return [
            self._extraction(item, answer, latency)
            for item, answer in zip(inputs, answers, strict=True)
        ]

    def _extraction(self, item: ChainInput, answer: Any, latency: float) -> Extraction:
        if isinstance(answer, Exception):
            return self.failed(item.sentence, f"{type(answer).__name__}: {answer}")
        structured = False
        if isinstance(answer, dict) and "raw" in answer:
            message = answer["raw"]
            parsed = answer.get("parsed")
            if isinstance(parsed, TripleList):
                raw = json.dumps([t.model_dump() for t in parsed.triples], ensure_ascii=False)
                structured = True
            else:
                calls = getattr(message, "tool_calls", None) or []
                raw = json.dumps(calls[0]["args"]) if calls else message_text(message)
        else:
            message = answer
            raw = message_text(message)
        usage = getattr(message, "usage_metadata", None) or {}
        extraction = self.finish(
            item.sentence,
            raw,
            tokens_in=int(usage.get("input_tokens", 0)),
            tokens_out=int(usage.get("output_tokens", 0)),
            latency_s=latency,
            structured=structured,
        )
        pieces, logprobs = _logprobs(message) if isinstance(message, AIMessage) else ([], [])
        if logprobs and "".join(pieces) == raw:
            extraction.confidences = span_confidences(raw, pieces, logprobs, extraction.triples)
        return extraction
