"""Turn a model's raw answer into triples: strict, wrapped, repaired or cut-off JSON, or lines.

Never invents a triple (every field comes from the text); the diagnostics say what was dropped.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from triplesmith.errors import ChainError
from triplesmith.schema import Triple
from triplesmith.text import collapse_whitespace

Strategy = Literal[
    "json", "json-wrapped", "json-repaired", "truncated-json", "lines", "mixed", "none"
]


class ParseDiagnostics(BaseModel):
    """How an answer was parsed: the strategy, what was kept, what was dropped and why."""

    strategy: Strategy = "none"
    complete: bool = False
    recovered: int = 0
    duplicates_dropped: int = 0
    invalid_items: int = 0
    partial_items: int = 0  # items cut off by the end of the text (not counted as invalid)
    truncated: bool = False
    prose: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


class ParseResult(BaseModel):
    """The triples found in an answer, the full argument lists of n-ary ones, and diagnostics."""

    triples: list[Triple] = Field(default_factory=list)
    nary: list[list[str]] = Field(default_factory=list)
    diagnostics: ParseDiagnostics = Field(default_factory=ParseDiagnostics)

    @property
    def ok(self) -> bool:
        """True when something usable was parsed, or the answer was a valid empty list."""
        d = self.diagnostics
        return d.recovered > 0 or (d.complete and d.strategy != "none")


def format_triples(triples: Iterable[Triple]) -> str:
    """The canonical answer: a JSON list of `{"s", "relation", "object"}` objects."""
    return json.dumps([t.model_dump() for t in triples], ensure_ascii=False)


# --- a tolerant JSON scanner -------------------------------------------------------------------
# It accepts what models write (single quotes, trailing or missing commas, Python literals and
# tuples, unquoted keys) and, when the text stops or breaks, returns what was complete so far.


class _Number(str):
    """A number kept as written, so `1.50` stays "1.50"."""


class _PartialList(list):
    """A list cut off by the end of the text or by a syntax error."""

    eof = False


class _PartialDict(dict):
    """An object cut off by the end of the text or by a syntax error."""

    eof = False


_CUT = object()  # the value of a key whose value the end of the text cut off


class _Stop(Exception):
    def __init__(self, pos: int, reason: str, eof: bool) -> None:
        super().__init__(reason)
        self.pos, self.reason, self.eof = pos, reason, eof
        self.value: Any = None


_CLOSERS = {"[": "]", "(": ")", "{": "}"}
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][\w-]*")
_LITERALS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n"}
_ESCAPES |= {"r": "\r", "t": "\t"}
_SPECIAL = {'"': re.compile(r'["\\]'), "'": re.compile(r"['\\]")}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_MAX_DEPTH = 32


class _Scanner:
    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos, self.end = text, pos, len(text)

    def _stop(self, reason: str, eof: bool = False) -> _Stop:
        return _Stop(self.end if eof else self.pos, reason, eof)

    def peek(self) -> str:
        text = self.text
        while self.pos < self.end:
            if text[self.pos].isspace():
                self.pos += 1
            elif text.startswith("//", self.pos):
                newline = text.find("\n", self.pos)
                self.pos = self.end if newline < 0 else newline
            else:
                return text[self.pos]
        raise self._stop("the text ends", eof=True)

    def value(self, depth: int = 0) -> Any:
        char = self.peek()
        if char in _CLOSERS:
            if depth >= _MAX_DEPTH:
                raise self._stop("nesting too deep")
            return self._object(depth) if char == "{" else self._array(depth)
        if char in _SPECIAL:
            return self._string()
        for pattern in (_NUMBER, _IDENT):
            match = pattern.match(self.text, self.pos)
            if not match:
                continue
            if match.end() == self.end:  # a number or literal at the very end may be cut
                raise self._stop("the text ends", eof=True)
            if pattern is _NUMBER or match.group() in _LITERALS:
                self.pos = match.end()
                return _Number(match.group()) if pattern is _NUMBER else _LITERALS[match.group()]
        raise self._stop(f"unexpected {char!r}")

    def _array(self, depth: int) -> list[Any]:
        closer = _CLOSERS[self.text[self.pos]]
        self.pos += 1
        items: list[Any] = []
        try:
            while True:
                char = self.peek()
                if char == closer:
                    self.pos += 1
                    return items
                if char == ",":  # trailing, doubled and leading commas are all tolerated
                    self.pos += 1
                    continue
                items.append(self.value(depth + 1))
        except _Stop as stop:
            if stop.value is not None:
                items.append(stop.value)
            stop.value = _PartialList(items)
            stop.value.eof = stop.eof
            raise

    def _object(self, depth: int) -> dict[Any, Any]:
        self.pos += 1
        members: dict[Any, Any] = {}
        key = None
        try:
            while True:
                char = self.peek()
                if char == "}":
                    self.pos += 1
                    return members
                if char == ",":
                    self.pos += 1
                    continue
                key = self._key()
                if self.peek() != ":":
                    raise self._stop(f"expected ':' after the key {key!r}")
                self.pos += 1
                members[key] = self.value(depth + 1)
                key = None
        except _Stop as stop:
            if key is not None and (stop.value is not None or stop.eof):
                members[key] = _CUT if stop.value is None else stop.value
            stop.value = _PartialDict(members)
            stop.value.eof = stop.eof
            raise

    def _key(self) -> str:
        char = self.peek()
        if char in _SPECIAL:
            return self._string()
        match = _IDENT.match(self.text, self.pos)
        if not match:
            raise self._stop(f"expected a key, got {char!r}")
        self.pos = match.end()
        return match.group()

    def _string(self) -> str:
        text, quote = self.text, self.text[self.pos]
        special, out, i = _SPECIAL[quote], [], self.pos + 1
        while match := special.search(text, i):
            j = match.start()
            out.append(text[i:j])
            if text[j] == quote:
                if quote == "'" and not self._closes(j + 1):  # an apostrophe: `'Obama's wife'`
                    out.append("'")
                    i = j + 1
                    continue
                self.pos = j + 1
                return "".join(out)
            if j + 1 >= self.end:
                break
            decoded, i = _unescape(text, j)
            out.append(decoded)
        raise self._stop("the text ends inside a string", eof=True)

    def _closes(self, pos: int) -> bool:
        while pos < self.end and self.text[pos].isspace():
            pos += 1
        return pos >= self.end or self.text[pos] in ",:]})"


def _unescape(text: str, pos: int) -> tuple[str, int]:
    """Decode the escape at `text[pos] == "\\"`; unknown or broken escapes are kept as written."""
    char = text[pos + 1]
    if char in _ESCAPES:
        return _ESCAPES[char], pos + 2
    if char == "u" and _HEX4.fullmatch(text, pos + 2, pos + 6):
        code = int(text[pos + 2 : pos + 6], 16)
        low = text[pos + 8 : pos + 12] if text.startswith("\\u", pos + 6) else ""
        if 0xD800 <= code < 0xDC00 and _HEX4.fullmatch(low) and 0xDC00 <= int(low, 16) < 0xE000:
            return chr(0x10000 + ((code - 0xD800) << 10) + int(low, 16) - 0xDC00), pos + 12
        if not 0xD800 <= code < 0xE000:
            return chr(code), pos + 6
    return text[pos : pos + 2], pos + 2


# --- from parsed JSON to candidate triples -----------------------------------------------------

_ALIASES = {
    "s": ("s", "subject", "subj", "head", "h", "arg1", "source"),
    "relation": ("relation", "rel", "r", "predicate", "pred", "p", "relationship", "verb"),
    "object": ("object", "obj", "o", "tail", "t", "arg2", "target"),
}
_SLOTS = {alias: slot for slot, aliases in _ALIASES.items() for alias in aliases}
_EXTRA_ARG = re.compile(r"arg([3-9]|\d{2,})")
_WRAPPER_KEYS = {"triples", "triplets", "extractions", "facts", "relations", "results"}


def _slot(key: Any) -> str | None:
    """Which field a dict key fills: "s", "relation", "object", "argN" for n-ary extras, or None."""
    if not isinstance(key, str):
        return None
    key = key.strip().casefold()
    return _SLOTS.get(key) or (key if _EXTRA_ARG.fullmatch(key) else None)


def _is_triple_dict(value: Any) -> bool:
    """A dict with at least two of the triple's fields (one is enough for an object cut off)."""
    if not isinstance(value, dict):
        return False
    slots = {_slot(key) for key in value} & set(_ALIASES)
    if isinstance(value, _PartialDict):
        # `{"s` cut before its first member is a triple attempt; a cut-off wrapper such as
        # `{"triples": [...` is not, or its complete items would be lost
        return bool(slots) or (value.eof and not value)
    return len(slots) >= 2 or (bool(slots & {"relation"}) and isinstance(value.get("args"), list))


