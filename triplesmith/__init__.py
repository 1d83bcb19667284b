"""triplesmith: prompt a big model or fine-tune a small one, for knowledge-graph triple extraction."""

from triplesmith.errors import (
    ChainError,
    DatasetError,
    EvaluatorError,
    ModelError,
    TrainingError,
    TriplesmithError,
)
from triplesmith.schema import Example, Triple

# The heavier entry points load on first use, so `import triplesmith` stays quick.
_LAZY = {
    "load_dataset": "triplesmith.data.registry",
    "get_chain": "triplesmith.chains.registry",
    "build_graph": "triplesmith.graph.build",
    "compare": "triplesmith.experiments.compare",
    "curate": "triplesmith.experiments.curate",
    "run_experiment": "triplesmith.experiments.runner",
}


def __getattr__(name: str):  # noqa: ANN202 - module-level lazy attributes
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'triplesmith' has no attribute {name!r}")


__all__ = [
    "build_graph",
    "compare",
    "curate",
    "get_chain",
    "load_dataset",
    "run_experiment",
    "ChainError",
    "DatasetError",
    "EvaluatorError",
    "Example",
    "ModelError",
    "TrainingError",
    "Triple",
    "TriplesmithError",
]
__version__ = "0.1.0"
