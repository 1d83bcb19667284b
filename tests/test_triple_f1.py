import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from triplesmith.chains.extraction import Extraction
from triplesmith.chains.parser import ParseDiagnostics
from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.base import safe_evaluate
from triplesmith.evaluators.triple_f1 import (
    TripleF1Evaluator,
    match_triples,
    triple_scores,
)
from triplesmith.schema import Example, Triple
from triplesmith.settings import get_settings


def t(s: str, relation: str, obj: str) -> Triple:
    return Triple(s=s, relation=relation, object=obj)


OBAMA = t("Obama", "was born in", "Hawaii")
EXAMPLE = Example(id="e1", sentence="Obama was born in Hawaii in 1961.", triples=[OBAMA])


def test_identical_triples_score_one():
    scores = triple_scores([OBAMA], [OBAMA], threshold=85)
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 1.0, 1.0)
    assert scores.matched == 1


def test_case_punctuation_and_spacing_are_normalised_even_for_exact():
    predicted = [t("obama", "was  born in", "Hawaii.")]
    assert triple_scores(predicted, [OBAMA], threshold=100).matched == 1


def test_fuzzy_match_accepts_a_near_spelling_that_exact_rejects():
    predicted = [t("Obama", "was born in", "Hawai")]  # ratio 90.9 against "hawaii"
    assert triple_scores(predicted, [OBAMA], threshold=85).f1 == 1.0
    assert triple_scores(predicted, [OBAMA], threshold=100).f1 == 0.0


def test_every_field_must_pass_the_threshold():
    wrong_relation = [t("Obama", "died in", "Hawaii")]
    assert triple_scores(wrong_relation, [OBAMA], threshold=85).matched == 0


def test_matching_is_one_to_one():
    scores = triple_scores([OBAMA, OBAMA], [OBAMA], threshold=85)
    assert scores.matched == 1
    assert scores.precision == 0.5
    assert scores.recall == 1.0


def test_matching_finds_the_most_pairs_where_greedy_would_not():
    # P1 matches both gold triples (best with G1); P2 matches only G1.
    gold = [t("A", "r", "hawaii"), t("A", "r", "hawai")]
    predicted = [t("A", "r", "hawaii"), t("A", "r", "hawaiian")]
    assert sorted(match_triples(predicted, gold, threshold=85)) == [(0, 1), (1, 0)]
    assert triple_scores(predicted, gold, threshold=85).f1 == 1.0


def test_empty_prediction_against_empty_gold_has_no_precision_and_f1_one():
    scores = triple_scores([], [], threshold=85)
    assert (scores.precision, scores.recall, scores.f1) == (None, 1.0, 1.0)


def test_predictions_against_empty_gold_score_zero_precision():
    scores = triple_scores([OBAMA], [], threshold=85)
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 1.0, 0.0)


def test_empty_prediction_has_undefined_precision_not_one():
    scores = triple_scores([], [OBAMA], threshold=85)
    assert (scores.precision, scores.recall, scores.f1) == (None, 0.0, 0.0)


def test_an_empty_answer_gets_no_precision_feedback_and_no_error():
    feedback = TripleF1Evaluator(threshold=85).evaluate({"triples": []}, EXAMPLE)
    assert {f.key: f.score for f in feedback} == {"triple_recall": 0.0, "triple_f1": 0.0}
    assert all(f.error is None for f in feedback)


def test_mean_precision_is_over_the_answers_that_had_triples():
    """A chain that answers nothing for most sentences is not made precise by its silence."""
    evaluator = TripleF1Evaluator(threshold=85)
    answers = [[OBAMA.model_dump()], [], [], [t("Obama", "likes", "golf").model_dump()]]
    precisions = [
        f.score
        for answer in answers
        for f in evaluator.evaluate({"triples": answer}, EXAMPLE)
        if f.key == "triple_precision"
    ]
    assert precisions == [1.0, 0.0]  # two answers with triples; the two empty ones left out


def test_micro_precision_is_left_out_when_no_answer_had_triples():
    feedback = TripleF1Evaluator(threshold=85).summarise([{"triples": []}], [EXAMPLE])
    assert {f.key: f.score for f in feedback} == {
        "triple_micro_recall": 0.0,
        "triple_micro_f1": 0.0,
    }


def test_the_empty_answer_rule_is_part_of_the_identity():
    """Stores key scores by identity: answers scored under the old rule (1.0) are re-scored."""
    assert "empty_precision='undefined'" in TripleF1Evaluator(threshold=85).identity


