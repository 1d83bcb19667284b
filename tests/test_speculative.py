"""Greedy decoding that checks guessed tokens several at a time (chains/engines/speculative.py)
and the grouped-query attention it runs on (chains/engines/gqa_attention.py), on a small random
Llama: the tokens and log-probs of token-by-token decoding, processors that see only the kept
tokens, fewer model calls than tokens."""

import re

import pytest
import torch
from model_shapes import greedy, tiny_llama
from transformers import LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from triplesmith.chains.engines.base import CANCELLED
from triplesmith.chains.engines.gqa_attention import NAME, packed_sdpa, use_packed_sdpa
from triplesmith.chains.engines.kv_cache import preallocated_cache
from triplesmith.chains.engines.speculative import (
    MAX_GUESSES,
    RowState,
    SpeculativeDecoder,
    guesses_per_row,
    lookup_guess,
)
from triplesmith.errors import ChainError

PROMPTS = torch.tensor([[0, 0, 5, 6, 7, 5, 6], [3, 4, 5, 6, 7, 8, 9], [0, 9, 8, 7, 9, 8, 7]])


def test_a_guess_is_what_followed_the_latest_earlier_run_of_the_last_tokens() -> None:
    assert lookup_guess([1, 2, 3, 9, 1, 2, 3, 4, 5, 1, 2, 3], 2) == [4, 5]  # latest, 3 tokens
    assert lookup_guess([7, 2, 8, 9, 2], 3) == [8, 9, 2]  # only the last token recurs
    assert lookup_guess([1, 2, 3, 4, 1, 2], 10) == [3, 4, 1, 2]  # as far as the context goes
    assert lookup_guess([1, 2, 3], 4) == [] and lookup_guess([1, 2, 1], 0) == []
    assert lookup_guess([], 3) == [] and lookup_guess([5], 3) == []


def test_guesses_shrink_as_rows_fill_a_call() -> None:
    assert guesses_per_row(1) == MAX_GUESSES
    widths = [guesses_per_row(rows) for rows in range(1, 80)]
    assert widths == sorted(widths, reverse=True) and widths[-1] == 0


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama()


class Recorder:
    """A logits processor that bans one token and records the answer each call shows it."""

    def __init__(self, banned: int) -> None:
        self.banned = banned
        self.seen: list[list[int]] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.seen.append(input_ids[0].tolist())
        scores[:, self.banned] = float("-inf")
        return scores