def _is_triple_attempt(item: Any) -> bool:
    """A list item that tries to be a triple: a field-keyed object (one field is enough, a
    model that writes `[{"s": "x"}, ...]` made a malformed triple) or a list of two or more
    with some text in it (`[[1, 0], [0, 1]]` is a matrix)."""
    if isinstance(item, dict):
        return _is_triple_dict(item) or bool({_slot(key) for key in item} & set(_ALIASES))
    return isinstance(item, list) and len(item) >= 2 and any(type(v) is str for v in item)


def _answer_items(value: Any, depth: int = 0) -> list[Any] | None:
    """The candidate triple items of a parsed JSON value, or None when it is not an answer."""
    if depth > 4:
        return None
    if isinstance(value, dict):
        if _is_triple_dict(value):
            return [value]
        lists = {k: v for k, v in value.items() if isinstance(v, list)}
        named = [v for k, v in lists.items() if str(k).strip().casefold() in _WRAPPER_KEYS]
        chosen = named or (list(lists.values()) if len(lists) == 1 else None)
        if chosen is None:  # no obvious wrapper key: look through every nested value
            chosen = [v for v in value.values() if isinstance(v, list | dict)]
        found = [f for f in (_answer_items(c, depth + 1) for c in chosen) if f is not None]
        if not found or (not named and len(lists) != 1 and not any(found)):
            return None
        return [item for f in found for item in f]
    if not isinstance(value, list):
        return None
    if not value:
        return None if isinstance(value, _PartialList) else []
    if depth == 0 and _is_flat_triple(value):
        return [value]
    items: list[Any] = []
    for item in value:
        inner = _answer_items(item, depth + 1) if isinstance(item, dict) else None
        items.extend(inner if inner is not None else [item])
    shaped = any(_is_triple_attempt(i) for i in items)
    return items if shaped else None


