"""parse_triples: every answer format models write, what it keeps and drops, and round trips.

The smollm2_*.txt fixtures are verbatim greedy answers of the embedded SmolLM2-135M-Instruct to
the kg-triples-v1 prompt (zero-shot and 3-shot) for sentences of `sample:test`; the other fixture
files are hand-written in the shapes models answer in.
"""

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triplesmith.chains.parser import ParseResult, format_triples, parse_triples
from triplesmith.errors import ChainError
from triplesmith.schema import Triple
from triplesmith.text import collapse_whitespace

FIXTURES = Path(__file__).parent / "fixtures" / "parser"
FIXTURE_FILES = sorted(FIXTURES.glob("*.txt"))


def read_fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def parse_fixture(name: str) -> ParseResult:
    return parse_triples(read_fixture(name))


def found(result: ParseResult) -> list[tuple[str, str, str]]:
    return [t.as_tuple() for t in result.triples]


def counts(result: ParseResult) -> dict:
    """The countable part of the diagnostics, to compare with `expected(...)`."""
    d = result.diagnostics
    return {
        "strategy": d.strategy,
        "complete": d.complete,
        "recovered": d.recovered,
        "duplicates_dropped": d.duplicates_dropped,
        "invalid_items": d.invalid_items,
        "partial_items": d.partial_items,
        "truncated": d.truncated,
    }


def expected(
    strategy: str,
    complete: bool,
    recovered: int,
    duplicates_dropped: int = 0,
    invalid_items: int = 0,
    partial_items: int = 0,
    truncated: bool = False,
) -> dict:
    return {
        "strategy": strategy,
        "complete": complete,
        "recovered": recovered,
        "duplicates_dropped": duplicates_dropped,
        "invalid_items": invalid_items,
        "partial_items": partial_items,
        "truncated": truncated,
    }


def assert_grounded(result: ParseResult, text: str) -> None:
    """Every field of every triple occurs in the text (whitespace-normalised); an object made of
    several n-ary arguments is grounded through its argument list in `nary`."""
    haystack = collapse_whitespace(text)
    for triple in result.triples:
        assert triple.s in haystack, triple
        assert triple.relation in haystack, triple
        if triple.object in haystack:
            continue
        sources = [
            args
            for args in result.nary
            if args[:2] == [triple.s, triple.relation] and " ".join(args[2:]) == triple.object
        ]
        assert sources, triple
        assert all(arg in haystack for arg in sources[0]), sources[0]


# --- JSON lists ---------------------------------------------------------------------------------


def test_json_list_of_objects_gives_every_triple():
    result = parse_fixture("json_list.txt")
    assert found(result) == [
        ("Barack Obama", "was born in", "Honolulu"),
        ("Barack Obama", "served as", "the 44th president of the United States"),
    ]
    assert counts(result) == expected("json", complete=True, recovered=2)
    assert result.diagnostics.prose == []
    assert result.diagnostics.errors == ["recovered 2 triple(s) (json)"]
    assert result.nary == []
    assert result.ok


def test_json_list_of_lists_gives_every_triple():
    result = parse_fixture("list_of_lists.txt")
    assert found(result) == [
        ("Ada Lovelace", "wrote", "the first algorithm"),
        ("Ada Lovelace", "was the daughter of", "Lord Byron"),
    ]
    assert counts(result) == expected("json", complete=True, recovered=2)


def test_single_flat_list_is_one_triple():
    result = parse_triples('["Obama", "was born in", "Hawaii"]')
    assert found(result) == [("Obama", "was born in", "Hawaii")]
    assert counts(result) == expected("json", complete=True, recovered=1)


def test_numbers_become_text_as_written():
    result = parse_fixture("numbers.txt")
    assert found(result) == [
        ("The Great Wall", "is about", "21196"),
        ("Pi", "is approximately", "3.14"),
        ("Water", "boils at", "100"),
    ]
    assert counts(result) == expected("json", complete=True, recovered=3)


def test_one_object_per_line_jsonl_gives_every_triple():
    result = parse_fixture("jsonl.txt")
    assert found(result) == [
        ("Newton", "formulated", "the laws of motion"),
        ("Newton", "was born in", "1643"),
    ]
    assert counts(result) == expected("json-wrapped", complete=True, recovered=2)


def test_extra_keys_in_a_triple_object_are_ignored():
    result = parse_triples('{"s": "a", "relation": "b", "object": "c", "confidence": 0.9}')
    assert found(result) == [("a", "b", "c")]
    assert counts(result) == expected("json", complete=True, recovered=1)


