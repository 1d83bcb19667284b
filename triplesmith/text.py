"""Text normalisation shared by splits, scorers and triage."""

import re
import unicodedata

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def collapse_whitespace(text: str) -> str:
    """Collapse runs of whitespace to single spaces and strip the ends."""
    return _SPACE.sub(" ", text).strip()


def normalise_sentence(sentence: str) -> str:
    """A key under which the same sentence, tokenised or not, compares equal.

    Lower-cases, NFKC-normalises, drops punctuation and whitespace differences, so
    "Obama , born in 1961 ." and "Obama, born in 1961." give the same key.
    """
    text = unicodedata.normalize("NFKC", sentence).lower()
    text = text.replace("-lrb-", " ").replace("-rrb-", " ")
    text = _PUNCT.sub(" ", text)
    return collapse_whitespace(text)
