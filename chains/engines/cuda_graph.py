"""`generate`'s decode step replayed from a CUDA graph: one launch a step instead of hundreds.

A decode step of a small model on a GPU is bound by launching its kernels, not by the GPU's
work (SmolLM2-135M on the H200: 27-41 ms of a step at 634 rows went to the model's forward pass,
most of it the CPU issuing ~500 kernels; benchmarks/RESULTS.md, "Engines side by side"). With a
static KV cache every decode step of a `generate` call has the same shapes and reads and writes
the same tensors, so the step is recorded once as a CUDA graph (`torch.cuda.CUDAGraph`) and
replayed at each later step: the step's inputs (the new tokens, the 4-D attention mask that
`generate` builds for a static cache) are copied into the graph's own tensors, and the logits
come back in the graph's own output tensor. Nothing is compiled: no `torch.compile` and its
minute per shape; recording costs one warm-up step and one recorded step per `generate` call.

The static cache keeps its filled length on the device (`StaticLayer.cumulative_length`) and
advances it inside the step, so the position a replay writes and attends to moves on by itself.
The warm-up runs the step for real (writing the keys and values of the step it records, and
advancing the counters), so the counters are put back afterwards and the replay writes that
position again with the same values.

Off a GPU the same wrapper runs the step eagerly from its own tensors (`graphs=False`): that is
what a CPU test exercises (the buffers, the counters put back), everything but the recording.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


# Rotary embeddings of these kinds recompute their frequencies from the sequence's length in
# Python at each step (transformers' `dynamic_rope_update`): a replay would keep the recorded ones.
PER_LENGTH_ROPE = ("dynamic", "longrope")


def unrecordable(model: Any, cache: Any) -> str | None:
    """Why the decode step of `model` over `cache` cannot be replayed faithfully, or None.

    A replay repeats the recorded kernels with the recorded arguments: anything the step computes
    in Python from its position would stay as it was at the recording. So only a cache whose
    layers are all transformers' `StaticLayer` (its length on the device; a sliding-window layer
    counts in Python) and rotary embeddings that do not depend on the length qualify.
    """
    from transformers.cache_utils import StaticLayer

    kinds = {type(layer).__name__ for layer in cache.layers if type(layer) is not StaticLayer}
    if kinds:
        return f"cache layers that keep their length in Python: {', '.join(sorted(kinds))}"
    for module in model.modules():
        rope = getattr(module, "rope_type", None)
        types = rope.values() if isinstance(rope, dict) else [rope]
        moving = [t for t in types if isinstance(t, str) and t.startswith(PER_LENGTH_ROPE)]
        if moving:
            return f"rotary embeddings recomputed per length ({moving[0]})"
    return None


def _signature(inputs: dict[str, Any], settings: dict[str, Any]) -> tuple[Any, ...]:
    """What a step must share with the recorded one to replay it: its tensors' names and shapes,
    and its other arguments."""
    return (sorted((name, tuple(value.shape)) for name, value in inputs.items()), settings)


class DecodeGraph:
    """The decode steps of one `generate` call over `cache`, recorded once and replayed.

    Use as `with DecodeGraph(model, cache).installed(): model.generate(..., cache=cache)`.
    The prompts' forward pass (more than one token a row) runs eagerly; the first decode step
    records the graph, every later one replays it. If recording fails (an operator that cannot
    be recorded, in some model or library version), the step runs eagerly from then on and
    `failed` says why: slower, never a different answer.
    """

    def __init__(self, model: Any, cache: Any, graphs: bool | None = None) -> None:
        self.model = model
        self.cache = cache
        self.graphs = model.device.type == "cuda" if graphs is None else graphs
        self.failed: str | None = None
        self.replays = 0
        self._eager: Callable[..., Any] = model.forward
        self._inputs: dict[str, Any] = {}  # the graph's input tensors, by argument
        self._settings: dict[str, Any] = {}  # the recorded step's other arguments
        self._run: Callable[[], Any] | None = None
        # `generate` reads the forward pass's signature to choose what it passes (positions,
        # logits at the last position only): the wrapper shows the model's.
        self._wrapped = functools.update_wrapper(
            functools.partial(DecodeGraph._forward, self), self._eager
        )

    @contextmanager
    def installed(self) -> Iterator[DecodeGraph]:
        """The model's forward pass goes through this object while inside."""
        own = vars(self.model).get("forward")
        self.model.forward = self._wrapped
        try:
            yield self
        finally:
            if own is None:
                del self.model.forward
            else:
                self.model.forward = own
            self._run = None  # the graph and its memory go
            self._inputs = {}

    def _forward(self, **kwargs: Any) -> Any:
        import torch

        tokens = kwargs.get("input_ids")
        decode = (
            self.failed is None
            and kwargs.get("cache") is self.cache
            and isinstance(tokens, torch.Tensor)
            and tokens.ndim == 2
            and tokens.shape[1] == 1
            and kwargs.get("inputs_embeds") is None
        )
        if not decode:
            return self._eager(**kwargs)
        inputs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        settings = {k: v for k, v in kwargs.items() if k not in inputs and k != "cache"}
        if self._run is None:
            if not self._record(inputs, settings):
                return self._eager(**kwargs)
        elif _signature(inputs, settings) != _signature(self._inputs, self._settings):
            return self._eager(**kwargs)  # not the recorded step's shapes: run as it is
        else:
            for name, value in inputs.items():
                self._inputs[name].copy_(value)
        assert self._run is not None
        self.replays += 1
        return self._run()

    def _counters(self) -> list[Any]:
        return [layer.cumulative_length.clone() for layer in self.cache.layers]

    def _put_back(self, counters: list[Any]) -> None:
        for layer, counter in zip(self.cache.layers, counters, strict=True):
            layer.cumulative_length.copy_(counter)

    def _record(self, inputs: dict[str, Any], settings: dict[str, Any]) -> bool:
        """Record the step (on a GPU) or set up its tensors (elsewhere); False if it failed."""
        import torch

        self.failed = unrecordable(self.model, self.cache)
        if self.failed is not None:
            return False
        self._inputs = {name: value.clone() for name, value in inputs.items()}
        self._settings = dict(settings)
        device = next(iter(self._inputs.values())).device

        def step() -> Any:
            return self._eager(**self._inputs, **self._settings, cache=self.cache)

        counters = self._counters()
        if not self.graphs:
            step()  # the warm-up a GPU needs, and what it leaves behind to put back
            self._put_back(counters)
            self._run = step
            return True
        try:
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                step()  # kernels' lazy set-up (cuBLAS, cuDNN plans) happens outside the graph
            torch.cuda.current_stream(device).wait_stream(side)
            self._put_back(counters)
            graph = torch.cuda.CUDAGraph()
            # Only this thread's calls may not break the recording: another engine's thread
            # (two chains of one graph, LangSmith's workers) goes on using the GPU meanwhile.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                output = step()
            self._put_back(counters)
        except Exception as exc:  # the step cannot be recorded: run it eagerly from now on
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning(
                "decode step not recorded as a CUDA graph (%s); running it eagerly", self.failed
            )
            self._put_back(counters)
            self._inputs = {}
            return False

        def replay() -> Any:
            graph.replay()
            return output

        self._run = replay
        return True
