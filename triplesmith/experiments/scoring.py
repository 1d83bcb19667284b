"""Scoring stored answers: the scores an answer lacks (a new evaluator, a changed threshold),
the corpus-level figures over the finished answers, and `rescore`, which does both for a stored
experiment without generating anything."""

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langsmith import Client

from triplesmith.errors import ExperimentError
from triplesmith.evaluators.base import Evaluator, Feedback, safe_evaluate, summarise_all
from triplesmith.experiments.inputs import resolve_evaluators
from triplesmith.experiments.langsmith_setup import experiment_client
from triplesmith.experiments.result import ExperimentResult
from triplesmith.experiments.store import ExperimentRecord, ExperimentStore, StoredExample
from triplesmith.run_config import RunConfig
from triplesmith.schema import Example

logger = logging.getLogger(__name__)


def rescore(
    key: str, config: RunConfig | str | Sequence[Any] | None = None, **options: Any
) -> ExperimentResult:
    """Score a stored experiment's answers with `config.evaluators` (and its corpus figures)
    without generating anything: evaluators an answer already has scores from are not run
    again. The experiment is read from `config.store`."""
    config = RunConfig.of(config, **options)
    scorers = resolve_evaluators(config.evaluators, config.judge_model)
    opened = not isinstance(config.store, ExperimentStore)
    db = ExperimentStore(config.store) if opened else config.store
    try:
        record = db.experiment(key)
        if record is None:
            known = ", ".join(r.key for r in db.experiments()[-5:]) or "none"
            raise ExperimentError(
                f"no experiment {key!r} in the store {db.path}; recent keys: {known}"
            )
        answers = db.rows(key, [])
        selected = [row.example for row in answers][: config.limit]
        upload = bool(config.upload) and record.langsmith_id is not None
        client = experiment_client(True, config.client) if upload else None
        rescored = score_missing(db, record, scorers, selected, config, client)
        wanted = {e.id for e in selected}
        rows = [r for r in db.rows(key, [e.identity for e in scorers]) if r.example_id in wanted]
        summary = summarise_stored(db, key, scorers, rows)
        return ExperimentResult(
            record=record,
            rows=rows,
            summary=summary,
            skipped=len(rows),
            ran=0,
            total=len(selected),
            store=db.path,
            rescored=rescored,
        )
    finally:
        if opened:
            db.close()


def score_missing(
    db: ExperimentStore,
    record: ExperimentRecord,
    scorers: Sequence[Evaluator],
    selected: Sequence[Example],
    config: RunConfig,
    client: Client | None,
) -> int:
    """Score the stored answers that lack one of `scorers` (an added evaluator, a changed
    threshold) from the store, without generating; returns how many answers were scored. With
    upload on, the new feedback goes to the LangSmith run that made the answer."""
    scored = db.scored(record.key)
    wanted = {e.id for e in selected}
    rows = {
        row.example_id: row
        for row in db.rows(record.key, [])
        if row.example_id in wanted and not row.failed
    }
    pending = {
        example_id: todo
        for example_id in rows
        if (todo := [e for e in scorers if e.identity not in scored.get(example_id, ())])
    }
    if not pending:
        return 0

    def score(example_id: str) -> None:
        row = rows[example_id]
        found = {
            e.identity: safe_evaluate(e, row.outputs, row.example) for e in pending[example_id]
        }
        db.add_scores(record.key, example_id, found)
        # These answers are in the store, not (all) in LangSmith: an experiment resumed offline,
        # or one uploaded before the evaluator existed. `evaluate_existing` would reread every
        # run of the experiment from LangSmith and score all of them with every evaluator
        # given, so answers would be scored twice and the offline ones not at all; the scores
        # are made here once, from the store, and posted to the run that made the answer.
        if client is not None and row.run_id:
            for feedback in (f for fs in found.values() for f in fs if f.score is not None):
                client.create_feedback(
                    run_id=row.run_id, key=feedback.key, score=feedback.score,
                    comment=feedback.comment,
                )  # fmt: skip

    with ThreadPoolExecutor(max_workers=max(1, min(config.max_concurrency, 16))) as pool:
        list(pool.map(score, pending))
    logger.info(
        "experiment %s: scored %d stored answers, nothing generated", record.key, len(pending)
    )
    return len(pending)


def summarise_stored(
    db: ExperimentStore, key: str, scorers: Sequence[Evaluator], rows: Sequence[StoredExample]
) -> list[Feedback]:
    """Corpus-level feedback over the finished rows (failed ones have no answer to count)."""
    finished = [r for r in rows if not r.failed]
    summary = summarise_all(scorers, [r.outputs for r in finished], [r.example for r in finished])
    db.save_summary(key, summary, len(finished))
    return summary


def upload_summary(client: Client, experiment_id: str, summary: Sequence[Feedback]) -> None:
    """Post corpus-level figures to a LangSmith experiment, for when no `evaluate` ran (only
    stored answers were rescored); an experiment that runs gives them through its
    `summary_evaluators` instead."""
    for feedback in summary:
        if feedback.score is not None:
            client.create_feedback(
                key=feedback.key,
                score=feedback.score,
                comment=feedback.comment,
                project_id=experiment_id,
            )
