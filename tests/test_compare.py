"""compare(): the table equals what the evaluators and the statistics give; reports; the CLI;
and the acceptance run on the real embedded model (slow)."""

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_experiments import EXAMPLES, WRONG, OracleChatModel, gold_answer, half_right
from typer.testing import CliRunner

from triplesmith.chains.registry import register_chat_model
from triplesmith.cli.app import app, main
from triplesmith.data.jsonl import write_jsonl
from triplesmith.errors import ExperimentError
from triplesmith.evaluators.base import (
    Evaluator,
    Feedback,
    evaluate_all,
    read_prediction,
    summarise_all,
)
from triplesmith.evaluators.registry import get_evaluators
from triplesmith.evaluators.statistics import bootstrap_ci, paired_test, spearman
from triplesmith.experiments.compare import OPENAI_PRICES, compare, price_of
from triplesmith.schema import Example

PRICE = (1.0, 2.0)  # USD per million tokens, in / out, for the fake "cmp-all" model


def all_right(name: str) -> OracleChatModel:
    model = OracleChatModel(answers={e.sentence: gold_answer(e) for e in EXAMPLES})
    register_chat_model(name, model)
    return model


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory):
    half_right("cmp-half")
    all_right("cmp-all")
    store = tmp_path_factory.mktemp("store") / "s.sqlite"
    return compare(
        ["zero-shot:cmp-half", "zero-shot:cmp-all"],
        EXAMPLES,
        "triple-f1,format,carb",
        store=store,
        prices={"cmp-all": PRICE},
    )


def test_each_metric_is_the_mean_of_the_evaluators_scores_with_its_bootstrap_ci(result) -> None:
    evaluators = get_evaluators("triple-f1,format,carb")
    for chain, experiment in zip(result.chains, result.experiments, strict=True):
        recomputed = [evaluate_all(evaluators, r.outputs, r.example) for r in experiment.rows]
        for metric in ("triple_f1", "triple_precision", "format", "carb_example_f1"):
            scores = [next(f.score for f in fs if f.key == metric) for fs in recomputed]
            interval = bootstrap_ci(scores)
            row = result.table.loc[chain]
            assert row[metric] == pytest.approx(interval.mean)
            assert (row[f"{metric}_low"], row[f"{metric}_high"]) == (interval.low, interval.high)
        corpus = summarise_all(evaluators, [r.outputs for r in experiment.rows], EXAMPLES)
        for feedback in corpus:
            assert result.table.loc[chain, feedback.key] == feedback.score
    assert result.table.loc["zero-shot:cmp-half", "triple_f1"] == 0.5
    assert result.table.loc["zero-shot:cmp-all", "triple_f1"] == 1.0
    assert list(result.table["n"]) == [6, 6] and list(result.table["errors"]) == [0, 0]


def test_tag_rates_latency_tokens_and_cost(result) -> None:
    table = result.table
    assert table.loc["zero-shot:cmp-half", "tag:hallucination"] == 0.5
    assert table.loc["zero-shot:cmp-all", "tag:hallucination"] == 0.0
    assert table.loc["zero-shot:cmp-all", "tag:format_error"] == 0.0
    for chain, experiment in zip(result.chains, result.experiments, strict=True):
        rows = experiment.rows
        assert table.loc[chain, "tokens_in"] == sum(r.tokens_in for r in rows) / len(rows)
        assert table.loc[chain, "latency_s"] == pytest.approx(
            sum(r.latency_s for r in rows) / len(rows)
        )
    rows = result.experiments[1].rows
    cost = sum(r.tokens_in * PRICE[0] + r.tokens_out * PRICE[1] for r in rows) / 1e6
    assert table.loc["zero-shot:cmp-all", "cost_usd"] == pytest.approx(cost) and cost > 0
    assert math.isnan(table.loc["zero-shot:cmp-half", "cost_usd"])  # no known price


def test_each_chain_is_tested_against_the_first_on_the_same_examples(result) -> None:
    half, full = result.experiments
    paired = result.paired.set_index(["chain", "metric"])
    expected = paired_test(half.scores("triple_f1"), full.scores("triple_f1"))
    got = paired.loc[("zero-shot:cmp-all", "triple_f1")]
    assert got["mean_difference"] == 0.5 and got["p_value"] == expected.p_value
    assert (got["low"], got["high"], got["n"]) == (expected.low, expected.high, 6)
    assert set(result.paired["baseline"]) == {"zero-shot:cmp-half"}


