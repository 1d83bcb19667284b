"""Each answer is scored once, by the run's evaluators, whatever the door; stored answers are
scored again for a new evaluator without one model call (issue 18, acceptance 1 and 2)."""

import math
from pathlib import Path

from test_experiments import EXAMPLES, gold_answer, half_right

from triplesmith.evaluators.base import evaluate_all
from triplesmith.evaluators.registry import get_evaluators
from triplesmith.experiments.compare import compare
from triplesmith.experiments.store import ExperimentStore
from triplesmith.graph.build import build_graph
from triplesmith.schema import Example

# One example carries CaRB's n-ary gold in its metadata: its CaRB score must come from the
# tuples (three arguments), not from the triple view, on every door.
NARY = Example(
    id="nary",
    sentence="Marie Curie won the Nobel Prize in Physics in 1903 with Pierre Curie.",
    triples=[{"s": "Marie Curie", "relation": "won", "object": "the Nobel Prize in Physics"}],
    meta={
        "carb_tuples": [
            {
                "relation": "won",
                "args": [
                    "Marie Curie",
                    "the Nobel Prize in Physics",
                    "in 1903",
                    "with Pierre Curie",
                ],
            }
        ]
    },
)
DATA = [*EXAMPLES[:3], NARY]
EVALUATORS = "carb,triple-f1,format"


def test_a_compare_through_the_graph_stores_one_value_per_metric_equal_to_the_report(
    tmp_path: Path,
) -> None:
    model = half_right("once-half", DATA)
    model.answers[NARY.sentence] = gold_answer(NARY)
    store = tmp_path / "s.sqlite"
    result = compare(["zero-shot:once-half"], DATA, EVALUATORS, store=store)
    (experiment,) = result.experiments
    assert experiment.record.metadata["via_graph"] is True
    evaluators = get_evaluators(EVALUATORS)
    with ExperimentStore(store) as db:
        stored = db.rows(experiment.key)
    assert len(stored) == len(DATA)
    for row in stored:
        keys = [f.key for f in row.feedback]
        assert len(keys) == len(set(keys)), f"{row.example_id}: a metric stored twice: {keys}"
        assert "scores" not in row.outputs  # the graph did not score: the run's evaluators did
        # Exactly the run's evaluators' feedback, with the example's metadata (n-ary CaRB).
        assert row.feedback == evaluate_all(evaluators, row.outputs, row.example)
    nary = next(r for r in stored if r.example_id == "nary")
    assert nary.score("triple_f1") == 1.0
    assert nary.score("carb_example_recall") < 1.0  # two of the four arguments are missing
    for metric in ("triple_f1", "carb_example_f1", "format"):
        values = [r.score(metric) for r in stored]
        assert math.isclose(result.table.loc["zero-shot:once-half", metric], sum(values) / 4)
        assert experiment.scores(metric) == values

    # The graph's own door, with the same evaluators and the example's metadata, gives the same
    # values for the same answer.
    state = build_graph().invoke(
        {
            "sentence": NARY.sentence,
            "gold": [t.model_dump() for t in NARY.triples],
            "meta": NARY.meta,
        },
        context={"chain": "zero-shot:once-half", "evaluators": EVALUATORS.split(",")},
    )
    scores = state["results"]["zero-shot:once-half"]["scores"]
    assert scores == {f.key: f.score for f in nary.feedback}


