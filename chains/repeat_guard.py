"""Stop a greedy decode that has started to loop, leaving well-formed JSON.

Small models decoding greedily fall into two kinds of loop, both of which run until the token
budget cuts the answer off and so make the whole answer broken JSON:

- whole items: the same `{"s": …}` item again and again. When the greedy choice would close a
  JSON object (a token with `}` in it), the guard parses the answer up to that `}` with the
  chain's own parser; if the object repeats an earlier triple (the parser's duplicate rule: case
  and whitespace ignored) or is an earlier object over again even though it is not a triple (no
  object, say), it writes the text up to the `}`, the brackets still open (`]`, then
  `}` for a wrapped answer) and the end-of-sequence token instead. The repeated item stays in
  the raw output (triage still tags the repetition; the parser drops it); what the loop would
  have written after it is not generated.
- a phrase inside one string: `"… at the Hollywood Forever Cemetery at the Hollywood Forever
  Cemetery at …"`. When the greedy choice would make the open string end in back-to-back copies
  of one token span (`looping_span`: at least `LOOP_MIN_TOKENS` repeated tokens, two copies of
  a long span or more of a short one), the guard writes that token and then a closing `"`; the
  model goes on from there (it usually closes the item and moves on, or stops).

Only JSON answers are guarded (an answer whose first character is `[`, `{` or a code fence);
other formats decode as before. Forced tokens get log-prob 0, so they add nothing to a triple's
confidence.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from typing import Any

from triplesmith.chains.parser import parse_triples

_JSON = {"json", "json-wrapped", "json-repaired", "truncated-json"}
# A phrase loop: back-to-back copies of one span inside a string that repeat at least this many
# tokens (so a 1-token span needs 7 copies, a 3-token span 3, a span of 6 tokens or more 2),
# looked for in the last `LOOP_WINDOW` tokens of the string.
LOOP_MIN_TOKENS = 6
LOOP_WINDOW = 128


def _brackets(text: str) -> Iterator[tuple[int, str]]:
    """The JSON brackets of `text` (those outside strings), with their positions."""
    in_string, escaped = False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[]{}":
            yield i, char


def open_brackets(text: str) -> str:
    """The closing brackets of the JSON containers still open at the end of `text`, in order."""
    stack: list[str] = []
    for _, char in _brackets(text):
        if char in "[{":
            stack.append("]" if char == "[" else "}")
        elif stack and stack[-1] == char:
            stack.pop()
    return "".join(reversed(stack))


def repeats_a_triple(text: str) -> bool:
    """True when `text` is a JSON answer whose items so far include a repeated triple."""
    parsed = parse_triples(text)
    return parsed.diagnostics.strategy in _JSON and parsed.diagnostics.duplicates_dropped > 0


def repeats_an_item(text: str) -> bool:
    """True when `text` ends by closing a JSON object written, character for character (case
    and whitespace aside), earlier in the answer: a loop even when the item is not a triple
    (`{"s": "A", "relation": "r"}` again and again)."""
    starts: list[int] = []
    items: list[str] = []
    for i, char in _brackets(text):
        if char == "{":
            starts.append(i)
        elif char == "}" and starts:
            items.append(" ".join(text[starts.pop() : i + 1].lower().split()))
    return bool(text.endswith("}") and items and items[-1] in items[:-1])


def looping_span(ids: list[int], wordy: Container[int] | None = None) -> int:
    """The length of the span that `ids` ends in back-to-back copies of, when those copies
    repeat at least `LOOP_MIN_TOKENS` tokens; else 0. With `wordy` (ids of tokens that hold a
    letter), a span without any such token does not count: `1,000,000,000` is not a loop. Only
    spans whose first token recurs where a copy would start are tried, so a step costs one scan
    of the window."""
    if not ids:
        return 0
    last, end = ids[-1], len(ids)
    for start in range(end - 2, max(-1, end - 1 - LOOP_WINDOW), -1):
        if ids[start] != last:
            continue
        span = end - 1 - start
        tail = ids[end - span :]
        copies = 1
        while (
            end - (copies + 1) * span >= 0
            and ids[end - (copies + 1) * span : end - copies * span] == tail
        ):
            copies += 1
        if copies < 2 or span * (copies - 1) < LOOP_MIN_TOKENS:
            continue
        if wordy is None or any(t in wordy for t in tail):
            return span
    return 0


class RepeatGuard:
    """A `generate` logits processor that ends a looping row's answer as strict JSON.

    It looks one token ahead at the greedy choice. Repeated items (`triples=True`): when the
    choice would close an object that repeats a triple, it writes that token's text up to the
    `}` instead, then the brackets still open and end-of-sequence (no dangling `,`). Phrase loops
    (`strings=True`): when the choice would make the open string loop, it writes the choice and
    then `"`, and lets the model go on.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_width: int,
        eos_id: int,
        *,
        triples: bool = True,
        strings: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.eos_id = eos_id
        self.triples, self.strings = triples, strings
        self.triggers = _closing_brace_ids(tokenizer)
        self.quotes = _quote_counts(tokenizer)
        self.quote_id = self.tokenizer.encode('"', add_special_tokens=False)[0]
        self.wordy = _wordy_ids(tokenizer)
        self.stops = {eos_id, getattr(tokenizer, "pad_token_id", None)}
        self.forced: dict[int, list[int]] = {}  # tokens to write next, by row
        self.ended: set[int] = set()  # rows whose answer has ended (by the guard or the model)
        self.cut: set[int] = set()  # rows whose answer the guard ended at a repeated item
        self.answers: list[list[int]] = []  # each row's answer tokens so far
        self.json: list[bool | None] = []  # whether each row's answer is JSON (None: no text yet)
        self.string_start: list[int | None] = []  # where each row's open string starts

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self._follow(input_ids)
        # numpy's argmax on a CPU (~10x torch's for a few rows of a large vocabulary)
        fp32 = scores.dtype.is_floating_point and scores.dtype.itemsize == 4
        cpu = scores.device.type == "cpu" and fp32
        choices = (scores.numpy().argmax(axis=-1) if cpu else scores.argmax(dim=-1)).tolist()
        for row, choice in enumerate(choices):
            if row in self.ended or self.forced.get(row) or not self.json[row]:
                continue
            if self.triples and choice in self.triggers:
                self._check_items(row, choice)
            start = self.string_start[row]
            if self.strings and start is not None and row not in self.ended:
                self._check_string(row, start, choice)
        for row, pending in self.forced.items():
            if pending:
                token = pending.pop(0)
                scores[row, :] = float("-inf")
                scores[row, token] = 0.0
        return scores

    def select(self, keep: list[int]) -> None:
        """Keep only the rows `keep` (in that order), when finished rows leave the batch between
        two `generate` calls; read `cut` for the rows that leave before calling this."""
        new = {old: i for i, old in enumerate(keep)}
        self.forced = {new[row]: tokens for row, tokens in self.forced.items() if row in new}
        self.ended = {new[row] for row in self.ended if row in new}
        self.cut = {new[row] for row in self.cut if row in new}
        if self.answers:
            self.answers = [self.answers[i] for i in keep]
            self.json = [self.json[i] for i in keep]
            self.string_start = [self.string_start[i] for i in keep]

    def _follow(self, input_ids: Any) -> None:
        """Take in the token each row wrote last step: the answer so far, its format, and
        whether it is inside a JSON string."""
        width = input_ids.shape[1] - self.prompt_width
        if not self.answers:
            rows = input_ids.shape[0]
            self.answers = [[] for _ in range(rows)]
            self.json = [None] * rows
            self.string_start = [None] * rows
        if width == 0:
            return
        for row, token in enumerate(input_ids[:, -1].tolist()):
            if token in self.stops:  # the row has ended: padding from here on
                self.ended.add(row)
                continue
            answer = self.answers[row]
            answer.append(token)
            if self.json[row] is None:
                text = self.tokenizer.decode(answer, skip_special_tokens=True).lstrip()
                if text:
                    self.json[row] = text[0] in "[{`"
            if self.quotes.get(token, 0) % 2:
                self.string_start[row] = None if self.string_start[row] is not None else len(answer)

    def _check_items(self, row: int, choice: int) -> None:
        ids = self.answers[row]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        piece = self.tokenizer.decode(ids + [choice], skip_special_tokens=True)[len(text) :]
        if "}" not in piece:
            return
        head = piece[: piece.rindex("}") + 1]
        if repeats_a_triple(text + head) or repeats_an_item(text + head):
            tail = open_brackets(text + head)
            closing = self.tokenizer.encode(head + tail, add_special_tokens=False)
            self.forced[row] = [*closing, self.eos_id]
            self.ended.add(row)
            self.cut.add(row)

    def _check_string(self, row: int, start: int, choice: int) -> None:
        if choice in self.quotes or choice == self.eos_id:
            return
        if looping_span([*self.answers[row][start:], choice], self.wordy):
            self.forced[row] = [choice, self.quote_id]


