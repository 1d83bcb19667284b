"""The LangSmith upload path at the HTTP boundary: with LANGSMITH_API_KEY set, run_experiment
pushes the dataset (one dataset per name, its content versions tagged by fingerprint), creates
the experiment with its metadata, traces the runs and posts the feedback (row evaluators in the
`(inputs, outputs, reference_outputs)` form, corpus figures from summary evaluators), all to a
loopback fake of the API; the key never reaches the store."""

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langsmith_fake_server import FakeLangSmith
from test_experiments import gold_answer
from test_score_once import NARY

from triplesmith.chains.registry import register_chat_model
from triplesmith.data.fingerprint import dataset_fingerprint
from triplesmith.data.langsmith_datasets import read_langsmith_dataset
from triplesmith.data.registry import load_dataset
from triplesmith.evaluators.base import safe_evaluate
from triplesmith.evaluators.exact import CarbEvaluator
from triplesmith.experiments.curate import curate
from triplesmith.experiments.runner import run_experiment

API_KEY = "lsv2_pt_test-key-0123456789"
ANSWER = '[{"s": "The Rhône", "relation": "rises in", "object": "the Swiss Alps"}]'
EXAMPLES = load_dataset("sample:test")[:4]
EVALUATORS = "triple-f1,format,carb"


@pytest.fixture
def fake(monkeypatch):
    server = FakeLangSmith()
    with server as api_url:
        monkeypatch.setenv("LANGSMITH_ENDPOINT", api_url)
        monkeypatch.setenv("LANGSMITH_API_KEY", API_KEY)
        monkeypatch.delenv("LANGCHAIN_API_KEY", raising=False)
        monkeypatch.delenv("LANGCHAIN_ENDPOINT", raising=False)
        yield server


def _run(store: Path, limit: int | None = None, examples=EXAMPLES):
    register_chat_model("ls-fake", FakeListChatModel(responses=[ANSWER]))
    return run_experiment(
        "few-shot:ls-fake", examples, EVALUATORS, store=store, limit=limit, max_concurrency=2
    )


def _pushes(fake: FakeLangSmith) -> list:
    """The requests that change a dataset's examples."""
    routes = ("POST /examples/bulk", "PATCH /examples/bulk", "DELETE /examples")
    return [r for route in routes for r in fake.requests_to(route)]


def made_in_langsmith(name: str, examples: list, *, with_metadata: bool) -> Any:
    """A dataset created through the LangSmith client, not by triplesmith: gold triples in the
    reference outputs, and (as earlier versions pushed it) our metadata when asked."""
    from langsmith import Client

    client = Client()
    dataset = client.create_dataset(dataset_name=name)
    client.create_examples(
        dataset_id=dataset.id,
        examples=[
            {
                "inputs": {"sentence": e.sentence},
                "reference_outputs": {"triples": [t.model_dump() for t in e.triples]},
                **(
                    {"metadata": {"triplesmith_id": e.id, "source": e.source, **e.meta}}
                    if with_metadata
                    else {}
                ),
            }
            for e in examples
        ],
    )
    return dataset