def test_the_baseline_of_the_paired_tests_can_be_chosen(result, tmp_path: Path) -> None:
    store = result.experiments[0].store
    for baseline in (1, "zero-shot:cmp-all"):
        again = compare(
            ["zero-shot:cmp-half", "zero-shot:cmp-all"],
            EXAMPLES,
            "triple-f1,format,carb",
            store=store,
            baseline=baseline,
        )
        assert [e.skipped for e in again.experiments] == [6, 6]  # reused, nothing rerun
        assert again.baseline == "zero-shot:cmp-all"
        assert set(again.paired["baseline"]) == {"zero-shot:cmp-all"}
        got = again.paired.set_index(["chain", "metric"]).loc[("zero-shot:cmp-half", "triple_f1")]
        assert got["mean_difference"] == -0.5
    again.write(tmp_path)
    assert "## Paired tests against `zero-shot:cmp-all`" in (tmp_path / "report.md").read_text()
    for bad, says in ((2, "baseline 2 is not one of the 2 chains"), ("few-shot:x", "not one of")):
        with pytest.raises(ExperimentError, match=says):
            compare(
                ["zero-shot:cmp-half", "zero-shot:cmp-all"], EXAMPLES, store=store, baseline=bad
            )


def test_the_long_and_wide_per_example_tables(result) -> None:
    long = result.per_example
    f1 = long[(long["chain"] == "zero-shot:cmp-half") & (long["metric"] == "triple_f1")]
    assert list(f1["score"]) == [1.0, 0.0] * 3
    assert len(long) == sum(len(r.feedback) for e in result.experiments for r in e.rows)
    wide = result.examples.set_index(["chain", "example_id"])
    odd = wide.loc[("zero-shot:cmp-half", EXAMPLES[1].id)]
    assert odd["raw"] == WRONG and "hallucination" in odd["tags"]
    assert odd["evidence"]["hallucination"]


