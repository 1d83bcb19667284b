"""A failed model call is an error, never a result: stored as failed, not scored, retried.

The chain is a real OpenAI chain (`zero-shot:openai:gpt-4o-mini`) whose endpoint is first a
closed loopback port (connection refused, retries off), then the loopback OpenAI fake brought
up on that same port (tests/openai_fake_server.py), so the rerun is the same experiment.
"""

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_fake_server import FakeOpenAI, Reply

from triplesmith.chains.extraction import Extraction
from triplesmith.cli.app import main
from triplesmith.cli.extract import errors_path
from triplesmith.errors import ExperimentError
from triplesmith.evaluators.base import FailedRunError, safe_evaluate, summarise_all
from triplesmith.evaluators.langsmith_adapter import reference_evaluator
from triplesmith.evaluators.registry import get_evaluators
from triplesmith.evaluators.triple_f1 import TripleF1Evaluator
from triplesmith.experiments.compare import compare
from triplesmith.experiments.curate import curate
from triplesmith.experiments.runner import run_experiment
from triplesmith.experiments.store import ExperimentStore
from triplesmith.schema import Example, Triple
from triplesmith.settings import get_settings

SPEC = "zero-shot:openai:gpt-4o-mini"
CHAT = "POST /chat/completions"
EXAMPLES = [
    Example(
        id="obama",
        sentence="Barack Obama was born in Hawaii.",
        triples=[Triple(s="Barack Obama", relation="was born in", object="Hawaii")],
    ),
    Example(
        id="paris",
        sentence="Paris is the capital of France.",
        triples=[Triple(s="Paris", relation="is the capital of", object="France")],
    ),
]
GOLD = {e.sentence: e for e in EXAMPLES}


def gold_answer(body: dict[str, Any]) -> str:
    """The fake's answer: the gold triples of the sentence in the request's last message."""
    asked = body["messages"][-1]["content"]
    example = next(e for sentence, e in GOLD.items() if sentence in asked)
    return json.dumps({"triples": [t.model_dump() for t in example.triples]})


