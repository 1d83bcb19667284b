"""The device a training process runs on and the shape of the model it trains: the facts the
training plan (`training.config`) and the speed levers (`training.attention`,
`training.kernels`) decide from."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    """The device this process trains on and the memory free there, and how many processes
    train together (`accelerate launch`: one a device, each with its own `Machine`)."""

    device: str  # "cpu" or "cuda"
    name: str
    free_bytes: int
    bf16: bool  # whether bf16 compute is fast here
    # What the speed levers can use here (probed on CUDA only): the installed liger-kernel and
    # the model types it patches, whether torch has varlen_attn, the GPU's compute capability.
    liger: str | None = None
    liger_model_types: frozenset[str] = frozenset()
    varlen: bool = False
    capability: tuple[int, int] | None = None
    processes: int = 1


def local_rank() -> int:
    """This process's device index under `accelerate launch`/torchrun (0 when run alone)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """How many processes train together (`WORLD_SIZE`, set by the launcher; 1 alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimates need to know about a causal LM, read from its config."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    supports_packing: bool
    model_type: str = ""