def _is_flat_triple(value: list[Any]) -> bool:
    """`["Obama", "born in", "Hawaii"]` on its own; `[1, 2, 3]` (a citation, say) is not."""
    return (
        not isinstance(value, _PartialList)
        and len(value) == 3
        and all(type(v) is str for v in value[:2])
        and isinstance(value[2], str)
    )


_MISSING = object()


def _field(value: Any, name: str) -> tuple[str | None, str]:
    """A field's text (numbers become strings), or None and why it is unusable."""
    if value is _MISSING:
        return None, f"missing {name}"
    if value is _CUT:
        return None, f"{name} was cut off"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None, f"{name} is {_kind(value)}"
    text = collapse_whitespace(str(value))
    return (text, "") if text else (None, f"{name} is empty")


def _kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else "a boolean"
    return "a number" if isinstance(value, _Number | int | float) else f"a {type(value).__name__}"


def _dict_fields(item: dict[Any, Any]) -> list[tuple[Any, str]]:
    """The (value, name) pairs of a triple-like object in argument order (`_MISSING` if absent)."""
    slots: dict[str, Any] = {}
    for key, value in item.items():
        if (slot := _slot(key)) is not None:
            slots.setdefault(slot, value)
    args = item.get("args")
    if not {"s", "object"} & set(slots) and isinstance(args, list) and args:
        rest = [(v, f"args[{n}]") for n, v in enumerate(args[1:], start=1)]
        return [(args[0], "args[0]"), (slots.get("relation", _MISSING), "relation"), *rest]
    extras = sorted((k for k in slots if k.startswith("arg")), key=lambda k: int(k[3:]))
    fields = [(slots.get(name, _MISSING), label) for name, label in _FIELD_LABELS]
    return fields + [(slots[k], k) for k in extras]


_FIELD_LABELS = (("s", "subject"), ("relation", "relation"), ("object", "object"))