def asked_sentences(fake: FakeOpenAI) -> list[str]:
    asked = [r.json["messages"][-1]["content"] for r in fake.requests_to(CHAT)]
    return sorted(s for text in asked for s in GOLD if s in text)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """A loopback port nothing listens on, set as the OpenAI endpoint, retries off."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", "sk-test")
        env.setenv("TRIPLESMITH_OPENAI_BASE_URL", f"http://127.0.0.1:{free}/v1")
        env.setenv("TRIPLESMITH_MAX_RETRIES", "0")
        env.delenv("LANGSMITH_API_KEY", raising=False)
        get_settings.cache_clear()
        yield free
    get_settings.cache_clear()


def test_an_unreachable_endpoint_gives_errors_not_scores_and_the_rerun_generates_them(
    port: int, tmp_path: Path
) -> None:
    store = tmp_path / "s.sqlite"
    down = compare([SPEC], EXAMPLES, "triple-f1,format,carb", store=store, upload=False)
    row = down.table.loc[SPEC]
    assert (row["n"], row["errors"]) == (2, 2)
    assert down.metrics == [] and down.summary_metrics == []  # nothing scored, no corpus figure
    assert down.per_example.empty
    (experiment,) = down.experiments
    assert not experiment.complete and experiment.summary == []
    assert all("Connection" in r.error and r.feedback == [] for r in experiment.rows)
    with ExperimentStore(store) as db:
        assert db.finished_ids(experiment.key) == set()
        assert db.failed_ids(experiment.key) == {"obama", "paris"}
    assert "2 examples failed" in down.to_markdown()
    # Nothing to curate from failures, and the error says why (not "no triple_f1 scores").
    with pytest.raises(ExperimentError, match=r"all 2 of its examples failed \(the first: .*Conn"):
        curate(experiment, metric="triple_f1", below=0.5, store=store, upload=False)

    fake = FakeOpenAI(chat_content=gold_answer, port=port)
    with fake:
        up = compare([SPEC], EXAMPLES, "triple-f1,format,carb", store=store, upload=False)
    assert asked_sentences(fake) == sorted(GOLD)  # exactly the two failed examples, once each
    (rerun,) = up.experiments
    assert rerun.key == experiment.key and (rerun.ran, rerun.skipped) == (2, 0)
    assert rerun.complete and (up.table.loc[SPEC, "n"], up.table.loc[SPEC, "errors"]) == (2, 0)
    assert up.table.loc[SPEC, "triple_f1"] == 1.0 and up.table.loc[SPEC, "carb_f1"] > 0

    # The endpoint is down again: a third run asks for nothing, so nothing fails.
    again = compare([SPEC], EXAMPLES, "triple-f1,format,carb", store=store, upload=False)
    assert (again.experiments[0].ran, again.experiments[0].skipped) == (0, 2)
    assert again.table.loc[SPEC, "errors"] == 0


def test_after_a_partial_outage_only_the_failed_example_reruns_and_corpus_figures_skip_it(
    port: int, tmp_path: Path
) -> None:
    store = tmp_path / "s.sqlite"
    fake = FakeOpenAI(chat_content=gold_answer, port=port)
    fake.script(CHAT, Reply.error(500, "The server had an error while processing your request."))
    with fake:
        first = run_experiment(
            SPEC, EXAMPLES, "triple-f1", store=store, max_concurrency=1, upload=False
        )
        (failed,) = [r for r in first.rows if r.failed]
        assert "500" in failed.error and first.failed == 1 and not first.complete
        summary = {f.key: f for f in first.summary}
        # Counted as an empty answer, the failed example would halve the micro recall.
        assert summary["triple_micro_recall"].score == 1.0
        assert summary["triple_micro_f1"].comment == "1 matched of 1 predicted, 1 gold"
        before = len(fake.requests_to(CHAT))
        second = run_experiment(
            SPEC, EXAMPLES, "triple-f1", store=store, max_concurrency=1, upload=False
        )
    retried = fake.requests_to(CHAT)[before:]
    assert (
        len(retried) == 1 and failed.example.sentence in retried[0].json["messages"][-1]["content"]
    )
    assert (second.ran, second.skipped, second.failed, second.complete) == (1, 1, 0, True)
    assert second.scores("triple_f1") == [1.0, 1.0]
    assert {f.key: f.comment for f in second.summary}["triple_micro_f1"] == (
        "2 matched of 2 predicted, 2 gold"
    )


def test_no_evaluator_scores_a_failed_run() -> None:
    no_gold = Example(id="e", sentence="It rained.", triples=[])
    failed = Extraction(chain=SPEC, sentence=no_gold.sentence, error="prompt is 10588 tokens")
    # The vacuous-truth rule (no gold, no prediction: F1 1.0) must not reach a failed run.
    with pytest.raises(FailedRunError, match="prompt is 10588 tokens"):
        TripleF1Evaluator().evaluate(failed, no_gold)
    for evaluator in get_evaluators("triple-f1,triple-f1-exact,format,carb,benchie"):
        assert safe_evaluate(evaluator, failed, no_gold) == []
        assert safe_evaluate(evaluator, failed.to_output(), no_gold) == []
    assert summarise_all(get_evaluators("triple-f1,carb"), [failed], [no_gold]) == []


def test_the_langsmith_row_evaluator_gives_a_failed_run_no_results() -> None:
    from langsmith.evaluation import run_evaluator
    from test_langsmith_adapter import ls_example, ls_run

    evaluator = run_evaluator(reference_evaluator(TripleF1Evaluator()))
    failed = ls_run(None, error="ConnectionError")  # the target raised: no outputs
    assert evaluator.evaluate_run(failed, ls_example("a"))["results"] == []
    caught = ls_run({"triples": [], "raw": "", "error": "timeout after the answer began"})
    assert evaluator.evaluate_run(caught, ls_example("a"))["results"] == []


def test_a_rerun_replaces_a_failed_row_but_never_a_finished_one(tmp_path: Path) -> None:
    from test_store import add, record, row

    with ExperimentStore(tmp_path / "s.sqlite") as db:
        db.begin(record())
        failed = row("a").model_copy(update={"error": "refused", "feedback": []})
        assert db.add(failed) is True and db.finished_ids("exp-1") == set()
        assert db.add(failed) is True  # failed again: still failed, the newer error kept
        assert add(db, row("a", f1=0.5)) is True  # answered: replaces the failure
        assert db.add(failed) is False and add(db, row("a", f1=0.0)) is False
        (stored,) = db.rows("exp-1")
        assert stored.error is None and stored.score("triple_f1") == 0.5
        assert db.finished_ids("exp-1") == {"a"} and db.failed_ids("exp-1") == set()


# --- triplesmith extract --input --------------------------------------------------------------


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["triplesmith", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    code = exit_info.value.code
    return (0 if code is None else int(code)), capsys.readouterr().err


def write_input(path: Path) -> bytes:
    """Three sentences, the second without an id (the loader names it `in-2`)."""
    lines = [
        {"id": "obama", "sentence": EXAMPLES[0].sentence},
        {"sentence": EXAMPLES[1].sentence},
        {"id": "again", "sentence": EXAMPLES[0].sentence + " He was."},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path.read_bytes()


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("spelling", ["same", "symlink", "hardlink"])
def test_extract_refuses_an_output_that_is_the_input_and_leaves_it_unchanged(
    spelling: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    source = tmp_path / "in.jsonl"
    original = write_input(source)
    output = source if spelling == "same" else tmp_path / "link.jsonl"
    if spelling == "symlink":
        output.symlink_to(source)
    elif spelling == "hardlink":
        output.hardlink_to(source)
    # A model path that does not exist: had any model been looked for, the error would say so.
    args = ["extract", "--chain", f"few-shot:{tmp_path / 'no-model'}", "--input", str(source)]
    code, err = run_cli([*args, "--output", str(output)], monkeypatch, capsys)
    assert code == 2 and "is the --input file" in err and "Traceback" not in err
    assert source.read_bytes() == original
    assert not errors_path(output).exists()


def test_extract_refuses_a_batch_size_below_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source)
    args = ["extract", "-i", str(source), "-o", str(output), "--batch-size", "0"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "Invalid value for '--batch-size'" in err
    assert "greater than or equal to 1" in err
    assert not output.exists()


def test_extract_refuses_to_append_to_a_file_it_did_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "notes.jsonl"
    write_input(source)
    output.write_text('{"note": "mine"}\n', encoding="utf-8")
    code, err = run_cli(["extract", "-i", str(source), "-o", str(output)], monkeypatch, capsys)
    assert code == 2 and "notes.jsonl:1 is not an extraction row" in err
    assert output.read_text(encoding="utf-8") == '{"note": "mine"}\n'


def test_extract_puts_failures_in_the_errors_file_exits_non_zero_and_retries_them(
    port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    original = write_input(source)
    args = ["extract", "-c", SPEC, "-i", str(source), "-o", str(output), "--batch-size", "1"]
    fake = FakeOpenAI(chat_content=gold_answer, port=port)
    fake.script(CHAT, Reply.error(500))  # the first sentence fails, the others answer
    with fake:
        code, err = run_cli(args, monkeypatch, capsys)
        assert code == 1 and f"1 of 3 sentences failed; see {errors_path(output)}" in err
        assert [r["id"] for r in read_rows(output)] == ["in-2", "again"]  # no id: not dropped
        (failure,) = read_rows(errors_path(output))
        assert failure["id"] == "obama" and "500" in failure["error"]
        assert len(fake.requests_to(CHAT)) == 3

        code, err = run_cli(args, monkeypatch, capsys)
        assert code == 0 and "resumed: 2 sentences were already in" in err
        assert len(fake.requests_to(CHAT)) == 4  # only the failed sentence was asked again
    rows = read_rows(output)
    assert [r["id"] for r in rows] == ["in-2", "again", "obama"]
    assert all(r["error"] is None and r["triples"] for r in rows)
    assert not errors_path(output).exists()
    assert source.read_bytes() == original


def test_extract_of_one_sentence_exits_1_when_the_model_call_fails(
    port: int, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code, err = run_cli(["extract", EXAMPLES[0].sentence, "-c", SPEC], monkeypatch, capsys)
    assert code == 1 and "the model call failed: " in err and "Connection error" in err
    assert "Traceback" not in err


def test_extract_resumes_after_a_cut_last_line_without_rewriting_the_rows_before_it(
    port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source)
    args = ["extract", "-c", SPEC, "-i", str(source), "-o", str(output)]
    with FakeOpenAI(chat_content=gold_answer, port=port):
        assert run_cli(args, monkeypatch, capsys)[0] == 0
        first, *_ = output.read_text(encoding="utf-8").splitlines(keepends=True)
        output.write_text(first + first[:25], encoding="utf-8")  # killed while writing row 2
        code, err = run_cli(args, monkeypatch, capsys)
    assert code == 0 and "dropped a cut last line" in err
    text = output.read_text(encoding="utf-8")
    assert text.startswith(first) and sorted(r["id"] for r in read_rows(output)) == sorted(
        ["obama", "in-2", "again"]
    )
