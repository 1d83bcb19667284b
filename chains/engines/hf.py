"""The transformers engine: a local causal LM generating for many prompts at once, greedy.

It drives `model.generate` with left-padded batches of similar prompt lengths (wide on a GPU,
with a static KV cache there), records one log-prob per chosen token (not the full vocabulary
per step), constrains the answer to the triple-list grammar (chains/engines/grammar.py) unless
a chain turns that off, and ends looping answers (chains/repeat_guard.py). Engines are cached
per (model, adapter): loaded once per process, shared by every chain on that model; nothing a
chain sets changes an engine (a chain's options travel with each call).
"""

import logging
import time
from typing import Any

from triplesmith.chains.engines.base import (
    CANCELLED,
    Engine,
    FinishReason,
    Generation,
    GenerationOptions,
    Messages,
    adapter_dir,
    token_pieces,
)
from triplesmith.chains.engines.grammar import GrammarProcessor, grammar_for
from triplesmith.chains.repeat_guard import RepeatGuard
from triplesmith.errors import ChainError
from triplesmith.models import adapter_hash, model_hash, resolve

log = logging.getLogger(__name__)

# Rows per `generate`. On a CPU a decode step is memory-bound and grows with the rows. On a GPU a
# step of a small model costs about the same however many rows it has (for SmolLM2-135M on the
# H200, `generate` over 634 prompts at once was 2.4x faster than batches of 256: issue 17's
# table), so a GPU batch is as wide as the sentences in flight allow.
CPU_BATCH = 16
GPU_BATCH = 1024


class _GreedyLogprobs:
    """A logits processor that records, per step, the log-prob of the token greedy decoding picks.

    Last in the processor list, it sees the final scores; the greedy choice is their argmax, so
    its normalised log-prob is `max - logsumexp`. This keeps one float per row and step instead
    of `output_scores`' full vocabulary per step (49,152 floats for SmolLM2).
    """

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float()
        self.steps.append(logits.max(dim=-1).values - torch.logsumexp(logits, dim=-1))
        return scores

    def stacked(self) -> Any:
        import torch

        return torch.stack(self.steps, dim=1).cpu()


class HFEngine(Engine):
    """A loaded transformers model + tokenizer that turns chat prompts into greedy generations."""

    name = "transformers"
    # transformers' KV cache kind; None is its dynamic cache. "static" preallocates the cache and
    # makes transformers compile the decode step (CUDA graphs) on a GPU: it pays off only when
    # batch shapes repeat (benchmarks/bench_engines.py measures both).
    cache_implementation: str | None = None

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
        self.tokenizer.padding_side = "left"
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.vocab_size = int(self.model.config.vocab_size)
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
    ) -> tuple[list[Any], RepeatGuard | None, _GreedyLogprobs]:
        """The logits processors, in order: the grammar's mask, the loop rules (which may
        force closing tokens the grammar allows), then the log-prob recorder."""
        processors: list[Any] = []
        if options.constrained:
            grammar = grammar_for(self.tokenizer, self.vocab_size, options.json_schema)
            processors.append(GrammarProcessor(grammar, rows, prompt_width, budget))
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
        chosen = _GreedyLogprobs()
        processors.append(chosen)
        return processors, guard, chosen

    def _generate_chunk(
        self, texts: list[str], budgets: list[int], options: GenerationOptions
    ) -> list[Generation]:
        import torch
        from transformers import GenerationConfig

        budget = max(budgets)  # one `generate` call: the longest budget of the chunk
        started = time.perf_counter()
        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.model.device
        )
        prompt_width = enc["input_ids"].shape[1]
        config = GenerationConfig(
            max_new_tokens=budget,
            do_sample=False,
            eos_token_id=self.eos_ids,
            pad_token_id=tok.pad_token_id,
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
        )
        if self.cache_implementation:
            config.cache_implementation = self.cache_implementation
        processors, guard, chosen = self._processors(len(texts), prompt_width, budget, options)
        with torch.inference_mode():
            sequences = self.model.generate(
                **enc,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=[self._stop_when_cancelled],
            )
        if self.cancelled:
            raise ChainError(CANCELLED)
        scores = chosen.stacked()
        new_tokens = sequences[:, prompt_width:].tolist()
        eos_ids = set(self.eos_ids)
        elapsed = time.perf_counter() - started
        generations = []
        for row in range(len(texts)):
            ids, logprobs = [], []
            finish: FinishReason = "length"
            for token, score in zip(new_tokens[row], scores[row].tolist(), strict=True):
                if token in eos_ids:
                    finish = "stop"
                    break
                ids.append(token)
                logprobs.append(score)
            if guard is not None and row in guard.cut:
                finish = "repeat"
            pieces = self._pieces(ids)
            generations.append(
                Generation(
                    text="".join(pieces),
                    token_ids=ids,
                    pieces=pieces,
                    logprobs=logprobs,
                    tokens_in=int(enc["attention_mask"][row].sum()),
                    tokens_out=len(ids),
                    latency_s=elapsed / len(texts),
                    finish_reason=finish,
                )
            )
        return generations

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
        return token_pieces(lambda part: self.tokenizer.decode(part, skip_special_tokens=True), ids)

    def as_chat_model(self) -> Any:
        """The same model as a LangChain chat model (langchain-huggingface), for composition."""
        from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
        from transformers import pipeline

        pipe = pipeline("text-generation", model=self.model, tokenizer=self.tokenizer)
        return ChatHuggingFace(llm=HuggingFacePipeline(pipeline=pipe), tokenizer=self.tokenizer)
