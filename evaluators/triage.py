"""Failure triage: tag one chain answer with the ways it went wrong, each with its evidence.

Rules only (no model), so tags are cheap, deterministic and explained by their evidence. As the
rules apply them (tests/fixtures/triage/README.md is the labelling guide they are measured on):

- `format_error`: the parser found no answer, or dropped part of one (invalid items, cut-off or
  broken JSON); a blank output counts, unless triples came another way (structured output).
- `empty`: the answer parsed completely and holds no triples (`[]`), or the output is blank.
- `chit_chat`: prose outside the triples (greetings, "Here are...", explanations, narrative),
  not counting copies of the instructions, sentences reciting the answer format, bare labels,
  and copies of the input or example sentences.
- `instruction_echo`: words of the system prompt, user turn or repair turn copied in a row, or
  a prose sentence made almost only of the instructions' words.
- `repetition`: a stretch of words looping in a row, a phrase recurring in the prose, the same
  answer item twice, or duplicate / near-duplicate triples.
- `hallucination`: a subject or object of a kept triple whose content words are not in the
  sentence (fuzzy for ordinary words, exact for numbers and capitalised names).
- `few_shot_leak`: such ungrounded words that come from the prompt's few-shot examples, in a
  subject or object (then also a hallucination) or quoted in the prose.
- With gold triples: `omission` (recall below a threshold) and `over_extraction` (many more
  triples than gold, precision below a threshold), under triple F1's matcher (`match_triples`).
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple, get_args

from pydantic import BaseModel, ValidationError
from rapidfuzz import fuzz, process

from triplesmith.chains.parser import ParseDiagnostics, parse_triples
from triplesmith.chains.prompt import REPAIR_TEMPLATE, SYSTEM_PROMPT, USER_TEMPLATE
from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.triple_f1 import match_triples
from triplesmith.schema import Example, Triple
from triplesmith.settings import TriageThresholds, get_settings

TagName = Literal[
    "format_error",
    "empty",
    "chit_chat",
    "instruction_echo",
    "repetition",
    "hallucination",
    "few_shot_leak",
    "omission",
    "over_extraction",
]
TAG_NAMES: tuple[TagName, ...] = get_args(TagName)


class Tag(BaseModel):
    """One failure mode found in an answer: its name, why, and the offending text if any."""

    name: TagName
    evidence: str
    span: str | None = None


# --- words ---------------------------------------------------------------------------------------

STOPWORDS = frozenset(
    """a an the and or but nor so yet if then than as of in on at by for from to into onto
    upon with without within about above below over under after before during since until
    while through between among against along across around near off out up down via per
    is am are was were be been being has have had having do does did doing will would shall
    should can could may might must it its it's this that these those there here he him his
    she her hers they them their theirs we us our ours you your yours i me my mine who whom
    whose which what when where why how all any both each every few more most other some such
    no not only own same too very just also s t d ll m re ve one another again still even
    further once""".split()
)

_WORD = re.compile(r"\w+")


class _Token(NamedTuple):
    text: str  # as written
    key: str  # case- and accent-folded
    start: int
    end: int


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _tokens(text: str) -> list[_Token]:
    return [_Token(m.group(), _fold(m.group()), m.start(), m.end()) for m in _WORD.finditer(text)]


def _content(text: str) -> list[str]:
    """The content words of a text as written (stopwords and lone letters left out)."""
    return [
        t.text
        for t in _tokens(text)
        if t.key not in STOPWORDS and (len(t.key) > 1 or t.key.isdigit())
    ]


def _strict(word: str) -> bool:
    """Numbers and capitalised names must appear exactly; a fuzzy match would let 1961 pass
    for 1962 or Osama for Obama."""
    return word[:1].isupper() or any(c.isdigit() for c in word)


_SUFFIX = re.compile(r"(?:ing|edly|ed|es|s|ly)$")


def _stem(key: str) -> str:
    """A crude stem, so `barking` meets `barks` and `decades` meets `decade`."""
    stem = _SUFFIX.sub("", key)
    return stem if len(stem) >= 3 else key


class _Vocabulary:
    """The words of some texts, for grounding checks."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.words = {t.key for text in texts for t in _tokens(text)}
        self.stems = {_stem(w) for w in self.words}

    def has(self, word: str, cutoff: float) -> bool:
        key = _fold(word)
        if key in self.words:
            return True
        if _strict(word) or not self.words:
            return False
        found = process.extractOne(_stem(key), self.stems, scorer=fuzz.ratio, score_cutoff=cutoff)
        return found is not None


