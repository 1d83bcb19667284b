"""Attention of a grouped-query model over several query tokens without copying its cache.

In a grouped-query model (SmolLM2: 9 query heads share 3 key/value heads) transformers' SDPA
attention, given a mask and more than one query token, first copies every key and value head
once per query head that reads it (`repeat_kv`), at every layer of every call: for 20 rows of
~300 cached tokens and 2 query tokens a row that copy made a layer's attention 4.6 ms instead
of 0.7 ms on 2 CPU cores (benchmarks/RESULTS.md, "Guessed tokens checked in one call"). For one
query token it already avoids the copy by folding the query heads of a group into the query
length (`pack_gqa`); `packed_sdpa` does the same for any query length (the mask repeated once
per head of the group), so that a call checking guessed tokens, or a batch of prompts, reads
the cache as it is. The products are the same; only their order of summation may differ.
"""

from __future__ import annotations

from typing import Any

NAME = "triplesmith_packed_sdpa"


def packed_sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' SDPA attention, with a group's query heads folded into the query length
    where it would copy keys and values instead."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1))
    rows, heads, length, width = query.shape
    plain = (
        groups == 1
        or length == 1
        or attention_mask is None
        or attention_mask.shape[1] != 1
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
        or (module.training and dropout)
    )
    if plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, **kwargs
        )
    folded = query.reshape(rows, heads // groups, groups * length, width)
    mask = attention_mask.expand(rows, 1, length, -1).repeat(1, 1, groups, 1)
    out = torch.nn.functional.scaled_dot_product_attention(
        folded, key, value, attn_mask=mask, scale=scaling
    )
    out = out.reshape(rows, heads, length, width)
    return out.transpose(1, 2).contiguous(), None


def use_packed_sdpa(model: Any) -> bool:
    """Switch `model` (running transformers' SDPA attention) to `packed_sdpa`; False, and the
    model left as it is, when it uses another attention or has no grouped heads."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    config = model.config.get_text_config()
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(config, "num_key_value_heads", 0) or heads)
    if getattr(config, "_attn_implementation", None) != "sdpa" or heads <= kv_heads:
        return False
    AttentionInterface.register(NAME, packed_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
