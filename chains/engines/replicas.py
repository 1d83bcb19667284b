"""One engine per GPU, each batch split between them: data-parallel generation for local chains.

`get_engine` (chains/engines/__init__.py) builds a `ReplicaEngine` when more than one GPU is
visible (`CUDA_VISIBLE_DEVICES`, `TRIPLESMITH_GPUS` choose which): one worker process per
device, each loading the transformers engine (model and merged adapter) on its device, and every
`generate` hands each worker a share of the prompts at once. Processes, not threads: the
per-row work on the CPU (the grammar's masks, the loop rules) then runs in parallel too; with
threads it shared one interpreter (benchmarks/RESULTS.md, "More than one GPU": 1.5x with
threads, 1.75x with processes on two H200s with the grammar on). Splitting pays only for that
per-row work and for models whose step time grows with the rows: a small model's unconstrained
decode step costs the same for 317 rows as for 634, and two replicas were 0.73x as fast as one.
Greedy answers do not depend on which replica made them (up to bf16 batch effects). On a CPU
or one GPU `get_engine` returns the in-process engine itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Sequence
from typing import Any

from triplesmith.chains.engines.base import (
    CANCELLED,
    Engine,
    Generation,
    GenerationOptions,
    Messages,
)
from triplesmith.errors import ChainError, ModelError

log = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees (`cuda:0`, ...); none without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [f"cuda:{index}" for index in range(torch.cuda.device_count())]


def split(sentence_tokens: Sequence[int], shares: int, start: int = 0) -> list[list[int]]:
    """Prompt indices for each of `shares` replicas: dealt longest first, in turn from `start`,
    so each share gets a like mix of lengths (and a lone prompt is not always the first's)."""
    order = sorted(range(len(sentence_tokens)), key=lambda i: -sentence_tokens[i])
    out: list[list[int]] = [[] for _ in range(shares)]
    for turn, index in enumerate(order):
        out[(start + turn) % shares].append(index)
    return out


def _serve(conn: Any, model: str, adapter: str | None, device: str, cancel: Any) -> None:
    """A worker process: load the engine on `device`, then generate for each request received.

    Its first message is the engine's facts (or the load error); `cancel`, an event set by the
    parent, is mirrored onto the engine so an interrupt stops a generation in flight.
    """
    try:
        import torch

        from triplesmith.chains.engines.hf import HFEngine

        if device.startswith("cuda"):
            torch.cuda.set_device(device)  # where the engine's `.to("cuda")` puts the model
        engine = HFEngine(model, adapter=adapter)
    except Exception as exc:  # the parent raises it as the replica's load error
        conn.send(("error", exc))
        return
    conn.send(
        (
            "ready",
            {
                "model_hash": engine.model_hash,
                "adapter_hash": engine.adapter_hash,
                "context": engine.context,
                "default_batch": engine.default_batch,
            },
        )
    )

    # The parent's flag is mirrored onto the engine: set, by this thread (an interrupt reaches a
    # generation in flight); cleared, before the next request. The lock keeps a late mirror
    # from cancelling the request that follows a quick cancel-and-resume.
    mirrored = threading.Lock()

    def mirror() -> None:
        while True:
            cancel.wait()
            with mirrored:
                if cancel.is_set():
                    engine.cancel()
            while cancel.is_set():
                time.sleep(0.05)

    threading.Thread(target=mirror, daemon=True).start()
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the parent has gone
            return
        if request is None:
            return
        prompts, sentence_tokens, options = request
        with mirrored:
            if engine.cancelled and not cancel.is_set():  # the parent resumed since
                engine.resume()
        try:
            conn.send(engine.generate(prompts, sentence_tokens, options))
        except Exception as exc:
            conn.send([ChainError(f"generation failed: {exc}")] * len(prompts))


class _Worker:
    """The parent's end of one worker process."""

    def __init__(self, context: Any, model: str, adapter: str | None, device: str) -> None:
        self.device = device
        self.conn, child = context.Pipe()
        self.cancel = context.Event()
        self.process = context.Process(
            target=_serve,
            args=(child, model, adapter, device, self.cancel),
            name=f"triplesmith-replica-{device}",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.lock = threading.Lock()  # one request at a time on this worker

    def ready(self) -> dict[str, Any]:
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            raise ModelError(f"the engine on {self.device} stopped while loading") from None
        if kind == "error":
            raise ModelError(f"cannot load the engine on {self.device}: {payload}")
        return payload

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


class ReplicaEngine(Engine):
    """A transformers engine on each of several devices, behind the one-engine interface.

    `generate` splits the prompts between the workers and returns the results in the prompts'
    order; `submit` coalesces concurrent single calls into one such `generate` (base class);
    `cancel` reaches every worker. Token counts come from the model's tokenizer here.
    """

    name = "replicas"

    def __init__(self, model: str, adapter: str | None, devices: Sequence[str]) -> None:
        if len(devices) < 2:
            raise ValueError("replicas need two devices or more")
        from transformers import AutoTokenizer

        from triplesmith.models import resolve

        super().__init__()
        self.model_name = model
        self.adapter = adapter
        self.devices = list(devices)
        # Spawned, not forked: a forked child cannot use CUDA, nor a copy of our threads.
        context = multiprocessing.get_context("spawn")
        self.workers = [_Worker(context, model, adapter, device) for device in self.devices]
        try:
            facts = [worker.ready() for worker in self.workers]
        except ModelError:
            self.close()
            raise
        self.model_hash = facts[0]["model_hash"]
        self.adapter_hash = facts[0]["adapter_hash"]
        self.context = facts[0]["context"]
        # A coalesced batch fills every replica.
        self.default_batch = facts[0]["default_batch"] * len(self.workers)
        self.tokenizer = AutoTokenizer.from_pretrained(resolve(model).path)
        self._turn = 0
        self._turn_lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prepare(self, messages: Messages) -> tuple[Any, int]:
        raise NotImplementedError("each replica prepares its own share of the prompts")

    def _generate_chunk(
        self, prompts: list[Any], budgets: list[int], options: GenerationOptions
    ) -> list[Generation]:
        raise NotImplementedError("each replica generates its own share of the prompts")

    def generate(
        self,
        prompts: Sequence[Messages],
        sentence_tokens: Sequence[int],
        options: GenerationOptions = GenerationOptions(),
    ) -> list[Generation | Exception]:
        """One result per prompt, in order, as `Engine.generate`; each worker generates its
        share of the prompts, all at the same time."""
        if self.cancelled:
            return [ChainError(CANCELLED) for _ in prompts]
        with self._turn_lock:
            start, self._turn = self._turn, (self._turn + 1) % len(self.workers)
        shares = split(sentence_tokens, len(self.workers), start)
        busy = [
            (worker, share) for worker, share in zip(self.workers, shares, strict=True) if share
        ]
        results: list[Generation | Exception] = [ChainError("not generated")] * len(prompts)
        # Locks in the workers' order, so two concurrent calls never wait on each other crosswise.
        for worker, _ in busy:
            worker.lock.acquire()
        try:
            sent = []
            for worker, share in busy:
                request = (
                    [prompts[i] for i in share],
                    [sentence_tokens[i] for i in share],
                    options,
                )
                try:
                    worker.conn.send(request)
                    sent.append((worker, share))
                except (OSError, ValueError) as exc:
                    for i in share:
                        results[i] = ChainError(f"the engine on {worker.device} is gone: {exc}")
            for worker, share in sent:
                try:
                    answers = worker.conn.recv()
                except (EOFError, OSError) as exc:
                    answers = [ChainError(f"the engine on {worker.device} stopped: {exc!r}")]
                    answers *= len(share)
                for i, answer in zip(share, answers, strict=True):
                    results[i] = answer
        finally:
            for worker, _ in busy:
                worker.lock.release()
        return results

    def cancel(self) -> None:
        super().cancel()
        for worker in self.workers:
            worker.cancel.set()

    def resume(self) -> None:
        super().resume()
        for worker in self.workers:
            worker.cancel.clear()

    def close(self) -> None:
        """Stop the worker processes (they also end with this process)."""
        for worker in self.workers:
            worker.close()