def reference(model: LlamaForCausalLM, new: int, banned: int) -> tuple[list, list]:
    """Token-by-token greedy decoding by `generate`, with the same ban: tokens, log-probs."""
    from transformers import LogitsProcessorList

    def ban(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, banned] = float("-inf")
        return scores

    out = greedy(
        model,
        PROMPTS,
        new,
        eos_token_id=None,
        logits_processor=LogitsProcessorList([ban]),
        output_scores=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[:, PROMPTS.shape[1] :]
    logprobs = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], dim=1)
    chosen = logprobs.gather(2, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens.tolist(), chosen.tolist()


def decode(model: LlamaForCausalLM, new: int, banned: int, **options: object):  # noqa: ANN201
    """The guessing decoder over PROMPTS: its rows, its recorders and the decoder."""
    cache = preallocated_cache(model.config, 4)  # too small on purpose: it grows
    mask = (PROMPTS != 0).long()
    positions = (mask.cumsum(1) - 1).clamp(min=0)

    def forward(**inputs: object) -> torch.Tensor:
        return model(**inputs, cache=cache, use_cache=True).logits

    recorders = [Recorder(banned) for _ in PROMPTS]
    rows = [
        RowState(prompt=[t for t in p.tolist() if t], processors=[r], position=int(m.sum()))
        for p, m, r in zip(PROMPTS, mask, recorders, strict=True)
    ]
    forced = options.pop("forced", None)  # (row index, row) -> the row's `forced`
    if forced is not None:
        for index, row in enumerate(rows):
            row.forced = forced(index, row)
    decoder = SpeculativeDecoder(
        forward,
        cache,
        mask,
        rows,
        eos_ids=set(),
        budget=new,
        cancelled=options.pop("cancelled", lambda: False),
        **options,
    )
    with torch.inference_mode():
        first = model(
            input_ids=PROMPTS,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        decoder.run(first)
    return rows, recorders, decoder


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("compact_at", [0.0, 0.5])
def test_guessed_tokens_give_the_tokens_of_token_by_token_decoding(
    model: LlamaForCausalLM, packed: bool, compact_at: float
) -> None:
    """The same tokens and log-probs as `generate`, in fewer model calls than tokens, and each
    row's processors called once per token along the kept tokens only (never a guess that was
    not kept), with the packed grouped-query attention or transformers' own."""
    if packed:
        model = tiny_llama()
        assert use_packed_sdpa(model) and model.config._attn_implementation == NAME
    new, banned = 40, 5
    tokens, logprobs = reference(model, new, banned)
    rows, recorders, decoder = decode(model, new, banned, compact_at=compact_at)
    assert [r.answer for r in rows] == tokens
    for row, expected in zip(rows, logprobs, strict=True):
        assert row.logprobs == pytest.approx(expected, abs=1e-5)
    assert decoder.calls < new - 1  # guesses were kept (the random model repeats itself)
    # The cache's slots of guesses not kept were freed: when rows left, or its bound was near.
    assert decoder.repacks >= 1
    for row, recorder in zip(rows, recorders, strict=True):
        assert recorder.seen == [row.answer[:i] for i in range(new)]


def test_forced_tokens_are_guessed_first_and_checked_like_any_guess(
    model: LlamaForCausalLM,
) -> None:
    """Tokens a grammar forces (`RowState.forced`) are guessed before the lookup's: right ones
    save calls, wrong ones (here a token the processor bans) change nothing the rows write."""
    new, banned = 40, 5
    tokens, _ = reference(model, new, banned)
    plain, _, plain_decoder = decode(model, new, banned)

    def right(index: int, row: RowState):  # noqa: ANN202
        return lambda token: tokens[index][len(row.answer) + 1 : len(row.answer) + 4]

    rows, recorders, decoder = decode(model, new, banned, forced=right)
    assert [r.answer for r in rows] == tokens and decoder.calls < plain_decoder.calls
    rows, recorders, decoder = decode(
        model, new, banned, forced=lambda index, row: lambda token: [banned] * 3
    )
    assert [r.answer for r in rows] == tokens == [r.answer for r in plain]
    for row, recorder in zip(rows, recorders, strict=True):
        assert recorder.seen == [row.answer[:i] for i in range(new)]


def test_a_cancelled_decoding_stops_with_the_engine_error(model: LlamaForCausalLM) -> None:
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(ChainError, match=re.escape(CANCELLED)):
        decode(model, 24, 5, cancelled=cancelled)


@pytest.mark.parametrize("length", [1, 2, 5])
def test_packed_attention_equals_transformers_sdpa(length: int) -> None:
    """Query heads folded into the query length give transformers' SDPA attention (which
    copies the keys and values per query head) for any query length, with a padding mask."""
    model = tiny_llama()
    attention = model.model.layers[0].self_attn
    torch.manual_seed(1)
    query = torch.randn(3, 4, length, 8)
    key, value = torch.randn(3, 2, 9, 8), torch.randn(3, 2, 9, 8)
    mask = torch.ones(3, 1, length, 9, dtype=torch.bool)
    mask[0, :, :, :4] = False  # left padding
    mask[1, :, :, 6] = False  # a slot in the middle (a guess that was not kept)
    ours, _ = packed_sdpa(attention, query, key, value, mask, scaling=0.35)
    theirs, _ = sdpa_attention_forward(attention, query, key, value, mask, scaling=0.35)
    assert ours.shape == theirs.shape == (3, length, 4, 8)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_packed_attention_is_only_for_grouped_sdpa_models() -> None:
    assert not use_packed_sdpa(tiny_llama(num_key_value_heads=4))  # no grouped heads
    eager = tiny_llama()
    eager.set_attn_implementation("eager")
    assert not use_packed_sdpa(eager) and eager.config._attn_implementation == "eager"
