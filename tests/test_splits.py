"""`data prepare` writes leak-free splits and refuses leaking ones."""

import json
import subprocess
import sys

import pytest

from triplesmith.data.jsonl import read_jsonl
from triplesmith.data.split import check_no_leak, make_split, write_split
from triplesmith.errors import DatasetError
from triplesmith.schema import Example
from triplesmith.text import normalise_sentence


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "triplesmith.cli.app", *args], capture_output=True, text=True
    )


def keys(examples):
    return {normalise_sentence(e.sentence) for e in examples}


def test_benchmark_split_tests_on_all_gold_bearing_carb_test_sentences(
    tmp_path, carb_dir, benchie_dir
):
    result = run_cli(
        "data",
        "prepare",
        "--carb-dir",
        str(carb_dir),
        "--benchie-dir",
        str(benchie_dir),
        "--out",
        str(tmp_path / "split"),
    )
    assert result.returncode == 0, result.stderr
    train = read_jsonl(tmp_path / "split" / "train.jsonl")
    test = read_jsonl(tmp_path / "split" / "test.jsonl")
    assert len(test) == 634 and all(e.source == "carb-test" for e in test)
    assert len(train) == 638
    assert not keys(train) & keys(test)
    manifest = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert manifest["counts"]["test_sentences"] == 634
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"])
    assert sum("benchie_clusters" in e.meta for e in test) > 100


def test_random_split_is_seeded_deduplicated_and_leak_free(tmp_path, carb_dir, benchie_dir):
    result = run_cli(
        "data",
        "prepare",
        "--carb-dir",
        str(carb_dir),
        "--benchie-dir",
        str(benchie_dir),
        "--out",
        str(tmp_path / "r"),
        "--split",
        "random",
        "--test-size",
        "100",
        "--seed",
        "1",
    )
    assert result.returncode == 0, result.stderr
    train = read_jsonl(tmp_path / "r" / "train.jsonl")
    test = read_jsonl(tmp_path / "r" / "test.jsonl")
    assert len(test) == 100
    assert not keys(train) & keys(test)
    assert len(keys(train)) == len(train)  # duplicates merged
    again, _, _ = make_split(carb_dir, benchie_dir, "random", 100, 1)
    assert [e.id for e in again] == [e.id for e in train]


def test_leaking_split_is_refused_and_nothing_is_written(tmp_path):
    a = Example(id="a", sentence="Obama was born in Hawaii .", triples=[])
    b = Example(id="b", sentence="obama was born in hawaii.", triples=[])
    with pytest.raises(DatasetError, match="1 test sentences also appear in train"):
        check_no_leak([a], [b])
    _, _, manifest = make_split_stub()
    with pytest.raises(DatasetError):
        write_split(tmp_path / "out", [a], [b], manifest)
    assert not (tmp_path / "out").exists()


def make_split_stub():
    from triplesmith.data.split import SplitManifest

    return (
        [],
        [],
        SplitManifest(split="random", rule="x", seed=0, test_size=1, sources=[], counts={}),
    )


def test_bad_carb_dir_is_a_clear_cli_error(tmp_path):
    result = run_cli("data", "prepare", "--carb-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "must point at a CaRB checkout" in result.stderr
    assert "Traceback" not in result.stderr
