"""Converting a llama GGUF file (the embedded SmolLM2) to a transformers safetensors folder in seconds.

transformers' own GGUF load gives the same weights, but its legacy loader
(`modeling_gguf_pytorch_utils.load_gguf_checkpoint`) parses the whole metadata with gguf's
`GGUFReader` (string by string, 100k vocabulary entries) four times over, and builds a tensor-name
map once per submodule: ~30 s for SmolLM2 on a 2-core CPU. Here the header is read once with
`struct`, the tensors are dequantised by `gguf.quants.dequantize` (which that loader calls),
renamed and un-permuted as it does, and written by transformers' own
`save_pretrained`, so the folder is byte for byte the one the slow path writes
(tests/test_gguf_convert.py proves it). A file this does not know how to convert exactly raises
`UnsupportedGguf`; `convert_gguf` then logs why and converts with transformers.
"""

from __future__ import annotations

import logging
import mmap
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from triplesmith.errors import ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# GGUF metadata value types (gguf.GGUFValueType): the fixed-size ones, then string and array
_SCALAR_FORMATS = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_VERSIONS = (2, 3)  # v1 counted in 32 bits; llama.cpp has written v3 since 2023


class UnsupportedGguf(ModelError):
    """A GGUF file the fast conversion cannot reproduce exactly (architecture, tensor type, name)."""


@dataclass(frozen=True)
class GgufTensor:
    """One tensor's raw bytes in the file, as gguf.quants expects them: `(*rows, bytes per row)`."""

    name: str
    shape: tuple[int, ...]  # in torch order (ggml lists the fastest-moving dimension first)
    ggml_type: int
    data: np.ndarray  # uint8, a read-only view of the mapped file


@dataclass(frozen=True)
class GgufFile:
    """A GGUF file's metadata and tensor table; arrays of strings (vocabulary, merges) are kept as
    their length only, and `arrays` names the keys whose value was an array."""

    path: Path
    metadata: dict[str, Any]
    arrays: frozenset[str]
    tensors: dict[str, GgufTensor]


def read_gguf(path: Path) -> GgufFile:
    """Parse a GGUF file's header; the tensors stay in the memory-mapped file until dequantised."""
    try:
        with path.open("rb") as handle:
            blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return _parse(blob, path)
    except (OSError, ValueError, struct.error) as exc:  # truncated or not a GGUF file at all
        raise UnsupportedGguf(
            f"{path}: cannot read its header ({type(exc).__name__}: {exc})"
        ) from None