def test_the_report_folder_holds_markdown_html_plots_and_tables(result, tmp_path: Path) -> None:
    paths = result.write(tmp_path / "out")
    for name in ("report.md", "report.html", "scores.png", "tags.png", "quality.png"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
    for name in ("scores.png", "tags.png", "quality.png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["report.md"].read_text(encoding="utf-8")
    interval = bootstrap_ci(result.experiments[0].scores("triple_f1"))
    assert f"0.500 [{interval.low:.3f}, {interval.high:.3f}]" in markdown
    assert "## Failure analysis" in markdown and "### `hallucination`" in markdown
    assert WRONG in markdown and EXAMPLES[1].sentence in markdown
    evidence = result.examples.iloc[1]["evidence"]["hallucination"]
    assert evidence in markdown
    assert "## Paired tests against `zero-shot:cmp-half`" in markdown
    assert "![Failure tags per chain](tags.png)" in markdown
    html = paths["report.html"].read_text(encoding="utf-8")
    assert "<h3>hallucination</h3>" in html and '<img src="quality.png"' in html
    table = pd.read_csv(paths["table.csv"], index_col="chain")
    pd.testing.assert_frame_equal(table, result.table, check_dtype=False)


def test_model_output_cannot_break_out_of_the_reports(tmp_path: Path) -> None:
    answer = "```\n<script>alert(1)</script>\n```"
    register_chat_model("cmp-xss", OracleChatModel(answers={EXAMPLES[0].sentence: answer}))
    found = compare(["zero-shot:cmp-xss"], EXAMPLES[:1], "format", store=tmp_path / "s.sqlite")
    html = found.to_html()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    markdown = found.to_markdown()
    assert "    ````text\n    ```\n    <script>alert(1)</script>\n    ```\n    ````" in markdown


class CountingJudge(Evaluator):
    """Stands in for the LLM judge (key `judge`): 1.0 minus 0.1 per predicted triple."""

    name = "judge"
    keys = ("judge",)

    def evaluate(self, outputs: Any, example: Example) -> list[Feedback]:
        return [Feedback(key="judge", score=1.0 - 0.1 * len(read_prediction(outputs).triples))]


def test_the_judge_is_rank_correlated_with_each_exact_scorer(tmp_path: Path) -> None:
    half_right("cmp-judge-half")
    all_right("cmp-judge-all")
    found = compare(
        ["zero-shot:cmp-judge-half", "zero-shot:cmp-judge-all"],
        EXAMPLES,
        ["triple-f1", CountingJudge()],
        store=tmp_path / "s.sqlite",
    )
    pooled = found.correlations.set_index(["chain", "exact_metric"]).loc[
        ("all chains", "triple_f1")
    ]
    judge = [s for e in found.experiments for s in e.scores("judge")]
    exact = [s for e in found.experiments for s in e.scores("triple_f1")]
    expected = spearman(judge, exact)
    assert (pooled["rho"], pooled["n"]) == (expected.rho, 12)
    assert "Judge against the exact scorers" in found.to_markdown()


def test_prices_known_for_openai_models_zero_for_local_unknown_otherwise() -> None:
    assert price_of({"provider": "local", "model": "smollm2"}, OPENAI_PRICES) == (0.0, 0.0)
    openai = {"provider": "openai", "model": "gpt-4o-mini-2024-07-18"}
    assert price_of(openai, OPENAI_PRICES) == OPENAI_PRICES["gpt-4o-mini"]
    tuned = {"provider": "openai", "model": "ft:gpt-4o-mini-2024-07-18:acme::abc"}
    assert price_of(tuned, OPENAI_PRICES) == OPENAI_PRICES["ft:gpt-4o-mini"]
    assert price_of({"provider": "openai", "model": "o9-future"}, OPENAI_PRICES) is None
    assert price_of({"provider": "chat", "model": "claude"}, OPENAI_PRICES) is None


# --- the command line ----------------------------------------------------------------------


def test_the_cli_prints_the_table_and_writes_the_report(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    half_right("cli-half")
    all_right("cli-all")
    dataset = tmp_path / "six.jsonl"
    write_jsonl(dataset, EXAMPLES)
    out, store = tmp_path / "out", tmp_path / "s.sqlite"
    args = ["compare", "--chains", "zero-shot:cli-half,zero-shot:cli-all", "--dataset"]
    args += [str(dataset), "--evaluators", "triple-f1,format", "--out", str(out)]
    done = CliRunner().invoke(app, [*args, "--store", str(store), "--max-concurrency", "2"])
    assert done.exit_code == 0, done.output
    assert "Scores (mean, 95 % CI)" in done.output and "zero-shot:cli-all" in done.output
    assert "1.000 [1.000, 1.000]" in done.output
    for name in ("report.md", "report.html", "scores.png", "tags.png", "quality.png"):
        assert (out / name).is_file(), name
    again = compare(
        ["zero-shot:cli-half", "zero-shot:cli-all"], str(dataset), "triple-f1,format", store=store
    )
    assert [e.skipped for e in again.experiments] == [6, 6]  # the same experiments, reused
    written = pd.read_csv(out / "table.csv", index_col="chain")
    pd.testing.assert_frame_equal(written, again.table, check_dtype=False)


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--evaluators", "f1"], "unknown evaluator 'f1'"),
        (["--baseline", "hf:x"], "--baseline 'hf:x' is not one of --chains"),
    ],
)
def test_the_cli_reports_bad_input_without_a_traceback(
    option: list[str], says: str, monkeypatch, capsys
) -> None:
    argv = ["triplesmith", "compare", "--chains", "zero-shot:smollm2", *option]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", "unused"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


# --- acceptance 3: the real embedded model ----------------------------------------------------

ACCEPTANCE_CHAINS = "zero-shot:smollm2+max_new_tokens=24,few-shot:smollm2+max_new_tokens=24"


@pytest.mark.slow
def test_acceptance_compare_on_the_embedded_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out, store = tmp_path / "out", tmp_path / "s.sqlite"
    args = ["compare", "--chains", ACCEPTANCE_CHAINS, "--dataset", "sample:test", "--limit", "4"]
    args += ["--evaluators", "triple-f1,format", "--out", str(out), "--store", str(store)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    for name in ("report.md", "report.html", "scores.png", "tags.png", "quality.png", "table.csv"):
        assert (out / name).is_file(), name
    api = compare(
        ACCEPTANCE_CHAINS.split(","), "sample:test", "triple-f1,format", store=store, limit=4
    )
    written = pd.read_csv(out / "table.csv", index_col="chain")
    pd.testing.assert_frame_equal(written, api.table, check_dtype=False)
    assert list(api.table["n"]) == [4, 4]
    assert all(0.0 <= v <= 1.0 for v in api.table["triple_f1"])
    assert api.table["tokens_out"].gt(0).all() and (api.table["cost_usd"] == 0).all()