# --- JSON objects wrapping the list -------------------------------------------------------------


def test_triples_key_wrapping_a_list_is_unwrapped():
    result = parse_fixture("wrapped_triples_key.txt")
    assert found(result) == [
        ("The Eiffel Tower", "is located in", "Paris"),
        ("The Eiffel Tower", "was completed in", "1889"),
    ]
    assert counts(result) == expected("json", complete=True, recovered=2)


@pytest.mark.parametrize(
    "wrapper",
    ["triples", "Triples", "TRIPLETS", "extractions", "facts", "relations", "results"],
)
def test_known_wrapper_keys_are_unwrapped(wrapper):
    text = json.dumps({wrapper: [{"s": "a", "relation": "b", "object": "c"}, ["d", "e", "f"]]})
    result = parse_triples(text)
    assert found(result) == [("a", "b", "c"), ("d", "e", "f")]
    assert counts(result) == expected("json", complete=True, recovered=2)


def test_the_only_list_under_an_unknown_key_is_unwrapped():
    result = parse_fixture("wrapped_single_key.txt")
    assert found(result) == [
        ("Marie Curie", "won", "the Nobel Prize in Physics"),
        ("Marie Curie", "won the Nobel Prize in Physics in", "1903"),
    ]
    assert counts(result) == expected("json", complete=True, recovered=2)


def test_nested_wrappers_are_unwrapped():
    text = '{"output": {"triples": [{"s": "a", "relation": "b", "object": "c"}]}, "note": "ok"}'
    result = parse_triples(text)
    assert found(result) == [("a", "b", "c")]
    assert counts(result) == expected("json", complete=True, recovered=1)


def test_wrapped_empty_list_is_a_complete_empty_answer():
    result = parse_triples('{"triples": []}')
    assert found(result) == []
    assert counts(result) == expected("json", complete=True, recovered=0)
    assert result.ok


# --- alternative keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "triples"),
    [
        (
            "keys_subject_predicate_object.txt",  # also Subject/Predicate and SUBJECT/PREDICATE
            [
                ("Tim Berners-Lee", "invented", "the World Wide Web"),
                ("Tim Berners-Lee", "works at", "MIT"),
            ],
        ),
        (
            "keys_subject_relation_object.txt",
            [("The Nile", "flows into", "the Mediterranean Sea")],
        ),
        (
            "keys_subj_rel_obj.txt",  # also Subj/Rel/Obj
            [
                ("Amazon", "was founded by", "Jeff Bezos"),
                ("Amazon", "is headquartered in", "Seattle"),
            ],
        ),
        (
            "keys_head_relation_tail.txt",  # also Head/RELATION/Tail
            [
                ("Lionel Messi", "plays for", "Inter Miami"),
                ("Lionel Messi", "was born in", "Rosario"),
            ],
        ),
        (
            "keys_s_r_o.txt",  # also S/R/O
            [
                ("Python", "was created by", "Guido van Rossum"),
                ("Python", "was first released in", "1991"),
            ],
        ),
    ],
)
def test_alternative_key_names_and_cases_are_read(name, triples):
    result = parse_fixture(name)
    assert found(result) == triples
    assert counts(result) == expected("json", complete=True, recovered=len(triples))


def test_key_spacing_and_order_do_not_matter():
    result = parse_triples('[{" OBJECT ": "c", "Predicate": "b", "subject": "a"}]')
    assert found(result) == [("a", "b", "c")]
    assert counts(result) == expected("json", complete=True, recovered=1)


# --- fenced code blocks and prose ---------------------------------------------------------------


def test_fenced_json_with_prose_around_it_is_parsed_and_prose_kept():
    result = parse_fixture("fenced_with_prose.txt")
    assert found(result) == [
        ("Albert Einstein", "developed", "the theory of relativity"),
        ("Albert Einstein", "received", "the Nobel Prize in Physics"),
    ]
    assert counts(result) == expected("json-wrapped", complete=True, recovered=2)
    assert result.diagnostics.prose == [
        "Sure! Here are the triples extracted from the sentence:",
        "Let me know if you need anything else!",
    ]


@pytest.mark.parametrize("fence", ["```", "```json", "```JSON", "~~~json"])
def test_any_code_fence_is_stripped(fence):
    closing = fence[:3]
    text = f'{fence}\n[{{"s": "a", "relation": "b", "object": "c"}}]\n{closing}'
    result = parse_triples(text)
    assert found(result) == [("a", "b", "c")]
    assert counts(result) == expected("json-wrapped", complete=True, recovered=1)
    assert result.diagnostics.prose == []