def test_an_experiment_is_uploaded_with_dataset_metadata_runs_and_feedback(
    fake: FakeLangSmith, tmp_path: Path
) -> None:
    store = tmp_path / "s.sqlite"
    result = _run(store)
    assert result.complete and result.langsmith_url

    # Every request carried the key; the key never reached the store.
    assert {r.headers.get("x-api-key") for r in fake.requests} == {API_KEY}
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("s.sqlite"))
    assert API_KEY.encode() not in stored and result.record.langsmith_id.encode() in stored

    # The dataset: created once, named without a hash, its examples in the shape
    # read_langsmith_dataset reads, its version tagged with the content's fingerprint.
    (created,) = fake.requests_to("POST /datasets")
    fingerprint = dataset_fingerprint(EXAMPLES)
    assert created.json["name"] == "triplesmith-examples"
    (bulk,) = fake.requests_to("POST /examples/bulk")
    dataset_id = next(iter(fake.datasets))
    assert [e["metadata"]["triplesmith_id"] for e in bulk.json] == [e.id for e in EXAMPLES]
    first = bulk.json[0]
    assert first["dataset_id"] == dataset_id
    assert first["inputs"] == {"sentence": EXAMPLES[0].sentence}
    assert first["outputs"] == {"triples": [t.model_dump() for t in EXAMPLES[0].triples]}
    (tag,) = fake.requests_to("PUT /datasets/{id}/tags")
    assert tag.json["tag"] == fingerprint
    assert fake.requests_to("GET /examples")[-1].query["as_of"] == [fingerprint]

    # The experiment: one session on that dataset, with the experiment's metadata.
    (session,) = fake.requests_to("POST /sessions")
    assert session.json["reference_dataset_id"] == dataset_id
    assert session.json["name"].startswith("few-shot-ls-fake-")
    metadata = session.json["extra"]["metadata"]
    for key in ("chain", "model", "adapter_hash", "prompt_id", "dataset_hash", "git_commit"):
        assert key in metadata, key
    assert metadata["chain"] == "few-shot:ls-fake" and metadata["dataset_hash"] == fingerprint
    assert metadata["experiment_key"] == result.key
    assert not any("key" in k.lower() and k != "experiment_key" for k in metadata)
    experiment_id = session.json["id"]
    assert result.record.langsmith_id == experiment_id

    # The runs: one root run per example in the experiment, tied to its example, with the
    # graph's own steps traced beneath it.
    traced = [r for r in fake.runs.values() if r.get("session_name") == session.json["name"]]
    roots = [r for r in traced if not r.get("parent_run_id")]
    assert sorted(r["reference_example_id"] for r in roots) == sorted(fake.examples)
    assert all(r["outputs"]["raw"] == ANSWER and "tags" in r["outputs"] for r in roots)
    steps = {r["name"] for r in traced if r.get("parent_run_id")}
    assert {"extract", "parse", "triage", "score"} <= steps

    # Row feedback: every evaluator key for every run; corpus feedback on the experiment.
    feedback = fake.feedback
    per_run = [f for f in feedback if f.get("run_id")]
    run_ids = {r["id"] for r in roots}
    assert {f["run_id"] for f in per_run} == run_ids
    keys = {f["key"] for f in per_run}
    assert {"triple_f1", "format", "carb_example_f1", "tag:hallucination"} <= keys
    row_f1 = {f["run_id"]: f["score"] for f in per_run if f["key"] == "triple_f1"}
    stored_f1 = {r.example_id: r.score("triple_f1") for r in result.rows}
    ids = {i: e["metadata"]["triplesmith_id"] for i, e in fake.examples.items()}
    uploaded_f1 = {ids[r["reference_example_id"]]: row_f1[r["id"]] for r in roots}
    assert uploaded_f1 == pytest.approx(stored_f1, abs=5e-5)  # the SDK rounds to 4 places
    corpus_feedback = [f for f in feedback if not f.get("run_id")]
    corpus = {f["key"]: f for f in corpus_feedback}
    assert len(corpus_feedback) == len(corpus) == len(result.summary)  # each posted once
    assert set(corpus) == {f.key for f in result.summary}
    assert all(f["session_id"] == experiment_id for f in corpus.values())
    auc = next(f.score for f in result.summary if f.key == "carb_auc")
    assert corpus["carb_auc"]["score"] == pytest.approx(auc, abs=5e-5)


def test_a_resumed_run_extends_the_same_langsmith_experiment(
    fake: FakeLangSmith, tmp_path: Path
) -> None:
    store = tmp_path / "s.sqlite"
    first = _run(store, limit=2)
    second = _run(store)
    assert (second.skipped, second.ran) == (2, 2)
    assert len(fake.requests_to("POST /datasets")) == 1
    assert len(fake.requests_to("POST /sessions")) == 1  # no second experiment
    assert second.record.langsmith_id == first.record.langsmith_id
    pushed = [
        e["metadata"]["triplesmith_id"]
        for r in fake.requests_to("POST /examples/bulk")
        for e in r.json
    ]
    assert pushed == [e.id for e in EXAMPLES]  # the dataset's version, pushed once
    (session,) = fake.sessions.values()
    roots = [r for r in fake.runs.values() if r.get("reference_example_id")]
    assert len(roots) == 4 and {r["session_name"] for r in roots} == {session["name"]}


