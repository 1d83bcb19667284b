import datetime
import http.server
import inspect
import json
import threading
import uuid
from collections.abc import Iterator

import pytest
from langsmith import Client, evaluate, schemas
from langsmith.evaluation import EvaluationResult, run_evaluator
from langsmith.run_helpers import tracing_context

from triplesmith.evaluators.exact import BenchieEvaluator, CarbEvaluator
from triplesmith.evaluators.format_validity import FormatEvaluator
from triplesmith.evaluators.langsmith_adapter import (
    example_from_langsmith,
    langsmith_evaluators,
    metadata_evaluator,
    outputs_from_run,
    reference_evaluator,
    summary_evaluator,
)
from triplesmith.evaluators.triple_f1 import TripleF1Evaluator
from triplesmith.schema import Example, Triple

BORN = {"s": "Obama", "relation": "was born in", "object": "Hawaii"}
CLUSTERS = [[["Obama", "was born in", "Hawaii"]]]
DATASET_ID = uuid.uuid4()


def ls_example(
    triplesmith_id: str = "carb-7", sentence: str = "Obama was born in Hawaii.", **meta
) -> schemas.Example:
    """A LangSmith example as `push_dataset` writes it: benchmark metadata in its outputs."""
    return schemas.Example(
        id=uuid.uuid4(),
        dataset_id=DATASET_ID,
        inputs={"sentence": sentence},
        outputs={"triples": [BORN], **meta},
        metadata={"triplesmith_id": triplesmith_id, "source": "carb"},
    )


def old_example(triplesmith_id: str = "carb-7", **meta) -> schemas.Example:
    """A LangSmith example as earlier versions pushed it: benchmark metadata in its metadata."""
    return schemas.Example(
        id=uuid.uuid4(),
        dataset_id=DATASET_ID,
        inputs={"sentence": "Obama was born in Hawaii."},
        outputs={"triples": [BORN]},
        metadata={"triplesmith_id": triplesmith_id, "source": "carb", **meta},
    )


def ls_run(outputs: dict | None, error: str | None = None) -> schemas.Run:
    return schemas.Run(
        id=uuid.uuid4(),
        name="extract",
        start_time=datetime.datetime.now(datetime.UTC),
        run_type="chain",
        inputs={"sentence": "Obama was born in Hawaii."},
        outputs=outputs,
        error=error,
        trace_id=uuid.uuid4(),
    )


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    with tracing_context(enabled=False):
        yield


def as_results(response: dict) -> dict[str, EvaluationResult]:
    """Coerce like LangSmith does; fails if a result has the wrong shape."""
    return {r["key"]: EvaluationResult(**r) for r in response["results"]}


def test_a_langsmith_example_converts_back_to_ours():
    ours = Example(
        id="carb-7",
        sentence="Obama was born in Hawaii.",
        triples=[Triple.model_validate(BORN)],
        source="carb",
        meta={"benchie_clusters": CLUSTERS},
    )
    assert example_from_langsmith(ls_example(benchie_clusters=CLUSTERS)) == ours
    assert example_from_langsmith(old_example(benchie_clusters=CLUSTERS)) == ours


def test_a_failed_run_reads_as_an_empty_failed_extraction():
    assert outputs_from_run(ls_run(None, error="ValueError('boom')")) == {
        "triples": [],
        "error": "ValueError('boom')",
    }


def test_reference_evaluator_goes_through_langsmith_coercion():
    evaluator = run_evaluator(reference_evaluator(TripleF1Evaluator(threshold=85)))
    response = evaluator.evaluate_run(ls_run({"triples": [BORN]}), ls_example())
    scores = {r.key: r.score for r in response["results"]}
    assert scores == {"triple_precision": 1.0, "triple_recall": 1.0, "triple_f1": 1.0}
    assert response["results"][0].comment == "1 matched of 1 predicted, 1 gold"


def test_a_failed_run_gets_no_results_through_langsmith():
    # LangSmith hands the documented form `run.outputs or {}`: no outputs, the target raised.
    evaluator = run_evaluator(reference_evaluator(TripleF1Evaluator()))
    response = evaluator.evaluate_run(ls_run(None, error="ConnectionError"), ls_example())
    assert response["results"] == []


def test_the_metadata_form_reads_benchmark_metadata_kept_in_example_metadata():
    run = ls_run({"triples": [BORN]})
    old = run_evaluator(metadata_evaluator(BenchieEvaluator()))
    assert old.evaluate_run(run, old_example())["results"] == []
    results = {
        r.key: r.score
        for r in old.evaluate_run(run, old_example(benchie_clusters=CLUSTERS))["results"]
    }
    assert results["benchie_example_f1"] == 1.0
    # The documented form reads the same data from the reference outputs.
    new = run_evaluator(reference_evaluator(BenchieEvaluator()))
    results = {
        r.key: r.score
        for r in new.evaluate_run(run, ls_example(benchie_clusters=CLUSTERS))["results"]
    }
    assert results["benchie_example_f1"] == 1.0


def test_an_evaluator_error_becomes_an_error_result_not_an_exception():
    row = reference_evaluator(TripleF1Evaluator())
    results = as_results(
        row(
            {"sentence": "Obama was born in Hawaii."},
            {"triples": "Obama born Hawaii"},
            {"triples": [BORN]},
        )
    )
    assert set(results) == {"triple_precision", "triple_recall", "triple_f1"}
    for result in results.values():
        assert result.score is None
        assert result.extra == {"error": True}
        assert "outputs.triples must be a list" in result.comment


