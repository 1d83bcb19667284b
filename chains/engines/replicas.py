"""One engine per GPU, each batch split between them: data-parallel generation for local chains.

`get_engine` (chains/engines/__init__.py) builds a `ReplicaEngine` when more than one GPU is
visible (`CUDA_VISIBLE_DEVICES` chooses which): a whole engine, the model and its merged adapter,
on each device, and every `generate` hands each replica a share of the prompts, run at the same
time in threads (the GPU work and llguidance's masks release the GIL). Greedy answers do not
depend on which replica made them. On a CPU or one GPU `get_engine` returns the engine itself.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from triplesmith.chains.engines.base import (
    CANCELLED,
    Engine,
    Generation,
    GenerationOptions,
    Messages,
)
from triplesmith.errors import ChainError


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees (`cuda:0`, ...); none without CUDA."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    if not torch.cuda.is_available():
        return []
    return [f"cuda:{index}" for index in range(torch.cuda.device_count())]


def on_device(device: str) -> AbstractContextManager[Any]:
    """Make `device` the current CUDA device (where `.to("cuda")` and new tensors go)."""
    if not device.startswith("cuda"):
        return nullcontext()
    import torch

    return torch.cuda.device(device)


def replicate(build: Callable[[], Engine], devices: Sequence[str]) -> Engine:
    """`build()` once per device with that device current; one device gives the engine alone."""
    engines = []
    for device in devices:
        with on_device(device):
            engines.append(build())
    if len(engines) == 1:
        return engines[0]
    return ReplicaEngine(engines, devices)


def split(sentence_tokens: Sequence[int], shares: int, start: int = 0) -> list[list[int]]:
    """Prompt indices for each of `shares` replicas: dealt longest first, in turn from `start`,
    so each share gets a like mix of lengths (and a lone prompt is not always the first's)."""
    order = sorted(range(len(sentence_tokens)), key=lambda i: -sentence_tokens[i])
    out: list[list[int]] = [[] for _ in range(shares)]
    for turn, index in enumerate(order):
        out[(start + turn) % shares].append(index)
    return out


class ReplicaEngine(Engine):
    """Engines of one model on several devices behind the one-engine interface.

    `generate` splits the prompts between the replicas and returns the results in the prompts'
    order; `submit` coalesces concurrent single calls into one such `generate` (base class);
    `cancel` reaches every replica.
    """

    name = "replicas"

    def __init__(self, replicas: Sequence[Engine], devices: Sequence[str]) -> None:
        if len(replicas) != len(devices) or not replicas:
            raise ValueError("one device per replica, at least one")
        super().__init__()
        self.replicas = list(replicas)
        self.devices = list(devices)
        first = self.replicas[0]
        self.model_name = first.model_name
        self.model_hash = first.model_hash
        self.adapter_hash = first.adapter_hash
        self.context = first.context
        # A coalesced batch fills every replica.
        self.default_batch = first.default_batch * len(self.replicas)
        self._pool = ThreadPoolExecutor(len(self.replicas), thread_name_prefix="replica")
        self._turns = itertools.count()
        self._turns_lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return self.replicas[0].count_tokens(text)

    def prepare(self, messages: Messages) -> tuple[Any, int]:
        return self.replicas[0].prepare(messages)

    def _generate_chunk(
        self, prompts: list[Any], budgets: list[int], options: GenerationOptions
    ) -> list[Generation]:
        return self.replicas[0]._generate_chunk(prompts, budgets, options)

    def generate(
        self,
        prompts: Sequence[Messages],
        sentence_tokens: Sequence[int],
        options: GenerationOptions = GenerationOptions(),
    ) -> list[Generation | Exception]:
        """One result per prompt, in order, as `Engine.generate`; each replica generates its
        share of the prompts, all at once."""
        if self.cancelled:
            return [ChainError(CANCELLED) for _ in prompts]
        with self._turns_lock:
            start = next(self._turns) % len(self.replicas)
        shares = split(sentence_tokens, len(self.replicas), start)
        jobs = [
            (
                share,
                self._pool.submit(
                    self._generate_on, replica, device, share, prompts, sentence_tokens, options
                ),
            )
            for replica, device, share in zip(self.replicas, self.devices, shares, strict=True)
            if share
        ]
        results: list[Generation | Exception] = [ChainError("not generated")] * len(prompts)
        for share, job in jobs:
            for index, result in zip(share, job.result(), strict=True):
                results[index] = result
        return results

    @staticmethod
    def _generate_on(
        replica: Engine,
        device: str,
        share: list[int],
        prompts: Sequence[Messages],
        sentence_tokens: Sequence[int],
        options: GenerationOptions,
    ) -> list[Generation | Exception]:
        with on_device(device):
            return replica.generate(
                [prompts[i] for i in share], [sentence_tokens[i] for i in share], options
            )

    def cancel(self) -> None:
        super().cancel()
        for replica in self.replicas:
            replica.cancel()

    def resume(self) -> None:
        super().resume()
        for replica in self.replicas:
            replica.resume()