def test_brackets_in_prose_are_not_mistaken_for_the_answer():
    text = (
        'The answer [see note 1] is: [{"s": "a", "relation": "b", "object": "c"}] '
        "Hope this helps [1]!"
    )
    result = parse_triples(text)
    assert found(result) == [("a", "b", "c")]
    assert counts(result) == expected("json-wrapped", complete=True, recovered=1)
    assert result.diagnostics.prose == ["The answer [see note 1] is:", "Hope this helps [1]!"]


# --- truncated JSON -----------------------------------------------------------------------------


def test_truncated_json_keeps_complete_triples_and_counts_the_cut_item():
    result = parse_fixture("truncated.txt")
    assert found(result) == [
        ("The Amazon", "is", "the largest rainforest"),
        ("The Amazon", "spans", "nine countries"),
    ]
    assert counts(result) == expected(
        "truncated-json", complete=False, recovered=2, partial_items=1, truncated=True
    )
    assert result.ok
    errors = result.diagnostics.errors
    assert (
        errors[0]
        == "recovered 2 triple(s) (truncated-json); dropped 0 duplicate(s), 0 invalid, 1 cut off"
    )
    assert "is cut off at line 1 col 189" in errors[1]
    assert (
        errors[2]
        == "dropped item 3 of the JSON at line 1 col 1: it was cut off by the end of the text"
    )


def test_truncated_wrapper_object_keeps_the_complete_triples_inside():
    result = parse_fixture("truncated_wrapped.txt")
    assert found(result) == [
        ("Kyoto", "was the capital of", "Japan"),
        ("Kyoto", "has", "over 1,600 temples"),
    ]
    assert counts(result) == expected(
        "truncated-json", complete=False, recovered=2, partial_items=1, truncated=True
    )


@pytest.mark.parametrize(
    ("text", "triples", "partial"),
    [
        # cut before the closing bracket: nothing is lost
        (
            '[{"s": "a", "relation": "b", "object": "c"}, ["d", "e", "f"]',
            [("a", "b", "c"), ("d", "e", "f")],
            0,
        ),
        ('[{"s": "a", "relation": "b", "object": "c"}, ', [("a", "b", "c")], 0),
        # cut inside the last value, key or object
        ('[{"s": "a", "relation": "b", "object": "c', [], 1),
        ('[{"s": "a", "relation": "b", "object": "c"}, {"s": "x"', [("a", "b", "c")], 1),
        ('[{"s": "a", "relation": "b", "object": "c"}, {"', [("a", "b", "c")], 1),
        ('[["a", "b", "c"], ["d", "e"', [("a", "b", "c")], 1),
        ('[["a", "b", "c"], ["d", "e", 12', [("a", "b", "c")], 1),
    ],
)
def test_truncated_json_never_completes_a_cut_item(text, triples, partial):
    result = parse_triples(text)
    assert found(result) == triples
    assert counts(result) == expected(
        "truncated-json", False, len(triples), partial_items=partial, truncated=True
    )


# --- several blocks, repairs --------------------------------------------------------------------


def test_several_json_blocks_are_merged_in_order():
    result = parse_fixture("several_blocks.txt")
    assert found(result) == [("Shakespeare", "wrote", "Hamlet"), ("Hamlet", "is set in", "Denmark")]
    assert counts(result) == expected("json-wrapped", complete=True, recovered=2)
    assert result.diagnostics.prose == ["The first clause gives:", "The second clause gives:"]


def test_json_and_line_formats_together_are_mixed():
    result = parse_fixture("mixed.txt")
    assert found(result) == [
        ("Mars", "is", "the fourth planet from the Sun"),
        ("Mars", "has", "two moons"),
    ]
    assert counts(result) == expected("mixed", complete=True, recovered=2)
    assert result.diagnostics.prose == ["Also:"]


def test_single_quotes_trailing_commas_and_tuples_are_repaired():
    result = parse_fixture("python_style.txt")
    assert found(result) == [
        ("Van Gogh", "painted", "The Starry Night"),
        ("Van Gogh's brother", "was", "Theo"),
        ("Van Gogh", "was born in", "Zundert"),
    ]
    assert counts(result) == expected("json-repaired", complete=True, recovered=3)


