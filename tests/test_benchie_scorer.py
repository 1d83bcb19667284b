"""The BenchIE scorer: published figures, optional-token expansion, file errors, invariants."""

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triplesmith.errors import DatasetError, EvaluatorError
from triplesmith.evaluators.benchie import (
    BenchieSentence,
    benchie_example_scores,
    expand_optional_tokens,
    read_benchie_gold,
    read_benchie_predictions,
    score_benchie,
    triple_matches_cluster,
)
from triplesmith.schema import Triple

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchie"
BENCHIE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "benchie"
needs_benchie = pytest.mark.skipif(
    not (BENCHIE / "gold_en.txt").is_file(),
    reason=f"BenchIE English data not found at {BENCHIE}",
)

# From BenchIE's README (gkiril/benchie at d9cdb93), English gold: precision, recall, F1.
PUBLISHED = {
    "clausie": (0.5029154518950437, 0.25555555555555554, 0.33889980353634575),
    "minie": (0.4290617848970252, 0.2777777777777778, 0.33723021582733814),
    "stanford": (0.11082070047046524, 0.15703703703703703, 0.12994177137603433),
    "openie6": (0.3110871905274489, 0.21407407407407408, 0.2536200087757789),
    "roi_t": (0.3732394366197183, 0.07851851851851852, 0.12974296205630356),
    "roi_n": (0.20287539936102236, 0.09407407407407407, 0.12854251012145748),
    "naive_oie": (0.03336921420882669, 0.022962962962962963, 0.02720491443615621),
    "m2oie_en": (0.3924050632911392, 0.16074074074074074, 0.2280609563846558),
}


@pytest.fixture(scope="module")
def english_gold() -> dict[int, BenchieSentence]:
    return read_benchie_gold(BENCHIE / "gold_en.txt")


@needs_benchie
def test_english_gold_has_300_sentences_and_1350_clusters(english_gold):
    assert sorted(english_gold) == list(range(1, 301))
    assert sum(len(sentence.clusters) for sentence in english_gold.values()) == 1350
    first = english_gold[1]
    assert first.sentence.startswith("He served as the first Prime Minister")
    assert first.clusters[0][0] == (
        "He",
        "served as",
        "[the] [first] Prime Minister [of Australia]",
    )


@needs_benchie
@pytest.mark.parametrize("system", sorted(PUBLISHED))
def test_shipped_system_output_reproduces_readme_figures(english_gold, system):
    predicted = read_benchie_predictions(BENCHIE / "system_outputs" / f"{system}.txt")
    score = score_benchie(english_gold, predicted)
    precision, recall, f1 = PUBLISHED[system]
    assert (round(score.precision, 4), round(score.recall, 4), round(score.f1, 4)) == (
        round(precision, 4),
        round(recall, 4),
        round(f1, 4),
    )
    assert score.unmatched_sentences == 0


@needs_benchie
def test_per_sentence_counts_sum_to_the_corpus_score(english_gold):
    predicted = read_benchie_predictions(BENCHIE / "system_outputs" / "minie.txt")
    corpus = score_benchie(english_gold, predicted)
    totals = {"correct": 0, "false_positives": 0, "extractions": 0, "clusters": 0}
    for sent_id, sentence in english_gold.items():
        clusters = [[list(triple) for triple in cluster] for cluster in sentence.clusters]
        example = benchie_example_scores(clusters, predicted.get(sent_id, []))
        for key in totals:
            totals[key] += example[key]
    assert totals == {
        "correct": corpus.correct,
        "false_positives": corpus.false_positives,
        "extractions": corpus.extractions,
        "clusters": corpus.clusters,
    }


def test_each_optional_token_may_be_kept_or_left_out():
    assert expand_optional_tokens("[the] [first] Prime Minister") == {
        "the first Prime Minister",
        "the Prime Minister",
        "first Prime Minister",
        "Prime Minister",
    }


def test_multi_word_optional_span_is_left_out_as_a_whole():
    assert expand_optional_tokens("bars [of a cell window]") == {"bars of a cell window", "bars"}


def test_slot_without_brackets_has_one_form():
    assert expand_optional_tokens("served as") == {"served as"}


def test_fully_optional_slot_may_be_empty():
    assert expand_optional_tokens("[there]") == {"there", ""}


def test_bracket_inside_a_token_makes_the_whole_token_optional_as_benchie_does():
    assert expand_optional_tokens("John Crozier[,] Jr.") == {"John Crozier, Jr.", "John Jr."}


def test_stray_closing_bracket_token_is_dropped_as_benchie_does():
    assert expand_optional_tokens("for [as little as] $ 89]") == {"for as little as $", "for $"}


def test_forms_are_stripped_but_inner_double_spaces_kept():
    assert expand_optional_tokens("began building  [in the 1890s]") == {
        "began building  in the 1890s",
        "began building",
    }


def test_slot_with_too_many_optional_units_is_refused():
    slot = " ".join(f"[w{i}]" for i in range(21))
    with pytest.raises(EvaluatorError, match="optional"):
        expand_optional_tokens(slot)


def test_triple_matches_cluster_with_optional_tokens_left_out():
    cluster = [("He", "served as", "[the] [first] Prime Minister [of Australia]")]
    assert triple_matches_cluster(("He", "served as", "first Prime Minister"), cluster)
    assert triple_matches_cluster(
        Triple(s="He", relation="served as", object="the Prime Minister"), cluster
    )
    assert triple_matches_cluster((" He ", "served as", "Prime Minister "), cluster)