def _ngrams(keys: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(keys[i : i + n]) for i in range(len(keys) - n + 1)}


def _covered(keys: Sequence[str], grams: set[tuple[str, ...]], n: int) -> list[bool]:
    """Which positions of `keys` lie inside a window of n words found in `grams`."""
    marks = [False] * len(keys)
    for i in range(len(keys) - n + 1):
        if tuple(keys[i : i + n]) in grams:
            marks[i : i + n] = [True] * n
    return marks


def _runs(marks: Sequence[bool]) -> list[tuple[int, int]]:
    """The (start, end) index ranges of consecutive True marks."""
    runs, start = [], None
    for i, mark in enumerate([*marks, False]):
        if mark and start is None:
            start = i
        elif not mark and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: str) -> str:
    return repr(_clip(text, 60))


# --- the rules -----------------------------------------------------------------------------------

_INSTRUCTIONS = (
    SYSTEM_PROMPT,
    USER_TEMPLATE.split("{sentence}")[0],
    *REPAIR_TEMPLATE.split("{error}"),
)
_INSTRUCTION_KEYS = [[t.key for t in _tokens(text)] for text in _INSTRUCTIONS]
_INSTRUCTION_WORDS = _Vocabulary(_INSTRUCTIONS)
# Words of talk about the answer's format; prose made of them recites the task, it does not chat.
_FORMAT_WORDS = _Vocabulary(
    [
        *_INSTRUCTIONS,
        "json array list object key value field string nested contain format structure output "
        "data element item entry dictionary",
    ]
)
_FILLER = re.compile(
    r"^\W*(?:sure|certainly|of course|okay|ok|hello|hi|hey|great|absolutely|thanks?)\b"
    r"|\bhere (?:is|are)\b|\blet me\b|\bhope (?:this|that|it) helps\b|\bhappy to help\b"
    r"|\bi(?:'m| am) (?:sorry|glad|happy)\b|\bexplanation\b|\bnote:",
    re.I,
)

# Broken JSON the parser could not use lands in the prose; it is a format error, not chit-chat.
_RESIDUE = re.compile(r'[{}\[\]]|["\']\s*:')
_SLOT_LABEL = re.compile(
    r"\b(?:subject|subj|relation|predicate|object|obj|head|tail|triple|triplet)s?\s*\d*\s*:", re.I
)


def _format(raw: str, triples: list[Triple], d: ParseDiagnostics) -> Tag | None:
    if not raw.strip():  # triples with a blank text came another way (structured output)
        return None if triples else Tag(name="format_error", evidence="the output is blank")
    if d.complete:
        return None
    if d.strategy == "none":
        return Tag(name="format_error", evidence="no triples could be parsed", span=_clip(raw))
    why = "; ".join(d.errors[1:3]) or d.errors[0]
    return Tag(name="format_error", evidence=f"part of the output was unusable: {_clip(why, 160)}")


def _empty(raw: str, triples: list[Triple], d: ParseDiagnostics) -> Tag | None:
    if triples:
        return None
    if not raw.strip():
        return Tag(name="empty", evidence="the output is blank")
    if d.complete:
        return Tag(name="empty", evidence="a valid answer with no triples", span=_clip(raw))
    return None


def _chunks(prose: list[str]) -> list[str]:
    """The prose split into sentences."""
    return [c for snippet in prose for c in re.split(r"(?<=[.!?])\s+", snippet) if c.strip()]


def _recites(
    chunk: str, sentence: _Vocabulary, vocabulary: _Vocabulary, t: TriageThresholds
) -> tuple[int, int] | None:
    """(words from `vocabulary`, words) among the distinct content words of a prose sentence that
    the input sentence lacks, when nearly all of at least `echo_content_words` come from it."""
    words = {_fold(w): w for w in _content(chunk) if not sentence.has(w, t.grounding)}.values()
    known = sum(vocabulary.has(w, t.grounding) for w in words)
    if len(words) >= t.echo_content_words and known / len(words) >= t.echo_share:
        return known, len(words)
    return None


