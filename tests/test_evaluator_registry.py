from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from triplesmith.chains.extraction import Extraction
from triplesmith.chains.parser import ParseDiagnostics
from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.base import (
    FailedRunError,
    evaluate_all,
    safe_evaluate,
    safe_summarise,
    summarise_all,
)
from triplesmith.evaluators.benchie import (
    read_benchie_gold,
    read_benchie_predictions,
    score_benchie,
)
from triplesmith.evaluators.exact import BenchieEvaluator, CarbEvaluator
from triplesmith.evaluators.format_validity import TRIAGE_TAGS, FormatEvaluator
from triplesmith.evaluators.judge import JudgeEvaluator
from triplesmith.evaluators.registry import EVALUATOR_NAMES, get_evaluators
from triplesmith.schema import Example, Triple
from triplesmith.settings import Settings

BENCHIE_FIXTURES = Path(__file__).parent / "fixtures" / "benchie"

BORN = Triple(s="Obama", relation="was born in", object="Hawaii")
SIGNED = Triple(s="The treaty", relation="was signed in", object="1721")
OBAMA = Example(id="e1", sentence="Obama was born in Hawaii.", triples=[BORN])
TREATY = Example(id="e2", sentence="The treaty was signed in 1721.", triples=[SIGNED])


def outputs(*triples: Triple, confidences=None, complete=True, error=None, **extra) -> dict:
    extraction = Extraction(
        chain="zero-shot:smollm2",
        sentence="-",
        triples=list(triples),
        confidences=confidences,
        diagnostics=ParseDiagnostics(complete=complete),
        error=error,
    )
    return {**extraction.to_output(), **extra}


# Names


def test_names_give_evaluators_in_order():
    evaluators = get_evaluators("carb, benchie,triple-f1,format")
    assert [e.name for e in evaluators] == ["carb", "benchie", "triple-f1", "format"]
    assert [e.name for e in get_evaluators(["format", "format", "triple-f1-exact"])] == [
        "format",
        "triple-f1-exact",
    ]


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(EvaluatorError) as error:
        get_evaluators("carb,rouge")
    assert "'rouge'" in str(error.value)
    assert all(name in str(error.value) for name in EVALUATOR_NAMES)


def test_no_names_is_an_error():
    with pytest.raises(EvaluatorError, match="no evaluator named"):
        get_evaluators(" , ")


def test_triple_f1_threshold_comes_from_settings():
    [evaluator] = get_evaluators("triple-f1", settings=Settings(triple_match_threshold=70))
    assert evaluator.threshold == 70


def test_judge_without_a_model_says_how_to_configure_one():
    with pytest.raises(EvaluatorError, match="TRIPLESMITH_JUDGE_MODEL"):
        get_evaluators("format,judge", settings=Settings())


def test_judge_takes_any_chat_model():
    model = GenericFakeChatModel(messages=iter([]))
    [judge] = get_evaluators("judge", judge_model=model, settings=Settings())
    assert isinstance(judge, JudgeEvaluator) and judge.judge is model


def test_judge_model_string_builds_a_langchain_model():
    settings = Settings(judge_model="openai:gpt-4o-mini", openai_api_key="sk-test")
    [judge] = get_evaluators("judge", settings=settings)
    assert judge.judge.model_name == "gpt-4o-mini"


def test_judge_model_string_with_unknown_provider_is_a_clear_error():
    with pytest.raises(EvaluatorError, match="cannot build the judge model 'nowhere:model'"):
        get_evaluators("judge", judge_model="nowhere:model", settings=Settings())


# Format validity


def test_format_is_one_only_for_a_fully_parsed_answer():
    evaluator = FormatEvaluator()
    assert evaluator.evaluate(outputs(BORN), OBAMA)[0].score == 1.0
    assert evaluator.evaluate(outputs(BORN, complete=False), OBAMA)[0].score == 0.0


def test_a_failed_run_gets_no_format_score():
    failed = outputs(complete=True, error="timeout")
    with pytest.raises(FailedRunError, match="timeout"):
        FormatEvaluator().evaluate(failed, OBAMA)
    assert safe_evaluate(FormatEvaluator(), failed, OBAMA) == []


def test_format_without_tags_gives_no_tag_feedback():
    assert [f.key for f in FormatEvaluator().evaluate(outputs(BORN), OBAMA)] == ["format"]


def test_tags_become_one_rate_per_tag():
    tags = [
        {"name": "hallucination", "evidence": "Kenya not in sentence", "span": [0, 5]},
        {"name": "custom_rule", "evidence": "", "span": None},
    ]
    feedback = FormatEvaluator().evaluate(outputs(BORN, tags=tags), OBAMA)
    scores = {f.key: f.score for f in feedback}
    assert scores["tag:hallucination"] == 1.0
    assert scores["tag:custom_rule"] == 1.0
    assert scores["tag:empty"] == 0.0
    assert set(scores) == {"format", "tag:custom_rule"} | {f"tag:{t}" for t in TRIAGE_TAGS}


