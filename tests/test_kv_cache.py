"""The preallocated KV cache (chains/engines/kv_cache.py) against transformers' dynamic cache,
on a small random Llama model: the same tokens and logits, growing past its capacity, and rows
dropped between `generate` calls."""

import pytest
import torch
from model_shapes import greedy, tiny_llama
from transformers import DynamicCache, LlamaForCausalLM

from triplesmith.chains.engines.kv_cache import (
    PreallocatedLayer,
    gather_slots,
    preallocated_cache,
)


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama()


PROMPTS = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7], [0, 9, 8, 7, 6]])


def generate(model: LlamaForCausalLM, cache, prompts=PROMPTS, new=10):  # noqa: ANN001, ANN201
    return greedy(
        model, prompts, new, cache=cache, output_logits=True, return_dict_in_generate=True
    )


@pytest.mark.parametrize("capacity", [15, 4])  # room for all, and too little: it grows
def test_the_same_tokens_and_logits_as_the_dynamic_cache(model, capacity: int) -> None:  # noqa: ANN001
    plain = generate(model, DynamicCache(config=model.config))
    cache = preallocated_cache(model.config, capacity)
    ours = generate(model, cache)
    assert all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)
    assert torch.equal(ours.sequences, plain.sequences)
    for a, b in zip(ours.logits, plain.logits, strict=True):
        assert torch.equal(a, b)
    # 5 prompt tokens and 9 of the 10 new ones went through the model (not the last one)
    assert cache.get_seq_length() == 14 and cache.layers[0].capacity >= 14
    assert cache.layers[0].keys.shape[-2] == 14  # attention sees the filled part only


def test_rows_dropped_between_calls_go_on_as_in_the_dynamic_cache(model) -> None:  # noqa: ANN001
    """What the engine does when finished rows leave the batch (`Cache.reorder_cache`)."""
    keep = torch.tensor([2, 0])
    results = []
    for cache in (DynamicCache(config=model.config), preallocated_cache(model.config, 30)):
        first = generate(model, cache, new=4).sequences
        cache.reorder_cache(keep)
        results.append(generate(model, cache, prompts=first[keep], new=6).sequences)
    assert torch.equal(results[0], results[1])


def test_gathered_slots_hold_the_chosen_rows_keys_and_values_in_order(model) -> None:  # noqa: ANN001
    """`gather_slots`: the rows kept, each with only its chosen slots, moved to the front; the
    capacity stays, so the next tokens are written after them."""
    cache = preallocated_cache(model.config, 12)
    generate(model, cache, new=3)  # 5 prompt tokens + 2 new ones in every row
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    rows = torch.tensor([2, 0])
    slots = torch.tensor([[1, 2, 3, 6], [2, 3, 4, 5]])
    assert gather_slots(cache, rows, slots)
    for layer, (keys, values) in zip(cache.layers, before, strict=True):
        assert layer.capacity == 12 and cache.get_seq_length() == 4
        for new_row, (old_row, picked) in enumerate(zip(rows, slots, strict=True)):
            assert torch.equal(layer.keys[new_row], keys[old_row][:, picked])
            assert torch.equal(layer.values[new_row], values[old_row][:, picked])
    # transformers' own dynamic cache cannot be gathered: left as it was
    plain = DynamicCache(config=model.config)
    generate(model, plain, new=3)
    assert not gather_slots(plain, rows, slots) and plain.get_seq_length() == 7
