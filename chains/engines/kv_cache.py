"""A KV cache allocated once per chunk that attention reads only as far as it is filled.

transformers' dynamic cache grows by concatenation: every decode step copies each layer's whole
keys and values into a new tensor one token longer (on 2 CPU cores, for SmolLM2 at 20 rows and
~250 tokens, `aten::cat` was 28 % of a decode step: benchmarks/RESULTS.md, "Engines side by
side"). Its static cache writes in place but attends over its whole length (prompt + budget) at
every step. `PreallocatedCache` does neither: each layer's keys and values are written in place
into buffers sized for the chunk's prompts and budget, and attention gets a view of the filled
part. The values in the view are those the dynamic cache would hold, so are the answers.
`gather_slots` keeps chosen rows and, of each, chosen slots moved to the front: the decoder that
checks guessed tokens (chains/engines/speculative.py) drops finished rows and the slots of
guesses it did not keep with it, in one copy of the filled part.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in buffers of `capacity` tokens, exposed (`keys`, `values`)
    as views of the filled part; grown by doubling if a call writes past the capacity."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._keys: Any = None
        self._values: Any = None

    def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
        self.device = key_states.device
        rows, heads, _, width = key_states.shape
        self._keys = key_states.new_empty((rows, heads, self.capacity, width))
        self._values = value_states.new_empty((rows, heads, self.capacity, value_states.shape[-1]))
        self.length = 0
        self._expose()
        self.is_initialized = True

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._grow(max(end, 2 * self.capacity))
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def _grow(self, capacity: int) -> None:
        keys = self._keys.new_empty((*self._keys.shape[:2], capacity, self._keys.shape[-1]))
        values = self._values.new_empty((*self._values.shape[:2], capacity, self._values.shape[-1]))
        keys[:, :, : self.length] = self.keys
        values[:, :, : self.length] = self.values
        self._keys, self._values, self.capacity = keys, values, capacity

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def reorder_cache(self, beam_idx: Any) -> None:
        if self.is_initialized:
            self._keys = self._keys.index_select(0, beam_idx.to(self.device))
            self._values = self._values.index_select(0, beam_idx.to(self.device))
            self._expose()

    def gather(self, rows: Any, slots: Any) -> None:
        """Keep the rows `rows` and, of row `r` of them, only the slots `slots[r]` in that order
        (`slots`: [len(rows), n] indices of filled slots); the filled part becomes n long."""
        if not self.is_initialized:
            return
        rows = rows.to(self.device)
        slots = slots.to(self.device)
        heads = torch.arange(self._keys.shape[1], device=self.device)
        pick = (rows[:, None, None], heads[None, :, None], slots[:, None, :])
        width = slots.shape[1]
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((len(rows), old.shape[1], self.capacity, old.shape[-1]))
            new[:, :, :width] = old[pick]
            setattr(self, name, new)
        self.length = width
        self._expose()

    def batch_select_indices(self, indices: Any) -> None:
        if self.is_initialized:
            self._keys = self._keys[indices, ...]
            self._values = self._values[indices, ...]
            self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if self.is_initialized:
            self.length = max(0, self.length - abs(tokens_to_remove))
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._expose()

    def reset(self) -> None:
        super().reset()
        self._keys = self._values = None
        self.length = 0


def gather_slots(cache: Any, rows: Any, slots: Any) -> bool:
    """`PreallocatedLayer.gather` on every layer of `cache`; False (the cache left as it is)
    when a layer is not a `PreallocatedLayer`."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(isinstance(layer, PreallocatedLayer) for layer in layers):
        return False
    for layer in layers:
        layer.gather(rows, slots)
    return True


def preallocated_cache(config: Any, capacity: int) -> DynamicCache:
    """A dynamic cache for `config` whose full-attention layers are `PreallocatedLayer`s of
    `capacity` tokens (a sliding-window layer stays transformers' own)."""
    cache = DynamicCache(config=config)
    cache.layers = [
        PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer
        for layer in cache.layers
    ]
    return cache
