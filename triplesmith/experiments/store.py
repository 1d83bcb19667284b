"""The local experiment store: one SQLite file in WAL mode; answers apart from their scores.

An experiment is a chain over a dataset (its key says how the answers were made: chain, model,
adapter, prompt, decoding, dataset; never the evaluators). `answers` holds one row per example,
written in one transaction the moment it arrives, so a killed run loses only the examples in
flight. An answer is finished (the chain answered) or failed (the model call raised: `error`
set, never scored). `UNIQUE(experiment, example_id)` keeps one answer per example: a second
write of a finished one is a no-op, a write over a failed one replaces it (a rerun retries
exactly the failed examples). `scores` holds each evaluator's feedback for an answer, keyed by
the evaluator's identity (`Evaluator.identity`: its name and parameters), so adding an evaluator
or changing a threshold scores the stored answers again without generating anything. Nothing
secret goes in: metadata passes through `public_metadata` first.
"""

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from triplesmith.errors import ExperimentError
from triplesmith.evaluators.base import Feedback
from triplesmith.schema import Example

STORE_ENV = "TRIPLESMITH_STORE"
_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "authorization")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    chain TEXT NOT NULL,
    dataset TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created TEXT NOT NULL,
    langsmith_id TEXT
);
CREATE TABLE IF NOT EXISTS answers (
    experiment TEXT NOT NULL REFERENCES experiments(key),
    example_id TEXT NOT NULL,
    position INTEGER,
    example TEXT NOT NULL,
    outputs TEXT NOT NULL,
    tags TEXT,
    error TEXT,
    latency_s REAL,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    run_id TEXT,
    finished TEXT NOT NULL,
    UNIQUE (experiment, example_id)
);
CREATE TABLE IF NOT EXISTS scores (
    experiment TEXT NOT NULL REFERENCES experiments(key),
    example_id TEXT NOT NULL,
    evaluator TEXT NOT NULL,
    feedback TEXT NOT NULL,
    computed TEXT NOT NULL,
    PRIMARY KEY (experiment, example_id, evaluator)
);
CREATE TABLE IF NOT EXISTS summaries (
    experiment TEXT NOT NULL REFERENCES experiments(key),
    key TEXT NOT NULL,
    score REAL,
    comment TEXT,
    error TEXT,
    examples INTEGER NOT NULL,
    computed TEXT NOT NULL,
    PRIMARY KEY (experiment, key)
);
"""

# A new answer is inserted; a stored failed one is replaced (all but its identity), and its
# scores go with it; a stored finished one is left as it is (the write counts no row).
_REPLACED = "position example outputs tags error latency_s tokens_in tokens_out run_id finished"
_ADD_ANSWER = (
    f"INSERT INTO answers VALUES ({', '.join('?' * 12)}) "
    "ON CONFLICT (experiment, example_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _REPLACED.split())
    + " WHERE answers.error IS NOT NULL"
)


def default_store_path() -> Path:
    """`$TRIPLESMITH_STORE`, else `~/.cache/triplesmith/experiments.sqlite`."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    return Path.home() / ".cache" / "triplesmith" / "experiments.sqlite"


def public_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata without entries whose key names a secret (at any depth)."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                str(k): clean(v)
                for k, v in value.items()
                if not any(word in str(k).lower() for word in _SECRET_WORDS)
            }
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return clean(dict(metadata))


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ExperimentRecord(BaseModel):
    """One experiment: a chain over a dataset with a set of evaluators."""

    key: str
    name: str
    chain: str
    dataset: str = Field(description="`label@fingerprint` of the dataset")
    metadata: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(default_factory=_now)
    langsmith_id: str | None = None