def test_a_bad_example_becomes_an_error_result():
    broken = schemas.Example(
        id=uuid.uuid4(), dataset_id=DATASET_ID, inputs={"text": "no sentence key"}, outputs={}
    )
    evaluator = run_evaluator(reference_evaluator(FormatEvaluator()))
    (result,) = evaluator.evaluate_run(ls_run({"triples": []}), broken)["results"]
    assert result.key == "format" and result.extra == {"error": True}
    assert "inputs.sentence" in result.comment


def test_reference_evaluator_takes_the_openevals_signature():
    evaluator = run_evaluator(reference_evaluator(FormatEvaluator()))
    complete = {"triples": [BORN], "diagnostics": {"complete": True}, "tags": ["empty"]}
    response = evaluator.evaluate_run(ls_run(complete), ls_example())
    scores = {r.key: r.score for r in response["results"]}
    assert scores["format"] == 1.0 and scores["tag:empty"] == 1.0


def test_reference_evaluator_reads_benchmark_data_from_reference_outputs():
    evaluate_reference = reference_evaluator(BenchieEvaluator())
    results = as_results(
        evaluate_reference(
            inputs={"sentence": "Obama was born in Hawaii."},
            outputs={"triples": [BORN]},
            reference_outputs={"triples": [BORN], "benchie_clusters": CLUSTERS},
        )
    )
    assert results["benchie_example_precision"].score == 1.0


def test_summary_evaluator_gives_corpus_figures_over_the_runs_that_answered():
    # Both examples hold the same gold triple; the second sentence's run failed (LangSmith
    # hands it over as `{}`), so it is left out rather than counted as an empty answer.
    sentences = ["Obama was born in Hawaii.", "Obama, born in Hawaii, spoke."]
    results = as_results(
        summary_evaluator(CarbEvaluator())(
            inputs=[{"sentence": s} for s in sentences],
            outputs=[{"triples": [BORN]}, {}],
            reference_outputs=[{"triples": [BORN]}] * 2,
        )
    )
    assert set(results) == {"carb_auc", "carb_f1", "carb_precision", "carb_recall"}
    assert results["carb_recall"].score == 1.0 and "1 examples" in results["carb_recall"].comment


def test_summary_evaluator_covers_earlier_answers_and_waits_for_a_complete_corpus():
    earlier = [({"triples": []}, example_from_langsmith(ls_example("a")))]
    inputs, outputs = [{"sentence": "Obama, born in Hawaii, spoke."}], [{"triples": [BORN]}]
    reference = [{"triples": [BORN]}]
    summarise = summary_evaluator(CarbEvaluator(), earlier=earlier, complete_at=2)
    results = as_results(summarise(inputs, outputs, reference))
    assert results["carb_recall"].score == 0.5  # one of the two gold triples, over both runs
    partial = summary_evaluator(CarbEvaluator(), earlier=earlier, complete_at=3)
    assert partial(inputs, outputs, reference) == {"results": []}


def test_the_example_is_taken_only_for_data_that_keeps_metadata_there():
    rows, summaries = langsmith_evaluators([FormatEvaluator(), TripleF1Evaluator()], [ls_example()])
    assert [r.__name__ for r in rows] == ["format", "triple-f1"]
    assert [s.__name__ for s in summaries] == ["triple-f1_summary"]
    documented = ["inputs", "outputs", "reference_outputs"]
    assert list(inspect.signature(rows[0]).parameters) == documented
    assert list(inspect.signature(summaries[0]).parameters) == documented
    rows, summaries = langsmith_evaluators([TripleF1Evaluator()], [old_example(carb_tuples=[])])
    assert list(inspect.signature(rows[0]).parameters) == [*documented, "example"]
    assert list(inspect.signature(summaries[0]).parameters) == [*documented, "examples"]


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """A stand-in LangSmith API that records every request and answers `{}`."""

    requests: list[tuple[str, str]] = []

    def _answer(self) -> None:
        self.requests.append((self.command, self.path))
        body = json.dumps({}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.mark.filterwarnings("ignore:'upload_runs' parameter is in beta")
def test_langsmith_evaluate_runs_the_adapters_without_uploading():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    RecordingHandler.requests = []
    client = Client(api_url=f"http://127.0.0.1:{server.server_port}", api_key="test-key")
    rows, summaries = langsmith_evaluators([TripleF1Evaluator(threshold=85), CarbEvaluator()])
    try:
        results = evaluate(
            lambda inputs: {"triples": [BORN], "diagnostics": {"complete": True}},
            data=[ls_example("a"), ls_example("b", sentence="Obama, born in Hawaii, spoke.")],
            evaluators=rows,
            summary_evaluators=summaries,
            upload_results=False,
            client=client,
            max_concurrency=0,
        )
        rows_seen = list(results)
    finally:
        server.shutdown()
    for row in rows_seen:
        scores = {r.key: r.score for r in row["evaluation_results"]["results"]}
        assert scores["triple_f1"] == 1.0 and scores["carb_example_f1"] == 1.0
    summary = {r.key: r.score for r in results._summary_results["results"]}
    assert summary["triple_micro_f1"] == 1.0 and summary["carb_f1"] == 1.0
    assert not [r for r in RecordingHandler.requests if r[0] != "GET"]  # nothing uploaded