def test_threshold_defaults_to_the_setting():
    assert TripleF1Evaluator().threshold == get_settings().triple_match_threshold


@pytest.mark.parametrize("threshold", [-1, 100.5])
def test_threshold_outside_0_100_is_refused(threshold):
    with pytest.raises(EvaluatorError, match="0–100"):
        TripleF1Evaluator(threshold=threshold)


def test_evaluator_reads_an_extraction_and_its_json_dict_alike():
    extraction = Extraction(
        chain="few-shot:smollm2",
        sentence=EXAMPLE.sentence,
        triples=[OBAMA, t("Obama", "was born in", "1961")],
        diagnostics=ParseDiagnostics(complete=True),
    )
    evaluator = TripleF1Evaluator(threshold=85)
    from_model = evaluator.evaluate(extraction, EXAMPLE)
    from_dict = evaluator.evaluate(extraction.to_output(), EXAMPLE)
    assert from_model == from_dict
    assert {f.key: f.score for f in from_dict} == {
        "triple_precision": 0.5,
        "triple_recall": 1.0,
        "triple_f1": pytest.approx(2 / 3),
    }


def test_exact_variant_has_its_own_keys():
    evaluator = TripleF1Evaluator(exact=True)
    assert evaluator.name == "triple-f1-exact"
    feedback = evaluator.evaluate(
        {"triples": [{"s": "Obama", "relation": "was born in", "object": "Hawai"}]}, EXAMPLE
    )
    assert {f.key: f.score for f in feedback}["triple_exact_f1"] == 0.0


def test_summary_is_micro_averaged_over_triples():
    second = Example(
        id="e2",
        sentence="Copper conducts electricity.",
        triples=[
            t("Copper", "conducts", "electricity"),
            t("Copper", "is", "a metal"),
            t("Copper", "is", "red"),
        ],
    )
    outputs = [{"triples": [OBAMA.model_dump()]}, {"triples": [second.triples[0].model_dump()]}]
    feedback = TripleF1Evaluator(threshold=85).summarise(outputs, [EXAMPLE, second])
    scores = {f.key: f.score for f in feedback}
    assert scores["triple_micro_precision"] == 1.0
    assert scores["triple_micro_recall"] == 0.5  # 2 of 4 gold triples
    assert scores["triple_micro_f1"] == pytest.approx(2 / 3)


def test_malformed_outputs_become_error_feedback_for_each_key():
    feedback = safe_evaluate(TripleF1Evaluator(), {"triples": [{"s": "Obama"}]}, EXAMPLE)
    assert [f.key for f in feedback] == ["triple_precision", "triple_recall", "triple_f1"]
    assert all(f.score is None and "outputs.triples[0]" in f.error for f in feedback)


WORDS = st.sampled_from(["obama", "hawaii", "hawai", "born in", "was born in", "1961", "the us"])
TRIPLES = st.lists(st.builds(t, WORDS, WORDS, WORDS), max_size=6)


@settings(deadline=None)
@given(predicted=TRIPLES, gold=TRIPLES, threshold=st.sampled_from([0, 50, 85, 100]))
def test_scores_are_bounded_and_matches_are_one_to_one(predicted, gold, threshold):
    scores = triple_scores(predicted, gold, threshold=threshold)
    assert (scores.precision is None) == (not predicted)
    assert scores.precision is None or 0.0 <= scores.precision <= 1.0
    assert 0.0 <= scores.recall <= 1.0
    assert 0.0 <= scores.f1 <= 1.0
    pairs = match_triples(predicted, gold, threshold)
    assert len({p for p, _ in pairs}) == len({g for _, g in pairs}) == len(pairs)


@settings(deadline=None)
@given(predicted=TRIPLES, gold=TRIPLES, seed=st.integers(0, 1000))
def test_scores_do_not_depend_on_order(predicted, gold, seed):
    shuffled = list(predicted)
    random.Random(seed).shuffle(shuffled)
    assert triple_scores(shuffled, gold, threshold=85) == triple_scores(
        predicted, gold, threshold=85
    )


@settings(deadline=None)
@given(predicted=TRIPLES, gold=TRIPLES)
def test_swapping_prediction_and_gold_swaps_precision_and_recall(predicted, gold):
    assume(predicted and gold)  # an empty side is not symmetric: no precision, recall 1.0
    forward = triple_scores(predicted, gold, threshold=85)
    backward = triple_scores(gold, predicted, threshold=85)
    assert forward.matched == backward.matched
    assert (forward.precision, forward.recall) == (backward.recall, backward.precision)