class StoredExample(BaseModel):
    """One example of an experiment, finished or failed, with the scores asked for.

    `outputs` is the run's outputs (the Extraction JSON, plus `tags` and `attempts` when the
    graph ran); `tags` the triage tag names, None when no triage ran; `error` the run's error
    when it failed (then `feedback` is empty: a failed run is not scored); `feedback` the
    scores of the evaluators the rows were read with, in their order; `position` the example's
    index in its dataset; `run_id` the LangSmith run that made the answer, when uploaded.
    """

    experiment: str
    example_id: str
    position: int | None = None
    example: Example
    outputs: dict[str, Any]
    feedback: list[Feedback] = Field(default_factory=list)
    tags: list[str] | None = None
    error: str | None = None
    latency_s: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    run_id: str | None = None
    finished: str = Field(default_factory=_now)

    @property
    def failed(self) -> bool:
        """True when the run failed: an error, not a result (retried by the next run)."""
        return self.error is not None

    def score(self, key: str) -> float | None:
        """This example's score for a feedback key; None when absent or an evaluator error."""
        for feedback in self.feedback:
            if feedback.key == key:
                return feedback.score
        return None


class ExperimentStore:
    """The store at `path` (created on first use). Safe to share between threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ExperimentError(
                f"cannot open the experiment store {self.path}: {exc}; "
                f"give a writable path (--store or ${STORE_ENV})"
            ) from None
        if mode.lower() != "wal":
            raise ExperimentError(f"experiment store {self.path}: WAL mode unavailable ({mode})")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "ExperimentStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # --- experiments -------------------------------------------------------------------------

    def begin(self, record: ExperimentRecord) -> ExperimentRecord:
        """Record an experiment, or return the stored one with this key (a resumed run).

        A stored experiment with the same key but another chain or dataset is an error: the key
        would mix two experiments' examples.
        """
        with self._transaction() as db:
            row = db.execute("SELECT * FROM experiments WHERE key = ?", (record.key,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.key,
                        record.name,
                        record.chain,
                        record.dataset,
                        json.dumps(
                            public_metadata(record.metadata), ensure_ascii=False, default=str
                        ),
                        record.created,
                        record.langsmith_id,
                    ),
                )
                return record.model_copy(update={"metadata": public_metadata(record.metadata)})
        stored = _record(row)
        if stored.chain != record.chain or _fingerprint(stored.dataset) != _fingerprint(
            record.dataset
        ):
            raise ExperimentError(
                f"experiment key {record.key!r} already holds chain {stored.chain!r} on dataset "
                f"{stored.dataset!r}, not {record.chain!r} on {record.dataset!r}; "
                "use another key"
            )
        return stored

    def experiment(self, key: str) -> ExperimentRecord | None:
        rows = self._query("SELECT * FROM experiments WHERE key = ?", (key,))
        return _record(rows[0]) if rows else None

    def experiments(self) -> list[ExperimentRecord]:
        return [_record(row) for row in self._query("SELECT * FROM experiments ORDER BY created")]

    def set_langsmith_id(self, key: str, langsmith_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE experiments SET langsmith_id = ? WHERE key = ?", (langsmith_id, key))

    # --- answers and their scores -----------------------------------------------------------

    def add(
        self, row: StoredExample, scores: Mapping[str, Sequence[Feedback]] | None = None
    ) -> bool:
        """Store one example's answer and its scores by evaluator identity, in one transaction:
        True when written, False (nothing written) when the example is already stored as
        finished. A stored failed answer is replaced, and its scores (if any) with it."""
        with self._transaction() as db:
            cursor = db.execute(
                _ADD_ANSWER,
                (
                    row.experiment,
                    row.example_id,
                    row.position,
                    row.example.model_dump_json(),
                    json.dumps(row.outputs, ensure_ascii=False, default=str),
                    None if row.tags is None else json.dumps(row.tags),
                    row.error,
                    row.latency_s,
                    row.tokens_in,
                    row.tokens_out,
                    row.run_id,
                    row.finished,
                ),
            )
            written = cursor.rowcount == 1
            if written:
                db.execute(
                    "DELETE FROM scores WHERE experiment = ? AND example_id = ?",
                    (row.experiment, row.example_id),
                )
                if row.error is None and scores:
                    _insert_scores(db, row.experiment, row.example_id, scores)
            return written

    def add_scores(
        self, key: str, example_id: str, scores: Mapping[str, Sequence[Feedback]]
    ) -> None:
        """Store (or replace) evaluators' feedback for a finished answer."""
        with self._transaction() as db:
            _insert_scores(db, key, example_id, scores)

    def finished_ids(self, key: str) -> set[str]:
        """Ids of the examples whose run finished; failed ones are not, and run again."""
        rows = self._query(
            "SELECT example_id FROM answers WHERE experiment = ? AND error IS NULL", (key,)
        )
        return {row[0] for row in rows}

    def failed_ids(self, key: str) -> set[str]:
        """Ids of the examples stored as failed (their error kept until a rerun replaces them)."""
        rows = self._query(
            "SELECT example_id FROM answers WHERE experiment = ? AND error IS NOT NULL", (key,)
        )
        return {row[0] for row in rows}

    def scored(self, key: str) -> dict[str, set[str]]:
        """For each example of the experiment, the evaluator identities it has scores from."""
        found: dict[str, set[str]] = {}
        for example_id, evaluator in self._query(
            "SELECT example_id, evaluator FROM scores WHERE experiment = ?", (key,)
        ):
            found.setdefault(example_id, set()).add(evaluator)
        return found

    def rows(self, key: str, evaluators: Sequence[str] | None = None) -> list[StoredExample]:
        """Every stored example of an experiment, finished and failed, in dataset order, with
        the feedback of `evaluators` (identities, in that order; None: all stored)."""
        rows = self._query(
            "SELECT * FROM answers WHERE experiment = ? ORDER BY position, rowid", (key,)
        )
        scores: dict[str, dict[str, list[Feedback]]] = {}
        for example_id, evaluator, feedback in self._query(
            "SELECT example_id, evaluator, feedback FROM scores WHERE experiment = ? "
            "ORDER BY rowid",
            (key,),
        ):
            scores.setdefault(example_id, {})[evaluator] = [
                Feedback.model_validate(f) for f in json.loads(feedback)
            ]
        stored = []
        for row in rows:
            answer = _stored(row)
            by_evaluator = scores.get(answer.example_id, {})
            names = list(by_evaluator) if evaluators is None else evaluators
            feedback = [f for name in names for f in by_evaluator.get(name, [])]
            stored.append(answer.model_copy(update={"feedback": feedback}))
        return stored

    # --- corpus-level feedback ---------------------------------------------------------------

    def save_summary(self, key: str, feedback: Iterable[Feedback], examples: int) -> None:
        """Replace the experiment's corpus-level feedback (computed over `examples` examples)."""
        with self._transaction() as db:
            db.execute("DELETE FROM summaries WHERE experiment = ?", (key,))
            db.executemany(
                "INSERT INTO summaries VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(key, f.key, f.score, f.comment, f.error, examples, _now()) for f in feedback],
            )

    def summary(self, key: str) -> list[Feedback]:
        rows = self._query(
            "SELECT key, score, comment, error FROM summaries WHERE experiment = ? ORDER BY rowid",
            (key,),
        )
        return [Feedback(key=k, score=s, comment=c, error=e) for k, s, c, e in rows]