@pytest.mark.parametrize(
    "text",
    [
        '[{"s": "a", "relation": "b", "object": "c",},]',
        "[{'s': 'a', 'relation': 'b', 'object': 'c'}]",
        '[{s: "a", relation: "b", object: "c"}]',
        '[{"s": "a", "relation": "b", "object": "c"}, , ]',
        '[{"s": "a", "relation": "b" "object": "c"}]',
    ],
)
def test_common_json_slips_are_repaired(text):
    result = parse_triples(text)
    assert found(result) == [("a", "b", "c")]
    assert counts(result) == expected("json-repaired", complete=True, recovered=1)


def test_broken_json_keeps_the_items_around_the_break_and_is_incomplete():
    result = parse_fixture("broken_json.txt")
    assert found(result) == [
        ("Bach", "composed", "the Brandenburg Concertos"),
        ("Bach", "was born in", "Eisenach"),
    ]
    assert counts(result) == expected("json-repaired", complete=False, recovered=2, invalid_items=1)
    assert any("breaks (unexpected 'w') at line 3 col 29" in e for e in result.diagnostics.errors)


# --- line formats -------------------------------------------------------------------------------


def test_numbered_semicolon_tuples_are_read():
    result = parse_fixture("lines_semicolon.txt")
    assert found(result) == [
        ("Leonardo da Vinci", "painted", "the Mona Lisa"),
        ("Leonardo da Vinci", "was born in", "Vinci"),
        ("the Mona Lisa", "is displayed in", "the Louvre (Paris)"),
    ]
    assert counts(result) == expected("lines", complete=True, recovered=3)
    assert result.diagnostics.prose == ["Here are the extracted triples:"]


def test_bulleted_pipe_lines_are_read():
    result = parse_fixture("lines_pipe.txt")
    assert found(result) == [
        ("Tesla", "was founded in", "2003"),
        ("Tesla", "is led by", "Elon Musk"),
        ("Tesla", "makes", "electric cars"),
    ]
    assert counts(result) == expected("lines", complete=True, recovered=3)


def test_arrow_lines_are_read_and_a_final_full_stop_dropped():
    result = parse_fixture("lines_arrow.txt")
    assert found(result) == [
        ("Beethoven", "composed", "nine symphonies"),
        ("Beethoven", "was born in", "Bonn"),
    ]
    assert counts(result) == expected("lines", complete=True, recovered=2)
    assert result.diagnostics.prose == ["Triples:"]


def test_numbered_lines_with_any_arrow_are_read():
    text = "1. a → b → c\n2) d => e => f\n3. g --> h --> i\n(4) j ⟶ k ⟶ l"
    result = parse_triples(text)
    assert found(result) == [("a", "b", "c"), ("d", "e", "f"), ("g", "h", "i"), ("j", "k", "l")]
    assert counts(result) == expected("lines", complete=True, recovered=4)


def test_markdown_table_rows_are_read_without_the_header():
    result = parse_fixture("markdown_table.txt")
    assert found(result) == [
        ("Mount Everest", "is located in", "the Himalayas"),
        ("Mount Everest", "is", "8,849 metres tall"),
    ]
    assert counts(result) == expected("lines", complete=True, recovered=2)


def test_a_numbered_table_column_is_not_a_subject():
    text = "| # | s | relation | object |\n|---|---|---|---|\n| 1 | x | y | z |\n| 2 | u | v | w |"
    result = parse_triples(text)
    assert found(result) == [("x", "y", "z"), ("u", "v", "w")]
    assert counts(result) == expected("lines", complete=True, recovered=2)


def test_comma_tuples_are_read_only_when_unambiguous():
    result = parse_fixture("lines_comma_tuple.txt")
    assert found(result) == [
        ("Mozart", "composed", "The Magic Flute"),
        ("Mozart", "was born in", "Salzburg, Austria"),
    ]
    assert counts(result) == expected("lines", complete=True, recovered=2)
    # four comma-separated parts could be split several ways; the line stays prose
    assert result.diagnostics.prose == [
        "(Mozart, married, Constanze Weber, in 1782) (see the sentence above)"
    ]


def test_labelled_parts_and_several_groups_on_one_line_are_read():
    result = parse_triples("Triple 1: S: a | R: b | O: c\n- (d; e; f), (g; h; i)")
    assert found(result) == [("a", "b", "c"), ("d", "e", "f"), ("g", "h", "i")]
    assert counts(result) == expected("lines", complete=True, recovered=3)


