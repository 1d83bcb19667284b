"""Greedy decoding that checks several guessed tokens per model call (prompt lookup decoding).

A triple copies its words from the sentence, and an answer repeats its own subjects and JSON
between items, so the next tokens of an answer can often be guessed by finding its last few
tokens earlier in the prompt or the answer and taking what followed them there (prompt lookup
decoding, Saxena 2023). Where a grammar constrains the answer, the tokens it forces next (the
keys and separators of the JSON) are guessed first, and the lookup goes on after them (on 20
fine-tuned CaRB answers 48 calls instead of 62). One model call over a row's last token and its
guesses gives the model's choice after each of them; the guesses are kept up to the first that
differs from what the model chooses, and the model's choice there is kept too. Greedy, the answer is the
one token-by-token decoding writes up to the rounding of a wider call: in fp32 the same on 60 of
60 CaRB sentences; with bf16 linear layers, whose rounding depends on a call's width, 15 of 20
fine-tuned answers were (as batching changes answers in bf16 anyway); a call costs more
only where the guesses add work: on a CPU, where a step of a small model is bound by reading
its weights, a call over 8 tokens of one row costs ~1.3x a call over one, and 20 rows x 3 tokens
~1.7x 20 rows x 1 (benchmarks/RESULTS.md, "guessed tokens checked in one call"), so rows x
tokens per call is kept under a budget (TOKENS_PER_CALL) and each row guesses as far as its
last guesses were kept.

transformers has prompt lookup decoding for one row, but it passes the logits processors the
guesses before they are checked; the engine's processors (the grammar's matchers, the loop
rules) follow each row's tokens and cannot take one back. Here every processor sees exactly
the steps token-by-token decoding would show it: each row's processors are called, one token
at a time, only along the tokens that are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# At most this many rows x tokens in one call of the model, and at most this many guesses a row.
TOKENS_PER_CALL = 64
MAX_GUESSES = 7
# The longest and shortest run of last tokens looked up in the prompt and answer.
LOOKUP_MAX, LOOKUP_MIN = 3, 1
# Every call takes as many KV-cache slots a row as its widest row's guesses (the slots of guesses
# not kept are masked until the next `_compact` gathers them out), so the cache is bounded: at
# most this many slots a row per token of the budget; near that bound the slots are gathered, or
# calls guess less, down to one token a row.
SLOTS_PER_TOKEN = 2


def lookup_guess(context: Sequence[int], count: int) -> list[int]:
    """Up to `count` tokens that followed the latest earlier occurrence of the last few tokens
    of `context` (the longest run found, from LOOKUP_MAX down to LOOKUP_MIN tokens)."""
    if count <= 0:
        return []
    context = list(context)
    size = len(context)
    last = context[-1] if context else None
    for n in range(min(LOOKUP_MAX, size - 1), LOOKUP_MIN - 1, -1):
        tail = context[size - n :]
        for start in range(size - n - 1, -1, -1):
            # the last token first: a slice only where a run can match (a call scans every row)
            if context[start + n - 1] == last and context[start : start + n] == tail:
                return context[start + n : start + n + count]
    return []


def guesses_per_row(rows: int) -> int:
    """Guesses a row for a call over `rows` rows (0 once rows alone fill the budget)."""
    return max(0, min(MAX_GUESSES, TOKENS_PER_CALL // max(rows, 1) - 1))


@dataclass
class RowState:
    """One row being decoded: its prompt (without padding), its answer so far, the log-prob of
    each answer token, its own logits processors, and where its next token goes."""

    prompt: list[int]
    processors: list[Any]
    position: int  # the position (rotary) of the row's next token
    ahead: int = 4  # guesses to try at the next call: +2 after all were kept, -1 otherwise
    answer: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    done: bool = False
    # The tokens the row's grammar forces after a given next token (guessed before any lookup).
    forced: Callable[[int], list[int]] | None = None


class SpeculativeDecoder:
    """Decodes rows of a chunk whose prompts are already in `cache`, from the logits of their
    last prompt token. `forward(input_ids, attention_mask, position_ids, cache_position)`
    runs the model on the cache and returns logits for every input position."""

    def __init__(
        self,
        forward: Callable[..., Any],
        cache: Any,
        mask: Any,
        rows: list[RowState],
        eos_ids: set[int],
        budget: int,
        cancelled: Callable[[], bool],
        compact_at: float = 0.5,
    ) -> None:
        self.forward = forward
        self.cache = cache
        self.mask = mask  # [rows, cache slots]: 1 where a slot holds one of the row's tokens
        self.rows = rows
        self.eos_ids = eos_ids
        self.budget = budget
        self.cancelled = cancelled
        self.compact_at = compact_at
        self.slots = mask.shape[1] + SLOTS_PER_TOKEN * budget  # the cache's bound, a row
        self.calls = 0  # model calls after the prompt
        self.widths: list[int] = []  # rows of each stretch between two compactions
        self.repacks = 0  # times the cache's rows and slots were gathered (`_compact`)

    def run(self, first_logits: Any) -> None:
        """Decode every row to its end (end-of-sequence or the budget)."""
        live = list(range(len(self.rows)))  # the batch's rows, as indices into self.rows
        self.widths.append(len(live))
        nexts = {i: self._choose(self.rows[i], first_logits[k]) for k, i in enumerate(live)}
        while True:
            for i in live:  # a row whose next token ends it needs no call for that token
                row = self.rows[i]
                if not row.done and (
                    nexts[i] in self.eos_ids or len(row.answer) + 1 >= self.budget
                ):
                    row.answer.append(nexts[i])
                    row.done = True
            writing = [k for k, i in enumerate(live) if not self.rows[i].done]
            if not writing:
                return
            if self.cancelled():
                from triplesmith.chains.engines.base import CANCELLED
                from triplesmith.errors import ChainError

                raise ChainError(CANCELLED)
            if len(writing) <= len(live) * self.compact_at:
                live = self._compact(live, writing)
            elif self._cramped(live):
                live = self._compact(live, list(range(len(live))))
            guesses = self._guesses(live, nexts)
            start, logits = self._call(live, nexts, guesses)
            for k, i in enumerate(live):
                row = self.rows[i]
                if row.done:
                    continue
                checked = self._check(row, nexts[i], guesses[i], logits[k])
                if checked is None:
                    continue
                nexts[i], used = checked
                if guesses[i]:
                    kept_all = used == 1 + len(guesses[i])
                    row.ahead = (
                        min(MAX_GUESSES, row.ahead + 2) if kept_all else max(1, row.ahead - 1)
                    )
                self.mask[k, start + used :] = 0  # the guesses not kept, and the padding

    def _compact(self, live: list[int], writing: list[int]) -> list[int]:
        """Keep only the batch's rows `writing` (their KV cache and mask rows) and, in a
        preallocated cache, only the slots that hold their tokens: each row's tokens move to the
        front, in their order (attention does not depend on where a key sits in the cache: its
        position is in its rotary embedding, and the new tokens still come after them all)."""
        import torch

        from triplesmith.chains.engines.kv_cache import gather_slots

        kept = torch.tensor(writing, device=self.mask.device)
        mask = self.mask[kept]
        filled = mask.sum(dim=1)
        width = int(filled.max())
        gathered = False
        if width < mask.shape[1]:
            # each row's filled slots first, in their order (a stable sort of "is empty")
            order = torch.sort((mask == 0).to(torch.uint8), dim=1, stable=True).indices
            gathered = gather_slots(self.cache, kept, order[:, :width])
        if gathered:
            self.repacks += 1
            place = torch.arange(width, device=mask.device)
            self.mask = (place[None, :] < filled[:, None]).to(mask.dtype)
        else:
            self.cache.reorder_cache(kept)
            self.mask = mask
        if len(writing) < len(live):
            live = [live[k] for k in writing]
            self.widths.append(len(live))
        return live

    def _room(self, live: list[int]) -> int:
        """Cache slots a row that this call may take beyond one token a row: room is left for
        the longest remaining answer at one token a call."""
        remaining = max(
            self.budget - len(self.rows[i].answer) for i in live if not self.rows[i].done
        )
        return self.slots - self.mask.shape[1] - remaining

    def _cramped(self, live: list[int]) -> bool:
        """Whether the cache's bound would cut this call's guesses while at least an eighth of
        a budget of the cache's slots hold none of any row's tokens (guesses not kept, padding):
        `_compact` then frees them."""
        if self._room(live) >= guesses_per_row(len(live)):
            return False
        unused = self.mask.shape[1] - int(self.mask.sum(dim=1).max())
        return unused >= max(1, self.budget // 8)

    def _guesses(self, live: list[int], nexts: dict[int, int]) -> dict[int, list[int]]:
        """Each writing row's guesses after its next token, within the call's budget of rows x
        tokens, the row's own `ahead`, its budget, and the cache's bound (`_room`)."""
        count = max(0, min(guesses_per_row(len(live)), self._room(live)))
        guesses = {}
        for i in live:
            row = self.rows[i]
            if not row.done:
                most = min(count, self.budget - len(row.answer) - 1)  # the next token first
                forced = row.forced(nexts[i])[:most] if row.forced and most > 0 else []
                context = [*row.prompt, *row.answer, nexts[i], *forced]
                looked = lookup_guess(context, min(most, max(row.ahead, len(forced))) - len(forced))
                guesses[i] = forced + looked
        return guesses

    def _call(
        self, live: list[int], nexts: dict[int, int], guesses: dict[int, list[int]]
    ) -> tuple[int, Any]:
        """One model call over each row's next token and guesses (finished rows and short
        guesses padded, masked); returns the first cache slot it wrote and its logits."""
        import torch

        width = 1 + max((len(g) for g in guesses.values()), default=0)
        tokens, keep = [], []
        for i in live:
            own = [nexts[i], *guesses[i]] if i in guesses else []
            keep.append([1] * len(own) + [0] * (width - len(own)))
            tokens.append(own + [own[-1] if own else 0] * (width - len(own)))
        device = self.mask.device
        start = self.mask.shape[1]
        step_mask = torch.tensor(keep, dtype=self.mask.dtype, device=device)
        self.mask = torch.cat([self.mask, step_mask], dim=1)
        positions = [[self.rows[i].position + j for j in range(width)] for i in live]
        logits = self.forward(
            input_ids=torch.tensor(tokens, device=device),
            attention_mask=self.mask,
            position_ids=torch.tensor(positions, device=device),
            cache_position=torch.arange(start, start + width, device=device),
        )
        self.calls += 1
        return start, logits

    def _check(self, row: RowState, token: int, guesses: list[int], logits: Any) -> Any:
        """Write `token` (chosen at the last call), then each guess the model agrees with;
        return the row's next token and how many of this call's positions hold kept tokens,
        or None once the row has ended."""
        row.position += 1
        used = 1
        for j in range(len(guesses) + 1):
            choice = self._choose(row, logits[j], written=token if j == 0 else guesses[j - 1])
            if row.done:
                return None
            if j < len(guesses) and choice == guesses[j]:
                row.position += 1
                used += 1
                continue
            return choice, used
        raise AssertionError("unreachable")  # pragma: no cover

    def _choose(self, row: RowState, logits: Any, written: int | None = None) -> int:
        """Append `written` to the row's answer (it ends the row at end-of-sequence or the
        budget), then run the row's processors over `logits` and take the argmax."""
        import torch

        if written is not None:
            row.answer.append(written)
            if written in self.eos_ids or len(row.answer) >= self.budget:
                row.done = True
                return written
        scores = logits.float().unsqueeze(0)
        ids = torch.tensor([row.answer], dtype=torch.long)
        for processor in row.processors:
            scores = processor(ids, scores)
        # numpy's argmax over one row of a CPU tensor: ~4 us where torch's takes ~45 us (on a
        # 49,152-token vocabulary, at every token); both take the first of equal maxima
        values = scores[0]
        best = int(values.numpy().argmax() if values.device.type == "cpu" else values.argmax())
        row.logprobs.append(float(torch.log_softmax(values, dim=-1)[best]))
        return best
