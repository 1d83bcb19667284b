"""The onnxruntime-genai engine with the real embedded SmolLM2, against the transformers engine
(slow: they export the model once and generate)."""

import json
import logging
from pathlib import Path

import pytest

from triplesmith.chains.engines import GenerationOptions
from triplesmith.errors import ChainError

pytest.importorskip("onnxruntime_genai")
pytestmark = pytest.mark.slow

SENTENCES = [
    "Barack Obama was born in Hawaii.",
    "Paris is the capital of France.",
    "The Nile flows through Egypt and Sudan.",
]
FREE = GenerationOptions(
    max_new_tokens=16, constrained=False, stop_repeats=False, close_loops=False
)


def prompts_for(sentences: list[str]) -> list:
    from triplesmith.chains.prompt import build_messages
    from triplesmith.data.registry import load_dataset

    shots = load_dataset("sample", split="train")[:3]
    return [build_messages(s, shots) for s in sentences]


@pytest.fixture(scope="module")
def onnx_engine():  # noqa: ANN201
    from triplesmith.chains.engines.onnx import OnnxEngine

    return OnnxEngine("smollm2")


@pytest.fixture(scope="module")
def hf_engine():  # noqa: ANN201
    from triplesmith.chains.engines import get_hf_engine

    return get_hf_engine("smollm2")


@pytest.fixture(scope="module")
def free_answers(onnx_engine, hf_engine):  # noqa: ANN001, ANN201
    """The free greedy answers of both engines: (onnx batched, onnx alone, hf batched)."""
    prompts = prompts_for(SENTENCES)
    sizes = [8] * len(prompts)
    batched = onnx_engine.generate(prompts, sizes, FREE)
    alone = [onnx_engine.generate([p], [8], FREE)[0] for p in prompts]
    return batched, alone, hf_engine.generate(prompts, sizes, FREE)


def test_greedy_answers_equal_the_transformers_engine_batched_and_alone(free_answers) -> None:  # noqa: ANN001
    batched, alone, hf = free_answers
    for ours, single, theirs in zip(batched, alone, hf, strict=True):
        assert not isinstance(ours, Exception) and not isinstance(theirs, Exception)
        assert ours.token_ids == theirs.token_ids == single.token_ids
        assert ours.text == theirs.text == "".join(ours.pieces)
        assert ours.tokens_in == theirs.tokens_in and ours.tokens_out == theirs.tokens_out
        assert ours.finish_reason == theirs.finish_reason


def test_log_probs_equal_the_transformers_engine(free_answers) -> None:  # noqa: ANN001
    batched, _, hf = free_answers
    for ours, theirs in zip(batched, hf, strict=True):
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-2)


def test_constrained_answers_are_compact_json_triple_lists(onnx_engine) -> None:  # noqa: ANN001
    results = onnx_engine.generate(
        prompts_for(SENTENCES), [8] * 3, GenerationOptions(max_new_tokens=60)
    )
    for result in results:
        assert not isinstance(result, Exception)
        assert result.finish_reason == "stop", result.text
        answer = json.loads(result.text)
        assert isinstance(answer, list) and answer
        assert all(list(item) == ["s", "relation", "object"] for item in answer)
        assert all(isinstance(value, str) for item in answer for value in item.values())
        assert json.dumps(answer) == result.text  # the canonical compact separators
        assert "".join(result.pieces) == result.text
        assert len(result.logprobs) == result.tokens_out == len(result.token_ids)


def test_an_adapter_changes_the_answer_as_it_does_with_transformers(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from triplesmith.chains.engines import HFEngine
    from triplesmith.chains.engines.onnx import OnnxEngine
    from triplesmith.models import load

    model, _ = load("smollm2")
    config = LoraConfig(
        r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")
    adapter = str(tmp_path / "adapter")
    prompts = [[{"role": "user", "content": f"Extract triples: {SENTENCES[0]}"}]]
    options = GenerationOptions(max_new_tokens=12, constrained=False)

    [tuned] = OnnxEngine("smollm2", adapter=adapter).generate(prompts, [8], options)
    [base] = OnnxEngine("smollm2").generate(prompts, [8], options)
    [reference] = HFEngine("smollm2", adapter=adapter).generate(prompts, [8], options)
    assert tuned.text != base.text, tuned.text
    assert tuned.token_ids == reference.token_ids and tuned.text == reference.text
    assert tuned.logprobs == pytest.approx(reference.logprobs, abs=1e-2)


def test_a_prompt_over_the_context_is_an_error_in_its_slot(onnx_engine) -> None:  # noqa: ANN001
    long = [{"role": "user", "content": "word " * 9000}]
    short = [{"role": "user", "content": SENTENCES[0]}]
    options = GenerationOptions(max_new_tokens=4, constrained=False)
    error, answer = onnx_engine.generate([long, short], [9000, 8], options)
    assert isinstance(error, ChainError) and "over the model's context" in str(error)
    assert not isinstance(answer, Exception) and answer.tokens_out == 4


def test_no_repeat_ngram_size_is_refused_naming_the_transformers_engine(onnx_engine) -> None:  # noqa: ANN001
    options = GenerationOptions(max_new_tokens=4, no_repeat_ngram_size=3)
    [error] = onnx_engine.generate(prompts_for(SENTENCES[:1]), [8], options)
    assert isinstance(error, ChainError) and "TRIPLESMITH_ENGINE=hf" in str(error)


def test_the_export_is_built_once_and_reused(onnx_engine, caplog) -> None:  # noqa: ANN001
    from triplesmith.chains.engines.onnx import OnnxEngine

    config = onnx_engine.path / "genai_config.json"
    built = config.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="triplesmith.chains.engines.onnx"):
        again = OnnxEngine("smollm2")
    assert again.path == onnx_engine.path
    assert config.stat().st_mtime_ns == built
    assert not [r for r in caplog.records if "exporting" in r.getMessage()]
