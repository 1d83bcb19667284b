"""Stop a greedy decode that has started to repeat whole triples, leaving well-formed JSON.

Small models decoding greedily fall into loops: the same `{"s": …}` item again and again until
the token budget cuts the list off, which makes the whole answer broken JSON. This logits
processor watches each row: when the greedy choice would close a JSON object (a token with `}`
in it), it parses the answer up to that `}` with the chain's own parser, and if the object
repeats an earlier triple (the parser's duplicate rule: case and whitespace ignored), it writes
the text up to the `}`, the brackets still open (`]`, then `}` for a wrapped answer) and the
end-of-sequence token instead. The repeated item stays in the raw output (triage still tags the
repetition; the parser drops it); what the loop would have written after it is not generated.

Only JSON answers are guarded; other formats decode as before. Forced tokens get log-prob 0,
and they come after the last triple, so per-triple confidences are unchanged.
"""

from __future__ import annotations

from typing import Any

from triplesmith.chains.parser import parse_triples

_JSON = {"json", "json-wrapped", "json-repaired", "truncated-json"}


def open_brackets(text: str) -> str:
    """The closing brackets of the JSON containers still open at the end of `text`, in order."""
    stack: list[str] = []
    in_string, escaped = False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append("]" if char == "[" else "}")
        elif char in "]}" and stack and stack[-1] == char:
            stack.pop()
    return "".join(reversed(stack))


def repeats_a_triple(text: str) -> bool:
    """True when `text` is a JSON answer whose items so far include a repeated triple."""
    parsed = parse_triples(text)
    return parsed.diagnostics.strategy in _JSON and parsed.diagnostics.duplicates_dropped > 0


class RepeatGuard:
    """A `generate` logits processor that ends each row's answer at its first repeated triple.

    It looks one token ahead: when the greedy choice would close an object that repeats a
    triple, it writes that token's text up to the `}` instead, then the brackets still open and
    end-of-sequence, so that the answer is strict JSON (no dangling `,`).
    """

    def __init__(self, tokenizer: Any, prompt_width: int, eos_id: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.eos_id = eos_id
        self.triggers = _closing_brace_ids(tokenizer)
        self.forced: dict[int, list[int]] = {}

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        choices = scores.argmax(dim=-1).tolist()
        for row, choice in enumerate(choices):
            if row not in self.forced and choice in self.triggers:
                self._check(row, input_ids[row, self.prompt_width :].tolist(), choice)
        for row, pending in self.forced.items():
            if pending:
                token = pending.pop(0)
                scores[row, :] = float("-inf")
                scores[row, token] = 0.0
        return scores

    def _check(self, row: int, ids: list[int], choice: int) -> None:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        piece = self.tokenizer.decode(ids + [choice], skip_special_tokens=True)[len(text) :]
        if "}" not in piece:
            return
        head = piece[: piece.rindex("}") + 1]
        if repeats_a_triple(text + head):
            tail = open_brackets(text + head)
            closing = self.tokenizer.encode(head + tail, add_special_tokens=False)
            self.forced[row] = [*closing, self.eos_id]


def _closing_brace_ids(tokenizer: Any) -> frozenset[int]:
    """The ids of every vocabulary token whose text contains `}` (ASCII is kept as is by
    byte-level and SentencePiece vocabularies alike)."""
    cached = getattr(tokenizer, "_triplesmith_brace_ids", None)
    if cached is None:
        cached = frozenset(i for token, i in tokenizer.get_vocab().items() if "}" in token)
        tokenizer._triplesmith_brace_ids = cached
    return cached
