"""The study's verdict: the fine-tuned chain against few-shot, and the targets, stated plainly."""

import pytest
from test_compare import all_right
from test_experiments import EXAMPLES, half_right

from triplesmith.experiments.compare import compare
from triplesmith.verdict import verdict_lines

FEW, FINE = "zero-shot:verdict-half", "zero-shot:verdict-all"


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    half_right("verdict-half")
    all_right("verdict-all")
    store = tmp_path_factory.mktemp("store") / "s.sqlite"
    return compare([FEW, FINE], EXAMPLES, "triple-f1,format,carb", store=store)


def test_the_verdict_table_holds_the_paired_test_and_the_relative_gain(comparison) -> None:  # noqa: ANN001
    lines = verdict_lines(comparison, FEW, FINE, whole_carb_test=False)
    test = comparison.paired.set_index(["chain", "metric"]).loc[(FINE, "triple_f1")]
    row = next(line for line in lines if line.startswith("| triple F1"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:3] == ["0.500", "1.000"]  # the table's means
    assert cells[3] == f"+0.500 [{test['low']:+.3f}, {test['high']:+.3f}]"
    assert cells[4] == f"{test['p_value']:.3f}" and cells[5] == "×2.0" and cells[6] == "6"
    corpus = next(line for line in lines if line.startswith("| CaRB F1 (corpus)"))
    assert f"{comparison.table.loc[FINE, 'carb_f1']:.3f}" in corpus
    assert not any("OpenIE-4" in line for line in lines)  # only on the whole CaRB test set


def test_a_large_gain_without_significance_is_not_met(comparison) -> None:  # noqa: ANN001
    text = "\n".join(verdict_lines(comparison, FEW, FINE, whole_carb_test=True))
    # Twice as good, but on six sentences: p = 0.25, so the +29 % target is not met.
    assert "relative on triple F1, p < 0.05: **not met** (×2.0, p = 0.250)" in text
    assert "`format_error` below 2 %: **met** (0.0 %, 0 of 6)" in text
    assert "against OpenIE-4 on CaRB test (F1 0.488, AUC 0.272): **beaten**" in text


def test_the_verdict_says_not_met_when_the_fine_tuned_chain_is_worse(comparison) -> None:  # noqa: ANN001
    text = "\n".join(verdict_lines(comparison, FINE, FEW, whole_carb_test=True))
    assert "| triple F1 (per sentence) | 1.000 | 0.500 | -0.500 [" in text
    assert "relative on triple F1, p < 0.05: **not met** (-50 %" in text
    f1 = comparison.table.loc[FEW, "carb_f1"]
    assert f"(CaRB F1 {f1:.3f}, {f1 / 0.488 * 100:.0f} % of OpenIE-4's;" in text
