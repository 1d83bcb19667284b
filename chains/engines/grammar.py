"""Grammar-constrained JSON for local engines: the answer is a triple list by construction.

The default grammar is the triple list of the shared format (a list of `{"s", "relation",
"object"}` string objects, nothing else), written with the canonical answer's separators
(`json.dumps`: `", "` and `": "`, no other whitespace), so a constrained answer reads exactly
like the fine-tuning targets. A served request may bring its own JSON schema
(`response_format`), which llguidance compiles with the same separators. llguidance computes
the rows' masks of allowed tokens (in Rust, rows in parallel); `GrammarProcessor` applies them as
a transformers logits processor and feeds each row's chosen token back to its matcher. Once a
row's list is closed, only the end-of-sequence token is allowed.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from triplesmith.errors import ChainError

# Each string is bounded: a string that has started to loop is closed by the grammar at the
# latest here (the loop rules of chains/repeat_guard.py usually close it much earlier).
MAX_FIELD_CHARS = 200

# A field is never empty and never starts or ends with whitespace (the parser drops an item
# with an empty field, so an empty string would be a format error by construction). This is the
# schema served models get (chains/registry.py); local engines use TRIPLES_GRAMMAR below.
_FIELD: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_FIELD_CHARS,
    "pattern": r"^\S(.*\S)?$",
}

TRIPLES_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"s": _FIELD, "relation": _FIELD, "object": _FIELD},
        "required": ["s", "relation", "object"],
        "additionalProperties": False,
    },
}

# The same list as llguidance compiles TRIPLES_SCHEMA (its JSON string characters and escapes,
# the separators, the key order), in its Lark syntax, with one difference: a field may end in
# whitespace (the parser collapses it, so no triple changes). A JSON-schema `pattern` on a
# string, and any lexeme that must end in a given class of characters, stops llguidance from
# allowing whole slices of the vocabulary at once inside the string: every mask then walks the
# whole token trie, about 0.5 ms a row and step for SmolLM2 instead of about 20 us (measured on
# the CaRB answers; benchmarks/RESULTS.md, "Engines"). A field still starts with a character
# that is not whitespace (as the pattern's `\S`), so it is never empty.
_CHAR = r'(?:[^"\\\x00-\x1F\x7F]|\\["\\bfrt]|\\u00(?:0[0-9b-fB-F]|1[0-9a-fA-F])|\\u007[fF])'
_FIRST = r'(?:[^"\\\x00-\x1F\x7F\s]|\\["\\b]|\\u00(?:0[0-8eEfF]|1[0-9a-fA-F])|\\u007[fF])'
TRIPLES_GRAMMAR = f"""start: "[" (item (", " item)*)? "]"
item: "{{\\"s\\": " FIELD ", \\"relation\\": " FIELD ", \\"object\\": " FIELD "}}"
FIELD: /"{_FIRST}{_CHAR}{{0,{MAX_FIELD_CHARS - 1}}}"/
"""

# Tokens at the end of the budget in which no new item starts (see GrammarProcessor).
RESERVE = 48
# Tokens at the end of the budget in which an open item is finished as briefly as the grammar
# allows: wherever one is allowed, a token with a `"` (not escaped: it ends a string), else one
# with `}` or `]`. An item begun before the reserve whose fields run long (a 20-word sentence
# copied into each) would otherwise be cut by the budget. Closing the open string, the two keys
# left, a character each and the brackets take at most about 16 tokens.
FINISH = 24

_COMPACT = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf
    except ImportError as exc:  # declared as a dependency; a broken install says so
        raise ChainError(
            "grammar-constrained decoding needs the llguidance package (pip install llguidance); "
            "or turn it off with +constrained=false"
        ) from exc
    return llguidance


class JsonGrammar:
    """A grammar compiled for one tokenizer (the tokenizer's part takes about a second): the
    default triple list, or a served JSON schema."""

    def __init__(self, tokenizer: Any, schema: str | None = None) -> None:
        llg = _llguidance()
        self._llg = llg
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        if schema is None:
            self.grammar = llg.LLMatcher.grammar_from_lark(TRIPLES_GRAMMAR)
        else:
            try:
                self.grammar = llg.LLMatcher.grammar_from_json_schema(schema, defaults=_COMPACT)
            except ValueError as exc:
                raise ChainError(f"the JSON schema is not valid JSON: {exc}") from exc
        error = llg.LLMatcher.validate_grammar(self.grammar, tokenizer)
        if error:
            raise ChainError(f"the JSON schema does not compile to a grammar: {error}")
        self.executor = _executor(llg)
        self.close_id, self.next_item_ids, self.closer_ids = _vocabulary_facts(tokenizer)
        self._closer_masks: dict[tuple[int, str], list[Any]] = {}
        # Rows start from copies of one matcher: a copy shares the compiled grammar, where a
        # new matcher compiles it again (about 1 ms a row).
        self._start = llg.LLMatcher(tokenizer, self.grammar, log_level=0)

    def closer_masks(self, width: int, device: Any) -> list[Any]:
        """`closer_ids` as bool tensors over `width` scores on `device` (quotes, then brackets),
        made once per grammar and device: every row's processor shares them."""
        import torch

        key = (width, str(device))
        if key not in self._closer_masks:
            masks = []
            for ids in self.closer_ids:
                mask = torch.zeros(width, dtype=torch.bool)
                mask[ids] = True
                masks.append(mask.to(device))
            self._closer_masks[key] = masks
        return self._closer_masks[key]

    def matcher(self) -> Any:
        return self._start.deep_copy()


class GrammarProcessor:
    """A logits processor that allows, per row, only the tokens the grammar accepts next.

    It reads each row's previous choice from `input_ids` (so tokens forced by an earlier
    processor, such as the repeat guard's closing brackets, are followed too), or takes it ahead
    of time from `advance`. A row whose matcher rejects a token (it cannot happen for tokens this
    processor allowed) is left unconstrained from then on rather than forced into an invalid
    state.
    """

    def __init__(
        self, grammar: JsonGrammar, rows: int, prompt_width: int, budget: int | None = None
    ) -> None:
        self.grammar = grammar
        self.prompt_width = prompt_width
        # In the last `reserve` tokens of the budget no new item starts: an item closes with
        # `}` rather than `},`, and where the grammar allows `]` it is written, so an answer
        # ends before the budget cuts it.
        self.reserve_from = None if budget is None else budget - min(RESERVE, budget // 4)
        self.finish_from = None if budget is None else budget - min(FINISH, budget // 8)
        self._closers: Any = None  # JsonGrammar.closer_masks on the scores' device
        self.matchers = [grammar.matcher() for _ in range(rows)]
        self.live = [True] * rows
        self.bitmask: Any = None  # one bit a token and row, filled by llguidance
        self._bits: Any = None
        self._copied: Any = None  # the bitmask's last copy to the GPU
        self._ahead: threading.Thread | None = None  # the next step's masks, being computed
        self._ahead_error: BaseException | None = None
        self._current = False  # the masks already follow every row's last token (see `select`)

    def advance(self, chosen: list[int]) -> None:
        """Take each row's token of this step now (the final scores' argmax, which `generate`
        appends) and compute the next step's masks on CPU threads (llguidance releases the GIL)
        while the model runs; the next call waits for them."""
        if self._copied is not None:
            self._copied.synchronize()  # the buffer's last copy to the GPU is done
        self._ahead = threading.Thread(target=self._step, args=(chosen,), daemon=True)
        self._ahead.start()

    def select(self, keep: list[int]) -> None:
        """Keep only the rows `keep` (in that order), when finished rows leave the batch between
        two `generate` calls. Masks being computed ahead are waited for: they already follow the
        rows' last tokens, which the next call must then not take again."""
        if self._ahead is not None:
            self._ahead.join()
            self._ahead = None
            if self._ahead_error is not None:
                raise self._ahead_error
            self._current = True
        if self._copied is not None:
            self._copied.synchronize()
        self.matchers = [self.matchers[i] for i in keep]
        self.live = [self.live[i] for i in keep]
        if self.bitmask is not None:
            bitmask = self.bitmask[keep]
            self.bitmask = bitmask.pin_memory() if self.bitmask.is_pinned() else bitmask

    def forced_after(self, row: int, token: int) -> list[int]:
        """The tokens the grammar forces once row `row` has taken `token` (its next token, not
        yet taken by its matcher), in the tokenizer's own spelling: guesses that the model all
        but always confirms (chains/engines/speculative.py). The matcher is left as it was."""
        matcher = self.matchers[row]
        if not self.live[row] or matcher.is_stopped():
            return []
        taken = matcher.try_consume_tokens([token])
        forced = list(matcher.compute_ff_tokens()) if taken == 1 else []
        if taken:
            matcher.rollback(taken)
        return forced

    def _step(self, chosen: list[int]) -> None:
        try:
            self._consume(chosen)
            self._fill()
        except BaseException as exc:  # raised again on the main thread
            self._ahead_error = exc

    def _consume(self, chosen: list[int]) -> None:
        rows = [i for i, live in enumerate(self.live) if live]
        pairs = [(self.matchers[i], chosen[i]) for i in rows]
        for row, ok in zip(rows, self.grammar.executor.consume_token_par(pairs), strict=True):
            if not ok or self.matchers[row].is_error():
                self._release(row)

    def _release(self, row: int) -> None:
        self.live[row] = False
        self.bitmask[row] = -1  # every token allowed from now on

    def _fill(self) -> None:
        targets = [(m, i) for i, m in enumerate(self.matchers) if self.live[i]]
        if targets:
            self.grammar.executor.unsafe_compute_mask_ptr(
                targets,
                self.bitmask.data_ptr(),
                self.bitmask.shape[1] * 4,
                self.bitmask.shape[0],
            )

    def _setup(self, device: Any) -> None:
        import torch

        words = (self.grammar.vocab_size + 31) // 32
        # Pinned on a GPU, so that the copy of each step's masks does not wait for the CPU.
        pinned = device.type == "cuda"
        self.bitmask = torch.full(
            (len(self.matchers), words), -1, dtype=torch.int32, pin_memory=pinned
        )
        self._bits = torch.arange(32, dtype=torch.int32, device=device)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.bitmask is None:
            self._setup(scores.device)
        if self._ahead is not None:
            # `generate` appends the same argmax, except padding in rows that have ended (their
            # matchers took end-of-sequence and stopped), so the rows need no check.
            self._ahead.join()
            self._ahead = None
            if self._ahead_error is not None:
                raise self._ahead_error
        elif self._current:
            self._current = False
        else:
            if self._copied is not None:
                self._copied.synchronize()  # the buffer's last copy to the GPU is done
            if input_ids.shape[1] > self.prompt_width:
                self._consume(input_ids[:, -1].tolist())
            self._fill()
        if not any(self.live):
            return scores
        scores.masked_fill_(self._blocked(scores), float("-inf"))
        written = input_ids.shape[1] - self.prompt_width
        close = self.grammar.close_id
        if self.reserve_from is not None and close is not None and written >= self.reserve_from:
            live = torch.tensor(self.live, device=scores.device)
            ban = self.grammar.next_item_ids
            if ban:
                banned = scores[:, ban].clone()
                scores[:, ban] = float("-inf")
                # Only where something else is still allowed (dead rows are left alone).
                keep = ~live | ~torch.isfinite(scores).any(dim=1)
                scores[keep.nonzero().flatten().unsqueeze(1), ban] = banned[keep]
            # `]` where it ends the answer (then end-of-sequence is valid), not inside a string.
            ending = [close, self.grammar.tokenizer.eos_token]
            rows = [
                i
                for i, m in enumerate(self.matchers)
                if self.live[i] and m.validate_tokens(ending) == 2
            ]
            if rows and written > 0:  # never an empty answer for want of budget
                scores[rows] = float("-inf")
                scores[rows, close] = 0.0
        if self.finish_from is not None and written >= self.finish_from:
            self._finish(scores)
        return scores

    def _finish(self, scores: Any) -> None:
        """In each live row, only tokens that close something, where the grammar (and the
        reserve) allows one (see FINISH)."""
        import torch

        if self._closers is None:
            self._closers = self.grammar.closer_masks(scores.shape[1], scores.device)
        # All rows at once, without reading anything back from a GPU.
        pending = torch.tensor(self.live, device=scores.device)
        allowed = torch.isfinite(scores)
        for closers in self._closers:
            closing = allowed & closers
            use = pending & closing.any(dim=1)
            scores.masked_fill_(use[:, None] & ~closing, float("-inf"))
            pending &= ~use

    def _blocked(self, scores: Any) -> Any:
        """The tokens each row's grammar does not allow, as a bool tensor shaped as `scores`.
        The packed mask (one bit a token) is unpacked on the scores' device: by numpy on a CPU
        (~6 us for SmolLM2's vocabulary where torch's shifts take ~30 us, at every token)."""
        import numpy as np
        import torch

        if not scores.is_cuda:
            bits = np.unpackbits(self.bitmask.numpy().view(np.uint8), axis=-1, bitorder="little")
            return torch.from_numpy(bits[:, : scores.shape[1]] == 0)
        packed = self.bitmask.to(scores.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        blocked = ((packed.unsqueeze(-1) >> self._bits) & 1) == 0
        return blocked.view(packed.shape[0], -1)[:, : scores.shape[1]]


# Key order matters: the grammar writes the properties in the schema's order (s, relation, object).
TRIPLES_SCHEMA_TEXT = json.dumps(TRIPLES_SCHEMA)

_TOKENIZERS: dict[int, Any] = {}
_GRAMMARS: dict[tuple[int, str | None], JsonGrammar] = {}
_FACTS: dict[int, tuple[int | None, list[int], tuple[list[int], list[int]]]] = {}
_EXECUTOR: list[Any] = []
_LOCK = threading.Lock()


def _vocabulary_facts(
    tokenizer: Any,
) -> tuple[int | None, list[int], tuple[list[int], list[int]]]:
    """The single token `]` (None when `]` is not one token); the tokens that close an item
    and go on to the next (`"},` is one token in SmolLM2's vocabulary): banned near the end of
    the budget so that an item closes with `}`; and the tokens that finish an answer at the very
    end of the budget (FINISH): those holding a `"` not escaped, then those holding `}` or `]`.
    Read once per tokenizer."""
    key = id(tokenizer)
    if key not in _FACTS:
        closing = tokenizer.tokenize_str("]")
        pieces = [tokenizer.decode_str([i]) for i in range(tokenizer.vocab_size)]
        next_item = [i for i, piece in enumerate(pieces) if "}," in piece or "} ," in piece]
        quotes = [i for i, p in enumerate(pieces) if '"' in p and "\\" not in p]
        brackets = [i for i, p in enumerate(pieces) if ("}" in p or "]" in p) and '"' not in p]
        _FACTS[key] = (closing[0] if len(closing) == 1 else None, next_item, (quotes, brackets))
    return _FACTS[key]


def _executor(llg: Any) -> Any:
    if not _EXECUTOR:
        _EXECUTOR.append(llg.LLExecutor())
    return _EXECUTOR[0]


def grammar_for(tokenizer: Any, vocab_size: int, schema: str | None = None) -> JsonGrammar:
    """The grammar of `schema` (default: the triple list, TRIPLES_GRAMMAR) for this Hugging Face
    tokenizer, compiled once per process."""
    schema = schema or None
    with _LOCK:
        key = id(tokenizer)
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = _llguidance().hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        if (key, schema) not in _GRAMMARS:
            _GRAMMARS[(key, schema)] = JsonGrammar(_TOKENIZERS[key], schema)
        return _GRAMMARS[(key, schema)]
