"""The adapter manifest: what an adapter was trained from, how, and what it cost.

`manifest.json` sits beside the peft files in the adapter directory (or beside the weights of a
fully fine-tuned model, `method` "full"). `adapter_hash` names the adapter's content (config and
weights) for experiment metadata; it is the same hash the hf chain records (for a full
fine-tune: the model folder's `model_hash`, which the chain records as its model's hash).

Both name the base portably, never by a folder of the training machine's cache: the embedded
SmolLM2 is its Hub id `HuggingFaceTB/SmolLM2-135M-Instruct` plus the sha256 of the GGUF file it
was converted from (`name_base_portably` rewrites what peft saved; the manifest's
`base_model_path` and `base_model_sha256` say the same). So `AutoPeftModelForCausalLM` loads the
adapter on any machine, and `triplesmith.models.resolve_base` finds the embedded copy again.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from triplesmith.data.fingerprint import dataset_fingerprint
from triplesmith.errors import TrainingError
from triplesmith.models import portable_name
from triplesmith.schema import Example

MANIFEST_NAME = "manifest.json"
PACKAGES = (
    "triplesmith",
    "torch",
    "transformers",
    "trl",
    "peft",
    "bitsandbytes",
    "accelerate",
    "datasets",
)


class LossPoint(BaseModel):
    step: int
    loss: float
    learning_rate: float | None = None
    epoch: float | None = None


class AdapterManifest(BaseModel):
    """Everything needed to trace and compare an adapter, written as `manifest.json`."""

    schema_version: int = 1
    created_at: str
    base_model: str
    base_model_path: str = Field(
        description="where to load the base: a Hub id (the embedded model's too), or the "
        "directory given for training"
    )
    base_model_hash: str
    base_model_sha256: str | None = Field(
        None, description="sha256 of the GGUF file an embedded base was converted from"
    )
    dataset: str
    dataset_split: str | None
    dataset_hash: str
    examples: int
    max_example_tokens: int
    over_length_policy: str = "refuse"
    format: str
    prompt_id: str
    preset: str
    method: str
    method_reason: str
    dtype: str
    dtype_reason: str
    gradient_checkpointing: bool
    gradient_checkpointing_reason: str
    packing: bool
    packing_reason: str
    # The GPU speed levers; None in manifests written before they were decided.
    attention: str | None = None
    attention_reason: str | None = None
    kernels: bool | None = None
    kernels_reason: str | None = None
    adapter_dtype: str | None = None
    adapter_dtype_reason: str | None = None
    hyperparameters: dict[str, Any]
    steps: int
    epochs: float
    loss_curve: list[LossPoint] = Field(default_factory=list)
    loss_start: float | None = Field(
        description="mean training loss over the first `loss_window` logged steps"
    )
    loss_end: float | None = Field(
        description="mean training loss over the last `loss_window` logged steps"
    )
    loss_window: int = Field(1, description="a fifth of the logged steps, at least one")
    tokens_trained: int = Field(
        description="tokens seen in this session (after a resume: since it)"
    )
    tokens_per_s: float
    train_wall_s: float
    wall_s: float
    peak_memory_bytes: int
    device: str
    resumed_from: str | None = None
    adapter_hash: str = Field(
        description="the adapter's `adapter_hash`; for method full, the model folder's `model_hash`"
    )
    packages: dict[str, str]

    @model_validator(mode="after")
    def _portable_base(self) -> AdapterManifest:
        """A converted embedded model's cache folder becomes its Hub id and GGUF hash."""
        if self.base_model_sha256 is None:
            name, sha = portable_name(self.base_model_path)
            if sha is not None:
                self.base_model_path, self.base_model_sha256 = name, sha
        return self


def name_base_portably(adapter_dir: str | Path) -> str | None:
    """Rewrite the base peft saved in `adapter_config.json` (and in its model card) from a
    converted embedded model's cache folder to the model's Hub id; returns the name written,
    None when the base was named portably already (a Hub id, a folder of the user's).

    Call it after saving the adapter and before `adapter_hash`: the config is part of the hash.
    """
    root = Path(adapter_dir)
    config_path = root / "adapter_config.json"
    config = json.loads(config_path.read_text())
    saved = config.get("base_model_name_or_path")
    if not saved:
        return None
    name, sha = portable_name(saved)
    if sha is None:
        return None
    config["base_model_name_or_path"] = name
    _write_atomic(config_path, json.dumps(config, indent=2, sort_keys=True))
    card = root / "README.md"
    if card.is_file():
        _write_atomic(card, card.read_text().replace(saved, name))
    return name


def _write_atomic(path: Path, text: str) -> None:
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(staging, path)


def loss_ends(curve: Sequence[LossPoint]) -> tuple[float | None, float | None, int]:
    """Start and end loss, each a mean over a fifth of the curve (at least one point).

    Single-step losses with small batches swing with whichever examples the step drew;
    a window says whether training lowered the loss rather than which batch came first.
    """
    if not curve:
        return None, None, 0
    window = max(1, len(curve) // 5)
    first = sum(point.loss for point in curve[:window]) / window
    last = sum(point.loss for point in curve[-window:]) / window
    return first, last, window


def dataset_hash(examples: Sequence[Example]) -> str:
    """The training examples' fingerprint, the same one experiment records carry."""
    return dataset_fingerprint(examples)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_manifest(adapter_dir: str | Path, manifest: AdapterManifest) -> Path:
    """Write `manifest.json` atomically (a reader never sees half a file)."""
    target = Path(adapter_dir) / MANIFEST_NAME
    _write_atomic(target, manifest.model_dump_json(indent=2))
    return target


def read_manifest(adapter_dir: str | Path) -> AdapterManifest:
    """The manifest of an adapter directory written by `triplesmith train`."""
    path = Path(adapter_dir) / MANIFEST_NAME
    if not path.is_file():
        raise TrainingError(
            f"{adapter_dir} has no {MANIFEST_NAME}; give a directory written by `triplesmith train`"
        )
    try:
        return AdapterManifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise TrainingError(f"{path} is not a valid adapter manifest: {exc}") from exc