def _item_args(item: Any) -> tuple[list[str] | None, str]:
    """The argument list `[s, relation, object, extra...]` of a JSON item, or None and why not."""
    if isinstance(item, _PartialList | _PartialDict):
        return None, _CUT_OFF if item.eof else "it is broken JSON"
    if isinstance(item, dict):
        fields = _dict_fields(item)
    elif isinstance(item, list):
        fields = [(v, f"part {n}") for n, v in enumerate(item, start=1)]
    else:
        return None, f"it is {_kind(item)}, not an object or a list"
    if len(fields) < 3:
        return None, f"it has {len(fields)} parts, a triple needs 3"
    args = []
    for n, (value, name) in enumerate(fields):
        text, why = _field(value, name)
        if text is None:
            return None, why
        if n == 1 and isinstance(value, _Number | int | float):  # a subject or object may be a
            return None, f"{name} is a number, not a relation"  # year; a relation is words
        args.append(text)
    return args, ""


_CUT_OFF = "it was cut off by the end of the text"


# --- line formats ------------------------------------------------------------------------------

_BULLET = re.compile(r"^(?:[-*•+·]|\d{1,3}[.)]|\(\d{1,3}\)|\[\d{1,3}\])\s+")
# `Triple 1: ...`, `Fact 2) ...`, `Triple 3 - ...`, but not `Triple -> ...` or `Fact-checking`
_LABEL = re.compile(r"^(?:triple|triplet|fact|extraction)s?\s*\d*\s*(?:[:)]|[.-](?=\s))\s*", re.I)
_PART_LABEL = re.compile(
    r"^\s*(?:subject|subj|s|relation|predicate|rel|r|object|obj|o|head|tail)"
    r"\s*[:=]\s*",
    re.I,
)
_ARROW = re.compile(r"\s*(?:-{1,2}>|→|⟶|=>)\s*")
_QUOTED_PART = re.compile(r"""\s*("[^"]*"|'[^']*(?:'\w[^']*)*')\s*(?:,|$)""")
_TABLE_RULE = re.compile(r":?-{2,}:?")
_HEADER_CELLS = set(_SLOTS) | {"#", "no", "no."}
_FENCE = re.compile(r"(?:`{3,}|~{3,})[\w+-]*")
_PAIRS = {"(": ")", "[": "]"}
_OPENER = re.compile(r"[\[{]")
_NUMERIC = re.compile(r"\s*[-+]?[\d.]*\s*")
_ROW_NUMBER = re.compile(r"\d{1,3}[.)]?")


def _groups(line: str) -> list[tuple[str, str]] | None:
    """The insides of a line made only of bracketed groups, as in `(a; b; c), (d; e; f)`."""
    groups, i = [], 0
    while i < len(line):
        opener = line[i]
        if opener in " \t,;.":
            i += 1
            continue
        if opener not in _PAIRS:
            return None
        depth = 0
        for j in range(i, len(line)):
            depth += (line[j] == opener) - (line[j] == _PAIRS[opener])
            if depth == 0:
                break
        else:
            return None
        groups.append((opener, line[i + 1 : j]))
        i = j + 1
    return groups or None


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets, so `Honolulu (Hawaii, US)` stays one part."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if char == sep and depth <= 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def _group_parts(inner: str, opener: str) -> list[str] | None:
    """The parts of `(s; r; o)`, `(s | r | o)`, `(s -> r -> o)`, `("s", "r", "o")` or an
    unambiguous `(s, r, o)`; None when the group is not a triple attempt (`[1, 2, 3]` is not)."""
    quoted, pos = [], 0
    while pos < len(inner) and (match := _QUOTED_PART.match(inner, pos)):
        quoted.append(match.group(1))
        pos = match.end()
    if pos == len(inner) and len(quoted) >= 2:
        return quoted
    for sep in (";", "|"):
        if len(parts := _split_top(inner, sep)) > 1:
            return parts
    if _ARROW.search(inner):
        return _ARROW.split(inner)
    parts = _split_top(inner, ",")
    if opener != "(" or len(parts) != 3 or all(_NUMERIC.fullmatch(p) for p in parts):
        return None
    return parts


