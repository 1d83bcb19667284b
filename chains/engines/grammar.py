"""Grammar-constrained JSON for local engines: the answer is a triple list by construction.

The default grammar is the JSON schema of the shared format (`TRIPLES_SCHEMA`: a list of
`{"s", "relation", "object"}` string objects, nothing else); a served request may bring its own
schema (`response_format`). llguidance compiles it with the canonical answer's separators
(`json.dumps`: `", "` and `": "`, no other whitespace), so a constrained answer reads exactly
like the fine-tuning targets. llguidance computes each row's
mask of allowed tokens (in Rust, rows in parallel); `GrammarProcessor` applies the masks as a
transformers logits processor and feeds each row's chosen token back to its matcher. Once a
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
# with an empty field, so an empty string would be a format error by construction).
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

# Tokens at the end of the budget in which no new item starts (see GrammarProcessor).
RESERVE = 48

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
    """A JSON schema compiled for one tokenizer (the tokenizer's part takes about a second)."""

    def __init__(self, tokenizer: Any, schema: str) -> None:
        llg = _llguidance()
        self._llg = llg
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        try:
            self.grammar = llg.LLMatcher.grammar_from_json_schema(schema, defaults=_COMPACT)
        except ValueError as exc:
            raise ChainError(f"the JSON schema is not valid JSON: {exc}") from exc
        error = llg.LLMatcher.validate_grammar(self.grammar, tokenizer)
        if error:
            raise ChainError(f"the JSON schema does not compile to a grammar: {error}")
        self.executor = _executor(llg)
        self.close_id, self.next_item_ids = _vocabulary_facts(tokenizer)

    def matcher(self) -> Any:
        return self._llg.LLMatcher(self.tokenizer, self.grammar, log_level=0)


class GrammarProcessor:
    """A logits processor that allows, per row, only the tokens the grammar accepts next.

    It reads each row's previous choice from `input_ids` (so tokens forced by an earlier
    processor, such as the repeat guard's closing brackets, are followed too). A row whose
    matcher rejects a token (it cannot happen for tokens this processor allowed) is left
    unconstrained from then on rather than forced into an invalid state.
    """

    def __init__(
        self, grammar: JsonGrammar, rows: int, prompt_width: int, budget: int | None = None
    ) -> None:
        import torch

        self.grammar = grammar
        self.prompt_width = prompt_width
        # In the last `reserve` tokens of the budget no new item starts: an item closes with
        # `}` rather than `},`, and where the grammar allows `]` it is written, so an answer
        # ends before the budget cuts it.
        self.reserve_from = None if budget is None else budget - min(RESERVE, budget // 4)
        self.matchers = [grammar.matcher() for _ in range(rows)]
        self.live = [True] * rows
        words = (grammar.vocab_size + 31) // 32
        self.bitmask = torch.full((rows, words), -1, dtype=torch.int32)
        self._bits = torch.arange(32, dtype=torch.int32)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if input_ids.shape[1] > self.prompt_width:
            chosen = input_ids[:, -1].tolist()
            pairs = [
                (m, t) for m, t, live in zip(self.matchers, chosen, self.live, strict=True) if live
            ]
            rows = [i for i, live in enumerate(self.live) if live]
            for row, ok in zip(rows, self.grammar.executor.consume_token_par(pairs), strict=True):
                if not ok or self.matchers[row].is_error():
                    self.live[row] = False
        targets = [(m, i) for i, m in enumerate(self.matchers) if self.live[i]]
        if not targets:
            return scores
        self.bitmask.fill_(-1)
        self.grammar.executor.unsafe_compute_mask_ptr(
            targets,
            self.bitmask.data_ptr(),
            self.bitmask.shape[1] * 4,
            self.bitmask.shape[0],
        )
        # The packed mask (one bit a token) travels to the scores' device and is unpacked there.
        packed = self.bitmask.to(scores.device, non_blocking=True)
        if self._bits.device != scores.device:
            self._bits = self._bits.to(scores.device)
        allowed = ((packed.unsqueeze(-1) >> self._bits) & 1).bool()
        allowed = allowed.view(packed.shape[0], -1)[:, : scores.shape[1]]
        dead = [i for i, live in enumerate(self.live) if not live]
        if dead:
            allowed[dead] = True
        scores = scores.masked_fill(~allowed, float("-inf"))
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
        return scores


# Key order matters: the grammar writes the properties in the schema's order (s, relation, object).
TRIPLES_SCHEMA_TEXT = json.dumps(TRIPLES_SCHEMA)

_TOKENIZERS: dict[int, Any] = {}
_GRAMMARS: dict[tuple[int, str], JsonGrammar] = {}
_FACTS: dict[int, tuple[int | None, list[int]]] = {}
_EXECUTOR: list[Any] = []
_LOCK = threading.Lock()


def _vocabulary_facts(tokenizer: Any) -> tuple[int | None, list[int]]:
    """The single token `]` (None when `]` is not one token), and the tokens that close an item
    and go on to the next (`"},` is one token in SmolLM2's vocabulary): banned near the end of
    the budget so that an item closes with `}`. Read once per tokenizer."""
    key = id(tokenizer)
    if key not in _FACTS:
        closing = tokenizer.tokenize_str("]")
        pieces = (tokenizer.decode_str([i]) for i in range(tokenizer.vocab_size))
        next_item = [i for i, piece in enumerate(pieces) if "}," in piece or "} ," in piece]
        _FACTS[key] = (closing[0] if len(closing) == 1 else None, next_item)
    return _FACTS[key]


def _executor(llg: Any) -> Any:
    if not _EXECUTOR:
        _EXECUTOR.append(llg.LLExecutor())
    return _EXECUTOR[0]


def grammar_for(tokenizer: Any, vocab_size: int, schema: str | None = None) -> JsonGrammar:
    """The grammar of `schema` (default: the triple list) for this Hugging Face tokenizer,
    compiled once per process."""
    schema = schema or TRIPLES_SCHEMA_TEXT
    with _LOCK:
        key = id(tokenizer)
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = _llguidance().hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        if (key, schema) not in _GRAMMARS:
            _GRAMMARS[(key, schema)] = JsonGrammar(_TOKENIZERS[key], schema)
        return _GRAMMARS[(key, schema)]