@pytest.mark.parametrize(
    ("text", "triples"),
    [
        ("TRIPLE -> is -> a word", [("TRIPLE", "is", "a word")]),
        ("Fact-checking -> is -> slow", [("Fact-checking", "is", "slow")]),
        ("Triple 2 - Fact-checking -> is -> slow", [("Fact-checking", "is", "slow")]),
    ],
)
def test_a_label_word_starting_the_subject_is_kept(text, triples):
    result = parse_triples(text)
    assert found(result) == triples
    assert counts(result) == expected("lines", complete=True, recovered=1)


def test_a_code_fence_inside_a_line_splits_it_and_never_joins_fields():
    result = parse_triples("Here```(a; b; c)```\nx``` y -> r -> o")
    assert found(result) == [("a", "b", "c"), ("y", "r", "o")]
    assert counts(result) == expected("lines", complete=True, recovered=2)
    assert result.diagnostics.prose == ["Here", "x"]


def test_lines_with_two_parts_are_prose_not_triples():
    result = parse_triples('Input -> Output\n[{"s": "a", "relation": "b", "object": "c"}]\na | b')
    assert found(result) == [("a", "b", "c")]
    assert counts(result) == expected("json-wrapped", complete=True, recovered=1)
    assert result.diagnostics.prose == ["Input -> Output", "a | b"]


def test_a_bracketed_group_with_two_parts_is_an_invalid_triple():
    result = parse_triples("(Mozart; composed)")
    assert found(result) == []
    assert counts(result) == expected("none", complete=False, recovered=0, invalid_items=1)
    assert result.diagnostics.errors[1] == "dropped line 1: it has 2 usable parts, needs 3"


# --- n-ary --------------------------------------------------------------------------------------


def test_nary_lists_join_extra_arguments_into_the_object_and_keep_the_list():
    result = parse_fixture("nary_lists.txt")
    assert found(result) == [
        ("Obama", "was born in", "Honolulu in 1961"),
        ("Obama", "moved to", "Chicago in 1985 to work as a community organizer"),
        ("Obama", "studied at", "Harvard"),
    ]
    assert result.nary == [
        ["Obama", "was born in", "Honolulu", "in 1961"],
        ["Obama", "moved to", "Chicago", "in 1985", "to work as a community organizer"],
    ]
    assert counts(result) == expected("json", complete=True, recovered=3)


@pytest.mark.parametrize(
    "text",
    [
        '[{"arg1": "a", "rel": "b", "arg2": "c", "arg3": "d"}]',
        '[{"relation": "b", "args": ["a", "c", "d"]}]',
        "(a; b; c; d)",
        "a | b | c | d",
    ],
)
def test_nary_objects_and_lines_keep_every_argument(text):
    result = parse_triples(text)
    assert found(result) == [("a", "b", "c d")]
    assert result.nary == [["a", "b", "c", "d"]]
    assert result.diagnostics.complete


# --- duplicates, empty answers, prose -----------------------------------------------------------


def test_duplicates_ignoring_case_and_spacing_are_dropped_and_counted():
    result = parse_fixture("duplicates.txt")
    assert found(result) == [
        ("Google", "was founded by", "Larry Page"),
        ("Google", "was founded by", "Sergey Brin"),
    ]
    assert counts(result) == expected("json", complete=True, recovered=2, duplicates_dropped=2)
    assert result.diagnostics.errors[1:] == [
        "dropped item 2 of the JSON at line 1 col 1: "
        "a duplicate of ('google', 'was founded by', 'Larry Page')",
        "dropped item 4 of the JSON at line 1 col 1: "
        "a duplicate of ('Google', 'was founded by', 'Larry Page')",
    ]


def test_duplicates_across_json_and_lines_are_dropped():
    text = '[{"s": "a", "relation": "b", "object": "c"}]\n(a; b; c)\nA | B | C'
    result = parse_triples(text)
    assert found(result) == [("a", "b", "c")]
    # the strategy names where the kept triples came from: all from the JSON
    assert counts(result) == expected(
        "json-wrapped", complete=True, recovered=1, duplicates_dropped=2
    )


@pytest.mark.parametrize("text", ["[]", "  []\n", "```json\n[]\n```", '{"triples": []}'])
def test_empty_list_is_a_complete_answer_with_no_triples(text):
    result = parse_triples(text)
    assert found(result) == []
    assert result.diagnostics.complete
    assert result.diagnostics.recovered == 0
    assert result.diagnostics.strategy in {"json", "json-wrapped"}
    assert result.ok