# CaRB


def test_carb_scores_a_perfect_prediction_one():
    feedback = CarbEvaluator().evaluate(outputs(BORN), OBAMA)
    assert {f.key: f.score for f in feedback} == {
        "carb_example_precision": 1.0,
        "carb_example_recall": 1.0,
        "carb_example_f1": 1.0,
    }


def test_carb_summary_uses_the_confidences():
    wrong = Triple(s="Paris", relation="hosts", object="museums")
    examples = [OBAMA, TREATY]
    confident = [outputs(BORN, confidences=[-0.1]), outputs(wrong, confidences=[-2.0])]
    unsure = [outputs(BORN), outputs(wrong)]  # no confidences: all 1.0
    with_confidence = {f.key: f.score for f in CarbEvaluator().summarise(confident, examples)}
    without = {f.key: f.score for f in CarbEvaluator().summarise(unsure, examples)}
    assert set(with_confidence) == {"carb_auc", "carb_f1", "carb_precision", "carb_recall"}
    # The threshold can drop the unsure wrong triple only when confidences tell them apart.
    assert with_confidence["carb_precision"] == 1.0 and with_confidence["carb_recall"] == 0.5
    assert without["carb_precision"] == 0.5 and without["carb_recall"] == 0.5
    assert with_confidence["carb_f1"] > without["carb_f1"]


# BenchIE


def benchie_examples() -> tuple[list[Example], list[dict]]:
    gold = read_benchie_gold(BENCHIE_FIXTURES / "gold_small.txt")
    predicted = read_benchie_predictions(BENCHIE_FIXTURES / "predictions_small.txt")
    examples, runs = [], []
    for sent_id, sentence in gold.items():
        clusters = [[list(t) for t in cluster] for cluster in sentence.clusters]
        examples.append(
            Example(
                id=str(sent_id), sentence=sentence.sentence, meta={"benchie_clusters": clusters}
            )
        )
        triples = [Triple(s=s, relation=r, object=o) for s, r, o in predicted.get(sent_id, [])]
        runs.append(outputs(*triples))
    return examples, runs


def test_benchie_gives_no_feedback_without_clusters():
    assert BenchieEvaluator().evaluate(outputs(BORN), OBAMA) == []
    assert BenchieEvaluator().summarise([outputs(BORN)], [OBAMA]) == []


def test_benchie_summary_matches_the_file_scorer():
    examples, runs = benchie_examples()
    expected = score_benchie(
        read_benchie_gold(BENCHIE_FIXTURES / "gold_small.txt"),
        read_benchie_predictions(BENCHIE_FIXTURES / "predictions_small.txt"),
    )
    scores = {f.key: f.score for f in BenchieEvaluator().summarise(runs, examples)}
    assert scores == {
        "benchie_precision": expected.precision,
        "benchie_recall": expected.recall,
        "benchie_f1": expected.f1,
    }


def test_benchie_per_example_scores_count_fact_synsets():
    examples, runs = benchie_examples()
    feedback = BenchieEvaluator().evaluate(runs[0], examples[0])
    scores = {f.key: f.score for f in feedback}
    assert scores["benchie_example_recall"] == 0.5  # "became justice of the court" is wrong
    assert "1 of 2 fact synsets found" in feedback[0].comment


# Failures are recorded, never raised


def test_a_failing_evaluator_becomes_error_feedback_and_the_others_still_run():
    broken = Example(id="bad", sentence="x y z.", meta={"benchie_clusters": "not clusters"})
    feedback = evaluate_all(get_evaluators("benchie,format"), outputs(BORN), broken)
    by_key = {f.key: f for f in feedback}
    assert {"benchie_example_precision", "benchie_example_recall", "benchie_example_f1"} <= set(
        by_key
    )
    assert all(
        by_key[k].error and "example bad" in by_key[k].error for k in by_key if "benchie" in k
    )
    assert by_key["format"].score == 1.0


def test_summarise_with_misaligned_outputs_is_an_error_feedback():
    feedback = safe_summarise(CarbEvaluator(), [outputs(BORN)], [OBAMA, TREATY])
    assert [f.key for f in feedback] == ["carb_auc", "carb_f1", "carb_precision", "carb_recall"]
    assert all("1 outputs for 2 examples" in f.error for f in feedback)


def test_summarise_all_skips_evaluators_without_corpus_figures():
    evaluators = get_evaluators("format,triple-f1")
    keys = [f.key for f in summarise_all(evaluators, [outputs(BORN)], [OBAMA])]
    assert keys == ["triple_micro_precision", "triple_micro_recall", "triple_micro_f1"]


def test_outputs_of_the_wrong_type_are_an_error_feedback():
    [feedback] = safe_evaluate(FormatEvaluator(), ["not", "outputs"], OBAMA)
    assert feedback.key == "format" and "Extraction or its JSON dict" in feedback.error
