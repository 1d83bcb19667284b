"""`triplesmith score carb|benchie`: the real CLI on shipped outputs, tables, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from triplesmith.cli.app import app

CARB_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "carb"
BENCHIE_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchie"

runner = CliRunner()


def _score(*args: str):
    return runner.invoke(app, ["score", *map(str, args)])


def _carb_openie4_args(carb_dir: Path) -> list[str]:
    return [
        "carb",
        "--gold",
        str(carb_dir / "gold" / "test.tsv"),
        "--pred",
        str(carb_dir / "system_outputs" / "openie4_test.txt"),
        "--format",
        "openie4",
        "--json",
    ]


def test_carb_openie4_json_gives_the_papers_figures(carb_dir):
    result = _score(*_carb_openie4_args(carb_dir))
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    # CaRB paper and reference scorer: AUC 0.272, P 0.553, R 0.437, F1 0.488.
    assert round(figures["auc"], 3) == 0.272
    assert round(figures["f1"], 3) == 0.488
    assert (round(figures["precision"], 3), round(figures["recall"], 3)) == (0.553, 0.437)
    assert figures["unmatched_sentences"] == 2457


def test_installed_entry_point_prints_the_same_json(carb_dir):
    completed = subprocess.run(
        [sys.executable, "-m", "triplesmith.cli.app", "score", *_carb_openie4_args(carb_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout)
    assert (round(figures["auc"], 3), round(figures["f1"], 3)) == (0.272, 0.488)


def test_carb_binary_on_the_small_fixture_matches_the_reference():
    result = _score(
        "carb",
        "--gold",
        CARB_FIXTURES / "gold_small.tsv",
        "--pred",
        CARB_FIXTURES / "predictions_small_tabbed.txt",
        "--format",
        "tabbed",
        "--binary",
        "--json",
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    # The reference scorer with --binary on these two fixture files: AUC 0.819, F1 0.932.
    assert (round(figures["auc"], 3), round(figures["f1"], 3)) == (0.819, 0.932)
    assert figures["unmatched_sentences"] == 1


def test_carb_without_json_prints_a_table_and_the_unmatched_count():
    result = _score(
        "carb",
        "--gold",
        CARB_FIXTURES / "gold_small.tsv",
        "--pred",
        CARB_FIXTURES / "predictions_small_tabbed.txt",
        "--format",
        "tabbed",
    )
    assert result.exit_code == 0, result.output
    assert "CaRB (tabbed)" in result.stdout
    assert "0.7361" in result.stdout and "0.8730" in result.stdout
    assert "1 predicted sentences are not in the gold" in result.stderr


# BenchIE's README (gkiril/benchie at d9cdb93), English gold.
BENCHIE_README = {
    "clausie": (0.5029, 0.2556, 0.3389),
    "minie": (0.4291, 0.2778, 0.3372),
    "openie6": (0.3111, 0.2141, 0.2536),
}


@pytest.mark.parametrize("system", sorted(BENCHIE_README))
def test_benchie_json_reproduces_the_readme_figures(benchie_dir, system):
    result = _score(
        "benchie",
        "--gold",
        benchie_dir / "gold_en.txt",
        "--pred",
        benchie_dir / "system_outputs" / f"{system}.txt",
        "--json",
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    got = tuple(round(figures[key], 4) for key in ("precision", "recall", "f1"))
    assert got == BENCHIE_README[system]
    assert figures["unmatched_sentences"] == 0


def test_benchie_without_json_prints_a_table(benchie_dir):
    result = _score(
        "benchie",
        "--gold",
        benchie_dir / "gold_en.txt",
        "--pred",
        benchie_dir / "system_outputs" / "clausie.txt",
    )
    assert result.exit_code == 0, result.output
    assert "BenchIE" in result.stdout
    assert "0.5029" in result.stdout and "0.3389" in result.stdout


def _assert_clean_failure(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_missing_gold_file_exits_2_naming_it():
    result = _score(
        "carb",
        "--gold",
        "no-such-gold.tsv",
        "--pred",
        CARB_FIXTURES / "predictions_small_tabbed.txt",
        "--format",
        "tabbed",
    )
    _assert_clean_failure(result, "no-such-gold.tsv", "does not exist")


def test_unknown_format_exits_2_listing_the_formats():
    result = _score(
        "carb",
        "--gold",
        CARB_FIXTURES / "gold_small.tsv",
        "--pred",
        CARB_FIXTURES / "predictions_small_tabbed.txt",
        "--format",
        "ollie",
    )
    _assert_clean_failure(result, "ollie", "openie4")


def test_malformed_prediction_line_exits_2_with_file_and_line():
    result = _score(
        "carb",
        "--gold",
        CARB_FIXTURES / "gold_small.tsv",
        "--pred",
        CARB_FIXTURES / "predictions_bad_confidence_tabbed.txt",
        "--format",
        "tabbed",
    )
    _assert_clean_failure(result, "predictions_bad_confidence_tabbed.txt:3:", "'high'")


def test_wrong_format_for_the_file_exits_2_with_a_hint(carb_dir):
    result = _score(
        "carb",
        "--gold",
        CARB_FIXTURES / "gold_small.tsv",
        "--pred",
        carb_dir / "system_outputs" / "openie4_test.txt",
        "--format",
        "tabbed",
    )
    _assert_clean_failure(result, "openie4_test.txt:1:", "in tabbed format")


def test_malformed_benchie_prediction_line_exits_2_with_file_and_line():
    result = _score(
        "benchie",
        "--gold",
        BENCHIE_FIXTURES / "gold_small.txt",
        "--pred",
        BENCHIE_FIXTURES / "predictions_three_fields.txt",
    )
    _assert_clean_failure(result, "predictions_three_fields.txt:2:")


def test_malformed_benchie_gold_exits_2_with_file_and_line():
    result = _score(
        "benchie",
        "--gold",
        BENCHIE_FIXTURES / "gold_triple_before_cluster.txt",
        "--pred",
        BENCHIE_FIXTURES / "predictions_small.txt",
    )
    _assert_clean_failure(result, "gold_triple_before_cluster.txt:2:")
