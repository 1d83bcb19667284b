"""Model shapes the training planner's tests share (the figures of the issues' measurements)."""

from triplesmith.training.config import ModelShape

# Llama-2-7B's shape, as in the measurements.
LLAMA2_7B = ModelShape(
    params=6_738_415_616, layers=32, hidden=4096, intermediate=11008, supports_packing=True
)
# SmolLM2-135M's shape.
SMOLLM2 = ModelShape(
    params=134_515_008, layers=30, hidden=576, intermediate=1536, supports_packing=True
)
