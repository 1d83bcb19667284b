"""The transformers engine: a local causal LM generating for many prompts at once.

It drives `model.generate` with left-padded batches of similar prompt lengths (wide on a GPU,
with a static KV cache there), greedy or sampling at a chain's temperature, records one log-prob
per chosen token (not the full vocabulary per step), constrains the answer to the triple-list
grammar (chains/engines/grammar.py) unless a chain turns that off, and ends looping answers
(chains/repeat_guard.py). On a GPU, decoding greedily, the grammar's masks for the next step
are computed on CPU threads while the GPU runs the model, and each `generate` call's decode step
is recorded once as a CUDA graph and replayed (chains/engines/cuda_graph.py).
On a CPU greedy chunks are decoded by checking tokens guessed from the prompt and the answer
so far several at a model call (chains/engines/speculative.py: the answers of token-by-token
decoding in fewer calls), over attention that reads the grouped KV cache without copying it
(chains/engines/gqa_attention.py), with the linear layers in bf16 where the CPU has bf16
instructions (chains/engines/cpu_precision.py); finished rows leave the batch: decoding pauses
once few of its rows are still writing and goes on with those alone, their KV cache kept
(nothing is computed again), so a batch does not run at full width until its longest answer
ends; and the beginning the prompts of a chunk share (system prompt, instructions, the same
few-shot examples) runs through the model once, at one row, and is kept for the next call.
Engines are cached per (model, adapter): loaded once per process, shared by every chain on that
model; nothing a chain sets changes an engine (a chain's options travel with each call).
"""

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from os.path import commonprefix
from typing import Any

from triplesmith.chains.engines.base import (
    CANCELLED,
    Engine,
    FinishReason,
    Generation,
    GenerationOptions,
    Messages,
    adapter_dir,
    env_choice,
    token_pieces,
)
from triplesmith.chains.engines.cuda_graph import DecodeGraph
from triplesmith.chains.engines.gqa_attention import use_packed_sdpa
from triplesmith.chains.engines.grammar import GrammarProcessor, grammar_for
from triplesmith.chains.engines.speculative import SLOTS_PER_TOKEN
from triplesmith.chains.repeat_guard import RepeatGuard
from triplesmith.errors import ChainError
from triplesmith.memory import trim_heap
from triplesmith.models import adapter_hash, model_hash, resolve

log = logging.getLogger(__name__)

# Rows per `generate`. A chunk runs as many decode steps as its longest answer, so fewer, wider
# chunks take fewer steps: on 2 CPU cores the demo's 20 zero-shot sentences took 59 CPU-s as one
# chunk, 76 as 16 + 4 rows (benchmarks/RESULTS.md, "Demo memory and time"). On a GPU a step of a
# small model costs about the same however many rows it has (for SmolLM2-135M on the H200,
# `generate` over 634 prompts at once was 2.4x faster than batches of 256: issue 17's table), so
# a GPU batch is as wide as the sentences in flight allow.
CPU_BATCH = 32
GPU_BATCH = 1024
# On a CPU a chunk's KV cache is capped too (fp32, and copied whole by the dynamic cache's
# concatenation at every step): 20 few-shot prompts of SmolLM2 (~620 tokens, plus the answers)
# would hold ~0.7 GB in one chunk, about as much as the model; capped, they run as 10 + 10 rows.
CPU_CACHE_BYTES = 384 * 1024**2
# `generate` pauses once no more than this share of its rows is still writing; the finished rows
# leave, and the others go on from their KV cache. A decode step's cost grows with the rows in
# it (on 2 CPU cores about in proportion; on the H200 41 ms at 634 rows against 13 ms at one),
# and a pause costs one more `generate` call (benchmarks/RESULTS.md, "Finished rows leave").
COMPACT_AT = 0.5
# The guessing decoder (chains/engines/speculative.py) drops finished rows sooner: it needs no
# new `generate` call to do so, only the cache's rows copied, and its calls are wider.
GUESS_COMPACT_AT = 0.75
# A chunk's prompts share their beginning (system prompt, instructions, the same few-shot
# examples): from this many tokens on it runs through the model once, at one row, and every row
# starts from its keys and values; the last such prefix is kept for the next call.
MIN_SHARED_PREFIX = 16


