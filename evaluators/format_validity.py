"""Format validity: whether the answer parsed fully, and the triage tags as per-tag rates.

`format` is 1.0 when the parser left nothing unparsed (`diagnostics.complete`), else 0.0; its
mean over a dataset is the share of fully parsed answers. A failed run (the model call raised)
is no answer and gets no score (see evaluators/base.py); tables count it under errors.
When the outputs carry triage tags, every tag gets a `tag:<name>` feedback, 1.0 when present and
0.0 when absent, so the mean of each key is that tag's rate.
"""

from collections.abc import Iterable

from triplesmith.evaluators.base import Evaluator, Feedback, RunOutputs, read_prediction
from triplesmith.evaluators.triage import TAG_NAMES
from triplesmith.schema import Example

# The failure modes of the graph's triage; absent ones score 0.0.
TRIAGE_TAGS = TAG_NAMES
TAG_PREFIX = "tag:"


def tag_key(name: str) -> str:
    """The feedback key of a triage tag."""
    return f"{TAG_PREFIX}{name}"


class FormatEvaluator(Evaluator):
    """`format` plus `tag:<name>` rates; `tag_names` are the tags scored 0.0 when absent."""

    name = "format"
    keys = ("format",)

    def __init__(self, tag_names: Iterable[str] = TRIAGE_TAGS) -> None:
        self.tag_names = tuple(tag_names)

    def evaluate(self, outputs: RunOutputs, example: Example) -> list[Feedback]:
        prediction = read_prediction(outputs)
        comment = None if prediction.complete else "answer not fully parsed"
        feedback = [Feedback(key="format", score=float(prediction.complete), comment=comment)]
        if prediction.tags is not None:
            present = set(prediction.tags)
            names = list(self.tag_names) + sorted(present - set(self.tag_names))
            feedback += [
                Feedback(key=tag_key(name), score=float(name in present)) for name in names
            ]
        return feedback