def test_curated_failures_go_to_a_langsmith_dataset_with_a_key(
    fake: FakeLangSmith, tmp_path: Path
) -> None:
    result = _run(tmp_path / "s.sqlite")
    curated = curate(result, metric="triple_f1", below=1.0, out=tmp_path / "c.jsonl")
    assert curated
    created = [r.json["name"] for r in fake.requests_to("POST /datasets")]
    assert created[-1] == f"{result.key}-curated"
    pushed = fake.requests_to("POST /examples/bulk")[-1].json
    assert [e["metadata"]["triplesmith_id"] for e in pushed] == [e.id for e in curated]
    assert pushed[0]["outputs"]["curated"]["chain"] == "few-shot:ls-fake"  # Example.meta


def test_a_dataset_made_outside_triplesmith_is_never_pushed_twice(
    fake: FakeLangSmith, tmp_path: Path
) -> None:
    # Someone's own dataset: LangSmith ids only, no triplesmith metadata.
    dataset = made_in_langsmith("their-triples", EXAMPLES, with_metadata=False)
    pulled = load_dataset("langsmith:their-triples")
    assert [e.id for e in pulled] == list(fake.examples)  # LangSmith's ids
    register_chat_model("ls-pulled", FakeListChatModel(responses=[ANSWER]))
    for _ in range(2):  # a run, then a rerun: nothing pushed either time
        result = run_experiment(
            "few-shot:ls-pulled", "langsmith:their-triples", EVALUATORS, store=tmp_path / "s.db"
        )
        assert result.complete and len(result.rows) == len(EXAMPLES)
    assert fake.datasets[str(dataset.id)]["example_count"] == len(EXAMPLES)
    assert len(fake.requests_to("POST /examples/bulk")) == 1  # only the owner's own push
    (session,) = fake.requests_to("POST /sessions")
    assert session.json["reference_dataset_id"] == str(dataset.id)

    # A version or tag and a split are passed on to LangSmith.
    from langsmith import Client

    client = Client()
    version = client.read_dataset_version(dataset_id=dataset.id, tag="latest")
    client.update_dataset_tag(dataset_id=dataset.id, as_of=version.as_of, tag="prod")
    read_langsmith_dataset("their-triples@prod:test", client)
    query = fake.requests_to("GET /examples")[-1].query
    assert query["as_of"] == ["prod"] and query["splits"] == ["test"]


def test_changed_content_is_a_new_tagged_version_of_the_one_dataset(
    fake: FakeLangSmith, tmp_path: Path
) -> None:
    first = _run(tmp_path / "s.sqlite")
    # The content changes: one example dropped, one added, one whose gold changed.
    changed = EXAMPLES[0].model_copy(update={"triples": EXAMPLES[0].triples[:1] * 2})
    content = [changed, *EXAMPLES[2:], load_dataset("sample:test")[4]]
    second = _run(tmp_path / "s.sqlite", examples=content)
    assert first.complete and second.complete

    (dataset_id,) = fake.datasets  # one dataset, two tagged versions
    old, new = dataset_fingerprint(EXAMPLES), dataset_fingerprint(content)
    assert set(fake.tags[dataset_id]) == {old, new}
    assert len(fake.version_examples(dataset_id, new)) == len(content) == 4
    assert fake.datasets[dataset_id]["example_count"] == 4
    # Only the difference was pushed: one created, one updated, one deleted.
    created = fake.requests_to("POST /examples/bulk")[1:]
    updated = fake.requests_to("PATCH /examples/bulk")
    deleted = fake.requests_to("DELETE /examples")
    assert [e["metadata"]["triplesmith_id"] for r in created for e in r.json] == [content[-1].id]
    assert [len(r.json) for r in updated] == [1] and [
        len(r.query["example_ids"]) for r in deleted
    ] == [1]
    # The second experiment ran over the new version; the old one still reads as it was.
    assert fake.requests_to("GET /examples")[-1].query["as_of"] == [new]
    sessions = fake.requests_to("POST /sessions")
    assert {s.json["reference_dataset_id"] for s in sessions} == {dataset_id}
    assert [e.id for e in read_langsmith_dataset(f"triplesmith-examples@{old}")] == [
        e.id for e in EXAMPLES
    ]
    pulled = read_langsmith_dataset(f"triplesmith-examples@{new}")
    assert sorted(e.id for e in pulled) == sorted(e.id for e in content)
    assert next(e for e in pulled if e.id == changed.id).triples == changed.triples


