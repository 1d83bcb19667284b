"""Loaders read the real benchmarks and reject each kind of malformed row with file:line."""

from pathlib import Path

import pytest

from triplesmith.data.benchie import read_benchie_gold
from triplesmith.data.carb import load_carb_dir, read_carb_gold
from triplesmith.data.jsonl import read_jsonl, write_jsonl
from triplesmith.data.registry import load_dataset
from triplesmith.errors import DatasetError
from triplesmith.schema import Triple

FIX = Path(__file__).parent / "fixtures" / "data"


def test_carb_gold_keeps_nary_tuples_and_joins_extra_args_into_object(carb_dir):
    splits = load_carb_dir(carb_dir)
    assert len(splits["test"]) == 634 and len(splits["dev"]) == 638
    nary = [(e, t) for e in splits["test"] for t in e.meta["carb_tuples"] if len(t["args"]) > 2]
    example, tuple_ = nary[0]
    joined = Triple(
        s=tuple_["args"][0], relation=tuple_["relation"], object=" ".join(tuple_["args"][1:])
    )
    assert joined in example.triples


def test_carb_relation_comes_first(carb_dir):
    example = load_carb_dir(carb_dir)["test"][0]
    assert example.triples[0] == Triple(
        s="32.7 % of all households", relation="were made up of", object="individuals"
    )


def test_benchie_clusters_kept_with_optional_tokens(benchie_dir):
    examples = read_benchie_gold(benchie_dir / "gold_en.txt")
    assert len(examples) == 300
    first = examples[0]
    assert first.meta["benchie_clusters"][0][0] == [
        "He",
        "served as",
        "[the] [first] Prime Minister [of Australia]",
    ]
    assert first.triples[0].object == "the first Prime Minister of Australia"


def test_sample_dataset_is_embedded_with_a_fixed_split():
    sample = load_dataset("sample")
    assert len(sample) >= 60 and all(e.triples for e in sample)
    train, test = load_dataset("sample:train"), load_dataset("sample:test")
    assert len(test) == 20 and len(train) == len(sample) - 20
    assert not {e.id for e in train} & {e.id for e in test}


def test_jsonl_round_trip(tmp_path):
    examples = load_dataset("sample")[:5]
    write_jsonl(tmp_path / "x.jsonl", examples)
    assert read_jsonl(tmp_path / "x.jsonl") == examples


@pytest.mark.parametrize(
    ("reader", "name", "expected"),
    [
        (
            lambda p: read_carb_gold(p, "test"),
            "carb_bad_columns.tsv",
            r"carb_bad_columns.tsv:2: expected at least 3",
        ),
        (
            lambda p: read_carb_gold(p, "test"),
            "carb_empty_sentence.tsv",
            r"carb_empty_sentence.tsv:1: empty sentence",
        ),
        (
            lambda p: read_carb_gold(p, "test"),
            "carb_bad_bytes.tsv",
            r"carb_bad_bytes.tsv:2: undecodable bytes",
        ),
        (
            read_benchie_gold,
            "benchie_bad_triple.txt",
            r"benchie_bad_triple.txt:3: expected `subject --> relation --> object`",
        ),
        (
            read_benchie_gold,
            "benchie_no_header.txt",
            r"benchie_no_header.txt:1: expected a `sent_id:N",
        ),
        (read_benchie_gold, "benchie_empty_sentence.txt", r"benchie_empty_sentence.txt:1: "),
        (read_benchie_gold, "benchie_bad_bytes.txt", r"benchie_bad_bytes.txt:1: undecodable bytes"),
        (read_jsonl, "jsonl_bad_json.jsonl", r"jsonl_bad_json.jsonl:2: invalid JSON"),
        (
            read_jsonl,
            "jsonl_triples_string.jsonl",
            r'jsonl_triples_string.jsonl:1: "triples" must be a list of \{s, relation, object\}, got "Obama born Hawaii"',
        ),
        (read_jsonl, "jsonl_empty_sentence.jsonl", r'jsonl_empty_sentence.jsonl:1: "sentence"'),
        (read_jsonl, "jsonl_empty_object.jsonl", r'jsonl_empty_object.jsonl:1: "triples.0.object"'),
        (
            read_jsonl,
            "jsonl_duplicate_id.jsonl",
            r"jsonl_duplicate_id.jsonl:2: duplicate id 'a' \(first on line 1\)",
        ),
        (read_jsonl, "jsonl_not_object.jsonl", r"jsonl_not_object.jsonl:1: expected a JSON object"),
        (read_jsonl, "jsonl_bad_bytes.jsonl", r"jsonl_bad_bytes.jsonl:1: undecodable bytes"),
    ],
)
def test_malformed_rows_name_file_and_line(reader, name, expected):
    with pytest.raises(DatasetError, match=expected):
        reader(FIX / name)


def test_unknown_dataset_name_says_what_is_accepted():
    with pytest.raises(DatasetError, match="give 'sample', a .jsonl file"):
        load_dataset("no-such-dataset")