def test_empty_list_fixture_is_strict_json():
    result = parse_fixture("empty_list.txt")
    assert counts(result) == expected("json", complete=True, recovered=0)


def test_pure_prose_parses_nothing():
    result = parse_fixture("no_answer.txt")
    assert found(result) == []
    assert counts(result) == expected("none", complete=False, recovered=0)
    assert result.diagnostics.prose == [
        "I'm sorry, but the sentence does not seem to contain any facts that I can extract. "
        "Could you provide a different sentence?"
    ]
    assert not result.ok


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "Einstein (1879-1955) was born in Ulm.",
        "[1] Einstein, A. (1905). Annalen der Physik.",
        "I think {this} is fine, and [that] too.",
        "[1, 2, 3]",
        "The matrix [[1, 0], [0, 1]] is the identity; [[1, 2, 3]] is a row.",
    ],
)
def test_prose_with_brackets_or_nothing_gives_no_triples(text):
    result = parse_triples(text)
    assert found(result) == []
    assert counts(result) == expected("none", complete=False, recovered=0)


# --- invalid items ------------------------------------------------------------------------------


def test_invalid_items_are_dropped_counted_and_explained_never_filled_in():
    result = parse_fixture("invalid_items.txt")
    assert found(result) == [("Apple", "makes", "the iPhone"), ("Apple", "was founded in", "1976")]
    assert counts(result) == expected("json", complete=False, recovered=2, invalid_items=5)
    assert result.diagnostics.errors[1:] == [
        "dropped item 2 of the JSON at line 1 col 1: relation is empty",
        "dropped item 3 of the JSON at line 1 col 1: missing relation",
        "dropped item 4 of the JSON at line 1 col 1: it has 2 parts, a triple needs 3",
        "dropped item 5 of the JSON at line 1 col 1: object is null",
        "dropped item 6 of the JSON at line 1 col 1: it is a str, not an object or a list",
    ]
    assert result.ok  # something usable was kept


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ('{"s": "   ", "relation": "b", "object": "c"}', "subject is empty"),
        ('{"s": {"x": "y"}, "relation": "b", "object": "c"}', "subject is a dict"),
        ('{"s": "a", "relation": ["b"], "object": "c"}', "relation is a list"),
        ('{"s": "a", "relation": "b", "object": true}', "object is a boolean"),
        ('{"s": "a", "relation": "b"}', "missing object"),
        ('["a", "", "c"]', "part 2 is empty"),
        ('["a", null, "c"]', "part 2 is null"),
        ('{"s": "a", "relation": 5, "object": "c"}', "relation is a number, not a relation"),
    ],
)
def test_an_unusable_field_makes_the_item_invalid(item, why):
    result = parse_triples(f'[{item}, {{"s": "x", "relation": "y", "object": "z"}}]')
    assert found(result) == [("x", "y", "z")]
    assert counts(result) == expected("json", complete=False, recovered=1, invalid_items=1)
    assert result.diagnostics.errors[1] == f"dropped item 1 of the JSON at line 1 col 1: {why}"


# --- what the embedded SmolLM2 writes -----------------------------------------------------------


def test_json_list_followed_by_chatter_and_a_repeat_keeps_one_copy():
    result = parse_fixture("json_then_chatter.txt")
    assert found(result) == [
        ("Marie Curie", "won", "the Nobel Prize in Chemistry"),
        ("Marie Curie", "won the Nobel Prize in", "1911"),
    ]
    assert counts(result) == expected(
        "json-wrapped", complete=True, recovered=2, duplicates_dropped=2
    )
    assert result.diagnostics.prose[-1] == (
        "I hope this helps! Let me know if you have any other sentences."
    )


def test_repetition_loop_cut_by_max_tokens_keeps_each_triple_once():
    result = parse_fixture("repeated_loop_cut.txt")
    assert found(result) == [
        ("The Danube", "flows through", "Vienna"),
        ("The Danube", "flows into", "the Black Sea"),
    ]
    assert counts(result) == expected(
        "truncated-json",
        complete=False,
        recovered=2,
        duplicates_dropped=4,
        partial_items=1,
        truncated=True,
    )