def test_an_unchanged_rerun_pushes_nothing(fake: FakeLangSmith, tmp_path: Path) -> None:
    _run(tmp_path / "a.sqlite")
    before = len(_pushes(fake)), len(fake.requests_to("PUT /datasets/{id}/tags"))
    again = _run(tmp_path / "b.sqlite")  # a fresh store: the whole experiment runs again
    assert again.ran == len(EXAMPLES)
    assert (len(_pushes(fake)), len(fake.requests_to("PUT /datasets/{id}/tags"))) == before
    assert len(fake.datasets) == 1 and len(fake.requests_to("POST /sessions")) == 2


def test_corpus_figures_come_from_summary_evaluators_and_rows_see_nary_gold(
    fake: FakeLangSmith, tmp_path: Path
) -> None:
    # An n-ary CaRB example: its gold tuples travel in the example's reference outputs, so
    # the (inputs, outputs, reference_outputs) evaluators score CaRB on four arguments.
    data = [*EXAMPLES[:2], NARY]
    register_chat_model("ls-nary", FakeListChatModel(responses=[gold_answer(NARY)]))
    result = run_experiment("few-shot:ls-nary", data, "carb", store=tmp_path / "s.sqlite")
    assert result.complete
    pushed = {
        e["metadata"]["triplesmith_id"]: e for e in fake.requests_to("POST /examples/bulk")[0].json
    }
    assert pushed["nary"]["outputs"]["carb_tuples"] == NARY.meta["carb_tuples"]

    # Row evaluators ran in the documented form (their traced inputs say so) ...
    evaluator_runs = [r for r in fake.runs.values() if r.get("name") == "carb"]
    assert evaluator_runs and all(
        set(r["inputs"]) == {"inputs", "outputs", "reference_outputs"} for r in evaluator_runs
    )
    # ... and gave the n-ary example its CaRB scores over the tuples (two arguments missing).
    expected = {
        f.key: f.score for f in safe_evaluate(CarbEvaluator(), {"triples": NARY.triples}, NARY)
    }
    assert expected["carb_example_recall"] < 1.0
    (nary_run,) = [
        r for r in fake.runs.values()
        if r.get("reference_example_id") and fake.examples[r["reference_example_id"]]["metadata"]["triplesmith_id"] == "nary"
    ]  # fmt: skip
    row = {f["key"]: f["score"] for f in fake.feedback if f.get("run_id") == nary_run["id"]}
    for key in ("carb_example_precision", "carb_example_recall", "carb_example_f1"):
        assert row[key] == pytest.approx(expected[key], abs=5e-5), key
    assert result.rows[-1].score("carb_example_recall") == pytest.approx(
        expected["carb_example_recall"]
    )

    # Corpus figures: posted by the experiment's summary evaluator (a traced evaluator run),
    # once per key, on the experiment, equal to the stored ones.
    assert [r["name"] for r in fake.runs.values() if r.get("name", "").endswith("_summary")] == [
        "carb_summary"
    ]
    corpus = [f for f in fake.feedback if not f.get("run_id")]
    assert sorted(f["key"] for f in corpus) == sorted(f.key for f in result.summary)
    assert {f["session_id"] for f in corpus} == {result.record.langsmith_id}
    stored = {f.key: f.score for f in result.summary}
    for feedback in corpus:
        assert feedback["score"] == pytest.approx(stored[feedback["key"]], abs=5e-5)


def test_a_dataset_pushed_by_an_earlier_version_still_gives_nary_carb(
    fake: FakeLangSmith, tmp_path: Path
) -> None:
    # Earlier versions kept benchmark metadata in the example's metadata, not its outputs.
    made_in_langsmith("triplesmith-old-0123abcd", [*EXAMPLES[:2], NARY], with_metadata=True)
    register_chat_model("ls-old", FakeListChatModel(responses=[gold_answer(NARY)]))
    result = run_experiment(
        "few-shot:ls-old", "langsmith:triplesmith-old-0123abcd", "carb", store=tmp_path / "s.db"
    )
    assert result.complete and len(fake.requests_to("POST /examples/bulk")) == 1
    expected = safe_evaluate(CarbEvaluator(), {"triples": NARY.triples}, NARY)
    nary = next(r for r in result.rows if r.example_id == "nary")
    assert [(f.key, f.score) for f in nary.feedback] == [(f.key, f.score) for f in expected]
    # The evaluators took the example, where this data keeps its metadata.
    evaluator_runs = [r for r in fake.runs.values() if r.get("name") == "carb"]
    assert evaluator_runs and all("example" in r["inputs"] for r in evaluator_runs)
