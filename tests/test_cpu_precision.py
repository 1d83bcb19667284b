"""Linear layers in bf16 on a CPU (chains/engines/cpu_precision.py): the switch, the CPU's
flags, the conversion on a small random model, and the real engine where the CPU has bf16."""

from pathlib import Path

import pytest
import torch
from model_shapes import tiny_llama

from triplesmith.chains.engines.cpu_precision import (
    BF16Linear,
    apply_cpu_precision,
    cpu_has_bf16,
    cpu_precision,
    to_bf16_linears,
)
from triplesmith.errors import ChainError


def test_the_switch_defaults_to_auto_and_names_a_bad_value(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("TRIPLESMITH_CPU_PRECISION", raising=False)
    assert cpu_precision() == "auto"
    monkeypatch.setenv("TRIPLESMITH_CPU_PRECISION", "fp32")
    assert cpu_precision() == "fp32"
    monkeypatch.setenv("TRIPLESMITH_CPU_PRECISION", "bf16")
    assert cpu_precision() == "bf16"
    monkeypatch.setenv("TRIPLESMITH_CPU_PRECISION", "int4")
    with pytest.raises(ChainError, match="TRIPLESMITH_CPU_PRECISION='int4'"):
        cpu_precision()


def test_bf16_instructions_are_read_from_the_cpus_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not cpu_has_bf16(info)
    assert not cpu_has_bf16(tmp_path / "absent")  # not Linux: no flags to read


def test_auto_runs_bf16_where_the_cpu_has_bf16_instructions(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("TRIPLESMITH_CPU_PRECISION", raising=False)
    model = tiny_llama()
    expected = "bf16" if cpu_has_bf16() else None  # None: fp32, the model left as it is
    assert apply_cpu_precision(model) == expected
    assert isinstance(model.lm_head, BF16Linear) == (expected == "bf16")
    monkeypatch.setenv("TRIPLESMITH_CPU_PRECISION", "fp32")
    model = tiny_llama()
    assert apply_cpu_precision(model) is None and isinstance(model.lm_head, torch.nn.Linear)


def test_every_linear_layer_turns_bf16_and_the_logits_stay_close() -> None:
    model = tiny_llama(hidden_size=64, intermediate_size=128, tie_word_embeddings=True)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    with torch.inference_mode():
        before = model(ids).logits
    assert to_bf16_linears(model) == 2 * 7 + 1  # q, k, v, o, gate, up, down a layer; the head
    assert isinstance(model.lm_head, BF16Linear)
    assert model.model.embed_tokens.weight.dtype == torch.float32  # tied, but kept fp32
    with torch.inference_mode():
        after = model(ids).logits
    assert after.dtype == torch.float32
    assert torch.allclose(after, before, atol=0.05)
    assert not torch.equal(after, before)


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions")
def test_the_engine_in_bf16_answers_in_the_grammar_and_keys_its_experiments_apart(
    monkeypatch, carb_dir: Path
) -> None:  # noqa: ANN001
    import json

    from triplesmith.chains.engines import GenerationOptions, HFEngine
    from triplesmith.chains.local import LocalChain
    from triplesmith.chains.prompt import build_messages
    from triplesmith.data.carb import read_carb_gold
    from triplesmith.experiments.inputs import experiment_key

    examples = read_carb_gold(carb_dir / "gold" / "test.tsv", "test")[:4]
    prompts = [build_messages(e.sentence, []) for e in examples]
    options = GenerationOptions(max_new_tokens=96)
    engines = {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setenv("TRIPLESMITH_CPU_PRECISION", precision)
        engines[precision] = HFEngine("smollm2")
    assert engines["fp32"].cpu_precision is None and engines["bf16"].cpu_precision == "bf16"
    results = engines["bf16"].generate(prompts, [20] * len(prompts), options)
    for result in results:
        assert isinstance(json.loads(result.text), list)  # the grammar holds in bf16 too
    keys = {
        p: experiment_key(LocalChain("zero-shot:smollm2", engine, options=options).metadata())
        for p, engine in engines.items()
    }
    assert keys["fp32"] != keys["bf16"]
