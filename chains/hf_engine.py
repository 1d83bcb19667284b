"""A local causal LM that generates for many prompts at once: batched, greedy, with log-probs.

langchain-huggingface's pipeline wrappers return text only; the CaRB scorer's PR curve needs
per-token log-probs, and batching needs left-padded `generate` calls over many prompts, so
this engine drives `model.generate` itself. `ChatHuggingFace` over the same model and tokenizer
is available from `as_chat_model()` for LangChain composition.

Concurrent `submit()` calls (graph branches, `langsmith.evaluate` workers, `langgraph dev`
requests) are coalesced by a worker thread into one batched `generate`, so per-example calls
do not defeat batching. Engines are cached per (model, adapter): loaded once per process.
"""

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triplesmith.errors import ChainError, ModelError
from triplesmith.models import model_hash, resolve
from triplesmith.training.manifest import adapter_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding controls. `max_new_tokens=None` sizes the budget to each sentence."""

    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None

    def budget(self, sentence_tokens: int) -> int:
        """New-token budget: room for several triples of a sentence this long, bounded."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return max(96, min(512, 32 + 5 * sentence_tokens))


@dataclass
class Generation:
    """One prompt's continuation: its text, the decoded token pieces and their log-probs."""

    text: str
    pieces: list[str]
    logprobs: list[float]
    tokens_in: int
    tokens_out: int
    latency_s: float


@dataclass
class _Request:
    messages: list[dict[str, str]]
    sentence_tokens: int
    options: GenerationOptions
    future: Future = field(default_factory=Future)


