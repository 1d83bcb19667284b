"""Per-triple confidence from the token log-probabilities of the answer that wrote the triple.

How a triple's tokens become one number (`Confidence`, the chains' `+confidence=` option):
`mean` log-prob over the triple's span (subject to end of object; the default), `relation`
(the mean over the relation's tokens only), `min` (the span's least likely token) or `sum`
(the span's total log-prob, so longer triples rank lower).
"""

import math
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from triplesmith.schema import Triple

Confidence = Literal["mean", "relation", "min", "sum"]
CONFIDENCES: tuple[str, ...] = get_args(Confidence)
_AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "mean": lambda lps: sum(lps) / len(lps),
    "relation": lambda lps: sum(lps) / len(lps),
    "min": min,
    "sum": sum,
}


def token_offsets(pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of consecutive decoded token pieces in their concatenation."""
    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return spans


def _locate(text: str, value: str, start: int) -> int:
    found = text.find(value, start)
    return found if found >= 0 else text.find(value)


def triple_spans(text: str, triples: Sequence[Triple]) -> list[tuple[int, int] | None]:
    """Where each triple was written: from its subject to the end of its object, in order.

    Triples are searched left to right (a later triple starts after the previous one ended),
    so repeated entities attach to the right occurrence. None when a field is not in the text
    verbatim (the parser normalised whitespace, for instance).
    """
    spans: list[tuple[int, int] | None] = []
    pos = 0
    for triple in triples:
        start = _locate(text, triple.s, pos)
        if start < 0:
            spans.append(None)
            continue
        end_of_object = _locate(text, triple.object, start)
        if end_of_object < 0:
            spans.append(None)
            continue
        end = end_of_object + len(triple.object)
        spans.append((start, end))
        pos = end
    return spans


def relation_span(text: str, triple: Triple, span: tuple[int, int]) -> tuple[int, int]:
    """Where the triple's relation was written inside its span (after the subject); the whole
    span when it is not there verbatim."""
    start = text.find(triple.relation, span[0] + len(triple.s), span[1])
    if start < 0:
        return span
    return (start, start + len(triple.relation))


def span_confidences(
    text: str,
    pieces: Sequence[str],
    logprobs: Sequence[float],
    triples: Sequence[Triple],
    how: Confidence = "mean",
) -> list[float] | None:
    """Each triple's confidence from the log-probs of the tokens overlapping its span (`how`:
    see the module's docstring).

    `pieces` are the decoded tokens whose concatenation is `text`; `logprobs` their
    log-probabilities. A triple whose span cannot be found gets the same aggregate over the
    whole answer. None when there are no log-probs at all.
    """
    if how not in _AGGREGATE:
        raise ValueError(f"unknown confidence {how!r}; use one of {', '.join(CONFIDENCES)}")
    if not logprobs or len(pieces) != len(logprobs):
        return None
    aggregate = _AGGREGATE[how]
    finite = [lp for lp in logprobs if math.isfinite(lp)]
    overall = aggregate(finite) if finite else -100.0
    offsets = token_offsets(pieces)
    out = []
    for triple, span in zip(triples, triple_spans(text, triples), strict=True):
        if span is None:
            out.append(overall)
            continue
        if how == "relation":
            span = relation_span(text, triple, span)
        inside = [
            lp
            for (a, b), lp in zip(offsets, logprobs, strict=True)
            if a < span[1] and b > span[0] and math.isfinite(lp)
        ]
        out.append(aggregate(inside) if inside else overall)
    return out