def _echo(raw: str, chunks: list[str], sentence: str, t: TriageThresholds) -> Tag | None:
    """Instruction words copied in a row, or a prose sentence made of the instructions' words."""
    tokens = _tokens(raw)
    n = t.echo_words
    grams = set().union(*(_ngrams(k, n) for k in _INSTRUCTION_KEYS))
    grams -= _ngrams([tok.key for tok in _tokens(sentence)], n)
    runs = _runs(_covered([tok.key for tok in tokens], grams, n))
    if runs:
        start, end = max(runs, key=lambda r: r[1] - r[0])
        return Tag(
            name="instruction_echo",
            evidence=f"{end - start} words in a row copied from the prompt's instructions",
            span=_clip(raw[tokens[start].start : tokens[end - 1].end]),
        )
    grounded = _Vocabulary([sentence])
    for chunk in chunks:
        if found := _recites(chunk, grounded, _INSTRUCTION_WORDS, t):
            return Tag(
                name="instruction_echo",
                evidence=f"{found[0]} of {found[1]} distinct content words restate the instructions",
                span=_clip(chunk),
            )
    return None


def _chit_chat(
    chunks: list[str], sentence: str, examples: Sequence[Example], t: TriageThresholds
) -> Tag | None:
    """Prose outside the triples, leaving out copies of the instructions, sentences reciting the
    task's format, and copies of the input and example sentences (those have tags of their own)."""
    copied = set().union(*(_ngrams(k, t.echo_words) for k in _INSTRUCTION_KEYS))
    sources = [sentence, *(e.sentence for e in examples)]
    quoted = set().union(*(_ngrams([x.key for x in _tokens(s)], 3) for s in sources))
    grounded = _Vocabulary([sentence])
    for chunk in chunks:
        if _RESIDUE.search(chunk) or _recites(chunk, grounded, _FORMAT_WORDS, t):
            continue
        tokens = _tokens(_SLOT_LABEL.sub(" ", chunk))
        keys = [tok.key for tok in tokens]
        marks = _covered(keys, copied, t.echo_words)
        quotes = _covered(keys, quoted, 3)
        left = [tok for tok, a, b in zip(tokens, marks, quotes, strict=True) if not (a or b)]
        # distinct words, so `A: A: A:` or `B:` labels are not taken for talk
        words = {tok.key for tok in left if len(tok.key) > 1 and not tok.key.isdigit()}
        if len(words) >= t.chit_chat_words or _FILLER.search(chunk):
            return Tag(
                name="chit_chat",
                evidence=f"{len(words)} distinct words of prose outside the answer",
                span=_clip(chunk),
            )
    return None


