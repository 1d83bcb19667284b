"""Engines: what local chains hand their prompts to (chains/engines/base.py is the interface).

`get_engine` picks one: `TRIPLESMITH_ENGINE` (`hf` or `onnx`) or `kind` when given, else
transformers (chains/engines/hf.py) on every machine. Chosen by measurement
(benchmarks/RESULTS.md, "Engines side by side"): on a 2-core CPU onnxruntime-genai
(chains/engines/onnx.py, the `onnx` extra) answers one sentence faster and in less memory, but
its constrained prompts run one at a time, so batches are slower than the transformers
engine's, and it has no loop rules; on a GPU transformers is the engine. With more than one GPU
visible, the transformers engine is one replica per GPU sharing each batch
(chains/engines/replicas.py); `TRIPLESMITH_GPUS=N` uses the first N of them (1: one engine in
this process).
"""

import os
import threading
from pathlib import Path

from triplesmith.chains.engines.base import (
    CANCELLED,
    Engine,
    Generation,
    GenerationOptions,
)
from triplesmith.chains.engines.hf import HFEngine
from triplesmith.chains.engines.replicas import ReplicaEngine, visible_gpus
from triplesmith.errors import ChainError, ModelError

KINDS = ("hf", "onnx")


def engine_kind(kind: str | None = None) -> str:
    """The engine kind for this machine (see the module docstring)."""
    kind = kind or os.environ.get("TRIPLESMITH_ENGINE") or None
    if kind is not None:
        if kind not in KINDS:
            raise ChainError(
                f"unknown engine {kind!r} (TRIPLESMITH_ENGINE or kind); use one of: "
                + ", ".join(KINDS)
            )
        return kind
    return "hf"


def engine_gpus() -> list[str]:
    """The GPUs a local engine spreads over: all visible, or the first `TRIPLESMITH_GPUS`."""
    devices = visible_gpus()
    wanted = os.environ.get("TRIPLESMITH_GPUS")
    if wanted is None:
        return devices
    if not wanted.isdigit() or int(wanted) < 1:
        raise ChainError(f"TRIPLESMITH_GPUS={wanted!r}: give a number of GPUs, 1 or more")
    return devices[: int(wanted)]


_ENGINES: dict[tuple[str, str, str | None], Engine] = {}
_LOCK = threading.Lock()


def get_engine(
    model: str = "smollm2", adapter: str | None = None, kind: str | None = None
) -> Engine:
    """The process-wide engine of the chosen kind for (model, adapter), loaded on first use
    and shared by every chain on it (a chain's options travel with each call); a transformers
    engine is replicated on every visible GPU when there are several."""
    kind = engine_kind(kind)
    key = (kind, model, str(Path(adapter).resolve()) if adapter else None)
    with _LOCK:
        if key not in _ENGINES:
            try:
                if kind == "onnx":
                    from triplesmith.chains.engines.onnx import OnnxEngine

                    _ENGINES[key] = OnnxEngine(model, adapter=key[2])
                else:
                    devices = engine_gpus()
                    if len(devices) > 1:
                        _ENGINES[key] = ReplicaEngine(model, key[2], devices)
                    else:
                        _ENGINES[key] = HFEngine(model, adapter=key[2])
            except ModelError as exc:
                raise ChainError(str(exc)) from exc
        return _ENGINES[key]


def get_hf_engine(model: str = "smollm2", adapter: str | None = None) -> HFEngine:
    """The process-wide transformers engine for (model, adapter) in this process (with several
    GPUs, on the first: `get_engine` spreads over all of them in worker processes)."""
    if len(engine_gpus()) < 2:
        engine = get_engine(model, adapter, kind="hf")
        assert isinstance(engine, HFEngine)
        return engine
    key = ("hf-local", model, str(Path(adapter).resolve()) if adapter else None)
    with _LOCK:
        if key not in _ENGINES:
            try:
                _ENGINES[key] = HFEngine(model, adapter=key[2])
            except ModelError as exc:
                raise ChainError(str(exc)) from exc
        engine = _ENGINES[key]
    assert isinstance(engine, HFEngine)
    return engine


__all__ = [
    "CANCELLED",
    "KINDS",
    "Engine",
    "Generation",
    "GenerationOptions",
    "HFEngine",
    "ReplicaEngine",
    "engine_kind",
    "get_engine",
    "get_hf_engine",
]
