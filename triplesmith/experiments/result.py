"""`ExperimentResult`: what one experiment run hands back, read from the store."""

from pathlib import Path

from pydantic import BaseModel

from triplesmith.evaluators.base import Feedback
from triplesmith.experiments.store import ExperimentRecord, StoredExample


class ExperimentResult(BaseModel):
    """An experiment's stored examples (dataset order) and corpus-level feedback.

    `rows` holds finished and failed examples, with the scores of this run's evaluators;
    `skipped` examples were answered by an earlier run with the same key; `ran` were stored by
    this one (finished or failed); `rescored` stored answers were scored by an evaluator they
    had no scores from (no model call); `failed` counts
    the stored examples whose model call failed (no scores; the next run retries them);
    `complete` is True when every selected example is stored and finished.
    """

    record: ExperimentRecord
    rows: list[StoredExample]
    summary: list[Feedback]
    skipped: int
    ran: int
    total: int
    rescored: int = 0
    store: Path
    langsmith_url: str | None = None

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def chain(self) -> str:
        return self.record.chain

    @property
    def failed(self) -> int:
        return sum(row.failed for row in self.rows)

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.total and not self.failed

    def scores(self, key: str) -> list[float | None]:
        """Per-example scores of one feedback key, in dataset order."""
        return [row.score(key) for row in self.rows]