def test_one_more_evaluator_scores_the_stored_answers_with_no_model_call(tmp_path: Path) -> None:
    model = half_right("once-calls", DATA)
    store = tmp_path / "s.sqlite"
    first = compare(["zero-shot:once-calls"], DATA, "triple-f1", store=store)
    calls = len(model.calls)
    assert calls >= len(DATA)

    again = compare(["zero-shot:once-calls"], DATA, "triple-f1,format,carb", store=store)
    assert len(model.calls) == calls  # 0 model calls
    (experiment,) = again.experiments
    assert experiment.key == first.experiments[0].key
    assert (experiment.ran, experiment.skipped, experiment.rescored) == (0, len(DATA), len(DATA))
    assert {"triple_f1", "format", "carb_example_f1", "carb_auc"} <= {
        *again.metrics,
        *again.summary_metrics,
    }
    # A third run with the same evaluators neither generates nor scores again, and a run with
    # fewer evaluators reports only those.
    third = compare(["zero-shot:once-calls"], DATA, "triple-f1,format,carb", store=store)
    assert len(model.calls) == calls and third.experiments[0].rescored == 0
    fewer = compare(["zero-shot:once-calls"], DATA, "format", store=store)
    assert len(model.calls) == calls and fewer.metrics[0] == "format"
    assert "triple_f1" not in fewer.metrics


def test_a_changed_threshold_scores_again_without_generating(tmp_path: Path, monkeypatch) -> None:
    model = half_right("once-threshold", DATA)
    store = tmp_path / "s.sqlite"
    compare(["zero-shot:once-threshold"], DATA, "triple-f1", store=store)
    calls = len(model.calls)
    from triplesmith.evaluators.triple_f1 import TripleF1Evaluator

    strict = TripleF1Evaluator(100.0)
    again = compare(["zero-shot:once-threshold"], DATA, [strict], store=store)
    assert len(model.calls) == calls
    assert again.experiments[0].rescored == len(DATA)


def test_a_chain_object_and_a_spec_give_the_same_metric_set(tmp_path: Path) -> None:
    from triplesmith.chains.registry import get_chain

    half_right("once-door", DATA)
    store = tmp_path / "s.sqlite"
    by_spec = compare(["zero-shot:once-door"], DATA, EVALUATORS, store=store)
    by_object = compare([get_chain("zero-shot:once-door")], DATA, EVALUATORS, store=store)
    assert by_spec.metrics == by_object.metrics
    assert by_spec.summary_metrics == by_object.summary_metrics


def test_the_rescore_command_scores_stored_answers_and_generates_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from triplesmith.cli.app import app

    model = half_right("once-cli", DATA)
    store = tmp_path / "s.sqlite"
    first = compare(["zero-shot:once-cli"], DATA, "triple-f1", store=store)
    calls = len(model.calls)
    key = first.experiments[0].key
    args = ["rescore", "-e", "triple-f1,format,carb", "--store", str(store), "--no-upload"]
    done = CliRunner().invoke(app, args, terminal_width=200)
    assert done.exit_code == 0, done.output
    assert len(model.calls) == calls
    text = " ".join(done.output.split())  # Rich wraps to the terminal
    assert f"{key}: {len(DATA)} answers, {len(DATA)} scored now" in text and "carb_f1" in text
    with ExperimentStore(store) as db:
        assert all(len(names) == 3 for names in db.scored(key).values())
    from triplesmith.experiments.scoring import rescore

    assert rescore(key, "triple-f1,format,carb", store=store).rescored == 0  # nothing left
    missing = CliRunner().invoke(app, [*args, "-x", "no-such-key"])
    assert missing.exit_code != 0 and "no experiment 'no-such-key'" in str(missing.exception)


def test_seconds_per_sentence_count_a_batch_once_and_skip_pauses() -> None:
    from datetime import UTC, datetime, timedelta

    from triplesmith.experiments.compare import busy_seconds
    from triplesmith.experiments.store import StoredExample

    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def answered(at: float, latency: float) -> StoredExample:
        finished = (t0 + timedelta(seconds=at)).isoformat()
        return StoredExample(
            experiment="x", example_id=f"{at}", example=DATA[0], outputs={},
            latency_s=latency, finished=finished,
        )  # fmt: skip

    # Twenty sentences answered together in one 71 s batch: 71 s, 3.55 s a sentence, not 71.
    batch = [answered(71.0, 71.0) for _ in range(20)]
    assert busy_seconds(batch) == 71.0
    # A resumed run an hour later adds its own 10 s, not the hour between.
    assert busy_seconds([*batch, answered(3671.0, 10.0)]) == 81.0
