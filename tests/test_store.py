"""The experiment store: WAL mode, one answer per (experiment, example), scores apart by
evaluator, resume, no secrets."""

import sqlite3
import threading
from pathlib import Path

import pytest

from triplesmith.errors import ExperimentError
from triplesmith.evaluators.base import Feedback
from triplesmith.experiments.store import (
    ExperimentRecord,
    ExperimentStore,
    StoredExample,
    default_store_path,
    public_metadata,
)
from triplesmith.schema import Example, Triple

GOLD = Triple(s="Obama", relation="was born in", object="Hawaii")


def record(key: str = "exp-1", chain: str = "few-shot:smollm2", **metadata) -> ExperimentRecord:
    return ExperimentRecord(
        key=key, name=key, chain=chain, dataset="sample:test@abc123", metadata=metadata
    )


def row(example_id: str, key: str = "exp-1", f1: float | None = 1.0) -> StoredExample:
    example = Example(
        id=example_id, sentence=f"Obama was born in Hawaii ({example_id}).", triples=[GOLD]
    )
    feedback = [Feedback(key="triple_f1", score=f1)] if f1 is not None else []
    return StoredExample(
        experiment=key,
        example_id=example_id,
        example=example,
        outputs={"raw": "[]", "triples": [GOLD.model_dump()], "tags": []},
        feedback=feedback + [Feedback(key="judge", error="judge answered 140")],
        tags=[],
        latency_s=0.25,
        tokens_in=12,
        tokens_out=7,
    )


def add(store: ExperimentStore, answer: StoredExample) -> bool:
    """Store an answer with its feedback as one evaluator's scores."""
    return store.add(answer.model_copy(update={"feedback": []}), {"test": answer.feedback})


@pytest.fixture
def store(tmp_path: Path):
    with ExperimentStore(tmp_path / "experiments.sqlite") as opened:
        opened.begin(record())
        yield opened


def test_the_store_file_is_in_wal_mode(store: ExperimentStore) -> None:
    with sqlite3.connect(store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_example_is_stored_once_even_when_written_twice(store: ExperimentStore) -> None:
    assert add(store, row("a")) is True
    assert add(store, row("a", f1=0.0)) is False
    rows = store.rows("exp-1")
    assert [r.example_id for r in rows] == ["a"]
    assert rows[0].score("triple_f1") == 1.0  # the first write stands


def test_scores_are_kept_per_evaluator_and_read_for_the_evaluators_asked(
    store: ExperimentStore,
) -> None:
    answer = row("a").model_copy(update={"feedback": []})
    store.add(answer, {"triple-f1": [Feedback(key="triple_f1", score=0.5)]})
    store.add_scores("exp-1", "a", {"format": [Feedback(key="format", score=1.0)]})
    assert store.scored("exp-1") == {"a": {"triple-f1", "format"}}
    (only_format,) = store.rows("exp-1", ["format"])
    assert [f.key for f in only_format.feedback] == ["format"]
    (both,) = store.rows("exp-1", ["format", "triple-f1"])
    assert [f.key for f in both.feedback] == ["format", "triple_f1"]


def test_a_failed_answer_replaced_by_a_finished_one_loses_nothing_but_its_error(
    store: ExperimentStore,
) -> None:
    failed = row("a").model_copy(update={"feedback": [], "error": "timeout"})
    assert store.add(failed, {"format": [Feedback(key="format", score=0.0)]})
    assert store.scored("exp-1") == {}  # a failed answer is never scored
    assert add(store, row("a"))
    (stored,) = store.rows("exp-1")
    assert stored.error is None and stored.score("triple_f1") == 1.0


def test_the_database_itself_refuses_a_duplicate_example(store: ExperimentStore) -> None:
    add(store, row("a"))
    with sqlite3.connect(store.path) as other, pytest.raises(sqlite3.IntegrityError):
        other.execute(
            "INSERT INTO answers (experiment, example_id, example, outputs, finished) "
            "VALUES ('exp-1', 'a', '{}', '{}', 'now')"
        )


def test_a_row_round_trips_with_feedback_errors_and_counts(store: ExperimentStore) -> None:
    add(store, row("a"))
    (stored,) = store.rows("exp-1")
    assert stored == row("a").model_copy(update={"finished": stored.finished})
    assert stored.score("judge") is None  # an evaluator error is no score
    assert stored.feedback[1].error == "judge answered 140"


def test_finished_ids_drive_the_resume(store: ExperimentStore) -> None:
    for example_id in ("a", "b"):
        add(store, row(example_id))
    store.begin(record("exp-2"))
    add(store, row("c", key="exp-2"))
    assert store.finished_ids("exp-1") == {"a", "b"}
    assert store.finished_ids("exp-2") == {"c"}
    todo = [e for e in ("a", "b", "c", "d") if e not in store.finished_ids("exp-1")]
    assert todo == ["c", "d"]


def test_rows_written_by_another_connection_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    with ExperimentStore(path) as writer, ExperimentStore(path) as reader:
        writer.begin(record())
        add(writer, row("a"))
        assert reader.finished_ids("exp-1") == {"a"}


def test_concurrent_writers_store_each_example_exactly_once(store: ExperimentStore) -> None:
    ids = [f"ex-{i}" for i in range(40)]
    wins: list[bool] = []

    def write() -> None:
        for example_id in ids:
            wins.append(add(store, row(example_id)))

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(wins) == len(ids)
    assert sorted(r.example_id for r in store.rows("exp-1")) == sorted(ids)


def test_resuming_with_the_same_key_returns_the_stored_experiment(store: ExperimentStore) -> None:
    again = store.begin(record().model_copy(update={"created": "later"}))
    assert again.created == store.experiment("exp-1").created
    assert [r.key for r in store.experiments()] == ["exp-1"]


def test_a_key_reused_for_another_chain_is_refused(store: ExperimentStore) -> None:
    with pytest.raises(ExperimentError, match="already holds chain 'few-shot:smollm2'"):
        store.begin(record(chain="zero-shot:smollm2"))


def test_secrets_in_metadata_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ExperimentStore(path) as opened:
        kept = opened.begin(
            record(
                model="smollm2",
                openai_api_key="sk-live-123",
                nested={"LANGSMITH_API_KEY": "lsv2-456", "judge": "openai:gpt-4o-mini"},
            )
        )
    assert kept.metadata == {"model": "smollm2", "nested": {"judge": "openai:gpt-4o-mini"}}
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"sk-live-123" not in data and b"lsv2-456" not in data


def test_public_metadata_drops_secret_keys_at_any_depth() -> None:
    assert public_metadata({"a": [{"password": "x", "b": 1}], "Authorization": "Bearer y"}) == {
        "a": [{"b": 1}]
    }


def test_the_summary_is_replaced_not_appended(store: ExperimentStore) -> None:
    store.save_summary("exp-1", [Feedback(key="carb_auc", score=0.2)], examples=2)
    store.save_summary("exp-1", [Feedback(key="carb_auc", score=0.3)], examples=4)
    assert store.summary("exp-1") == [Feedback(key="carb_auc", score=0.3)]


def test_the_default_path_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRIPLESMITH_STORE", str(tmp_path / "x.sqlite"))
    assert default_store_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("TRIPLESMITH_STORE")
    assert default_store_path() == Path.home() / ".cache" / "triplesmith" / "experiments.sqlite"


def test_an_unwritable_store_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExperimentError, match="cannot open the experiment store"):
        ExperimentStore(blocker / "experiments.sqlite")