def _fingerprint(dataset: str) -> str:
    """Datasets are recorded as `label@fingerprint`; the same examples match under any label."""
    return dataset.rsplit("@", 1)[-1]


def _record(row: tuple) -> ExperimentRecord:
    key, name, chain, dataset, metadata, created, langsmith_id = row
    return ExperimentRecord(
        key=key,
        name=name,
        chain=chain,
        dataset=dataset,
        metadata=json.loads(metadata),
        created=created,
        langsmith_id=langsmith_id,
    )


def _insert_scores(
    db: sqlite3.Connection, key: str, example_id: str, scores: Mapping[str, Sequence[Feedback]]
) -> None:
    computed = _now()
    db.executemany(
        "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)",
        [
            (
                key,
                example_id,
                evaluator,
                json.dumps([f.model_dump() for f in feedback], ensure_ascii=False),
                computed,
            )
            for evaluator, feedback in scores.items()
        ],
    )


def _stored(row: tuple) -> StoredExample:
    (
        experiment,
        example_id,
        position,
        example,
        outputs,
        tags,
        error,
        latency,
        t_in,
        t_out,
        run_id,
        at,
    ) = row
    return StoredExample(
        experiment=experiment,
        example_id=example_id,
        position=position,
        example=Example.model_validate_json(example),
        outputs=json.loads(outputs),
        tags=None if tags is None else json.loads(tags),
        error=error,
        latency_s=latency,
        tokens_in=t_in,
        tokens_out=t_out,
        run_id=run_id,
        finished=at,
    )
