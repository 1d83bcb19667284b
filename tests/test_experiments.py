"""run_experiment and curate with fake chat models: what is stored, resume, failures, no network,
and a real process killed mid-run and rerun."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from triplesmith.chains.registry import get_chain, register_chat_model
from triplesmith.data.fingerprint import dataset_fingerprint
from triplesmith.data.registry import load_dataset
from triplesmith.errors import ConfigError, DatasetError, EvaluatorError, ExperimentError
from triplesmith.evaluators.base import Evaluator, Feedback, evaluate_all, summarise_all
from triplesmith.evaluators.registry import get_evaluators
from triplesmith.experiments.curate import curate
from triplesmith.experiments.runner import run_experiment
from triplesmith.experiments.store import ExperimentStore
from triplesmith.schema import Example

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = load_dataset("sample:test")[:6]
WRONG = '[{"s": "Homer Simpson", "relation": "lives in", "object": "Springfield"}]'


def gold_answer(example: Example) -> str:
    return json.dumps([t.model_dump() for t in example.triples])


class OracleChatModel(BaseChatModel):
    """A fake chat model that answers from a table keyed by the sentence in its prompt, with
    token usage; sentences in `fail_on` raise, as a provider outage would."""

    answers: dict[str, str]
    default: str = "I cannot help with that."
    fail_on: set[str] = Field(default_factory=set)
    calls: list[str | None] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "oracle"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        asked = [str(m.content) for m in messages if m.type == "human"]
        sentence = next((s for text in reversed(asked) for s in self.answers if s in text), None)
        self.calls.append(sentence)
        if sentence in self.fail_on:
            raise RuntimeError("model unavailable")
        answer = self.answers.get(sentence, self.default) if sentence else self.default
        words_in = sum(len(text.split()) for text in asked)
        usage = {"input_tokens": words_in, "output_tokens": len(answer.split())}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        message = AIMessage(content=answer, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


def half_right(name: str, examples: list[Example] = EXAMPLES, **fields: Any) -> OracleChatModel:
    """Registered as `name`: the gold for even positions, an invented triple for odd ones."""
    model = OracleChatModel(
        answers={
            e.sentence: gold_answer(e) if i % 2 == 0 else WRONG for i, e in enumerate(examples)
        },
        **fields,
    )
    register_chat_model(name, model)
    return model


def test_every_example_is_stored_with_exactly_the_evaluators_feedback(tmp_path: Path) -> None:
    half_right("oracle-half")
    store = tmp_path / "s.sqlite"
    result = run_experiment(
        "zero-shot:oracle-half", EXAMPLES, "triple-f1,format,carb", store=store, max_concurrency=3
    )
    assert (result.ran, result.skipped, result.complete) == (6, 0, True)
    assert [r.example_id for r in result.rows] == [e.id for e in EXAMPLES]
    assert result.scores("triple_f1") == [1.0, 0.0] * 3
    evaluators = get_evaluators("triple-f1,format,carb")
    for row in result.rows:
        assert row.feedback == evaluate_all(evaluators, row.outputs, row.example)
    outputs = [r.outputs for r in result.rows]
    assert result.summary == summarise_all(evaluators, outputs, EXAMPLES)
    # The graph ran: triage tags, attempts and tokens travel with each example.
    assert result.rows[0].tags == [] and "hallucination" in result.rows[1].tags
    assert result.rows[1].outputs["attempts"] and result.rows[0].tokens_in > 0
    meta = result.record.metadata
    assert meta["chain"] == "zero-shot:oracle-half" and meta["model"] == "oracle-half"
    assert meta["dataset_hash"] == dataset_fingerprint(EXAMPLES) and meta["via_graph"] is True
    assert meta["prompt_id"] and "evaluators" not in meta  # scoring never keys the answers
    assert "git_commit" in meta and "adapter_hash" in meta
    with ExperimentStore(store) as reopened:
        stored = sorted(reopened.rows(result.key), key=lambda r: r.example_id)
        assert stored == sorted(result.rows, key=lambda r: r.example_id)
        assert reopened.summary(result.key) == result.summary


def test_a_rerun_with_the_same_call_runs_only_the_unfinished_examples(tmp_path: Path) -> None:
    model = half_right("oracle-resume")
    store = tmp_path / "s.sqlite"
    first = run_experiment("zero-shot:oracle-resume", EXAMPLES, "triple-f1", store=store, limit=2)
    assert (first.ran, first.skipped, first.total) == (2, 0, 2)
    assert sorted(model.calls) == sorted(e.sentence for e in EXAMPLES[:2])
    second = run_experiment("zero-shot:oracle-resume", EXAMPLES, "triple-f1", store=store)
    assert second.key == first.key
    assert (second.ran, second.skipped, second.total) == (4, 2, 6)
    assert sorted(model.calls) == sorted(e.sentence for e in EXAMPLES)  # nobody asked twice
    evaluators = get_evaluators("triple-f1")
    assert second.summary == summarise_all(evaluators, [r.outputs for r in second.rows], EXAMPLES)
    third = run_experiment("zero-shot:oracle-resume", EXAMPLES, "triple-f1", store=store)
    assert (third.ran, third.skipped) == (0, 6) and len(model.calls) == 6


class ExplodesOnSecond(Evaluator):
    name = "explodes"
    keys = ("explodes",)

    def evaluate(self, outputs: Any, example: Example) -> list[Feedback]:
        if example.id == EXAMPLES[1].id:
            raise ValueError("cannot score this one")
        return [Feedback(key="explodes", score=1.0)]


def test_an_evaluator_error_is_recorded_on_its_example_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    half_right("oracle-eval-error")
    result = run_experiment(
        "zero-shot:oracle-eval-error",
        EXAMPLES,
        ["triple-f1", ExplodesOnSecond()],
        store=tmp_path / "s.sqlite",
    )
    assert result.complete
    assert result.scores("explodes") == [1.0, None, 1.0, 1.0, 1.0, 1.0]
    (failed,) = [f for f in result.rows[1].feedback if f.key == "explodes"]
    assert "cannot score this one" in failed.error
    assert result.scores("triple_f1") == [1.0, 0.0] * 3


def test_a_model_failure_is_stored_as_failed_unscored_and_retried(tmp_path: Path) -> None:
    model = half_right("oracle-outage", fail_on={EXAMPLES[2].sentence})
    store = tmp_path / "s.sqlite"
    result = run_experiment("zero-shot:oracle-outage", EXAMPLES, "triple-f1,format", store=store)
    assert (result.failed, result.complete) == (1, False)
    assert "model unavailable" in result.rows[2].error and result.rows[2].feedback == []
    assert result.rows[2].score("format") is None and result.rows[2].score("triple_f1") is None
    assert [r.error for i, r in enumerate(result.rows) if i != 2] == [None] * 5
    model.fail_on.clear()  # the outage is over
    rerun = run_experiment("zero-shot:oracle-outage", EXAMPLES, "triple-f1,format", store=store)
    assert (rerun.ran, rerun.skipped, rerun.failed, rerun.complete) == (1, 5, 0, True)
    assert model.calls.count(EXAMPLES[2].sentence) == 2 and len(model.calls) == 7
    assert rerun.rows[2].error is None and rerun.rows[2].score("triple_f1") == 1.0


def test_a_chain_object_is_called_directly_without_triage(tmp_path: Path) -> None:
    chain = get_chain("zero-shot", model=FakeListChatModel(responses=[WRONG]))
    result = run_experiment(chain, EXAMPLES[:2], "triple-f1,format", store=tmp_path / "s.sqlite")
    assert result.record.metadata["via_graph"] is False
    assert [r.tags for r in result.rows] == [None, None]
    assert all("attempts" not in r.outputs for r in result.rows)
    assert result.scores("format") == [1.0, 1.0]


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    half_right("oracle-bad")
    with pytest.raises(EvaluatorError, match="unknown evaluator 'f1'"):
        run_experiment("zero-shot:oracle-bad", EXAMPLES, "f1", store=store)
    with pytest.raises(DatasetError, match="unknown dataset"):
        run_experiment("zero-shot:oracle-bad", "no-such-dataset", store=store)
    with pytest.raises(ConfigError, match="limit: Input should be greater than or equal to 1"):
        run_experiment("zero-shot:oracle-bad", EXAMPLES, store=store, limit=0)
    with pytest.raises(ExperimentError, match="appears twice"):
        run_experiment("zero-shot:oracle-bad", EXAMPLES[:1] * 2, store=store)


def test_curate_selects_low_scores_or_tags_and_writes_a_dataset(tmp_path: Path) -> None:
    half_right("oracle-curate")
    store = tmp_path / "s.sqlite"
    result = run_experiment("zero-shot:oracle-curate", EXAMPLES, "triple-f1", store=store)
    out = tmp_path / "curated.jsonl"
    low = curate(result.key, store=store, metric="triple_f1", below=0.5, out=out, upload=False)
    assert [e.id for e in low] == [e.id for e in EXAMPLES[1::2]]
    assert load_dataset(out) == low
    note = low[0].meta["curated"]
    assert note["triple_f1"] == 0.0 and note["raw"] == WRONG and "hallucination" in note["tags"]
    assert note["prediction"] == json.loads(WRONG) and note["chain"] == "zero-shot:oracle-curate"
    assert low[0].triples == EXAMPLES[1].triples  # the gold, for correction
    tagged = curate(result, tags=["hallucination"], upload=False)
    assert [e.id for e in tagged] == [e.id for e in low]
    with pytest.raises(ExperimentError, match="metric threshold"):
        curate(result, upload=False)
    with pytest.raises(ExperimentError, match="no 'judge' scores"):
        curate(result, metric="judge", below=0.5, upload=False)
    with pytest.raises(ExperimentError, match="no experiment 'nope'"):
        curate("nope", store=store, tags=["empty"], upload=False)


# --- whole processes -------------------------------------------------------------------------

SLOW_RUN = """
import json, sys
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from triplesmith.chains.registry import register_chat_model
from triplesmith.experiments.runner import run_experiment