def _quote_counts(tokenizer: Any) -> dict[int, int]:
    """How many unescaped `"` each vocabulary token holds, for the tokens that hold any."""
    cached = getattr(tokenizer, "_triplesmith_quote_counts", None)
    if cached is None:
        cached = {}
        for token, i in tokenizer.get_vocab().items():
            count = token.count('"') - token.count('\\"')
            if count:
                cached[i] = count
        tokenizer._triplesmith_quote_counts = cached
    return cached


def _wordy_ids(tokenizer: Any) -> frozenset[int]:
    """The ids of every vocabulary token whose decoded text holds a letter."""
    cached = getattr(tokenizer, "_triplesmith_wordy_ids", None)
    if cached is None:
        ids = range(len(tokenizer))
        texts = tokenizer.batch_decode([[i] for i in ids])
        cached = frozenset(
            i for i, text in zip(ids, texts, strict=True) if any(c.isalpha() for c in text)
        )
        tokenizer._triplesmith_wordy_ids = cached
    return cached


def _closing_brace_ids(tokenizer: Any) -> frozenset[int]:
    """The ids of every vocabulary token whose text contains `}` (ASCII is kept as is by
    byte-level and SentencePiece vocabularies alike)."""
    cached = getattr(tokenizer, "_triplesmith_brace_ids", None)
    if cached is None:
        cached = frozenset(i for token, i in tokenizer.get_vocab().items() if "}" in token)
        tokenizer._triplesmith_brace_ids = cached
    return cached
