"""Engines: what local chains hand their prompts to (chains/engines/base.py is the interface)."""

from triplesmith.chains.engines.base import (
    CANCELLED,
    Engine,
    Generation,
    GenerationOptions,
)
from triplesmith.chains.engines.hf import HFEngine, get_engine

__all__ = ["CANCELLED", "Engine", "Generation", "GenerationOptions", "HFEngine", "get_engine"]