class _ChosenLogprobs:
    """A logits processor that records, per step, the log-prob of the token each row writes.

    Last of the engine's processors, it sees their final scores, and transformers applies its
    sampling warpers (the temperature) only after them: a recorded log-prob is the token's under
    the model's distribution at temperature 1, renormalised over the tokens the grammar allows
    (and with the loop rules' forced tokens, or a repetition penalty, applied), for greedy and
    sampled tokens alike; a forced token gets 0. It keeps one float per row and step instead of
    `output_scores`' full vocabulary per step (49,152 floats for SmolLM2).

    Greedy, the token is the scores' argmax, so its log-prob is `max - logsumexp` at once, and
    with a grammar on a GPU the choices go to the grammar, which works out the next step's masks
    while the model runs. Sampling, the token is drawn after this processor: the step's
    normalised scores are kept until the next call reads the drawn token from `input_ids`, or,
    for a `generate` call's last step, `take` reads it from the returned sequences (the grammar
    then reads each row's token from `input_ids` too, as on a CPU).
    """

    def __init__(self, grammar: GrammarProcessor | None = None, sampling: bool = False) -> None:
        self.steps: list[Any] = []
        self.grammar = None if sampling else grammar
        self.sampling = sampling
        self._pending: Any = None  # the last step's log-probs, until its token is known

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float()
        if self.sampling:
            self._record(input_ids[:, -1])
            self._pending = torch.log_softmax(logits, dim=-1)
            return scores
        best = logits.max(dim=-1)
        self.steps.append(best.values - torch.logsumexp(logits, dim=-1))
        if self.grammar is not None and scores.is_cuda:
            self.grammar.advance(best.indices.tolist())
        return scores

    def _record(self, tokens: Any) -> None:
        """The pending step's log-probs of the tokens written at that step."""
        if self._pending is not None:
            self.steps.append(self._pending.gather(1, tokens.unsqueeze(1)).squeeze(1))
            self._pending = None

    def take(self, sequences: Any) -> list[list[float]]:
        """Each row's log-probs of the steps recorded since the last call, and forget them;
        `sequences` is what the `generate` call returned (its last tokens end a sampled step)."""
        import torch

        self._record(sequences[:, -1])
        if not self.steps:
            return []
        taken = torch.stack(self.steps, dim=1).cpu().tolist()
        self.steps = []
        return taken

    def select(self, keep: list[int]) -> None:
        """Nothing to keep per row between `generate` calls (see `take`)."""


class _PauseWhenFew:
    """A `generate` stopping criterion that ends the call for every row once no more than
    `limit` rows are still writing (a row has finished once it wrote end-of-sequence), so that
    the finished rows can leave the batch. All on the device: no synchronisation of its own."""

    def __init__(self, eos_ids: list[int], rows: int, limit: int, device: Any) -> None:
        import torch

        self.eos = torch.tensor(eos_ids, device=device)
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)
        self.limit = limit

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.finished |= torch.isin(input_ids[:, -1], self.eos)
        few = (~self.finished).sum() <= self.limit
        return few.expand(input_ids.shape[0]).clone()


def cache_bytes_per_token(model: Any) -> int:
    """Bytes of KV cache one token takes in `model` (keys and values of every layer)."""
    config = model.config.get_text_config()
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    return 2 * int(config.num_hidden_layers) * kv_heads * head_dim * model.dtype.itemsize