store, log = sys.argv[1], sys.argv[2]


class LoggedSlowModel(FakeListChatModel):
    def _call(self, messages, stop=None, run_manager=None, **kwargs):
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(messages[-1].content.splitlines()[-1] + "\\n")
        return super()._call(messages, stop, run_manager, **kwargs)


answer = '[{"s": "It", "relation": "is", "object": "a sentence"}]'
register_chat_model("slow", LoggedSlowModel(responses=[answer], sleep=0.3))
result = run_experiment(
    "zero-shot:slow", "sample:test", "triple-f1,format", store=store, max_concurrency=2
)
print(json.dumps({"ran": result.ran, "skipped": result.skipped, "total": result.total}))
"""


def _stored_ids(store: Path) -> list[str]:
    if not store.exists():
        return []
    with sqlite3.connect(store, timeout=10) as db:
        try:
            return [row[0] for row in db.execute("SELECT example_id FROM answers")]
        except sqlite3.OperationalError:  # the tables are not created yet
            return []


def test_a_run_killed_mid_way_finishes_on_rerun_with_every_example_once(tmp_path: Path) -> None:
    script, store, log = tmp_path / "run.py", tmp_path / "s.sqlite", tmp_path / "calls.log"
    script.write_text(SLOW_RUN, encoding="utf-8")
    env = {**os.environ, "TQDM_DISABLE": "1"}
    env.pop("LANGSMITH_API_KEY", None)
    command = [sys.executable, str(script), str(store), str(log)]
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while len(_stored_ids(store)) < 5 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    at_kill = set(_stored_ids(store))
    assert 5 <= len(at_kill) < 20, "the run should be killed part-way"
    asked_before = log.read_text(encoding="utf-8").splitlines()

    rerun = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    figures = json.loads(rerun.stdout.strip().splitlines()[-1])
    ids = _stored_ids(store)
    assert len(ids) == len(set(ids)) == 20  # every example, exactly once
    assert figures["skipped"] == len(at_kill) and figures["ran"] == 20 - len(at_kill)
    asked_after = log.read_text(encoding="utf-8").splitlines()[len(asked_before) :]
    sentences = {e.id: e.sentence for e in load_dataset("sample:test")}
    assert not {sentences[i] for i in at_kill} & set(asked_after)  # finished ones not re-asked
    assert len(asked_after) == 20 - len(at_kill)


NETWORK_PROBE = """
import json, sys
events = []
def audit(name, args):
    if name in ("socket.connect", "socket.getaddrinfo"):
        events.append([name, repr(args[1] if name == "socket.connect" else args[:2])])
