"""Export an adapter for use without triplesmith or peft: merged into its base (a transformers
model folder, `export_merged`) or as one GGUF file for llama.cpp, Ollama and LM Studio
(`export_gguf`).

The base is the one the adapter names (its manifest, else its `adapter_config.json`), resolved on
this machine (`triplesmith.models.resolve_base`: the embedded SmolLM2 is the converted copy of
its GGUF). A GGUF is written with the `gguf` package from a template GGUF of the same base (the
embedded model's own file): its tokenizer, chat template and hyper-parameters are copied, the
merged weights replace its tensors. A base without such a template goes through llama.cpp's
`convert_hf_to_gguf.py` when one is found (`LLAMA_CPP_DIR`), else the error says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triplesmith.errors import ModelError
from triplesmith.models import (
    EMBEDDED_MODELS,
    ModelRef,
    adapter_hash,
    embedded_gguf,
    portable_name,
    resolve,
    resolve_adapter,
    resolve_base,
)
from triplesmith.training.manifest import MANIFEST_NAME, read_manifest

EXPORT_RECORD = "triplesmith_export.json"
DTYPES = ("auto", "float32", "bfloat16", "float16")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
CONVERTER = "convert_hf_to_gguf.py"


@dataclass(frozen=True)
class Adapted:
    """An adapter merged into its base, with what it came from."""

    model: Any
    tokenizer: Any
    base: ModelRef
    adapter: str
    adapter_dir: Path
    adapter_hash: str


def adapter_base(adapter_dir: Path, base: str | None = None) -> ModelRef:
    """The base an adapter was trained on, found on this machine (`base` overrides it)."""
    if base:
        return resolve(base)
    if (adapter_dir / MANIFEST_NAME).is_file():
        manifest = read_manifest(adapter_dir)
        if manifest.base_model_sha256 or not Path(manifest.base_model_path).is_absolute():
            return resolve_base(manifest.base_model_path, manifest.base_model_sha256)
        return resolve(manifest.base_model)  # an older manifest: a folder of its machine
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    name = config.get("base_model_name_or_path")
    if not name:
        raise ModelError(
            f"adapter {adapter_dir} does not name its base model; pass the base explicitly"
        )
    return resolve_base(name)


def merge_adapter(
    adapter: str, base: str | None = None, dtype: str = "auto", gguf: bool = False
) -> Adapted:
    """The adapter (a directory or a Hub id) merged into its base on the CPU, in `dtype`
    (`auto`: the base's stored dtype, float32 when it names none). With `gguf`, a base that
    cannot become a GGUF here is refused before anything is loaded."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig

    from triplesmith.models import load

    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    path = resolve_adapter(adapter)
    ref = adapter_base(path, base)
    if gguf:
        gguf_route(ref)
    if dtype == "auto":
        stored = getattr(AutoConfig.from_pretrained(ref.path), "dtype", None)
        dtype = str(stored).removeprefix("torch.") if stored else "float32"
        dtype = dtype if dtype in DTYPES else "float32"
    model, tokenizer = load(ref.name, dtype=getattr(torch, dtype), device="cpu")
    with warnings.catch_warnings():  # peft calls transformers' deprecated names
        warnings.simplefilter("ignore", FutureWarning)
        try:
            tuned = PeftModel.from_pretrained(model, str(path))
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"adapter {adapter!r} does not fit base {ref.name!r}: {exc}") from exc
        merged = tuned.merge_and_unload()
    merged.eval()
    return Adapted(merged, tokenizer, ref, adapter, path, adapter_hash(path))


def _record(adapted: Adapted, **extra: Any) -> dict[str, Any]:
    """What an export came from, named portably (never a folder of this machine's cache)."""
    base, sha = (
        portable_name(adapted.base.path) if adapted.base.local else (adapted.base.path, None)
    )
    adapter = adapted.adapter if not Path(adapted.adapter).exists() else adapted.adapter_dir.name
    return {
        "adapter": adapter,
        "adapter_hash": adapted.adapter_hash,
        "base_model": base,
        "base_model_sha256": sha,
        **extra,
    }


def _fresh_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ModelError(f"{target} already exists and is not an empty folder; choose another")


def export_merged(adapted: Adapted, out: str | Path) -> Path:
    """Write the merged model and its tokenizer to `out` (safetensors), written in a staging
    folder and renamed into place; `out` must not exist or be empty."""
    target = Path(out)
    _fresh_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        adapted.model.save_pretrained(staging, safe_serialization=True)
        adapted.tokenizer.save_pretrained(staging)
        record = _record(adapted, format="transformers")
        (staging / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def find_converter() -> Path | None:
    """llama.cpp's `convert_hf_to_gguf.py`: in `LLAMA_CPP_DIR`, or on the PATH."""
    folder = os.environ.get("LLAMA_CPP_DIR")
    if folder and (Path(folder) / CONVERTER).is_file():
        return Path(folder) / CONVERTER
    found = shutil.which(CONVERTER)
    return Path(found) if found else None


def gguf_route(ref: ModelRef) -> Path:
    """How a GGUF of this base is written: a template GGUF of the same model (the embedded
    model's own file), else llama.cpp's converter; a `ModelError` says what to install."""
    if ref.name in EMBEDDED_MODELS:
        return embedded_gguf(ref.name)
    converter = find_converter()
    if converter is None:
        raise ModelError(
            f"a GGUF of an adapter on {ref.name!r} needs llama.cpp's {CONVERTER}: set "
            "LLAMA_CPP_DIR to a llama.cpp checkout (pip install -r its requirements.txt), or "
            "export --merged DIR and convert DIR with it; the embedded smollm2 needs neither"
        )
    return converter


def export_gguf(adapted: Adapted, file: str | Path, outtype: str = "f16") -> Path:
    """Write the merged model as one GGUF file (`outtype`: f32, f16, bf16 or q8_0; norms stay
    f32 as llama.cpp keeps them)."""
    if outtype not in GGUF_TYPES:
        raise ModelError(f"GGUF type {outtype!r}: use one of {', '.join(GGUF_TYPES)}")
    target = Path(file)
    if target.is_dir():
        raise ModelError(f"{target} is a folder; --gguf takes a file name such as model.gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    route = gguf_route(adapted.base)
    if route.suffix == ".gguf":
        from triplesmith.training.gguf_writer import write_gguf

        handle, staging = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
        os.close(handle)
        try:
            write_gguf(adapted.model.state_dict(), route, Path(staging), outtype)
            os.replace(staging, target)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)
        return target
    with tempfile.TemporaryDirectory(prefix=".merged-", dir=target.parent) as merged_dir:
        merged = export_merged(adapted, Path(merged_dir) / "model")
        command = [sys.executable, str(route), str(merged), "--outfile", str(target)]
        done = subprocess.run([*command, "--outtype", outtype], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"{route} failed (exit {done.returncode}): {tail[0]}")
    return target