class HFEngine:
    """A loaded model + tokenizer that turns chat-message lists into batched greedy generations."""

    def __init__(
        self,
        model: str = "smollm2",
        adapter: str | None = None,
        batch_size: int = 16,
        window_s: float = 0.02,
    ) -> None:
        from triplesmith.models import load

        self.model_name = model
        self.adapter = adapter
        self.batch_size = batch_size
        self.window_s = window_s
        self.model, self.tokenizer = load(model)
        self.model_hash = model_hash(resolve(model))
        self.adapter_hash: str | None = None
        if adapter is not None:
            self.model = self._attach_adapter(adapter)
            self.adapter_hash = adapter_hash(adapter)
        self.tokenizer.padding_side = "left"
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()

    def _attach_adapter(self, adapter: str) -> Any:
        from peft import PeftModel

        path = Path(adapter)
        if not (path / "adapter_config.json").is_file():
            raise ChainError(
                f"adapter {adapter!r} is not a PEFT adapter directory (no adapter_config.json); "
                "give the --out directory of `triplesmith train`"
            )
        try:
            peft_model = PeftModel.from_pretrained(self.model, str(path))
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ChainError(
                f"adapter {adapter!r} does not fit base model {self.model_name!r}: {exc}"
            ) from exc
        # Merged weights generate as fast as the base model.
        merged = peft_model.merge_and_unload()
        merged.eval()
        return merged

    # --- prompts ---------------------------------------------------------------------------

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # --- generation ------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[list[dict[str, str]]],
        sentence_tokens: Sequence[int],
        options: GenerationOptions = GenerationOptions(),
    ) -> list[Generation | Exception]:
        """Generate for every prompt in batches of `batch_size`, similar lengths together.

        A prompt that does not fit the context with its token budget comes back as a
        ChainError in its slot; the others still run.
        """
        texts = [self.render(messages) for messages in prompts]
        lengths = [self.count_tokens(text) for text in texts]
        results: list[Generation | Exception | None] = [None] * len(texts)
        runnable = []
        for i, (length, words) in enumerate(zip(lengths, sentence_tokens, strict=True)):
            budget = options.budget(words)
            if length + budget > self.context:
                results[i] = ChainError(
                    f"the prompt is {length} tokens and needs {budget} more for the answer, "
                    f"over the model's context of {self.context}; shorten the sentence or use "
                    "fewer few-shot examples (k)"
                )
            else:
                runnable.append(i)
        runnable.sort(key=lambda i: lengths[i])
        for start in range(0, len(runnable), self.batch_size):
            chunk = runnable[start : start + self.batch_size]
            budget = max(options.budget(sentence_tokens[i]) for i in chunk)
            try:
                with self._lock:
                    out = self._generate_chunk([texts[i] for i in chunk], budget, options)
            except Exception as exc:  # one failing chunk must not kill the batch
                log.warning("generation failed for %d prompts: %s", len(chunk), exc)
                out = [ChainError(f"generation failed: {exc}")] * len(chunk)
            for i, generation in zip(chunk, out, strict=True):
                results[i] = generation
        return [r if r is not None else ChainError("not generated") for r in results]

    def _generate_chunk(
        self, texts: list[str], budget: int, options: GenerationOptions
    ) -> list[Generation]:
        import torch
        from transformers import GenerationConfig

        started = time.perf_counter()
        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.model.device
        )
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tok.eos_token_id
        config = GenerationConfig(
            max_new_tokens=budget,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=tok.pad_token_id,
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
            output_scores=True,
            return_dict_in_generate=True,
        )
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=config)
        scores = self.model.compute_transition_scores(
            out.sequences, out.scores, normalize_logits=True
        )
        prompt_width = enc["input_ids"].shape[1]
        new_tokens = out.sequences[:, prompt_width:]
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        elapsed = time.perf_counter() - started
        generations = []
        for row in range(len(texts)):
            ids, logprobs = [], []
            for token, score in zip(new_tokens[row].tolist(), scores[row].tolist(), strict=True):
                if token in eos_ids:
                    break
                ids.append(token)
                logprobs.append(score)
            pieces = self._pieces(ids)
            generations.append(
                Generation(
                    text="".join(pieces),
                    pieces=pieces,
                    logprobs=logprobs,
                    tokens_in=int(enc["attention_mask"][row].sum()),
                    tokens_out=len(ids),
                    latency_s=elapsed / len(texts),
                )
            )
        return generations

    def _pieces(self, ids: list[int]) -> list[str]:
        """Decoded text of each token, so that their concatenation is the decoded answer."""
        pieces, previous = [], ""
        for end in range(1, len(ids) + 1):
            current = self.tokenizer.decode(ids[:end], skip_special_tokens=True).rstrip("\ufffd")
            if current.startswith(previous):
                pieces.append(current[len(previous) :])
                previous = current
            else:
                pieces.append("")
        return pieces

    # --- coalescing concurrent single calls ------------------------------------------------

    def submit(
        self, messages: list[dict[str, str]], sentence_tokens: int, options: GenerationOptions
    ) -> Future:
        """Queue one prompt; concurrent submissions within a short window share one batch."""
        request = _Request(messages, sentence_tokens, options)
        self._queue.put(request)
        if self._worker is None or not self._worker.is_alive():
            with self._worker_lock:
                if self._worker is None or not self._worker.is_alive():
                    self._worker = threading.Thread(target=self._drain, daemon=True)
                    self._worker.start()
        return request.future

    def _drain(self) -> None:
        while True:
            first = self._queue.get()
            pending = [first]
            deadline = time.monotonic() + self.window_s
            while len(pending) < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    pending.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            groups: dict[GenerationOptions, list[_Request]] = {}
            for request in pending:
                groups.setdefault(request.options, []).append(request)
            for options, requests in groups.items():
                try:
                    results = self.generate(
                        [r.messages for r in requests],
                        [r.sentence_tokens for r in requests],
                        options,
                    )
                except Exception as exc:
                    results = [exc] * len(requests)
                for request, result in zip(requests, results, strict=True):
                    if isinstance(result, Exception):
                        request.future.set_exception(result)
                    else:
                        request.future.set_result(result)

    def as_chat_model(self) -> Any:
        """The same model as a LangChain chat model (langchain-huggingface), for composition."""
        from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
        from transformers import pipeline

        pipe = pipeline("text-generation", model=self.model, tokenizer=self.tokenizer)
        return ChatHuggingFace(llm=HuggingFacePipeline(pipeline=pipe), tokenizer=self.tokenizer)


_ENGINES: dict[tuple[str, str | None], HFEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(model: str = "smollm2", adapter: str | None = None) -> HFEngine:
    """The process-wide engine for (model, adapter): loaded on first use, reused afterwards."""
    key = (model, str(Path(adapter).resolve()) if adapter else None)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            try:
                _ENGINES[key] = HFEngine(model, adapter=key[1])
            except ModelError as exc:
                raise ChainError(str(exc)) from exc
        return _ENGINES[key]