def _loop(raw: str, t: TriageThresholds) -> tuple[str, str] | None:
    """A stretch of words repeated `repetition_count` times in a row, or twice when it is
    `repetition_long_unit` words long: a model in a loop. Numbers alone (`000 000 000`) are not."""
    tokens = _tokens(raw)[:_MAX_LOOP_TOKENS]
    keys = [tok.key for tok in tokens]
    for unit in range(1, min(_MAX_LOOP_UNIT, len(keys) // 2) + 1):
        count = 2 if unit >= t.repetition_long_unit else t.repetition_count
        need = unit * (count - 1)
        run = 0
        for i in range(unit, len(keys)):
            run = run + 1 if keys[i] == keys[i - unit] else 0
            if run >= need and not all(k.isdigit() for k in keys[i - unit + 1 : i + 1]):
                first = tokens[i - run - unit + 1]
                copies = (run + unit) // unit
                text = raw[first.start : tokens[i - run].end]
                return f"a {unit}-word stretch repeats {copies} times in a row", text
    return None


_FLAT_ITEM = re.compile(r"\{[^{}]*\}")
_MAX_LOOP_TOKENS = 3000
_MAX_LOOP_UNIT = 60


def _field_key(text: str) -> str:
    words = _content(text) or [tok.text for tok in _tokens(text)]
    return " ".join(_fold(w) for w in words)


def _repetition(
    raw: str, prose: list[str], triples: list[Triple], d: ParseDiagnostics, t: TriageThresholds
) -> Tag | None:
    found = _loop(raw, t)
    if found:
        return Tag(name="repetition", evidence=found[0], span=_clip(found[1]))
    n, counts = t.repetition_ngram, Counter()
    for snippet in prose:
        keys = [tok.key for tok in _tokens(snippet)]
        counts.update(tuple(keys[i : i + n]) for i in range(len(keys) - n + 1))
    gram, times = counts.most_common(1)[0] if counts else ((), 0)
    if times >= t.repetition_count:
        return Tag(
            name="repetition",
            evidence=f"a {n}-word phrase recurs {times} times in the prose",
            span=" ".join(gram),
        )
    items = Counter(
        " ".join(tok.key for tok in _tokens(m.group())) for m in _FLAT_ITEM.finditer(raw)
    )
    item, times = items.most_common(1)[0] if items else ("", 0)
    if times >= 2 and item:
        return Tag(name="repetition", evidence=f"an answer item appears {times} times", span=item)
    if d.duplicates_dropped:
        return Tag(name="repetition", evidence=f"{d.duplicates_dropped} exact duplicate triple(s)")
    keys = [tuple(_field_key(part) for part in triple.as_tuple()) for triple in triples]
    for i, a in enumerate(keys):
        for j in range(i + 1, len(keys)):
            b = keys[j]
            if all(fuzz.ratio(x, y) >= t.near_duplicate for x, y in zip(a, b, strict=True)):
                return Tag(
                    name="repetition",
                    evidence=f"triples {i + 1} and {j + 1} are near-duplicates",
                    span=" | ".join(triples[j].as_tuple()),
                )
    return None


def _missing(text: str, vocabulary: _Vocabulary, t: TriageThresholds) -> tuple[list[str], int]:
    words = _content(text)
    return [w for w in words if not vocabulary.has(w, t.grounding)], len(words)


def _ungrounded(missing: list[str], total: int, t: TriageThresholds) -> bool:
    return any(_strict(w) for w in missing) or (
        total > 0 and len(missing) / total >= t.hallucination_share
    )


def _grounding(
    sentence: str,
    prose: list[str],
    triples: list[Triple],
    examples: Sequence[Example],
    t: TriageThresholds,
) -> list[Tag]:
    """`hallucination` and `few_shot_leak`: subjects and objects, and prose, not in the sentence."""
    in_sentence = _Vocabulary([sentence])
    in_examples = _Vocabulary(
        [e.sentence for e in examples]
        + [p for e in examples for x in e.triples for p in x.as_tuple()]
    )
    invented: list[tuple[str, str]] = []  # (evidence, span)
    leaked: list[tuple[str, str]] = []
    for triple in triples:
        for part, text in (("subject", triple.s), ("object", triple.object)):
            missing, total = _missing(text, in_sentence, t)
            if not _ungrounded(missing, total, t):
                continue
            invented.append((f"{part} {_quote(text)}: not in the sentence: {missing}", text))
            copied = [w for w in missing if in_examples.words and in_examples.has(w, t.grounding)]
            if copied and _ungrounded(copied, total, t):
                leaked.append((f"{part} {_quote(text)}: from the examples: {copied}", text))
    if examples:
        leaked += _prose_leak(prose, in_sentence, examples, t)
    return [
        Tag(name=name, evidence=_clip(found[0][0] + _more(found), 200), span=_clip(found[0][1]))
        for name, found in (("hallucination", invented), ("few_shot_leak", leaked))
        if found
    ]


def _more(found: list) -> str:
    return f" (and {len(found) - 1} more)" if len(found) > 1 else ""


def _prose_leak(
    prose: list[str], in_sentence: _Vocabulary, examples: Sequence[Example], t: TriageThresholds
) -> list[tuple[str, str]]:
    """Prose quoting a few-shot sentence: three words in a row from it, one of them a content
    word that the input sentence does not have."""
    grams = set().union(*(_ngrams([x.key for x in _tokens(e.sentence)], 3) for e in examples))
    found = []
    for snippet in prose:
        tokens = _tokens(snippet)
        for start, end in _runs(_covered([tok.key for tok in tokens], grams, 3)):
            text = snippet[tokens[start].start : tokens[end - 1].end]
            missing, _ = _missing(text, in_sentence, t)
            if missing:
                found.append((f"the prose quotes an example: {_quote(text)}", text))
    return found


def _against_gold(triples: list[Triple], gold: list[Triple], t: TriageThresholds) -> list[Tag]:
    """`omission` and `over_extraction`: recall and precision under triple F1's matcher."""
    # The matcher of triple F1, so the omission tag and triple recall never disagree.
    matches = match_triples(triples, gold, get_settings().triple_match_threshold)
    found = [any(g == j for _, j in matches) for g in range(len(gold))]
    correct = [any(p == i for i, _ in matches) for p in range(len(triples))]
    recall = sum(found) / len(gold)
    tags = []
    if recall < t.omission_recall:
        missed = [g for g, hit in zip(gold, found, strict=True) if not hit]
        tags.append(
            Tag(
                name="omission",
                evidence=f"recall {recall:.2f}: found {sum(found)} of {len(gold)} gold triples",
                span=" | ".join(missed[0].as_tuple()),
            )
        )
    if triples and len(triples) >= t.over_extraction_ratio * len(gold):
        precision = sum(correct) / len(triples)
        if precision < t.over_extraction_precision:
            tags.append(
                Tag(
                    name="over_extraction",
                    evidence=(
                        f"{len(triples)} triples for {len(gold)} gold, precision {precision:.2f}"
                    ),
                )
            )
    return tags


def _as_triples(name: str, items: object) -> list[Triple]:
    """Triples, or `{s, relation, object}` dicts (as graph state carries them), validated."""
    if not isinstance(items, list | tuple):
        raise EvaluatorError(
            f"triage: {name} must be a list of triples, got {type(items).__name__}"
        )
    try:
        return [x if isinstance(x, Triple) else Triple.model_validate(x) for x in items]
    except ValidationError as error:
        raise EvaluatorError(
            f"triage: {name} must hold {{s, relation, object}} triples with non-empty strings: "
            f"{error.errors()[0]['msg']}"
        ) from None


def triage(
    sentence: str,
    raw_output: str,
    triples: list[Triple],
    gold: list[Triple] | None = None,
    prompt_examples: list[Example] | None = None,
    diagnostics: ParseDiagnostics | None = None,
    thresholds: TriageThresholds | None = None,
) -> list[Tag]:
    """Tag one answer with its failure modes (at most one tag per name, in `TAG_NAMES` order).

    `triples` are the parsed triples of `raw_output` (Triple objects or dicts); `diagnostics` the
    parser's (parsed here when not given). `gold` enables `omission` and `over_extraction` (an empty gold list counts
    as no gold); `prompt_examples` are the few-shot examples that were in the prompt.
    Thresholds default to the settings' (`Settings.triage`).
    """
    for name, value in (("sentence", sentence), ("raw_output", raw_output)):
        if not isinstance(value, str):
            raise EvaluatorError(
                f"triage: {name} must be a string, got {type(value).__name__}; pass the input "
                "sentence and the model's raw answer text"
            )
    triples = _as_triples("triples", triples)
    gold = _as_triples("gold", gold) if gold is not None else None
    t = thresholds or get_settings().triage
    d = diagnostics if diagnostics is not None else parse_triples(raw_output).diagnostics
    examples = prompt_examples or []
    prose = list(d.prose)
    chunks = _chunks(prose)
    found = [
        _format(raw_output, triples, d),
        _empty(raw_output, triples, d),
        _chit_chat(chunks, sentence, examples, t),
        _echo(raw_output, chunks, sentence, t),
        _repetition(raw_output, prose, triples, d, t),
        *_grounding(sentence, prose, triples, examples, t),
        *(_against_gold(triples, gold, t) if gold else []),
    ]
    tags = [
        Tag(name=tag.name, evidence=_clip(tag.evidence, 200), span=tag.span and _clip(tag.span))
        for tag in found
        if tag is not None
    ]
    return sorted(tags, key=lambda tag: TAG_NAMES.index(tag.name))