@pytest.mark.parametrize(
    ("name", "triples", "diagnostics"),
    [
        (  # a list of objects that all lack "object", looping until max_new_tokens
            "smollm2_missing_object_loop_cut.txt",
            [],
            expected("truncated-json", False, 0, invalid_items=6, partial_items=1, truncated=True),
        ),
        (  # only "s" in every object
            "smollm2_subject_only_items.txt",
            [],
            expected("json", False, 0, invalid_items=4),
        ),
        (  # one good triple, then objects without "object"
            "smollm2_partly_complete_items.txt",
            [("Fado", "is", "melancholic genre of Portuguese song")],
            expected("json", False, 1, invalid_items=4),
        ),
        (  # `{"s": "energy"}` looping until max_new_tokens
            "smollm2_subject_loop_cut.txt",
            [],
            expected("truncated-json", False, 0, invalid_items=23, partial_items=1, truncated=True),
        ),
        (  # prose, then a fenced list cut off inside its first object
            "smollm2_chatter_then_fenced_cut.txt",
            [],
            expected("truncated-json", False, 0, partial_items=1, truncated=True),
        ),
        (  # an object whose fields are objects
            "smollm2_nested_object.txt",
            [],
            expected("json-wrapped", False, 0, invalid_items=1),
        ),
        (  # objects nested in objects until max_new_tokens
            "smollm2_nested_loop_cut.txt",
            [],
            expected("truncated-json", False, 0, partial_items=1, truncated=True),
        ),
        ("smollm2_sentence_echo.txt", [], expected("none", False, 0)),
        ("smollm2_instruction_echo_loop.txt", [], expected("none", False, 0)),
    ],
)
def test_real_smollm2_answers_keep_only_whole_triples(name, triples, diagnostics):
    result = parse_fixture(name)
    assert found(result) == triples
    assert counts(result) == diagnostics


def test_real_smollm2_answer_with_a_complete_triple_is_complete():
    result = parse_fixture("smollm2_one_triple.txt")
    assert found(result) == [
        (
            "Shareholders rejected the proposed merger with Calder Steel on Tuesday",
            "on",
            "Shareholders rejected the proposed merger with Calder Steel",
        )
    ]
    assert counts(result) == expected("json", complete=True, recovered=1)


def test_real_smollm2_prose_is_reported():
    result = parse_fixture("smollm2_sentence_echo.txt")
    assert result.diagnostics.prose[:2] == [
        "The Rhône rises in the Swiss Alps and flows into the Mediterranean Sea.",
        "The triplets are:",
    ]


# --- never invent; the API ----------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.name for p in FIXTURE_FILES])
def test_every_parsed_field_occurs_in_the_text(path):
    text = path.read_text(encoding="utf-8")
    result = parse_triples(text)
    assert_grounded(result, text)
    d = result.diagnostics
    assert d.recovered == len(result.triples)
    if d.complete:
        assert d.strategy != "none"
        assert (d.invalid_items, d.partial_items, d.truncated) == (0, 0, False)


def test_format_triples_writes_the_shared_json_format():
    triples = [
        Triple(s="a", relation="b", object='c "d"'),
        Triple(s="é", relation="f", object="g"),
    ]
    text = format_triples(triples)
    assert json.loads(text) == [
        {"s": "a", "relation": "b", "object": 'c "d"'},
        {"s": "é", "relation": "f", "object": "g"},
    ]
    assert parse_triples(text).triples == triples


def test_a_non_string_answer_is_a_clear_error():
    with pytest.raises(ChainError, match="expected the model's answer as a str, got bytes"):
        parse_triples(b'[["a", "b", "c"]]')  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------------------

TRICKY = "\"'{}[]()|;:,.-><=`*#\\/\n\t "
field = st.text(
    st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8")), min_size=1, max_size=24
).filter(lambda text: collapse_whitespace(text) != "")
triples_lists = st.lists(st.builds(Triple, s=field, relation=field, object=field), max_size=6)
# prose with no brackets or braces, and no pipe, semicolon or arrow that would make a line a triple
PROSE_CHARS = string.ascii_letters + string.digits + " .,!?:'\"-\n" + "éßçøΩЖ中文"
prose = st.text(st.sampled_from(PROSE_CHARS), max_size=80)


def serialise(triples: list[Triple], how: str) -> str:
    dicts = [t.model_dump() for t in triples]
    return {
        "json": lambda: json.dumps(dicts),
        "json-unicode": lambda: json.dumps(dicts, ensure_ascii=False),
        "json-indented": lambda: json.dumps(dicts, indent=2),
        "format_triples": lambda: format_triples(triples),
        "fenced": lambda: f"```json\n{format_triples(triples)}\n```",
        "wrapped": lambda: json.dumps({"triples": dicts}),
        "lists": lambda: json.dumps([list(t.as_tuple()) for t in triples]),
    }[how]()


