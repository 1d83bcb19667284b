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

from triplesmith.chains.repeat_guard import RepeatGuard
from triplesmith.errors import ChainError, ModelError
from triplesmith.models import model_hash, resolve
from triplesmith.training.manifest import adapter_hash

log = logging.getLogger(__name__)

# Rows per `generate`. On a CPU a decode step is memory-bound and grows with the rows. On a GPU a
# step of a 135M model costs about the same from 64 rows up (benchmarks/bench_generate.py on the
# H200 here: 18.5 ms a step for 1 row, 69.5 ms for 64, 59.7 ms for 256), so a GPU batch is as
# wide as the sentences in flight allow.
CPU_BATCH = 32
GPU_BATCH = 256


CANCELLED = "generation cancelled (the run was interrupted)"


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding controls. `max_new_tokens=None` sizes the budget to each sentence;
    `stop_repeats` ends a JSON answer at its first repeated triple, `close_loops` closes a JSON
    string that has started to repeat a phrase (both: chains/repeat_guard.py)."""

    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    stop_repeats: bool = True
    close_loops: bool = True

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


class _GreedyLogprobs:
    """A logits processor that records, per step, the log-prob of the token greedy decoding picks.

    Last in the processor list, it sees the final scores; the greedy choice is their argmax, so
    its normalised log-prob is `max - logsumexp`. This keeps one float per row and step instead
    of `output_scores`' full vocabulary per step (49,152 floats for SmolLM2).
    """

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float()
        self.steps.append(logits.max(dim=-1).values - torch.logsumexp(logits, dim=-1))
        return scores

    def stacked(self) -> Any:
        import torch

        return torch.stack(self.steps, dim=1).cpu()


class HFEngine:
    """A loaded model + tokenizer that turns chat-message lists into batched greedy generations."""

    def __init__(
        self,
        model: str = "smollm2",
        adapter: str | None = None,
        batch_size: int | None = None,
        window_s: float = 0.05,
        max_wait_s: float = 0.5,
    ) -> None:
        from triplesmith.models import load

        self.model_name = model
        self.adapter = adapter
        self.window_s = window_s
        self.max_wait_s = max_wait_s
        self.model, self.tokenizer = load(model)
        # Batches are as large as the work in flight allows (CPU_BATCH / GPU_BATCH above).
        on_gpu = self.model.device.type == "cuda"
        self.batch_size = batch_size or (GPU_BATCH if on_gpu else CPU_BATCH)
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
        self._cancelled = threading.Event()

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
        if self._cancelled.is_set():
            return [ChainError(CANCELLED) for _ in prompts]
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
            if self._cancelled.is_set():
                for i in chunk:
                    results[i] = ChainError(CANCELLED)
                continue
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
        )
        chosen = _GreedyLogprobs()
        processors: list[Any] = [chosen]
        if options.stop_repeats or options.close_loops:
            first_eos = eos[0] if isinstance(eos, list) else eos
            guard = RepeatGuard(
                tok,
                enc["input_ids"].shape[1],
                first_eos,
                triples=options.stop_repeats,
                strings=options.close_loops,
            )
            processors.insert(0, guard)  # before `chosen`, which records the final choice
        with torch.inference_mode():
            sequences = self.model.generate(
                **enc,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=[self._stop_when_cancelled],
            )
        if self._cancelled.is_set():
            raise ChainError(CANCELLED)
        scores = chosen.stacked()
        prompt_width = enc["input_ids"].shape[1]
        new_tokens = sequences[:, prompt_width:]
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

    def _stop_when_cancelled(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        """A `generate` stopping criterion: every row stops at the next step once cancelled."""
        import torch

        return torch.full(
            (input_ids.shape[0],),
            self._cancelled.is_set(),
            dtype=torch.bool,
            device=input_ids.device,
        )

    def cancel(self) -> None:
        """Stop the generation in flight at its next step and refuse new work until `resume()`.

        An interrupted experiment calls this so that Ctrl-C does not wait for a whole batch;
        the prompts in flight come back as ChainErrors (the runner stores none of them).
        """
        self._cancelled.set()

    def resume(self) -> None:
        self._cancelled.clear()

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
            # Keep collecting while submissions keep arriving (evaluation threads start a few
            # milliseconds apart), up to a full batch or `max_wait_s` after the first.
            cap = time.monotonic() + self.max_wait_s
            while len(pending) < self.batch_size:
                remaining = min(self.window_s, cap - time.monotonic())
                if remaining <= 0:
                    break
                try:
                    pending.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            log.debug("generating for %d coalesced prompts", len(pending))
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
