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

__all__ = [
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