def test_triple_with_moved_slot_boundary_does_not_match():
    cluster = [("He", "served as", "[the] Prime Minister")]
    assert not triple_matches_cluster(("He", "served", "as the Prime Minister"), cluster)
    assert not triple_matches_cluster(("he", "served as", "Prime Minister"), cluster)


def test_small_gold_and_predictions_score_by_hand():
    gold = read_benchie_gold(FIXTURES / "gold_small.txt")
    assert [len(gold[sent_id].clusters) for sent_id in (1, 2, 3)] == [2, 0, 2]
    score = score_benchie(gold, read_benchie_predictions(FIXTURES / "predictions_small.txt"))
    # Sentence 1: two extractions hit cluster 1 (it counts once), one misses; sentence 3: two hit.
    assert (score.correct, score.false_positives, score.extractions, score.clusters) == (3, 2, 6, 4)
    assert (score.precision, score.recall) == (0.6, 0.75)
    assert score.f1 == pytest.approx(2 / 3)


def test_unknown_sentence_ids_are_counted_not_scored():
    gold = read_benchie_gold(FIXTURES / "gold_small.txt")
    predicted = read_benchie_predictions(FIXTURES / "predictions_small.txt")
    score = score_benchie(gold, predicted)
    assert (score.unmatched_sentences, score.ignored_extractions) == (1, 2)
    without_unknown = {
        sent_id: triples for sent_id, triples in predicted.items() if sent_id in gold
    }
    assert score_benchie(gold, without_unknown).precision == score.precision


def test_prediction_line_with_three_fields_names_file_and_line():
    path = FIXTURES / "predictions_three_fields.txt"
    with pytest.raises(EvaluatorError, match=r"predictions_three_fields\.txt:2: expected 4 tab"):
        read_benchie_predictions(path)


def test_prediction_line_with_non_integer_id_names_file_and_line():
    path = FIXTURES / "predictions_bad_sent_id.txt"
    with pytest.raises(EvaluatorError, match=r"predictions_bad_sent_id\.txt:3: sent_id must be"):
        read_benchie_predictions(path)


def test_gold_triple_before_cluster_header_names_file_and_line():
    path = FIXTURES / "gold_triple_before_cluster.txt"
    with pytest.raises(DatasetError, match=r"gold_triple_before_cluster\.txt:2: triple before"):
        read_benchie_gold(path)


def test_example_scores_take_the_meta_cluster_shape():
    clusters = [[["He", "became", "[a] [founding] justice"]], [["He", "served", "as [the] PM"]]]
    scores = benchie_example_scores(
        clusters, [{"s": "He", "relation": "became", "object": "justice"}]
    )
    assert scores["correct"] == 1 and scores["clusters"] == 2 and scores["extractions"] == 1
    assert (scores["precision"], scores["recall"]) == (1.0, 0.5)


def test_example_with_no_clusters_and_no_extractions_scores_zero():
    assert benchie_example_scores([], [])["f1"] == 0.0


_WORDS = st.sampled_from(["a", "b", "the", "of", "x"])
_SLOTS = st.lists(st.tuples(_WORDS, st.booleans()), min_size=1, max_size=4).map(
    lambda tokens: " ".join(f"[{word}]" if optional else word for word, optional in tokens)
)
_TRIPLES = st.tuples(_SLOTS, _SLOTS, _SLOTS)
_CLUSTERS = st.lists(st.lists(_TRIPLES, min_size=1, max_size=3), max_size=4)


@st.composite
def _clusters_and_predictions(draw):
    clusters = draw(_CLUSTERS)
    gold_triples = [triple for cluster in clusters for triple in cluster]
    predictions = []
    for _ in range(draw(st.integers(0, 8))):
        if gold_triples and draw(st.booleans()):
            triple = draw(st.sampled_from(gold_triples))
            forms = [sorted(expand_optional_tokens(slot)) for slot in triple]
            predictions.append(tuple(draw(st.sampled_from(form)) for form in forms))
        else:
            predictions.append(draw(st.tuples(_WORDS, _WORDS, _WORDS)))
    return clusters, predictions


@given(_clusters_and_predictions(), st.randoms())
def test_scores_are_bounded_and_independent_of_prediction_order(case, random):
    clusters, predictions = case
    scores = benchie_example_scores(clusters, predictions)
    assert all(0.0 <= scores[key] <= 1.0 for key in ("precision", "recall", "f1"))
    assert scores["correct"] <= min(len(clusters), scores["extractions"])
    shuffled = list(predictions)
    random.shuffle(shuffled)
    assert benchie_example_scores(clusters, shuffled) == scores


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.booleans()), min_size=1, max_size=8))
def test_expansion_holds_full_and_minimal_forms_and_at_most_two_to_the_k(tokens):
    slot = " ".join(f"[{word}]" if optional else word for word, optional in tokens)
    forms = expand_optional_tokens(slot)
    k = sum(optional for _, optional in tokens)
    assert " ".join(word for word, _ in tokens) in forms
    assert " ".join(word for word, optional in tokens if not optional) in forms
    assert len(forms) <= 2**k
    assert all("[" not in form and "]" not in form for form in forms)


def test_expansion_of_distinct_optional_words_is_every_subset():
    words = ["w1", "w2", "w3"]
    expected = {
        " ".join(["core", *subset]) for r in range(4) for subset in itertools.combinations(words, r)
    }
    assert expand_optional_tokens("core [w1] [w2] [w3]") == expected
