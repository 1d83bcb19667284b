"""A GGUF file from transformers weights and a template GGUF of the same model (llama family).

The template gives everything but the weights: hyper-parameters, tokenizer, chat template. The
weights are renamed with gguf's own name map and, as llama.cpp's converter does for llama
models, the q/k projections are permuted to its rotary layout (transformers' GGUF loader undoes
exactly this when it reads the file back).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from triplesmith.errors import ModelError

_FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}
_TENSOR_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}


def permute_rotary(weights: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """llama.cpp's `LlamaModel.permute`: interleaved rotary halves, per head."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        raise ModelError(f"the template GGUF has no {key}")
    return field.contents()


def _gguf_tensors(state: Mapping[str, Any], reader: Any) -> dict[str, Any]:
    """The template's tensor names → float32 numpy arrays of the new weights, in GGUF layout."""
    import gguf
    import numpy as np

    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelError(f"GGUF export copies llama-family templates only, not {arch!r}")
    n_head = int(_field(reader, "llama.attention.head_count"))
    n_kv = int(_field(reader, "llama.attention.head_count_kv"))
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, int(_field(reader, "llama.block_count")))
    wanted = {tensor.name: tensor for tensor in reader.tensors}
    out: dict[str, Any] = {}
    for hf_name, tensor in state.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelError(f"weight {hf_name} has no GGUF name; cannot export this model")
        data = tensor.detach().float().cpu().numpy()
        if name not in wanted:
            embeddings = state.get("model.embed_tokens.weight")
            tied = embeddings is not None and np.array_equal(data, embeddings.float().numpy())
            if hf_name == "lm_head.weight" and tied:
                continue  # tied to token_embd, which the template stores alone
            raise ModelError(f"the template GGUF has no tensor {name} (for {hf_name})")
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = permute_rotary(data, n_head, n_head)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = permute_rotary(data, n_head, n_kv)
        expected = tuple(int(d) for d in reversed(wanted[name].shape))
        if data.shape != expected:
            raise ModelError(f"{hf_name} has shape {data.shape}; the template's {name} {expected}")
        out[name] = np.ascontiguousarray(data, dtype=np.float32)
    missing = sorted(set(wanted) - set(out))
    if missing:
        raise ModelError(f"the weights lack {len(missing)} template tensors, e.g. {missing[0]}")
    return out


def write_gguf(state: Mapping[str, Any], template: Path, target: Path, outtype: str) -> None:
    """Write `state` (a transformers state dict) as a GGUF at `target`, metadata from `template`."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(template)
    tensors = _gguf_tensors(state, reader)
    writer = gguf.GGUFWriter(target, _field(reader, "general.architecture"))
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in (
            gguf.Keys.General.ARCHITECTURE,
            gguf.Keys.General.FILE_TYPE,
        ):
            continue
        kind = field.types[0]
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_type)
    writer.add_file_type(getattr(gguf.LlamaFileType, _FILE_TYPES[outtype]))
    quant = getattr(gguf.GGMLQuantizationType, _TENSOR_TYPES[outtype])
    for tensor in reader.tensors:  # the template's order
        data = tensors[tensor.name]
        if data.ndim < 2 or outtype == "f32":  # norms stay f32, as llama.cpp keeps them
            writer.add_tensor(tensor.name, data)
        elif outtype == "f16":
            writer.add_tensor(tensor.name, data.astype(np.float16))
        else:
            writer.add_tensor(tensor.name, gguf.quants.quantize(data, quant), raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