def unique(triples: list[Triple]) -> list[Triple]:
    """The parser's de-duplication: the first of triples equal ignoring case."""
    seen, kept = set(), []
    for triple in triples:
        key = tuple(part.casefold() for part in triple.as_tuple())
        if key not in seen:
            seen.add(key)
            kept.append(triple)
    return kept


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    triples=triples_lists,
    how=st.sampled_from(
        ["json", "json-unicode", "json-indented", "format_triples", "fenced", "wrapped", "lists"]
    ),
    before=prose,
    after=prose,
)
def test_serialised_triples_inside_prose_round_trip_exactly(triples, how, before, after):
    result = parse_triples(before + serialise(triples, how) + after)
    assert result.triples == unique(triples)
    d = result.diagnostics
    assert d.complete
    assert d.duplicates_dropped == len(triples) - len(unique(triples))
    assert (d.invalid_items, d.partial_items, d.truncated) == (0, 0, False)


# fields a line format can carry: words, starting and ending with a letter or digit, and not a
# bare column name (a table row made only of those is a header)
COLUMN_NAMES = {
    *("s", "subject", "subj", "head", "h", "arg1", "source", "relation", "rel", "r"),
    *("predicate", "pred", "p", "relationship", "verb", "object", "obj", "o", "tail", "t"),
    *("arg2", "target", "no"),
}
line_field = st.text(
    st.sampled_from(string.ascii_letters + string.digits + " ',-éß中"), min_size=1, max_size=20
).filter(
    lambda text: (
        (field := collapse_whitespace(text))
        and field[0].isalnum()
        and field[-1].isalnum()
        and field.casefold() not in COLUMN_NAMES
    )
)
LINE_FORMATS = [
    "({}; {}; {})",
    "- ({}; {}; {})",
    "{} | {} | {}",
    "| {} | {} | {} |",
    "{} -> {} -> {}",
    "1. {} -> {} -> {}",
    "* {} → {} → {}",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    triples=st.lists(st.builds(Triple, s=line_field, relation=line_field, object=line_field)),
    line_format=st.sampled_from(LINE_FORMATS),
)
def test_line_formatted_triples_round_trip(triples, line_format):
    text = "\n".join(line_format.format(*t.as_tuple()) for t in triples[:6])
    result = parse_triples(text)
    assert result.triples == unique(triples[:6])
    assert result.diagnostics.strategy == ("lines" if triples else "none")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_never_raises_on_any_text(text):
    result = parse_triples(text)
    assert result.diagnostics.recovered == len(result.triples)


# answer-like text without backslashes (a JSON escape is the one way a field may differ from
# its spelling in the text)
structured_text = st.lists(
    st.one_of(
        st.sampled_from(TRICKY.replace("\\", "")),
        st.sampled_from(['"s": ', '"relation": ', '"object": ', "->", " | ", "```", "\n1. "]),
        st.sampled_from(string.ascii_letters + "0123456789"),
    ),
    max_size=120,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(structured_text)
def test_parse_never_invents_a_field(text):
    result = parse_triples(text)
    assert_grounded(result, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    triples=st.lists(st.builds(Triple, s=field, relation=field, object=field), min_size=1),
    ascii_only=st.booleans(),
    before=prose,
    data=st.data(),
)
def test_json_cut_anywhere_keeps_exactly_the_complete_triples(triples, ascii_only, before, data):
    items = [json.dumps(t.model_dump(), ensure_ascii=ascii_only) for t in triples[:6]]
    text = "[" + ", ".join(items) + "]"
    starts = [1 + sum(len(item) + 2 for item in items[:n]) for n in range(len(items))]
    ends = [start + len(item) for start, item in zip(starts, items, strict=True)]
    cut = data.draw(st.integers(min_value=starts[0] + 1, max_value=len(text) - 1), label="cut")
    result = parse_triples(before + text[:cut])
    whole = [t for t, end in zip(triples, ends, strict=False) if end <= cut]
    assert result.triples == unique(whole)
    started = any(start < cut < end for start, end in zip(starts, ends, strict=True))
    assert counts(result) == expected(
        "truncated-json",
        complete=False,
        recovered=len(unique(whole)),
        duplicates_dropped=len(whole) - len(unique(whole)),
        partial_items=int(started),
        truncated=True,
    )
