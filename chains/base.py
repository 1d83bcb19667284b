"""The Runnable every extraction chain is: `{"sentence"}` in, `Extraction` out, batch-aware.

Subclasses implement `_extract_many`, which gets every validated input of a `batch()` at once
(so a local model can generate them in one batched call). Invalid inputs and model failures
become Extractions with `error` set inside a batch; `invoke()` raises a ChainError for an
invalid input, before any model call.
"""

import asyncio
from abc import abstractmethod
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig

from triplesmith.chains.extraction import Extraction
from triplesmith.chains.inputs import ChainInput, coerce_input
from triplesmith.chains.parser import parse_triples
from triplesmith.errors import ChainError


class ExtractionChain(Runnable[dict[str, Any], Extraction]):
    """Base of the few-shot, zero-shot, hf and openai-ft chains."""

    spec: str = ""
    model_name: str | None = None
    adapter_hash: str | None = None

    @abstractmethod
    def _extract_many(self, inputs: list[ChainInput]) -> list[Extraction]: ...

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return name or f"extract[{self.spec}]" + (suffix or "")

    def metadata(self) -> dict[str, Any]:
        """What an experiment records about this chain."""
        from triplesmith.chains.prompt import PROMPT_ID

        facts = {
            "chain": self.spec,
            "model": self.model_name,
            "adapter_hash": self.adapter_hash,
            "prompt_id": PROMPT_ID,
        }
        method = self._adapter_method()
        if method is not None:  # names the chain in reports even once the adapter is gone
            facts["adapter_method"] = method
        return facts

    def _adapter_method(self) -> str | None:
        """The training method in the manifest of the chain's `+adapter=` folder, if any."""
        if self.adapter_hash is None:
            return None
        import json
        from pathlib import Path

        from triplesmith.chains.spec import parse_spec

        try:  # the manifest's one field, read as JSON: chains sit below training's layer
            adapter = parse_spec(self.spec).options.get("adapter")
            manifest = json.loads((Path(str(adapter)) / "manifest.json").read_text())
            return str(manifest["method"])
        except Exception:  # a hand-made spec, an adapter without a manifest, a Hub id
            return None

    def cancel(self) -> None:
        """Abandon the work in flight as soon as possible (an interrupted run). Default: no-op."""

    def resume(self) -> None:
        """Accept work again after `cancel()`."""

    # --- Runnable --------------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Extraction:
        coerce_input(input)  # bad input: a ChainError before any model call
        return self._call_with_config(lambda x: self._run([x])[0], input, config)

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Extraction:
        return await asyncio.get_running_loop().run_in_executor(None, self.invoke, input, config)

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Extraction]:
        if not inputs:
            return []
        return self._batch_with_config(self._run, list(inputs), config)

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Extraction]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self.batch(inputs, config))

    # --- shared plumbing -------------------------------------------------------------------

    def _run(self, raw_inputs: list[Any]) -> list[Extraction]:
        slots: list[Extraction | None] = [None] * len(raw_inputs)
        valid: list[tuple[int, ChainInput]] = []
        for i, raw in enumerate(raw_inputs):
            try:
                valid.append((i, coerce_input(raw)))
            except ChainError as exc:
                sentence = raw.get("sentence") if isinstance(raw, dict) else raw
                slots[i] = self.failed(str(sentence or ""), str(exc))
        if valid:
            results = self._extract_many([item for _, item in valid])
            for (i, _), extraction in zip(valid, results, strict=True):
                slots[i] = extraction
        return [s for s in slots if s is not None]

    def failed(self, sentence: str, error: str) -> Extraction:
        return Extraction(
            chain=self.spec,
            sentence=sentence,
            error=error,
            model=self.model_name,
            adapter_hash=self.adapter_hash,
        )

    def finish(self, sentence: str, raw: str, **fields: Any) -> Extraction:
        """Parse a raw answer into an Extraction (the parser's diagnostics kept)."""
        parsed = parse_triples(raw)
        return Extraction(
            chain=self.spec,
            sentence=sentence,
            raw=raw,
            triples=parsed.triples,
            diagnostics=parsed.diagnostics,
            model=self.model_name,
            adapter_hash=self.adapter_hash,
            **fields,
        )
