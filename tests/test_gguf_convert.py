"""The fast GGUF conversion writes exactly what transformers' own GGUF load gives, and falls back
to it (with a warning) for a file it cannot reproduce."""

import filecmp
import hashlib
import json
import logging
from pathlib import Path

import gguf
import numpy as np
import pytest

from triplesmith import gguf_convert, models

Q = gguf.GGMLQuantizationType


def write_tiny_llama(path: Path, *, tied: bool, kv_heads: int, extra: str | None = None) -> Path:
    """A 2-layer llama GGUF with random weights in several ggml types and a byte-level BPE
    vocabulary; `extra` adds a tensor of that name, which no transformers parameter matches."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(0)
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *bytes_to_unicode().values()]
    tokens += [merge.replace(" ", "") for merge in merges]
    tokens += [f"<unused{i}>" for i in range(320 - len(tokens))]
    hidden, layers, heads, ffn = 64, 2, 4, 96
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}"
    )

    def add(name: str, shape: tuple[int, ...], qtype: Q) -> None:
        values = rng.standard_normal(shape).astype(np.float32) * 0.05
        if qtype == Q.F32:
            writer.add_tensor(name, values)
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    add("token_embd.weight", (len(tokens), hidden), Q.Q8_0)
    if not tied:
        add("output.weight", (len(tokens), hidden), Q.F16)
    add("output_norm.weight", (hidden,), Q.F32)
    for block in range(layers):
        add(f"blk.{block}.attn_norm.weight", (hidden,), Q.F32)
        add(f"blk.{block}.ffn_norm.weight", (hidden,), Q.F32)
        add(f"blk.{block}.attn_q.weight", (hidden, hidden), Q.Q4_1)
        add(f"blk.{block}.attn_k.weight", (kv_heads * head_dim, hidden), Q.Q4_1)
        add(f"blk.{block}.attn_v.weight", (kv_heads * head_dim, hidden), Q.Q4_0)
        add(f"blk.{block}.attn_output.weight", (hidden, hidden), Q.Q8_0)
        add(f"blk.{block}.ffn_gate.weight", (ffn, hidden), Q.Q4_1)
        add(f"blk.{block}.ffn_up.weight", (ffn, hidden), Q.Q5_0)
        add(f"blk.{block}.ffn_down.weight", (hidden, ffn), Q.F16)
    if extra:
        add(extra, (hidden,), Q.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def assert_same_files(left: Path, right: Path) -> None:
    names = sorted(file.name for file in left.iterdir())
    assert names == sorted(file.name for file in right.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    for name in names:
        assert filecmp.cmp(left / name, right / name, shallow=False), name


@pytest.mark.parametrize(("tied", "kv_heads"), [(True, 2), (False, 4)])
def test_tiny_llama_converts_to_the_files_transformers_writes(tmp_path, tied, kv_heads):
    source = write_tiny_llama(tmp_path / "tiny.gguf", tied=tied, kv_heads=kv_heads)
    fast, reference = tmp_path / "fast", tmp_path / "reference"
    fast.mkdir()
    reference.mkdir()
    assert gguf_convert.convert_gguf(source, fast) == "fast"
    gguf_convert.convert_with_transformers(source, reference)
    assert_same_files(fast, reference)


def test_a_tensor_without_a_transformers_name_falls_back_to_transformers(tmp_path, caplog):
    source = write_tiny_llama(
        tmp_path / "tiny.gguf", tied=True, kv_heads=2, extra="blk.0.mystery.weight"
    )
    out = tmp_path / "out"
    out.mkdir()
    with caplog.at_level(logging.WARNING, logger="triplesmith.gguf_convert"):
        assert gguf_convert.convert_gguf(source, out) == "transformers"
    assert "no transformers name for blk.0.mystery.weight" in caplog.text
    assert "converting with transformers instead" in caplog.text
    assert (out / "model.safetensors").is_file()


def test_an_architecture_other_than_llama_is_unsupported(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "other.gguf"), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(gguf_convert.UnsupportedGguf, match="architecture 'gpt2', not llama"):
        gguf_convert.convert_llama_gguf(tmp_path / "other.gguf", tmp_path)


def test_a_file_that_is_not_gguf_is_unsupported(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_bytes(b"not a model")
    with pytest.raises(gguf_convert.UnsupportedGguf, match="GGUF magic bytes"):
        gguf_convert.read_gguf(path)


def test_header_reads_as_gguf_reader_reads_it():
    path = models.embedded_gguf("smollm2")
    ours = gguf_convert.read_gguf(path)
    reader = gguf.GGUFReader(path)
    assert [tensor.name for tensor in reader.tensors] == list(ours.tensors)
    for tensor in reader.tensors:
        mine = ours.tensors[tensor.name]
        assert mine.ggml_type == tensor.tensor_type
        assert mine.shape == tuple(int(dim) for dim in reversed(tensor.shape))
        assert np.array_equal(mine.data.reshape(-1), tensor.data.view(np.uint8).reshape(-1))
    fields = {key: field for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    assert list(fields) == list(ours.metadata)
    for key, field in fields.items():
        value = field.contents()
        if key in ours.arrays and isinstance(value, list) and value and isinstance(value[0], str):
            assert ours.metadata[key] == len(value), key  # strings are counted, not kept
        else:
            assert ours.metadata[key] == value, key


@pytest.fixture(scope="module")
def fast_smollm2(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fast")
    gguf_convert.convert_llama_gguf(models.embedded_gguf("smollm2"), out)
    return out


@pytest.mark.slow
def test_smollm2_converts_to_the_files_transformers_writes(fast_smollm2, tmp_path):
    gguf_convert.convert_with_transformers(models.embedded_gguf("smollm2"), tmp_path)
    assert_same_files(fast_smollm2, tmp_path)


@pytest.mark.slow
def test_smollm2_weights_are_transformers_gguf_load_bit_for_bit(fast_smollm2):
    import torch
    from transformers import AutoModelForCausalLM

    path = models.embedded_gguf("smollm2")
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).state_dict()
    ours = AutoModelForCausalLM.from_pretrained(fast_smollm2).state_dict()
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype == torch.float32, name
        assert torch.equal(ours[name], tensor), name


@pytest.mark.slow
def test_smollm2_tokenizer_is_the_gguf_tokenizer(fast_smollm2, carb_dir):
    from transformers import AutoTokenizer

    path = models.embedded_gguf("smollm2")
    theirs = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ours = AutoTokenizer.from_pretrained(fast_smollm2)
    assert ours.get_vocab() == theirs.get_vocab()
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert ours.chat_template == theirs.chat_template
    sentences = (carb_dir / "sentences" / "dev.txt").read_text().splitlines()[:200]
    sentences += ["Zoë's café — 3.5 km; naïve “quotes” <|im_end|> 日本語"]
    encoded = ours(sentences)["input_ids"]
    assert encoded == theirs(sentences)["input_ids"]
    assert ours.batch_decode(encoded) == theirs.batch_decode(encoded)
    chat = [
        {"role": "system", "content": "Extract triples."},
        {"role": "user", "content": sentences[0]},
    ]
    for tokenize in (False, True):
        assert ours.apply_chat_template(
            chat, tokenize=tokenize, add_generation_prompt=True
        ) == theirs.apply_chat_template(chat, tokenize=tokenize, add_generation_prompt=True)


@pytest.mark.slow
def test_convert_embedded_fills_a_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIPLESMITH_CACHE_DIR", str(tmp_path))
    target = models.convert_embedded("smollm2", force=True)
    assert target == tmp_path / "models" / "smollm2"
    info = json.loads((target / models.MARKER).read_text())
    gguf_file = models.embedded_gguf("smollm2")
    assert set(info) == {"name", "source", "source_sha256", "hub_id", "converted_in_s"}
    assert info["source"] == str(gguf_file)
    assert info["source_sha256"] == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()
    assert [entry.name for entry in (tmp_path / "models").iterdir()] == ["smollm2"]
