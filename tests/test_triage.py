"""Failure triage: per-tag precision and recall on hand-labelled outputs, and each rule alone."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triplesmith.chains.parser import parse_triples
from triplesmith.errors import EvaluatorError
from triplesmith.evaluators.triage import TAG_NAMES, Tag, triage
from triplesmith.schema import Example, Triple
from triplesmith.settings import TriageThresholds

FIXTURES = Path(__file__).parent / "fixtures" / "triage"
MIN_SCORE = 0.9
MIN_POSITIVES = 5


def load_rows() -> list[dict]:
    rows = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                rows.append(json.loads(line) | {"where": f"{path.name}:{number}"})
    return rows


ROWS = load_rows()


def run_row(row: dict) -> list[Tag]:
    examples = [
        Example(id=f"{row['id']}-shot-{n}", sentence=shot["sentence"], triples=shot["triples"])
        for n, shot in enumerate(row.get("prompt_examples") or [])
    ]
    gold = [Triple(**t) for t in row["gold"]] if row.get("gold") is not None else None
    parsed = parse_triples(row["raw_output"])
    return triage(
        row["sentence"],
        row["raw_output"],
        parsed.triples,
        gold=gold,
        prompt_examples=examples or None,
        diagnostics=parsed.diagnostics,
        thresholds=TriageThresholds(),
    )


def triples(*rows: tuple[str, str, str]) -> list[Triple]:
    return [Triple(s=s, relation=r, object=o) for s, r, o in rows]


def names(tags: list[Tag]) -> set[str]:
    return {tag.name for tag in tags}


def tag_names(sentence: str, raw: str, **kwargs) -> set[str]:
    parsed = parse_triples(raw)
    return names(triage(sentence, raw, parsed.triples, thresholds=TriageThresholds(), **kwargs))


# --- the labelled fixtures -----------------------------------------------------------------------


def test_fixture_set_is_large_varied_and_well_formed():
    assert len(ROWS) >= 40
    assert len({row["id"] for row in ROWS}) == len(ROWS), "fixture ids must be unique"
    assert sum(row["provenance"] == "smollm2-real" for row in ROWS) >= 10
    assert {row["provenance"] for row in ROWS} == {"smollm2-real", "written"}
    assert sum(not row["expected_tags"] for row in ROWS) >= 5, "clean outputs are needed too"
    assert any(row.get("prompt_examples") for row in ROWS if row["provenance"] == "smollm2-real")
    for row in ROWS:
        assert set(row["expected_tags"]) <= set(TAG_NAMES), row["where"]
        if {"omission", "over_extraction"} & set(row["expected_tags"]):
            assert row.get("gold"), f"{row['where']}: gold tags need gold triples"


def per_tag_scores(rows: list[dict]) -> tuple[dict[str, tuple[int, float, float]], str]:
    """{tag: (labelled positives, precision, recall)} over `rows`, and a printable table."""
    counts = {name: {"tp": 0, "fp": 0, "fn": 0} for name in TAG_NAMES}
    misses = []
    for row in rows:
        expected, predicted = set(row["expected_tags"]), names(run_row(row))
        for name in TAG_NAMES:
            if name in expected and name in predicted:
                counts[name]["tp"] += 1
            elif name in predicted:
                counts[name]["fp"] += 1
            elif name in expected:
                counts[name]["fn"] += 1
        if expected != predicted:
            misses.append(f"{row['id']}: expected {sorted(expected)}, got {sorted(predicted)}")
    lines = [f"{'tag':<17}{'support':>8}{'tp':>5}{'fp':>5}{'fn':>5}{'precision':>11}{'recall':>8}"]
    scores = {}
    for name, c in counts.items():
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        scores[name] = (c["tp"] + c["fn"], precision, recall)
        lines.append(
            f"{name:<17}{c['tp'] + c['fn']:>8}{c['tp']:>5}{c['fp']:>5}{c['fn']:>5}"
            f"{precision:>11.2f}{recall:>8.2f}"
        )
    return scores, "\n".join([f"triage on {len(rows)} labelled outputs", *lines, *misses])


def test_triage_precision_and_recall_per_tag_on_the_fixtures():
    scores, report = per_tag_scores(ROWS)
    real = [row for row in ROWS if row["provenance"] == "smollm2-real"]
    print(f"{report}\n\nof which real SmolLM2 outputs:\n{per_tag_scores(real)[1]}")
    for name, (support, precision, recall) in scores.items():
        assert support >= MIN_POSITIVES, f"{name}: only {support} labelled positives\n{report}"
        assert precision >= MIN_SCORE and recall >= MIN_SCORE, f"{name} below {MIN_SCORE}\n{report}"


# --- each rule on its own ------------------------------------------------------------------------


def test_numbers_must_match_exactly():
    sentence = "The bus to Kinsale leaves at 7:45."
    wrong = '[{"s": "The bus to Kinsale", "relation": "leaves at", "object": "7:46"}]'
    right = '[{"s": "The bus to Kinsale", "relation": "leaves at", "object": "7:45"}]'
    assert "hallucination" in tag_names(sentence, wrong)
    assert "hallucination" not in tag_names(sentence, right)


def test_names_must_match_exactly_while_ordinary_words_match_fuzzily():
    sentence = "Barack Obama was born in Honolulu and studied law."
    assert "hallucination" in tag_names(
        sentence, '[{"s": "Barack Osama", "relation": "was born in", "object": "Honolulu"}]'
    )
    assert "hallucination" not in tag_names(
        sentence, '[{"s": "Barack Obama", "relation": "studying", "object": "laws"}]'
    )


def test_stopwords_are_ignored_when_grounding():
    sentence = "Mira forgot her umbrella at the station."
    raw = '[{"s": "Mira", "relation": "forgot", "object": "all of her own umbrellas there"}]'
    tags = triage(sentence, raw, parse_triples(raw).triples, thresholds=TriageThresholds())
    assert "hallucination" not in names(tags)


def test_hallucination_evidence_names_the_field_and_the_missing_words():
    sentence = "Jonas drove to the clinic himself."
    raw = '[{"s": "Homer Simpson", "relation": "drove to", "object": "the clinic"}]'
    tags = triage(sentence, raw, parse_triples(raw).triples, thresholds=TriageThresholds())
    (tag,) = [t for t in tags if t.name == "hallucination"]
    assert "Homer Simpson" in tag.evidence and "Homer" in tag.evidence


def test_near_duplicate_triples_are_repetition_but_distinct_ones_are_not():
    sentence = "The defendant was acquitted of fraud but was fined for contempt of court."
    near = triples(
        ("The defendant", "was fined for", "contempt of court"),
        ("the defendant", "was fined for", "contempt of the court"),
    )
    distinct = triples(
        ("The defendant", "was acquitted of", "fraud"),
        ("The defendant", "was fined for", "contempt of court"),
    )
    raw = "see triples"
    assert "repetition" in names(triage(sentence, raw, near, thresholds=TriageThresholds()))
    assert "repetition" not in names(triage(sentence, raw, distinct, thresholds=TriageThresholds()))


def test_a_loop_in_the_raw_text_is_repetition():
    sentence = "The chef whisks the eggs with sugar."
    assert "repetition" in tag_names(sentence, "the eggs the eggs the eggs the eggs the eggs")
    assert "repetition" not in tag_names(sentence, "the eggs, then the sugar")


def test_without_gold_there_is_no_omission_or_over_extraction():
    sentence = "Despite heavy rain, the referee did not stop the match."
    raw = "[]"
    gold = triples(("the referee", "did not stop", "the match"))
    assert not {"omission", "over_extraction"} & tag_names(sentence, raw)
    assert not {"omission", "over_extraction"} & tag_names(sentence, raw, gold=[])
    assert "omission" in tag_names(sentence, raw, gold=gold)


def test_over_extraction_needs_both_many_triples_and_low_precision():
    sentence = "Despite heavy rain, the referee did not stop the match."
    gold = triples(("the referee", "did not stop", "the match"))
    noisy = triples(
        ("the referee", "did not stop", "the match"),
        ("the rain", "was", "heavy"),
        ("the match", "continued despite", "heavy rain"),
    )
    t = TriageThresholds()
    assert "over_extraction" in names(triage(sentence, "x", noisy, gold=gold, thresholds=t))
    lenient = TriageThresholds(over_extraction_ratio=4.0)
    assert "over_extraction" not in names(
        triage(sentence, "x", noisy, gold=gold, thresholds=lenient)
    )


def test_a_wrong_name_does_not_match_a_gold_triple():
    sentence = "The company was founded by Ruth Adeyemi and Karl Brandt."
    gold = triples(("The company", "was founded by", "Karl Brandt"))
    wrong = triples(("The company", "was founded by", "Karl Marx"))
    assert "omission" in names(triage(sentence, "x", wrong, gold=gold))


def test_few_shot_leak_needs_the_prompt_examples():
    sentence = "The 2010 census counted 4,512 residents in the town of Marlow Creek."
    raw = '[{"s": "The Nile", "relation": "flows through", "object": "Sudan"}]'
    shot = Example(
        id="shot-1",
        sentence="The Nile flows through Egypt and Sudan.",
        triples=triples(("The Nile", "flows through", "Sudan")),
    )
    assert tag_names(sentence, raw) == {"hallucination"}
    assert tag_names(sentence, raw, prompt_examples=[shot]) == {"hallucination", "few_shot_leak"}


def test_instruction_echo_is_not_a_copy_of_the_sentence_itself():
    sentence = "The manual calls it a model tasked with extracting knowledge graph triples."
    raw = json.dumps(
        [
            {
                "s": "The manual",
                "relation": "calls it",
                "object": "a model tasked with extracting knowledge graph triples",
            }
        ]
    )
    assert "instruction_echo" not in tag_names(sentence, raw)
    echoed = "You are a model tasked with extracting knowledge graph triples from a sentence."
    assert "instruction_echo" in tag_names("Mira forgot her umbrella.", echoed)


def test_diagnostics_are_parsed_when_not_given():
    sentence = "Copper conducts electricity."
    raw = 'Sure! [{"s": "Copper", "relation": "conducts", "object": "electri'
    parsed = parse_triples(raw)
    given = triage(sentence, raw, parsed.triples, diagnostics=parsed.diagnostics)
    assert triage(sentence, raw, parsed.triples) == given
    assert {"format_error", "chit_chat"} <= names(given)


def test_thresholds_are_named_settings_that_change_the_outcome():
    sentence = "Mira forgot her umbrella at the station."
    raw = "Here you go."
    assert "chit_chat" in tag_names(sentence, raw)
    quiet = TriageThresholds(chit_chat_words=10)
    assert "chit_chat" not in names(triage(sentence, raw, [], thresholds=quiet))


def test_a_valid_empty_answer_is_empty_and_a_prose_answer_is_a_format_error():
    sentence = "Mira forgot her umbrella at the station."
    assert tag_names(sentence, "[]") == {"empty"}
    assert tag_names(sentence, "") == {"format_error", "empty"}
    assert "empty" not in tag_names(sentence, "No triples here, sorry about that.")
    assert "format_error" in tag_names(sentence, "No triples here, sorry about that.")


def test_chit_chat_ignores_bare_labels_and_copies_of_the_sentence():
    sentence = "Copper conducts electricity better than iron does."
    answer = '[{"s": "Copper", "relation": "conducts", "object": "electricity"}]'
    assert "chit_chat" not in tag_names(sentence, "Triples:\n" + answer)
    assert "chit_chat" not in tag_names(sentence, sentence + "\n" + answer)
    assert "chit_chat" in tag_names(sentence, "Sure! Here you go:\n" + answer)


def test_the_same_broken_item_twice_is_repetition():
    sentence = "The bus to Kinsale leaves at 7:45."
    item = '{"s": "The bus", "relation": "leaves at"}'
    raw = f'[{item}, {{"s": "Kinsale"}}, {item}]'
    assert {"format_error", "repetition"} <= tag_names(sentence, raw)


def test_triples_without_raw_text_are_not_a_format_error():
    sentence = "Copper conducts electricity."
    found = triage(sentence, "", triples(("Copper", "conducts", "electricity")))
    assert found == []


def test_triples_and_gold_may_be_dicts_as_graph_state_carries_them():
    sentence = "Copper conducts electricity."
    triple = {"s": "Copper", "relation": "conducts", "object": "electricity"}
    assert triage(sentence, json.dumps([triple]), [triple], gold=[triple]) == []


def test_bad_input_is_refused_with_a_message_naming_it():
    with pytest.raises(EvaluatorError, match="sentence must be a string"):
        triage(None, "[]", [])
    with pytest.raises(EvaluatorError, match="triples must hold"):
        triage("A sentence.", "[]", [{"s": "", "relation": "r", "object": "o"}])
    with pytest.raises(EvaluatorError, match="gold must be a list"):
        triage("A sentence.", "[]", [], gold="Copper conducts electricity")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300), st.text(min_size=1, max_size=80))
def test_triage_never_raises_and_tags_each_name_once(raw, sentence):
    tags = triage(sentence, raw, parse_triples(raw).triples, gold=triples(("a", "b", "c")))
    assert [t.name for t in tags] == sorted({t.name for t in tags}, key=TAG_NAMES.index)
    assert all(len(t.evidence) <= 240 for t in tags)


@pytest.mark.parametrize("row", ROWS, ids=[row["id"] for row in ROWS])
def test_every_tag_carries_short_evidence(row):
    for tag in run_row(row):
        assert tag.evidence and len(tag.evidence) <= 240
        assert tag.span is None or len(tag.span) <= 80
