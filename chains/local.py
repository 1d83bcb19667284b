"""The prompt chain on a local transformers model: few-shot, zero-shot, or fine-tuned (`hf`).

All three hand their prompts to one engine per (model, adapter) (chains/engines/); they differ
in the few-shot examples put in the prompt (`hf` defaults to none, as the reference did after
fine-tuning) and in their own decoding options, which travel with every call.
"""

from typing import Any

from triplesmith.chains.base import ExtractionChain
from triplesmith.chains.confidence import span_confidences
from triplesmith.chains.engines.base import Engine, Generation, GenerationOptions
from triplesmith.chains.extraction import Extraction
from triplesmith.chains.inputs import ChainInput
from triplesmith.chains.prompt import build_messages
from triplesmith.chains.shots import ShotSelector


class LocalChain(ExtractionChain):
    """Extraction with a local causal LM: a `batch()` is one batched `generate` per chunk."""

    def __init__(
        self,
        spec: str,
        engine: Engine,
        shots: ShotSelector | None = None,
        options: GenerationOptions = GenerationOptions(),
    ) -> None:
        self.spec = spec
        self.engine = engine
        self.shots = shots
        self.options = options
        self.model_name = engine.model_name
        self.adapter_hash = engine.adapter_hash

    def metadata(self) -> dict[str, Any]:
        """The base metadata plus the decoding controls, which change the results too (and the
        engine's CPU precision when it is not fp32: chains/engines/cpu_precision.py)."""
        facts = {**super().metadata(), "decoding": self.options.decoding()}
        precision = getattr(self.engine, "cpu_precision", None)
        if precision is not None:
            facts["cpu_precision"] = precision
        return facts

    def cancel(self) -> None:
        self.engine.cancel()

    def resume(self) -> None:
        self.engine.resume()

    def messages(self, item: ChainInput) -> list[dict[str, str]]:
        shots = self.shots.for_sentence(item.sentence) if self.shots else []
        return build_messages(item.sentence, shots, repair=item.repair)

    def _extract_many(self, inputs: list[ChainInput]) -> list[Extraction]:
        prompts = [self.messages(item) for item in inputs]
        lengths = [self.engine.count_tokens(item.sentence) for item in inputs]
        if len(inputs) == 1:
            # A single call joins whatever else is in flight (graph branches, evaluate workers).
            future = self.engine.submit(prompts[0], lengths[0], self.options)
            try:
                results: list[Generation | Exception] = [future.result()]
            except Exception as exc:
                results = [exc]
        else:
            results = self.engine.generate(prompts, lengths, self.options)
        return [
            self._extraction(item, result) for item, result in zip(inputs, results, strict=True)
        ]

    def _extraction(self, item: ChainInput, result: Generation | Exception) -> Extraction:
        if isinstance(result, Exception):
            return self.failed(item.sentence, str(result))
        extraction = self.finish(
            item.sentence,
            result.text,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            latency_s=result.latency_s,
            finish_reason=result.finish_reason,
        )
        extraction.confidences = span_confidences(
            result.text,
            result.pieces,
            result.logprobs,
            extraction.triples,
            self.options.confidence,  # type: ignore[arg-type]
        )
        return extraction