def _bare_parts(line: str) -> list[str] | None:
    """The parts of `s | r | o` (markdown table rows too) or `s -> r -> o`; None for prose.

    Fewer than three parts is prose (`Input -> Output`), not a broken triple: unlike `(a; b)`,
    nothing marks the line as an attempt at one.
    """
    if "|" in line:
        cells = line.split("|")
        cells = cells[line.startswith("|") : len(cells) - line.endswith("|")]
        stripped = [c.strip() for c in cells]
        if all(_TABLE_RULE.fullmatch(c) for c in stripped):
            return []
        if all(c.casefold() in _HEADER_CELLS for c in stripped):
            return []
        if len(cells) >= 4 and _ROW_NUMBER.fullmatch(stripped[0]):  # a numbered table's # column
            cells = cells[1:]
    else:
        cells = _ARROW.split(line) if _ARROW.search(line) else []
    return cells if len(cells) >= 3 else None


def _clean_parts(parts: list[str]) -> list[str]:
    parts = [p.strip().strip("*`").strip() for p in parts]
    parts = [p[1:-1] if len(p) >= 2 and p[0] == p[-1] and p[0] in "\"'" else p for p in parts]
    if parts and all(_PART_LABEL.match(p) for p in parts):
        parts = [_PART_LABEL.sub("", p, count=1) for p in parts]
    if parts and parts[-1].endswith(".") and parts[-1].count(".") == 1:
        parts[-1] = parts[-1][:-1]
    return [collapse_whitespace(p) for p in parts]


def _line_candidates(line: str) -> tuple[list[list[str]], list[str]]:
    """The triple attempts on one line (each a list of parts) and the leftover prose."""
    body = _LABEL.sub("", _BULLET.sub("", line.strip(), count=1), count=1).rstrip(",;")
    groups = _groups(body)
    if groups is None:
        parts = _bare_parts(body)
        if parts is None:
            return [], [line]
        return ([_clean_parts(parts)] if parts else []), []
    attempts, prose = [], []
    for opener, inner in groups:
        parts = _group_parts(inner, opener)
        if parts is None:
            prose.append(inner)
        else:
            attempts.append(_clean_parts(parts))
    return attempts, (prose if attempts else [line])


# --- putting it together -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """One triple attempt: where it is, its arguments (None when unusable) and why not."""

    order: tuple[int, int]
    args: list[str] | None
    where: str
    why: str = ""
    from_line: bool = False


@dataclass
class _Block:
    """An answer-shaped JSON value: its span, items, the stop that cut it, and if it is strict."""

    start: int
    end: int
    items: list[Any]
    stop: _Stop | None
    strict: bool


def _line_col(text: str, pos: int) -> str:
    newline = "\n"
    return f"line {text.count(newline, 0, pos) + 1} col {pos - text.rfind(newline, 0, pos)}"


def _find_blocks(text: str) -> list[_Block]:
    """Every answer-shaped JSON value in the text, complete or cut off, left to right."""
    blocks: list[_Block] = []
    pos = 0
    while match := _OPENER.search(text, pos):
        start = match.start()
        scanner, stop = _Scanner(text, start), None
        try:
            value, end = scanner.value(), scanner.pos
        except _Stop as error:
            value, end, stop = error.value, max(error.pos, start + 1), error
        items = _answer_items(value)
        if items is None:
            pos = start + 1
            continue
        strict = stop is None and _is_strict_json(text[start:end])
        blocks.append(_Block(start, end, items, stop, strict))
        pos = end
    return blocks


def _is_strict_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _scan_lines(text: str, start: int, end: int, out: list[_Candidate], prose: list[str]) -> None:
    """Line-format triples between `start` and `end`; runs of other lines go to `prose`."""
    pending: list[str] = []
    offset, number = start, text.count("\n", 0, start) + 1
    for line in text[start:end].split("\n"):
        for at, piece in _unfenced(line):
            attempts, leftover = _line_candidates(piece) if piece.strip() else ([], [])
            for n, parts in enumerate(attempts):
                out.append(_Candidate((offset + at, n), parts, f"line {number}", from_line=True))
            pending.extend(p for p in leftover if p.strip())
            if attempts or not piece.strip():
                _flush_prose(pending, prose)
        offset, number = offset + len(line) + 1, number + 1
    _flush_prose(pending, prose)


def _unfenced(line: str) -> list[tuple[int, str]]:
    """The pieces of a line between code-fence markers, each with its offset in the line.

    A marker ends a piece as a line break would; blanking it out instead would join
    `a```b` into the field "a b", which the text never says.
    """
    pieces, pos = [], 0
    for match in _FENCE.finditer(line):
        pieces.append((pos, line[pos : match.start()]))
        pos = match.end()
    return [*pieces, (pos, line[pos:])]


