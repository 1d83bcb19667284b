"""An experiment's answers written in CaRB's tabbed format re-score, through CaRB's reader and
scorer, to the figures the experiment reported (so published predictions can be checked)."""

import json
import math
from pathlib import Path

from test_experiments import OracleChatModel

from triplesmith.chains.registry import register_chat_model
from triplesmith.data.carb import read_carb_gold as read_carb_examples
from triplesmith.evaluators.carb import read_carb_gold, read_carb_predictions, score_carb
from triplesmith.evaluators.carb_formats import write_tabbed
from triplesmith.experiments.compare import compare
from triplesmith.experiments.predictions import write_carb_predictions


def test_tabbed_lines_are_read_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "p.tsv"
    count = write_tabbed(
        path, [("A  sentence\twith a tab.", [("is", ("A", "sentence"), 0.25)]), ("Empty.", [])]
    )
    assert count == 1
    (sentence, (extraction,)), *_ = read_carb_predictions(path, "tabbed").items()
    assert sentence == "A sentence with a tab."
    assert (extraction.relation, extraction.args, extraction.confidence) == (
        "is",
        ("A", "sentence"),
        0.25,
    )


def test_written_predictions_rescore_to_the_reported_carb_figures(
    carb_dir: Path, tmp_path: Path
) -> None:
    gold_path = carb_dir / "gold" / "test.tsv"
    examples = [e for e in read_carb_examples(gold_path, "test") if e.triples][:6]
    # Answers: each sentence's first gold triple and an invented one (a chat chain gives no
    # confidences: both count at 1.0, in the figures and in the file alike).
    invented = {"s": "Nobody", "relation": "said", "object": "anything"}
    answers = {e.sentence: json.dumps([e.triples[0].model_dump(), invented]) for e in examples}
    register_chat_model("carb-tabbed", OracleChatModel(answers=answers))
    result = compare(
        ["zero-shot:carb-tabbed"], examples, "carb", store=tmp_path / "s.sqlite", via_graph=False
    )
    (experiment,) = result.experiments
    written = write_carb_predictions(experiment, tmp_path / "zero-shot.tsv")
    assert written == sum(len(r.outputs["triples"]) for r in experiment.rows) > len(examples)
    sentences = {e.sentence for e in examples}
    gold = {s: t for s, t in read_carb_gold(gold_path).items() if " ".join(s.split()) in sentences}
    assert len(gold) == len(examples)
    score = score_carb(gold, read_carb_predictions(tmp_path / "zero-shot.tsv", "tabbed"))
    reported = {f.key: f.score for f in experiment.summary}
    assert math.isclose(score.f1, reported["carb_f1"], abs_tol=1e-9)
    assert math.isclose(score.auc, reported["carb_auc"], abs_tol=1e-9)
