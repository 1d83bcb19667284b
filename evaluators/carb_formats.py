"""CaRB's tuple model, the readers for its gold TSV and the system-output formats it scores, and
the writer of its own tabbed format.

Each reader follows the matching reader of CaRB's reference scorer (`oie_readers/*.py`), so a
file read here yields the tuples `carb.py` would score; lines it cannot parse raise
`EvaluatorError` naming `file:line`.
"""

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from triplesmith.errors import EvaluatorError

PredictionFormat = Literal["openie4", "openie5", "clausie", "props", "reverb", "tabbed"]

# CaRB's gold marks a context argument ("C: analysts said") inline; its reader drops any such arg.
CONTEXT_MARK = "C: "


class CarbTuple(BaseModel):
    """One n-ary extraction: a relation, its arguments in order, and a confidence."""

    model_config = ConfigDict(frozen=True)

    relation: str
    args: tuple[str, ...] = ()
    confidence: float = 1.0


Tuples = dict[str, list[CarbTuple]]


class _Malformed(ValueError):
    """A line that does not fit its format; the message says what was expected."""


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, tab fields) of non-blank lines: stripped, then split, as CaRB does."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line.strip().split("\t")
    except OSError as exc:
        raise EvaluatorError(f"{path}: cannot read the file ({exc}); check the path") from exc
    except UnicodeDecodeError as exc:
        raise EvaluatorError(f"{path}: not UTF-8 text ({exc}); re-encode it as UTF-8") from exc


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Malformed(f"the confidence must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _Malformed(f"the confidence must be finite, got {text!r}")
    return value


def _openie_element(field: str) -> str:
    """The text of an OpenIE-4/5 element such as `SimpleArgument(the bond,List([55, 86)))`."""
    if "(" not in field or ",List(" not in field:
        raise _Malformed(f"expected an element like `Relation(text,List([0, 4)))`, got {field!r}")
    return field[field.index("(") + 1 : field.index(",List(")]


def read_carb_gold(path: str | Path) -> Tuples:
    """Read CaRB gold (`sentence \\t relation \\t arg1 \\t arg2 [\\t arg3 ...]`), keyed by sentence,
    with the dataset reader (`triplesmith.data.carb`: one reader per gold format).

    Context arguments (those containing "C: ") are dropped, as CaRB's gold reader does.
    """
    from triplesmith.data.carb import read_carb_gold as read_examples

    return {
        example.sentence: [
            CarbTuple(
                relation=t["relation"],
                args=tuple(arg for arg in t["args"] if CONTEXT_MARK not in arg),
            )
            for t in example.meta["carb_tuples"]
        ]
        for example in read_examples(Path(path), "gold")
    }


def _openie4(fields: list[str]) -> tuple[str, CarbTuple] | None:
    # confidence, context, arg1, relation, arg2, sentence
    if not all(fields[2:5]):
        return None  # an element is missing: the reference skips the line
    if len(fields) < 6:
        raise _Malformed(
            "expected 6 tab-separated fields: conf, context, arg1, rel, arg2, sentence"
        )
    arg1, relation, arg2 = (_openie_element(field) for field in fields[2:5])
    return fields[5], CarbTuple(
        relation=relation, args=(arg1, arg2), confidence=_confidence(fields[0])
    )


def _openie5(fields: list[str]) -> tuple[str, CarbTuple] | None:
    # confidence, context, arg1, relation, "arg2; arg3; ...", sentence
    if not all(fields[2:5]):
        return None
    if len(fields) < 6:
        raise _Malformed(
            "expected 6 tab-separated fields: conf, context, arg1, rel, args, sentence"
        )
    arg1, relation = (_openie_element(field) for field in fields[2:4])
    rest = [_openie_element(field) for field in fields[4].strip().split(");")]
    if fields[1]:
        context = _openie_element(fields[1])
        if not f"{arg1} {relation}".startswith(context):
            arg1 = f"{context} {arg1}"
    return fields[5], CarbTuple(
        relation=relation, args=(arg1, *rest), confidence=_confidence(fields[0])
    )


def _props(fields: list[str]) -> tuple[str, CarbTuple] | None:
    # confidence, sentence, relation, then (label, argument) pairs
    if len(fields) < 3:
        raise _Malformed("expected conf, sentence, relation, then label/argument pairs")
    args = tuple(fields[4::2])
    return fields[1], CarbTuple(relation=fields[2], args=args, confidence=_confidence(fields[0]))


def _reverb(fields: list[str]) -> tuple[str, CarbTuple] | None:
    # file, sentence id, arg1, relation, arg2, 6 offsets, confidence, sentence, tags ...
    if len(fields) < 13:
        raise _Malformed(
            "expected ReVerb's 18 tab-separated fields (confidence 12th, sentence 13th)"
        )
    arg1, relation, arg2 = fields[2:5]
    return fields[12], CarbTuple(
        relation=relation, args=(arg1, arg2), confidence=_confidence(fields[11])
    )


def _tabbed(fields: list[str]) -> tuple[str, CarbTuple] | None:
    # sentence, confidence, relation, arg1, arg2, ...
    if len(fields) < 3:
        raise _Malformed("expected `sentence<TAB>confidence<TAB>relation<TAB>arg1<TAB>arg2...`")
    return fields[0], CarbTuple(
        relation=fields[2], args=tuple(fields[3:]), confidence=_confidence(fields[1])
    )


_LINE_READERS: dict[str, Callable[[list[str]], tuple[str, CarbTuple] | None]] = {
    "openie4": _openie4,
    "openie5": _openie5,
    "props": _props,
    "reverb": _reverb,
    "tabbed": _tabbed,
}


def _read_clausie(path: Path) -> Tuples:
    """ClausIE: a sentence line, then `id \\t "arg1" \\t "rel" \\t "arg2" \\t conf` lines.

    Four-field lines (clauses without an object) are skipped, as the reference reader skips them.
    """
    predicted: Tuples = {}
    sentence: str | None = None
    for number, fields in _lines(path):
        if len(fields) == 1:
            sentence = fields[0]
        elif len(fields) == 5:
            if sentence is None:
                raise EvaluatorError(
                    f"{path}:{number}: an extraction comes before any sentence line; "
                    "ClausIE output starts each block with the sentence on a line of its own"
                )
            arg1, relation, arg2 = (field[1:-1] for field in fields[1:4])
            try:
                confidence = _confidence(fields[4])
            except _Malformed as exc:
                raise EvaluatorError(f"{path}:{number}: {exc}") from None
            predicted.setdefault(sentence, []).append(
                CarbTuple(relation=relation, args=(arg1, arg2), confidence=confidence)
            )
        elif len(fields) != 4:
            raise EvaluatorError(
                f"{path}:{number}: expected a sentence line or "
                f'`id<TAB>"arg1"<TAB>"rel"<TAB>"arg2"<TAB>conf`, got {len(fields)} fields'
            )
    return predicted


def _normalise_confidences(predicted: Tuples) -> Tuples:
    """PropS scores are log-probabilities; the reference maps them affinely into (0, 1).

    (Some versions of its ClausIE reader do the same; an increasing affine map changes no figure,
    only the reported best-F1 threshold, so ClausIE confidences are kept as written.)
    """
    values = [t.confidence for tuples in predicted.values() for t in tuples]
    if not values:
        return predicted
    epsilon = 1e-3
    low, high = min(values), max(values)
    denom = high - low + 2 * epsilon
    return {
        sentence: [
            t.model_copy(update={"confidence": ((t.confidence - low) + epsilon) / denom})
            for t in tuples
        ]
        for sentence, tuples in predicted.items()
    }


def read_carb_predictions(path: str | Path, fmt: PredictionFormat) -> Tuples:
    """Read one system's extractions in `fmt`, keyed by sentence as written in the file.

    `tabbed` is CaRB's own format: `sentence \\t confidence \\t relation \\t arg1 \\t arg2 ...`.
    ReVerb sentences are taken from its sentence column (the reference looks them up by id
    in the input file, which holds the same sentence). PropS confidences are normalised as
    the reference does.
    """
    path = Path(path)
    if fmt == "clausie":
        return _read_clausie(path)
    if fmt not in _LINE_READERS:
        raise EvaluatorError(
            f"{path}: unknown CaRB format {fmt!r}; use one of clausie, {', '.join(_LINE_READERS)}"
        )
    read_line = _LINE_READERS[fmt]
    predicted: Tuples = {}
    for number, fields in _lines(path):
        try:
            parsed = read_line(fields)
        except _Malformed as exc:
            raise EvaluatorError(
                f"{path}:{number}: not a {fmt} line: {exc}; check that the file is in {fmt} format"
            ) from None
        if parsed is not None:
            sentence, extraction = parsed
            predicted.setdefault(sentence, []).append(extraction)
    return _normalise_confidences(predicted) if fmt == "props" else predicted


def write_tabbed(
    path: str | Path, predictions: Iterable[tuple[str, Sequence[tuple[str, Sequence[str], float]]]]
) -> int:
    """Write extractions in CaRB's own `tabbed` format (`sentence \\t confidence \\t relation \\t
    arg1 \\t arg2 ...`), which CaRB's scorer reads (`carb.py --tabbed`) as `read_carb_predictions`
    does; `predictions` holds (sentence, [(relation, args, confidence), ...]). Tabs and newlines
    inside a field become spaces. Returns the number of lines written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for sentence, extractions in predictions:
        for relation, args, confidence in extractions:
            fields = [sentence, f"{float(confidence):.6f}", relation, *args]
            lines.append("\t".join(" ".join(field.split()) for field in fields))
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return len(lines)