def _flush_prose(pending: list[str], prose: list[str]) -> None:
    snippet = collapse_whitespace(" ".join(pending))
    if any(char.isalnum() for char in snippet):
        prose.append(snippet)
    pending.clear()


def parse_triples(text: str) -> ParseResult:
    """Parse a model's raw answer into triples, keeping every complete one and inventing none.

    JSON anywhere in the text (strict, fenced, repaired or cut off) and line formats such as
    `(s; r; o)`, `s | r | o` and `s -> r -> o` are all read and merged in text order; exact
    duplicates (ignoring case and whitespace) are dropped. Never raises on any string.
    """
    if not isinstance(text, str):
        raise ChainError(
            f"parse_triples: expected the model's answer as a str, got {type(text).__name__}; "
            "pass the raw text the model returned"
        )
    candidates: list[_Candidate] = []
    prose: list[str] = []
    notes: list[str] = []
    blocks = _find_blocks(text)
    gap_start = 0
    for block in blocks:
        _scan_lines(text, gap_start, block.start, candidates, prose)
        where = _line_col(text, block.start)
        for n, item in enumerate(block.items):
            args, why = _item_args(item)
            candidates.append(
                _Candidate((block.start, n), args, f"item {n + 1} of the JSON at {where}", why)
            )
        if block.stop is not None:
            state = "is cut off" if block.stop.eof else f"breaks ({block.stop.reason})"
            notes.append(
                f"the JSON at {where} {state} at {_line_col(text, block.stop.pos)}; "
                "kept the complete items before that"
            )
        gap_start = block.end
    _scan_lines(text, gap_start, len(text), candidates, prose)
    return _assemble(text, blocks, candidates, prose, notes)


def _assemble(
    text: str, blocks: list[_Block], found: list[_Candidate], prose: list[str], notes: list[str]
) -> ParseResult:
    """Validate, de-duplicate and order the candidates, and fill in the diagnostics."""
    result = ParseResult()
    d = result.diagnostics
    seen: set[tuple[str, ...]] = set()
    line_triples = 0
    for c in sorted(found, key=lambda c: c.order):
        if c.args is None or len(c.args) < 3 or not all(c.args):
            if c.why == _CUT_OFF:
                d.partial_items += 1
            else:
                d.invalid_items += 1
            why = c.why or f"it has {len([a for a in c.args or [] if a])} usable parts, needs 3"
            notes.append(f"dropped {c.where}: {why}")
            continue
        triple = Triple(s=c.args[0], relation=c.args[1], object=" ".join(c.args[2:]))
        key = tuple(part.casefold() for part in triple.as_tuple())
        if key in seen:
            d.duplicates_dropped += 1
            notes.append(f"dropped {c.where}: a duplicate of {triple.as_tuple()}")
            continue
        seen.add(key)
        result.triples.append(triple)
        line_triples += c.from_line
        if len(c.args) > 3:
            result.nary.append(c.args)
    d.recovered = len(result.triples)
    d.truncated = any(b.stop is not None and b.stop.eof for b in blocks)
    d.strategy = _strategy(text, blocks, line_triples, d.truncated)
    broken = any(b.stop is not None and not b.stop.eof for b in blocks)
    d.complete = d.strategy != "none" and not (d.truncated or broken or d.invalid_items)
    d.prose = prose
    summary = f"recovered {d.recovered} triple(s) ({d.strategy})"
    if d.duplicates_dropped or d.invalid_items or d.partial_items:
        summary += (
            f"; dropped {d.duplicates_dropped} duplicate(s), {d.invalid_items} invalid, "
            f"{d.partial_items} cut off"
        )
    more = [f"... and {len(notes) - 24} more notes"] if len(notes) > 24 else []
    d.errors = [summary, *notes[:24], *more]
    return result


def _strategy(text: str, blocks: list[_Block], line_triples: int, truncated: bool) -> Strategy:
    if blocks and line_triples:
        return "mixed"
    if not blocks:
        return "lines" if line_triples else "none"
    if truncated:
        return "truncated-json"
    if not all(b.strict for b in blocks):
        return "json-repaired"
    whole = len(blocks) == 1 and text[blocks[0].start : blocks[0].end] == text.strip()
    return "json" if whole else "json-wrapped"
