"""Per-triple confidence: the mean token log-probability over the span of the answer that wrote it."""

import math
from collections.abc import Sequence

from triplesmith.schema import Triple


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


def span_confidences(
    text: str,
    pieces: Sequence[str],
    logprobs: Sequence[float],
    triples: Sequence[Triple],
) -> list[float] | None:
    """Mean log-prob of the tokens overlapping each triple's span.

    `pieces` are the decoded tokens whose concatenation is `text`; `logprobs` their
    log-probabilities. A triple whose span cannot be found gets the answer's mean log-prob.
    None when there are no log-probs at all.
    """
    if not logprobs or len(pieces) != len(logprobs):
        return None
    finite = [lp for lp in logprobs if math.isfinite(lp)]
    overall = sum(finite) / len(finite) if finite else -100.0
    offsets = token_offsets(pieces)
    out = []
    for span in triple_spans(text, triples):
        if span is None:
            out.append(overall)
            continue
        inside = [
            lp
            for (a, b), lp in zip(offsets, logprobs, strict=True)
            if a < span[1] and b > span[0] and math.isfinite(lp)
        ]
        out.append(sum(inside) / len(inside) if inside else overall)
    return out
