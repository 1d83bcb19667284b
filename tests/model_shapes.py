"""Model shapes the training planner's tests share (the figures of the issues' measurements), and
the small random Llama the engine tests share, with its greedy `generate`."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from triplesmith.training.config import ModelShape

# Llama-2-7B's shape, as in the measurements.
LLAMA2_7B = ModelShape(
    params=6_738_415_616, layers=32, hidden=4096, intermediate=11008, supports_packing=True
)
# SmolLM2-135M's shape.
SMOLLM2 = ModelShape(
    params=134_515_008, layers=30, hidden=576, intermediate=1536, supports_packing=True
)

# A small random Llama (2 layers, 4 query heads sharing 2 key/value heads) for engine tests.
TINY_LLAMA = {
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "pad_token_id": 0,
}


def tiny_llama(**overrides: object) -> LlamaForCausalLM:
    """TINY_LLAMA (with `overrides`), seeded weights, in eval mode."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **overrides})).eval()


def greedy(model: LlamaForCausalLM, prompts: torch.Tensor, new: int, **kwargs: object):  # noqa: ANN201
    """`model.generate` over left-padded `prompts` (token 0 is padding): greedy, exactly `new`
    tokens a row, uncompiled; `kwargs` go to `generate` (a cache, what to return...)."""
    with torch.inference_mode():
        return model.generate(
            input_ids=prompts,
            attention_mask=(prompts != 0).long(),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            disable_compile=True,
            pad_token_id=0,
            **kwargs,
        )