def _parse(blob: mmap.mmap, path: Path) -> GgufFile:
    import gguf

    if blob[:4] != b"GGUF":
        raise UnsupportedGguf(f"{path} does not start with the GGUF magic bytes")
    version, tensor_count, kv_count = struct.unpack_from("<IQQ", blob, 4)
    if version not in _VERSIONS:
        raise UnsupportedGguf(f"{path} is GGUF v{version}; the fast conversion reads v2 and v3")
    pos = 24
    metadata: dict[str, Any] = {}
    arrays: set[str] = set()
    for _ in range(kv_count):
        key, pos = _read_string(blob, pos)
        (value_type,) = struct.unpack_from("<I", blob, pos)
        if value_type == _ARRAY:
            arrays.add(key)
        metadata[key], pos = _read_value(blob, pos + 4, value_type, path)
    table = []
    for _ in range(tensor_count):
        name, pos = _read_string(blob, pos)
        (n_dims,) = struct.unpack_from("<I", blob, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", blob, pos + 4)
        ggml_type, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        table.append((name, tuple(reversed(dims)), ggml_type, offset))
    alignment = metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    data_start = (pos + alignment - 1) // alignment * alignment
    tensors = {}
    for name, shape, ggml_type, offset in table:
        try:
            qtype = gguf.GGMLQuantizationType(ggml_type)
            byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
        except (ValueError, KeyError) as exc:
            raise UnsupportedGguf(
                f"{path}: tensor {name} has ggml type {ggml_type}: {exc}"
            ) from None
        count = int(np.prod(byte_shape))
        data = np.frombuffer(blob, dtype=np.uint8, count=count, offset=data_start + offset)
        tensors[name] = GgufTensor(name, shape, ggml_type, data.reshape(byte_shape))
    return GgufFile(path, metadata, frozenset(arrays), tensors)


def _read_string(blob: mmap.mmap, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", blob, pos)
    pos += 8
    return blob[pos : pos + length].decode("utf-8"), pos + length


def _read_value(blob: mmap.mmap, pos: int, value_type: int, path: Path) -> tuple[Any, int]:
    """One metadata value and the offset past it; an array of strings becomes its length."""
    if value_type in _SCALAR_FORMATS:
        fmt = "<" + _SCALAR_FORMATS[value_type]
        return struct.unpack_from(fmt, blob, pos)[0], pos + struct.calcsize(fmt)
    if value_type == _STRING:
        return _read_string(blob, pos)
    if value_type == _ARRAY:
        element_type, count = struct.unpack_from("<IQ", blob, pos)
        pos += 12
        if element_type in _SCALAR_FORMATS:
            fmt = f"<{count}{_SCALAR_FORMATS[element_type]}"
            return list(struct.unpack_from(fmt, blob, pos)), pos + struct.calcsize(fmt)
        if element_type == _STRING:
            for _ in range(count):  # variable length: walk it without decoding
                (length,) = struct.unpack_from("<Q", blob, pos)
                pos += 8 + length
            return count, pos
    raise UnsupportedGguf(f"{path}: a metadata value of GGUF type {value_type} (nested arrays?)")


def llama_config_dict(file: GgufFile) -> dict[str, Any]:
    """The config dict transformers' legacy GGUF loader builds for a llama file (its own
    `GGUF_CONFIG_MAPPING`, tied embeddings when there is no `output.weight`, the vocabulary's
    length when the file states no `vocab_size`)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    architecture = file.metadata.get("general.architecture")
    if architecture != "llama":
        raise UnsupportedGguf(f"{file.path}: architecture {architecture!r}, not llama")
    if file.metadata.get("general.name") == "mistral":  # transformers loads these as mistral
        raise UnsupportedGguf(f"{file.path}: a llama file named 'mistral'")
    config: dict[str, Any] = {"tie_word_embeddings": "output.weight" not in file.tensors}
    for key, value in file.metadata.items():
        prefix, _, config_key = key.partition(".")
        renamed = GGUF_CONFIG_MAPPING.get(prefix, {}).get(config_key)
        if renamed is None or renamed == -1:
            continue
        if key in file.arrays:  # the legacy loader unwraps one-element arrays; not worth copying
            raise UnsupportedGguf(f"{file.path}: the config key {key} holds an array")
        config[renamed] = value
    if "vocab_size" not in config and "tokenizer.ggml.tokens" in file.metadata:
        config["vocab_size"] = file.metadata["tokenizer.ggml.tokens"]
    return config


def dequantize(tensor: GgufTensor, path: Path) -> np.ndarray:
    """A tensor's values in float32, by `gguf.quants.dequantize` (what transformers calls); a type
    gguf cannot dequantise raises `UnsupportedGguf`."""
    import gguf

    try:
        values = gguf.quants.dequantize(tensor.data, gguf.GGMLQuantizationType(tensor.ggml_type))
    except NotImplementedError as exc:
        raise UnsupportedGguf(f"{path}: tensor {tensor.name}: {exc}") from None
    return values.reshape(tensor.shape)


def _reverse_permute(weights: np.ndarray, n_head: int, n_kv_head: int | None) -> np.ndarray:
    """Undo llama.cpp's interleaving of the rotary halves in q_proj/k_proj rows (transformers'
    `LlamaTensorProcessor._reverse_permute_weights`, unchanged)."""
    if n_kv_head is not None and n_head != n_kv_head:
        n_head = n_kv_head
    dim = weights.shape[0] // n_head // 2
    grouped = weights.reshape(n_head, dim, 2, *weights.shape[1:])
    return grouped.swapaxes(2, 1).reshape(weights.shape)


def llama_state_dict(
    file: GgufFile, shapes: dict[str, tuple[int, ...]], config: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """The file's tensors dequantised to float32 torch tensors under transformers' names.

    `shapes` is the model's state dict (name -> shape). Every model tensor must come from the file,
    except a tied `lm_head.weight`, and every tensor of the file must find a model name.
    """
    import gguf
    import torch

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    hf_names = {}
    for hf_name in shapes:
        base, dot, suffix = hf_name.rpartition(".")
        if suffix not in ("weight", "bias"):
            base, dot, suffix = hf_name, "", ""
        gguf_name = names.get_name(base)
        if gguf_name is not None:
            hf_names[gguf_name + dot + suffix] = hf_name
    unmapped = sorted(set(file.tensors) - set(hf_names))
    if unmapped:
        raise UnsupportedGguf(f"{file.path}: no transformers name for {', '.join(unmapped[:5])}")
    tied = {"lm_head.weight"} if config["tie_word_embeddings"] else set()
    missing = sorted(set(shapes) - tied - {hf_names[name] for name in file.tensors})
    if missing:
        raise UnsupportedGguf(f"{file.path}: nothing in the file for {', '.join(missing[:5])}")
    heads, kv_heads = config.get("num_attention_heads"), config.get("num_key_value_heads")
    state = {}
    for name, tensor in file.tensors.items():
        weights = dequantize(tensor, file.path)
        if heads is not None and kv_heads is not None:
            if ".attn_q." in name:
                weights = _reverse_permute(weights, heads, heads)
            elif ".attn_k." in name:
                weights = _reverse_permute(weights, heads, kv_heads)
        if not weights.flags.writeable:  # a plain F32 tensor is a view of the read-only file
            weights = weights.copy()
        hf_name = hf_names[name]
        if tuple(weights.shape) != tuple(shapes[hf_name]):
            raise UnsupportedGguf(
                f"{file.path}: {name} has shape {weights.shape}, the model's {hf_name} "
                f"{tuple(shapes[hf_name])}"
            )
        state[hf_name] = torch.from_numpy(np.ascontiguousarray(weights)).to(torch.float32)
    return state


def convert_llama_gguf(path: Path, out: Path) -> None:
    """Write `path` (a llama GGUF) to `out` as transformers' slow path would: model.safetensors,
    config.json, generation_config.json and the tokenizer files."""
    import torch
    from transformers import AutoModelForCausalLM, TokenizersBackend
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    file = read_gguf(path)
    config_dict = llama_config_dict(file)
    config = CONFIG_MAPPING[config_dict["model_type"]].from_dict(
        config_dict, name_or_path=str(path.parent)
    )
    with torch.device("meta"):  # shapes only: no memory, and no random initialisation to undo
        model = AutoModelForCausalLM.from_config(config)
    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    state = llama_state_dict(file, shapes, config_dict)
    model.load_state_dict(state, strict=False, assign=True)
    del state
    if config.tie_word_embeddings:
        model.tie_weights()
    left = [name for name, value in model.state_dict().items() if value.is_meta]
    if left:
        raise UnsupportedGguf(f"{path}: no weights for {', '.join(left[:5])}")
    model.save_pretrained(out, safe_serialization=True)
    del model
    # the tokenizer as AutoTokenizer builds it from this file, without its config pass over the file
    tokenizer = TokenizersBackend.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.save_pretrained(out)


def convert_with_transformers(path: Path, out: Path) -> None:
    """The slow, general conversion: transformers loads the GGUF (dequantising everything), and a
    fresh model built from its config is given the state dict, since a GGUF-loaded model refuses
    `save_pretrained`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(source.state_dict(), strict=False)
    del source
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def convert_gguf(path: Path, out: Path) -> Literal["fast", "transformers"]:
    """Convert a GGUF file into the folder `out` (which exists); returns the path taken, "fast" or
    "transformers" (for a file the fast conversion cannot reproduce exactly, logged)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        convert_llama_gguf(path, out)
        return "fast"
    except UnsupportedGguf as exc:
        log.warning("%s; converting with transformers instead (slower: ~30 s for SmolLM2)", exc)
    for partial in out.iterdir():  # nothing is written before the checks, but be sure
        if partial.is_dir():
            shutil.rmtree(partial)
        else:
            partial.unlink()
    convert_with_transformers(path, out)
    return "transformers"
