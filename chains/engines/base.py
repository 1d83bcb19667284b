"""The engine interface: many chat prompts in; text, token ids, log-probs, counts, finish out.

Local chains hand their prompts to an engine and never decode themselves. An engine is an
existing implementation (transformers' `generate`, a served model) wrapped to this small
interface; what every engine shares lives here: the decoding options, the result of one
prompt, and the coalescing of concurrent single calls (graph branches, `langsmith.evaluate`
workers, `langgraph dev` requests) into one batched call.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from triplesmith.errors import ChainError

log = logging.getLogger(__name__)

CANCELLED = "generation cancelled (the run was interrupted)"

Messages = list[dict[str, str]]
FinishReason = Literal["stop", "length", "repeat", "cancelled"]


def env_choice(name: str, choices: Sequence[str], default: str, meaning: str) -> str:
    """An engine switch read from the environment variable `name`: one of `choices` (the first
    is the default's meaning when unset), or a ChainError naming the value and the choices."""
    value = os.environ.get(name, default)
    if value not in choices:
        raise ChainError(f"{name}={value!r}: use {' or '.join(choices)} ({meaning})")
    return value


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding controls of one chain: greedy, or sampling when `temperature` is set.

    `temperature=None` decodes greedily; a temperature (> 0) samples each token from the
    model's distribution at that temperature (no top-k or top-p cut), seeded by `seed` once per
    batch of prompts, so the same prompts in the same batch give the same answers; an engine
    that cannot sample refuses it. `max_new_tokens=None` sizes the budget to each sentence.
    `constrained` makes the answer a JSON list of `{"s", "relation", "object"}` objects by
    construction, or JSON valid under `json_schema` when one is given (a served request's;
    chains/engines/grammar.py).
    `stop_repeats` ends a JSON answer at its first repeated item, `close_loops` closes a JSON
    string that has started to repeat a phrase (both: chains/repeat_guard.py). `batch_size` is
    the chain's own cap on rows per batch (None: the engine's default for its device).
    `confidence` is how the chain turns the answer's log-probs into each triple's confidence
    (chains/confidence.py): not decoding, but it changes the stored answers.
    """

    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    stop_repeats: bool = True
    close_loops: bool = True
    constrained: bool = True
    json_schema: str | None = None
    batch_size: int | None = None
    confidence: str = "mean"
    temperature: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature is not None and not 0 < self.temperature < float("inf"):
            raise ChainError(
                f"temperature must be a number > 0 to sample (None decodes greedily), "
                f"got {self.temperature}"
            )

    def budget(self, sentence_tokens: int) -> int:
        """New-token budget: room for several triples of a sentence this long, bounded."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return max(96, min(512, 32 + 5 * sentence_tokens))

    def decoding(self) -> dict[str, object]:
        """What changes the answers (part of an experiment's key); the batch size does not."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "stop_repeats": self.stop_repeats,
            "close_loops": self.close_loops,
            "constrained": self.constrained,
            **({"json_schema": self.json_schema} if self.json_schema else {}),
            # Only when not the default, so that earlier stored experiments keep their keys.
            **({"confidence": self.confidence} if self.confidence != "mean" else {}),
            **(
                {"temperature": self.temperature, "seed": self.seed}
                if self.temperature is not None
                else {}
            ),
        }


@dataclass
class Generation:
    """One prompt's continuation.

    `pieces` are the decoded text of each token of `token_ids` (their concatenation is `text`),
    `logprobs` the log-probability of each; `finish_reason` says why it ended: the model's own
    end (`stop`), the token budget (`length`), a loop rule (`repeat`), or an interrupt.
    """

    text: str
    token_ids: list[int]
    pieces: list[str]
    logprobs: list[float]
    tokens_in: int
    tokens_out: int
    latency_s: float
    finish_reason: FinishReason = "stop"


def adapter_dir(adapter: str) -> Path:
    """A PEFT adapter folder (the `--out` of `triplesmith train`), or a ChainError saying so."""
    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise ChainError(
            f"adapter {adapter!r} is not a PEFT adapter directory (no adapter_config.json); "
            "give the --out directory of `triplesmith train`"
        )
    return path


def token_pieces(decode: Callable[[list[int]], str], ids: list[int]) -> list[str]:
    """The decoded text of each token, so that their concatenation is the decoded answer.

    Incremental detokenization over a short window (as TGI and vLLM do): a token that ends
    inside a multi-byte character gets "" and the next one carries the character."""
    pieces: list[str] = []
    prefix = read = 0
    for end in range(1, len(ids) + 1):
        before = decode(ids[prefix:read]) if read > prefix else ""
        after = decode(ids[prefix:end])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            pieces.append(after[len(before) :])
            prefix, read = read, end
        else:
            pieces.append("")
    return pieces


@dataclass
class _Request:
    messages: Messages
    sentence_tokens: int
    options: GenerationOptions
    future: Future = field(default_factory=Future)


class Engine(ABC):
    """A loaded model that generates for many chat prompts at once.

    Subclasses set `model_name`, `model_hash`, `adapter_hash`, `context` and `default_batch`
    and implement `count_tokens`, `prepare` and `_generate_chunk`; `generate` schedules the
    chunks, `submit` coalesces concurrent single calls.
    """

    name = "engine"
    model_name: str
    model_hash: str
    adapter_hash: str | None = None
    context: int = 2048
    default_batch: int = 32
    window_s: float = 0.05
    max_wait_s: float = 0.5

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one generation at a time on the loaded model
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._cancelled = threading.Event()

    @abstractmethod
    def count_tokens(self, text: str) -> int: ...

    @abstractmethod
    def prepare(self, messages: Messages) -> tuple[Any, int]:
        """A prompt as this engine takes it (text, token ids), and its length in tokens."""

    @abstractmethod
    def _generate_chunk(
        self, prompts: list[Any], budgets: list[int], options: GenerationOptions
    ) -> list[Generation]:
        """Generate for prepared prompts of similar lengths, each with its token budget."""

    def refuse(self, options: GenerationOptions) -> ChainError | None:
        """The error of options this engine cannot honour (None: it honours them all)."""
        return None

    def chunk_width(self, options: GenerationOptions) -> int:
        """How many prompts go into one `_generate_chunk` call."""
        return self.batch_size(options)

    def chunks(
        self, order: Sequence[int], lengths: Sequence[int], budgets: Sequence[int], width: int
    ) -> list[list[int]]:
        """`order` (prompts by ascending length) cut into the chunks of one `_generate_chunk`
        call each: `width` prompts (`lengths` and `budgets` are each prompt's, by index)."""
        return [list(order[start : start + width]) for start in range(0, len(order), width)]

    def generate(
        self,
        prompts: Sequence[Messages],
        sentence_tokens: Sequence[int],
        options: GenerationOptions = GenerationOptions(),
    ) -> list[Generation | Exception]:
        """One result per prompt, in order: a Generation, or the exception of that prompt.

        Prompts go to the engine in chunks of similar lengths. A prompt that does not fit the
        context with its token budget comes back as a ChainError in its slot, and a chunk that
        fails fails alone; the others still run."""
        if self.cancelled:
            return [ChainError(CANCELLED) for _ in prompts]
        refused = self.refuse(options)
        if refused is not None:
            return [refused for _ in prompts]
        prepared = [self.prepare(messages) for messages in prompts]
        budgets = [options.budget(words) for words in sentence_tokens]
        results: list[Generation | Exception | None] = [None] * len(prepared)
        runnable = []
        for i, ((_, length), budget) in enumerate(zip(prepared, budgets, strict=True)):
            error = self.over_context(length, budget)
            if error is not None:
                results[i] = error
            else:
                runnable.append(i)
        runnable.sort(key=lambda i: prepared[i][1])
        lengths = [length for _, length in prepared]
        for chunk in self.chunks(runnable, lengths, budgets, self.chunk_width(options)):
            if self.cancelled:
                for i in chunk:
                    results[i] = ChainError(CANCELLED)
                continue
            try:
                with self._lock:
                    out: list[Generation] | list[ChainError] = self._generate_chunk(
                        [prepared[i][0] for i in chunk], [budgets[i] for i in chunk], options
                    )
            except ChainError as exc:
                out = [exc] * len(chunk)
            except Exception as exc:  # one failing chunk must not kill the batch
                log.warning("generation failed for %d prompts: %s", len(chunk), exc)
                out = [ChainError(f"generation failed: {exc}")] * len(chunk)
            for i, generation in zip(chunk, out, strict=True):
                results[i] = generation
        return [r if r is not None else ChainError("not generated") for r in results]

    def batch_size(self, options: GenerationOptions) -> int:
        return options.batch_size or self.default_batch

    def over_context(self, prompt_tokens: int, budget: int) -> ChainError | None:
        """The error of a prompt that does not fit the context with its answer budget."""
        if prompt_tokens + budget <= self.context:
            return None
        return ChainError(
            f"the prompt is {prompt_tokens} tokens and needs {budget} more for the answer, "
            f"over the model's context of {self.context}; shorten the sentence or use "
            "fewer few-shot examples (k)"
        )

    # --- interrupting ----------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the generation in flight as soon as possible and refuse new work until
        `resume()`; prompts in flight come back as ChainErrors (an interrupted run)."""
        self._cancelled.set()

    def resume(self) -> None:
        self._cancelled.clear()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # --- coalescing concurrent single calls ------------------------------------------------

    def submit(
        self, messages: Messages, sentence_tokens: int, options: GenerationOptions
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
            while len(pending) < self.batch_size(first.options):
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
