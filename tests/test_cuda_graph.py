"""The decode-graph wrapper (chains/engines/cuda_graph.py) around a small random Llama model:
what runs through it, what runs as it is, and that the model is left as it was."""

import inspect

import pytest
import torch
from model_shapes import greedy, tiny_llama
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, StaticCache

from triplesmith.chains.engines.cuda_graph import DecodeGraph, unrecordable


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama(eos_token_id=1)


def generate(model: LlamaForCausalLM, cache, **kwargs) -> torch.Tensor:  # noqa: ANN001
    prompts = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    return greedy(model, prompts, 12, cache=cache, **kwargs)


def test_decode_steps_go_through_the_wrapper_with_the_same_tokens(model) -> None:  # noqa: ANN001
    plain = generate(model, StaticCache(config=model.config, max_cache_len=20))
    cache = StaticCache(config=model.config, max_cache_len=20)
    graph = DecodeGraph(model, cache)
    assert not graph.graphs  # no GPU: the steps run eagerly from the wrapper's tensors
    forward = model.forward
    with graph.installed():
        assert inspect.signature(model.forward) == inspect.signature(forward)
        ours = generate(model, cache)
    assert torch.equal(ours, plain)
    assert graph.failed is None and graph.replays == 11  # every step after the prompts' pass
    assert "forward" not in vars(model) and model.forward == forward  # put back


def test_a_cache_without_a_device_length_runs_as_it_is(model) -> None:  # noqa: ANN001
    """A dynamic cache grows at every step: nothing to record; the steps run unchanged."""
    plain = generate(model, DynamicCache(config=model.config))
    cache = DynamicCache(config=model.config)
    graph = DecodeGraph(model, cache)
    with graph.installed():
        ours = generate(model, cache)
    assert torch.equal(ours, plain)
    assert graph.replays == 0 and "DynamicLayer" in (graph.failed or "")


def test_a_step_unlike_the_recorded_one_runs_as_it_is(model) -> None:  # noqa: ANN001
    """Another cache than the wrapper's, or other settings, are not replayed."""
    cache = StaticCache(config=model.config, max_cache_len=20)
    other = StaticCache(config=model.config, max_cache_len=20)
    graph = DecodeGraph(model, cache)
    with graph.installed():
        ours = generate(model, other)
    assert graph.replays == 0 and graph.failed is None
    assert torch.equal(ours, generate(model, StaticCache(config=model.config, max_cache_len=20)))


def test_steps_that_depend_on_their_position_in_python_are_not_recorded() -> None:
    """A sliding-window layer counts its length in Python and a dynamic rotary embedding
    recomputes its frequencies per length: a replay would keep the recorded values."""
    from transformers import MistralConfig, MistralForCausalLM

    small = {
        "vocab_size": 64,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    sliding = MistralConfig(**small, sliding_window=4, max_position_embeddings=32)
    why = unrecordable(MistralForCausalLM(sliding), StaticCache(config=sliding, max_cache_len=16))
    assert why is not None and "StaticSlidingWindowLayer" in why
    dynamic = LlamaConfig(
        **small, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    )
    why = unrecordable(LlamaForCausalLM(dynamic), StaticCache(config=dynamic, max_cache_len=16))
    assert why is not None and "dynamic" in why
    plain = LlamaConfig(**small)
    assert (
        unrecordable(LlamaForCausalLM(plain), StaticCache(config=plain, max_cache_len=16)) is None
    )


def test_the_environment_turns_the_graph_off_or_names_a_bad_value(model, monkeypatch) -> None:  # noqa: ANN001
    """TRIPLESMITH_CUDA_GRAPHS=0 runs every step as it is; a value other than 0 or 1 is named."""
    from triplesmith.chains.engines.hf import HFEngine
    from triplesmith.errors import ChainError

    engine = HFEngine.__new__(HFEngine)  # the switch only: the small model, as if on a GPU
    engine.model, engine.on_gpu = model, True
    cache = StaticCache(config=model.config, max_cache_len=8)
    for switch, recorded in (("1", 1), ("0", 0)):
        monkeypatch.setenv("TRIPLESMITH_CUDA_GRAPHS", switch)
        engine.graphs = []
        engine._graph(cache)
        assert len(engine.graphs) == recorded
    monkeypatch.setenv("TRIPLESMITH_CUDA_GRAPHS", "yes")
    with pytest.raises(ChainError, match="TRIPLESMITH_CUDA_GRAPHS='yes'"):
        engine._graph(cache)