class HFEngine(Engine):
    """A loaded transformers model + tokenizer that turns chat prompts into generations
    (greedy, or sampled at a chain's temperature)."""

    name = "transformers"
    # The KV cache on a GPU: "static" (preallocated for the chunk's prompts and budget) or
    # "dynamic" (transformers' default, grown by concatenation every step); on a CPU see
    # `cpu_cache`. The decode step is not compiled (transformers' compiled static cache compiles
    # for about a minute per batch shape: benchmarks/RESULTS.md, "Engines"); it is replayed from
    # a CUDA graph instead (`cuda_graphs`).
    gpu_cache: str = "static"
    # On a GPU, whether attention may use cuDNN's kernel, which torch picks first on Hopper.
    # Profiled on the H200, a cuDNN attention call costs far more CPU than the model's other
    # operators (about 0.6 ms against 30 us for a matmul, profiler included), and the decode step
    # is CPU-bound; False keeps to the flash / memory-efficient / math kernels. Not measured yet
    # (benchmarks/bench_engines.py `hf-nocudnn`), so torch's choice stays the default.
    cudnn_attention: bool = True
    # The KV cache on a CPU: "preallocated" (chains/engines/kv_cache.py: written in place, read
    # as far as it is filled; the dynamic cache's concatenation was 28-32 % of a decode step at
    # 20 rows, and a static cache there was slower and larger: benchmarks/RESULTS.md, "Demo
    # memory and time"); "dynamic" is transformers' own, "static" lets tests run the GPU's cache.
    cpu_cache: str = "preallocated"
    # Whether finished rows leave the batch (see COMPACT_AT); False runs each chunk as one call;
    # None: on a CPU only. On the H200 the answers were the same (634 of 634) but a step there is
    # bound by launching kernels, not by its rows, and the pauses cost more than they saved
    # (benchmarks/RESULTS.md, "Finished rows leave the batch").
    compact: bool | None = None
    # Whether the prompts' shared beginning (the system prompt, the few-shot examples) is run
    # through the model once, at one row, instead of once a row (`_fill_prefix`); None: on a CPU
    # only. On the H200 (bf16) it was no faster and changed greedy answers (the prefix's keys
    # computed at one row round differently): benchmarks/RESULTS.md, "The prompts' shared
    # beginning"; on a CPU (fp32) the answers are the same and few-shot chunks run ~1.8x faster.
    share_prefix: bool | None = None
    # Whether the decode steps replay a CUDA graph recorded at each `generate` call's first
    # decode step (chains/engines/cuda_graph.py), with the static cache; None: on a GPU unless
    # TRIPLESMITH_CUDA_GRAPHS=0. True off a GPU runs the same wrapper eagerly (what CPU tests
    # exercise). A model whose step cannot be replayed faithfully runs as it is (`unrecordable`).
    cuda_graphs: bool | None = None
    # Whether greedy chunks decode by checking tokens guessed from the prompt and the answer so
    # far, several a model call (chains/engines/speculative.py); None: on a CPU unless
    # TRIPLESMITH_GUESS_TOKENS=0. On a CPU a step of a small model is bound by reading its
    # weights, so checking a few more tokens in it costs little; on a GPU `generate` with the
    # decode graph (above) is already within its target and is kept.
    speculative: bool | None = None

    def __init__(self, model: str = "smollm2", adapter: str | None = None) -> None:
        from triplesmith.models import load

        super().__init__()
        self.model_name = model
        self.adapter = adapter
        self.model, self.tokenizer = load(model)
        self.on_gpu = self.model.device.type == "cuda"
        self.default_batch = GPU_BATCH if self.on_gpu else CPU_BATCH
        self.model_hash = model_hash(resolve(model))
        if adapter is not None:
            self.model = self._attach_adapter(adapter)
            self.adapter_hash = adapter_hash(adapter)
        # On a CPU with bf16 instructions the linear layers run in bf16 (TRIPLESMITH_CPU_PRECISION,
        # default auto; part of the experiment's key: chains/engines/cpu_precision.py).
        self.cpu_precision: str | None = None
        if not self.on_gpu:
            from triplesmith.chains.engines.cpu_precision import apply_cpu_precision

            self.cpu_precision = apply_cpu_precision(self.model)
            # Attention over several query tokens reads the grouped KV cache without copying
            # it (chains/engines/gqa_attention.py): calls checking guessed tokens, prompts.
            use_packed_sdpa(self.model)
        self.tokenizer.padding_side = "left"
        self.cache_bytes_per_token = cache_bytes_per_token(self.model)
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.vocab_size = int(self.model.config.vocab_size)
        self.widths: list[int] = []  # rows of each `generate` call of the last chunk
        self.prefix_reused = 0  # tokens of the last chunk's prefix taken from an earlier call
        self.graphs: list[DecodeGraph] = []  # the decode graphs of the last chunk's calls
        self.model_calls: int | None = None  # the last chunk's decode calls, when guessing
        # The last shared prefix: its token ids and each layer's keys and values (one row).
        self._prefix: tuple[list[int], list[tuple[Any, Any]]] | None = None
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids: list[int] = list(eos) if isinstance(eos, list) else [eos]

    def _attach_adapter(self, adapter: str) -> Any:
        from peft import PeftModel

        path = adapter_dir(adapter)
        try:
            peft_model = PeftModel.from_pretrained(self.model, str(path))
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ChainError(
                f"adapter {adapter!r} does not fit base model {self.model_name!r}: {exc}"
            ) from exc
        # Merged weights generate as fast as the base model.
        merged = peft_model.merge_and_unload()
        merged.eval()
        return merged

    # --- prompts ---------------------------------------------------------------------------

    def chunks(
        self, order: Sequence[int], lengths: Sequence[int], budgets: Sequence[int], width: int
    ) -> list[list[int]]:
        """On a GPU `width` prompts a chunk; on a CPU also no more than `CPU_CACHE_BYTES` of KV
        cache (rows x (longest prompt + SLOTS_PER_TOKEN x longest budget) tokens: a chunk
        decoded by checking guessed tokens takes up to that many cache slots an answer token,
        chains/engines/speculative.py)."""
        if self.on_gpu:
            return super().chunks(order, lengths, budgets, width)
        cap = max(1, CPU_CACHE_BYTES // self.cache_bytes_per_token)
        chunks: list[list[int]] = []
        chunk: list[int] = []
        longest = budget = 0
        for i in order:
            wider = max(longest, lengths[i]) + SLOTS_PER_TOKEN * max(budget, budgets[i])
            if chunk and (len(chunk) == width or (len(chunk) + 1) * wider > cap):
                chunks.append(chunk)
                chunk, longest, budget = [], 0, 0
            chunk.append(i)
            longest, budget = max(longest, lengths[i]), max(budget, budgets[i])
        return [*chunks, chunk] if chunk else chunks

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prepare(self, messages: Messages) -> tuple[str, int]:
        text = self.render(messages)
        return text, self.count_tokens(text)

    # --- generation ------------------------------------------------------------------------

    def _processors(
        self, rows: int, prompt_width: int, budget: int, options: GenerationOptions
    ) -> tuple[list[Any], RepeatGuard | None, _ChosenLogprobs]:
        """The logits processors, in order: the grammar's mask, the loop rules (which may
        force closing tokens the grammar allows), then the log-prob recorder.

        The loop rules look one token ahead at the argmax. Sampling, they still force their
        tokens (a forced token is the only one allowed, so it is drawn with probability 1), but
        they check only the argmax: a drawn token that is not the argmax is not checked at the
        step it is written (a repeated item it closes is dropped by the parser, and the next
        argmax that closes a repeat still ends the answer)."""
        processors: list[Any] = []
        grammar = None
        if options.constrained:
            compiled = grammar_for(self.tokenizer, self.vocab_size, options.json_schema)
            grammar = GrammarProcessor(compiled, rows, prompt_width, budget)
            processors.append(grammar)
        guard = None
        if options.stop_repeats or options.close_loops:
            guard = RepeatGuard(
                self.tokenizer,
                prompt_width,
                self.eos_ids[0],
                triples=options.stop_repeats,
                strings=options.close_loops,
            )
            processors.append(guard)
        chosen = _ChosenLogprobs(grammar, sampling=options.temperature is not None)
        processors.append(chosen)
        return processors, guard, chosen

    def _cache(self, prompt_width: int, budget: int) -> Any:
        """A chunk's KV cache: on a GPU a static cache sized to this chunk (a static cache of
        transformers' own keeps the longest chunk's size for every later call), on a CPU a
        preallocated one (see `cpu_cache`). Made here so that finished rows can be dropped from
        it between calls."""
        from transformers import DynamicCache, StaticCache

        kind = self.gpu_cache if self.on_gpu else self.cpu_cache
        if kind == "static":
            return StaticCache(config=self.model.config, max_cache_len=prompt_width + budget)
        if kind == "preallocated":
            from triplesmith.chains.engines.kv_cache import preallocated_cache

            return preallocated_cache(self.model.config, prompt_width + budget)
        return DynamicCache(config=self.model.config)

    def _generate_chunk(
        self, texts: list[str], budgets: list[int], options: GenerationOptions
    ) -> list[Generation]:
        import torch
        from transformers.generation import utils

        budget = max(budgets)  # one budget for the chunk: the longest of its rows
        started = time.perf_counter()
        tok = self.tokenizer
        # `generate` takes it as `cache` from transformers 5.24 on, `past_key_values` before.
        cache_name = (
            "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"
        )
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        share = self.share_prefix if self.share_prefix is not None else not self.on_gpu
        shared = self._shared_length(ids) if share else 0
        self.prefix_reused = 0
        # Rows are the shared prefix, then each row's own tokens left-padded: the padding sits
        # between them, which the attention mask and the positions (counted over the mask) skip.
        own = [row[shared:] for row in ids]
        own_width = max(len(row) for row in own)
        pad = tok.pad_token_id
        input_ids = torch.tensor(
            [ids[0][:shared] + [pad] * (own_width - len(row)) + row for row in own],
            device=self.model.device,
        )
        prompt_mask = torch.tensor(
            [[1] * shared + [0] * (own_width - len(row)) + [1] * len(row) for row in own],
            device=self.model.device,
        )
        prompt_width = prompt_mask.shape[1]
        guessing = self._speculates(options)
        cache = self._cache(prompt_width, SLOTS_PER_TOKEN * budget if guessing else budget)
        if shared:
            self._fill_prefix(cache, ids[0][:shared], len(texts), cache_name)
        self.widths = []
        self.graphs = []
        self.model_calls = None
        if guessing:
            answers, logprobs, repeated = self._decode_guessing(
                ids, input_ids[:, shared:], prompt_mask, cache, budget, options, cache_name
            )
        else:
            answers, logprobs, repeated = self._decode(
                input_ids, prompt_mask, cache, budget, options, cache_name
            )
        del cache
        if not self.on_gpu:
            trim_heap()  # the chunk's KV cache goes back to the OS, not into glibc's free lists
        tokens_in = prompt_mask.sum(dim=1).tolist()
        elapsed = time.perf_counter() - started
        return [
            self._generation(
                answers[row], logprobs[row], row in repeated, tokens_in[row], elapsed / len(texts)
            )
            for row in range(len(texts))
        ]

    def _decode(
        self,
        input_ids: Any,
        prompt_mask: Any,
        cache: Any,
        budget: int,
        options: GenerationOptions,
        cache_name: str,
    ) -> tuple[list[list[int]], list[list[float]], set[int]]:
        """Each row's answer tokens, their log-probs and the rows the loop rules cut, by
        `generate` (pausing to let finished rows leave, on a CPU)."""
        import torch
        from transformers import GenerationConfig

        tok = self.tokenizer
        prompt_width = prompt_mask.shape[1]
        rows_in = input_ids.shape[0]
        processors, guard, chosen = self._processors(rows_in, prompt_width, budget, options)
        eos_ids = set(self.eos_ids)
        rows = list(range(rows_in))  # the chunk's row of each row still in the batch
        answers: list[list[int]] = [[] for _ in rows]
        logprobs: list[list[float]] = [[] for _ in rows]
        repeated: set[int] = set()
        written = 0
        compact = self.compact if self.compact is not None else not self.on_gpu
        with self._random(options):
            while rows:
                width = len(rows)
                self.widths.append(width)
                pause = _PauseWhenFew(
                    self.eos_ids,
                    width,
                    int(width * COMPACT_AT) if compact else 0,
                    self.model.device,
                )
                config = GenerationConfig(
                    max_new_tokens=budget - written,
                    **self._decoding(options),
                    eos_token_id=self.eos_ids,
                    pad_token_id=tok.pad_token_id,
                    repetition_penalty=options.repetition_penalty,
                    no_repeat_ngram_size=options.no_repeat_ngram_size,
                    disable_compile=True,
                )
                mask = prompt_mask[rows]
                if written:  # the answers so far are all written tokens: no padding among them
                    mask = torch.cat([mask, mask.new_ones((width, written))], dim=1)
                with torch.inference_mode(), self._attention(), self._graph(cache):
                    sequences = self.model.generate(
                        input_ids=input_ids,
                        attention_mask=mask,
                        **{cache_name: cache},
                        generation_config=config,
                        logits_processor=processors,
                        stopping_criteria=[self._stop_when_cancelled, pause],
                    )
                if self.cancelled:
                    raise ChainError(CANCELLED)
                for row, scores in zip(rows, chosen.take(sequences), strict=True):
                    logprobs[row].extend(scores)
                new_tokens = sequences[:, prompt_width + written :].tolist()
                written = sequences.shape[1] - prompt_width
                keep = []
                for i, (row, tokens) in enumerate(zip(rows, new_tokens, strict=True)):
                    answers[row].extend(tokens)
                    if guard is not None and i in guard.cut:
                        repeated.add(row)
                    if written < budget and not eos_ids.intersection(tokens):
                        keep.append(i)
                if not keep:
                    break
                # The rows still writing go on alone, from their own KV cache.
                kept = torch.tensor(keep, device=input_ids.device)
                cache.reorder_cache(kept)
                for processor in processors:
                    processor.select(keep)
                input_ids = sequences[kept]
                rows = [rows[i] for i in keep]
        return answers, logprobs, repeated

    def _speculates(self, options: GenerationOptions) -> bool:
        """Whether a chunk decodes by checking guessed tokens (see `speculative`): greedy, with
        no penalty of transformers' own, on a CPU unless TRIPLESMITH_GUESS_TOKENS=0."""
        plain = (
            options.temperature is None
            and options.repetition_penalty in (None, 1.0)
            and not options.no_repeat_ngram_size
        )
        wanted = self.speculative
        if wanted is None:
            switch = env_choice(
                "TRIPLESMITH_GUESS_TOKENS",
                ("1", "0"),
                "1",
                "1 checks tokens guessed from the prompt several at a time on a CPU, the "
                "default; 0 decodes one token a step",
            )
            wanted = not self.on_gpu and switch == "1"
        return wanted and plain

    def _decode_guessing(
        self,
        ids: list[list[int]],
        own_ids: Any,
        prompt_mask: Any,
        cache: Any,
        budget: int,
        options: GenerationOptions,
        cache_name: str,
    ) -> tuple[list[list[int]], list[list[float]], set[int]]:
        """`_decode`'s result by prompt lookup decoding (chains/engines/speculative.py): the
        prompts' own tokens (`own_ids`, after the shared prefix already in `cache`) run once,
        then each call checks each row's guessed tokens."""
        import torch

        from triplesmith.chains.engines.speculative import RowState, SpeculativeDecoder

        rows, guards = [], []
        for prompt in ids:
            processors, guard, _ = self._processors(1, 0, budget, options)
            guards.append(guard)
            grammar = next((p for p in processors if isinstance(p, GrammarProcessor)), None)
            # The last processor records log-probs for `generate`; the decoder does that itself.
            rows.append(
                RowState(
                    prompt=prompt,
                    processors=processors[:-1],
                    position=len(prompt),
                    forced=None if grammar is None else partial(grammar.forced_after, 0),
                )
            )

        def forward(**inputs: Any) -> Any:
            return self.model(**inputs, **{cache_name: cache}, use_cache=True).logits

        shared = prompt_mask.shape[1] - own_ids.shape[1]
        positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)
        decoder = SpeculativeDecoder(
            forward,
            cache,
            prompt_mask,
            rows,
            set(self.eos_ids),
            budget,
            lambda: self.cancelled,
            compact_at=GUESS_COMPACT_AT if self.compact is not False else 0.0,
        )
        with torch.inference_mode():
            first = self.model(
                input_ids=own_ids,
                attention_mask=prompt_mask,
                position_ids=positions[:, shared:],
                cache_position=torch.arange(shared, prompt_mask.shape[1]),
                logits_to_keep=1,
                **{cache_name: cache},
                use_cache=True,
            ).logits[:, -1]
            decoder.run(first)
        self.widths = decoder.widths
        self.model_calls = decoder.calls
        repeated = {i for i, guard in enumerate(guards) if guard is not None and 0 in guard.cut}
        return [r.answer for r in rows], [r.logprobs for r in rows], repeated

    def _generation(
        self,
        answer: list[int],
        logprobs: list[float],
        repeated: bool,
        tokens_in: int,
        elapsed: float,
    ) -> Generation:
        """One row's answer up to end-of-sequence, with its text, pieces and finish reason."""
        eos_ids = set(self.eos_ids)
        ids, scores = [], []
        finish: FinishReason = "length"
        for token, score in zip(answer, logprobs, strict=True):
            if token in eos_ids:
                finish = "stop"
                break
            ids.append(token)
            scores.append(score)
        if repeated:
            finish = "repeat"
        pieces = self._pieces(ids)
        return Generation(
            text="".join(pieces),
            token_ids=ids,
            pieces=pieces,
            logprobs=scores,
            tokens_in=tokens_in,
            tokens_out=len(ids),
            latency_s=elapsed,
            finish_reason=finish,
        )

    def _decoding(self, options: GenerationOptions) -> dict[str, Any]:
        """`generate`'s decoding settings: greedy, or plain sampling at the chain's temperature
        (no top-k, top-p or other cut, whatever the model's generation config says)."""
        if options.temperature is None:
            return {"do_sample": False}
        return {
            "do_sample": True,
            "temperature": options.temperature,
            "top_k": 0,
            "top_p": 1.0,
            "min_p": 0.0,
            "typical_p": 1.0,
            "epsilon_cutoff": 0.0,
            "eta_cutoff": 0.0,
        }

    @contextmanager
    def _random(self, options: GenerationOptions) -> Iterator[None]:
        """Sampling: the random generators of the CPU and the model's GPU seeded with the
        chain's seed for one chunk, and put back as they were after it (one seed per chunk,
        not per row: a prompt's sample depends on the rows it is batched with)."""
        if options.temperature is None:
            yield
            return
        import torch

        devices = [self.model.device] if self.on_gpu else []
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.manual_seed(options.seed)
            if self.on_gpu:
                with torch.cuda.device(self.model.device):
                    torch.cuda.manual_seed(options.seed)
            yield

    def _shared_length(self, ids: list[list[int]]) -> int:
        """How many leading tokens every prompt of the chunk shares (each keeps at least one
        of its own), or 0 when that is too short to be worth a pass of its own. A single
        prompt is its own prefix but its last token: kept, its beginning (system prompt,
        examples) serves the next call's prompt, which takes what it has in common with it."""
        shared = min(len(commonprefix(ids)), min(len(row) for row in ids) - 1)
        return shared if shared >= MIN_SHARED_PREFIX else 0

    def _fill_prefix(self, cache: Any, prefix: list[int], rows: int, cache_name: str) -> None:
        """Put the keys and values of `prefix` into `cache` for each of `rows` rows: run once at
        one row, starting from the last chunk's prefix as far as it agrees."""
        import torch
        from transformers import DynamicCache

        single = DynamicCache(config=self.model.config)
        reused = 0
        if self._prefix is not None:
            reused = len(commonprefix([self._prefix[0], prefix]))
            for layer, (keys, values) in enumerate(self._prefix[1] if reused else ()):
                single.update(keys[:, :, :reused], values[:, :, :reused], layer)
        if reused < len(prefix):
            rest = torch.tensor([prefix[reused:]], device=self.model.device)
            with torch.inference_mode():
                self.model(input_ids=rest, **{cache_name: single}, use_cache=True)
        layers = [(layer.keys, layer.values) for layer in single.layers]
        self._prefix = (list(prefix), layers)
        self.prefix_reused = reused
        for layer, (keys, values) in enumerate(layers):
            cache.update(
                keys.expand(rows, -1, -1, -1).contiguous(),
                values.expand(rows, -1, -1, -1).contiguous(),
                layer,
            )

    def _graph(self, cache: Any) -> AbstractContextManager[Any]:
        """The decode steps of one `generate` call over `cache` from a CUDA graph (see
        `cuda_graphs`), or as they are."""
        from transformers import StaticCache

        wanted = self.cuda_graphs
        if wanted is None:
            switch = env_choice(
                "TRIPLESMITH_CUDA_GRAPHS",
                ("1", "0"),
                "1",
                "1 replays decode steps from a CUDA graph on a GPU, the default; 0 runs every "
                "step as it is",
            )
            wanted = self.on_gpu and switch == "1"
        if not wanted or not isinstance(cache, StaticCache):
            return nullcontext()
        graph = DecodeGraph(self.model, cache)
        self.graphs.append(graph)
        return graph.installed()

    def _attention(self) -> AbstractContextManager[Any]:
        """The attention kernels `generate` may use (see `cudnn_attention`)."""
        if not self.on_gpu or self.cudnn_attention:
            return nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernels = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        return sdpa_kernel(kernels)

    def _stop_when_cancelled(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        """A `generate` stopping criterion: every row stops at the next step once cancelled."""
        import torch

        return torch.full(
            (input_ids.shape[0],),
            self.cancelled,
            dtype=torch.bool,
            device=input_ids.device,
        )

    def _pieces(self, ids: list[int]) -> list[str]:
        """Each token's text (see `token_pieces`): with a fast tokenizer, by its own incremental
        detokenizer (the same algorithm in Rust, 6x faster for 634 answers)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        try:
            from tokenizers.decoders import DecodeStream
        except ImportError:  # tokenizers before 0.21
            backend = None
        if backend is None or getattr(self.tokenizer, "clean_up_tokenization_spaces", False):
            return token_pieces(
                lambda part: self.tokenizer.decode(part, skip_special_tokens=True), ids
            )
        stream = DecodeStream(skip_special_tokens=True)
        return [stream.step(backend, token) or "" for token in ids]

    def as_chat_model(self) -> Any:
        """The same model as a LangChain chat model (langchain-huggingface), for composition."""
        from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
        from transformers import pipeline

        pipe = pipeline("text-generation", model=self.model, tokenizer=self.tokenizer)
        return ChatHuggingFace(llm=HuggingFacePipeline(pipeline=pipe), tokenizer=self.tokenizer)