sys.addaudithook(audit)

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from triplesmith.chains.registry import register_chat_model
from triplesmith.experiments.runner import run_experiment

answer = '[{"s": "It", "relation": "is", "object": "a sentence"}]'
register_chat_model("quiet", FakeListChatModel(responses=[answer]))
result = run_experiment(
    "few-shot:quiet", "sample:test", "triple-f1,format,carb", store=sys.argv[1], limit=4,
    max_concurrency=2,
)
during = list(events)
import socket
socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5).close()  # the probe works
print(json.dumps({"stored": len(result.rows), "during": during, "after": events[len(during):]}))
"""


def test_without_a_key_nothing_touches_the_network_even_with_tracing_on(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    script = tmp_path / "probe.py"
    script.write_text(NETWORK_PROBE, encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "OPENAI_API_KEY")
    }
    env.update(
        {
            "LANGSMITH_TRACING": "true",
            "LANGCHAIN_TRACING_V2": "true",
            "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{port}",
            "TQDM_DISABLE": "1",
        }
    )
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "s.sqlite"), str(port)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        time.sleep(0.3)
        stop.set()
        thread.join()
        listener.close()
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["stored"] == 4
    assert report["during"] == []  # no connection and no name lookup during the run
    assert report["after"], "the audit hook must see the probe's own connection"
    assert len(accepted) == 1  # only the probe reached the listener


def test_a_few_shot_pool_holding_an_evaluated_example_is_refused_before_any_call(
    tmp_path: Path,
) -> None:
    from triplesmith.data.jsonl import write_jsonl
    from triplesmith.errors import ChainError

    model = half_right("oracle-leak")
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, [*load_dataset("sample:train")[:5], EXAMPLES[2]])  # one test example
    with pytest.raises(ChainError, match="overlaps the test split"):
        run_experiment(
            f"few-shot:oracle-leak+k=3+shots={pool}", EXAMPLES, store=tmp_path / "s.sqlite"
        )
    assert model.calls == []
