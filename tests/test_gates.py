"""CI gates: `--fail-under METRIC=VALUE` and `--fail-if-worse BASELINE` exit 1 with one line
naming what failed; a malformed gate is refused before any chain runs; `--version`."""

import json
import sys
from pathlib import Path

import pytest
from test_experiments import OracleChatModel, gold_answer, half_right

from triplesmith.chains.registry import register_chat_model
from triplesmith.cli.app import main
from triplesmith.data.registry import load_dataset

EXAMPLES = load_dataset("sample:test")  # 20: enough pairs for a paired test to speak


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["triplesmith", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    code = exit_info.value.code
    captured = capsys.readouterr()
    return (0 if code is None else int(code)), captured.out, captured.err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    half_right("gate-half", EXAMPLES)
    right = {e.sentence: gold_answer(e) for e in EXAMPLES}
    register_chat_model("gate-right", OracleChatModel(answers=right))
    path = tmp_path_factory.mktemp("data") / "test.jsonl"
    path.write_text("".join(json.dumps(e.model_dump()) + "\n" for e in EXAMPLES))
    return path


def compare_args(dataset: Path, tmp_path: Path, chains: str, *gates: str) -> list[str]:
    return [
        "compare", "--chains", chains, "--dataset", str(dataset), "--no-graph", "--no-upload",
        "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out"), *gates,
    ]  # fmt: skip


def test_a_floor_not_reached_exits_1_naming_the_metric(
    dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    args = compare_args(dataset, tmp_path, "zero-shot:gate-half", "--fail-under", "triple_f1=0.99")
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 1
    assert "gate failed: zero-shot:gate-half: triple_f1 0.5000 is below 0.99" in err
    assert (tmp_path / "out" / "report.md").is_file()  # the report is written all the same

    args = compare_args(dataset, tmp_path, "zero-shot:gate-half", "--fail-under", "triple_f1=0.0")
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0 and "gate failed" not in err


def test_a_chain_significantly_worse_than_the_baseline_exits_1(
    dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    chains = "zero-shot:gate-right,zero-shot:gate-half"
    args = compare_args(dataset, tmp_path, chains, "--fail-if-worse", "zero-shot:gate-right")
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 1
    line = next(x for x in err.splitlines() if "triple_f1 worse" in x)
    assert line.startswith("gate failed: zero-shot:gate-half: triple_f1 worse than")
    assert "over 20 examples" in line

    # The better chain against the worse one: no regression, exit 0.
    args = compare_args(dataset, tmp_path, chains, "--fail-if-worse", "zero-shot:gate-half")
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err


def test_a_stored_experiment_is_a_baseline_by_its_key(
    dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from triplesmith.experiments.compare import compare

    earlier = compare(
        ["zero-shot:gate-right"], EXAMPLES, "triple-f1", store=tmp_path / "s.sqlite",
        via_graph=False, upload=False,
    )  # fmt: skip
    key = earlier.experiments[0].key
    args = compare_args(dataset, tmp_path, "zero-shot:gate-half", "--fail-if-worse", key)
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 1 and "worse than zero-shot:gate-right" in err


@pytest.mark.parametrize(
    ("gate", "says"),
    [
        (["--fail-under", "triple_f1"], "expected METRIC=VALUE"),
        (["--fail-under", "triple_f1=high"], "expected METRIC=VALUE"),
    ],
)
def test_a_malformed_gate_is_refused_before_any_chain_runs(
    gate: list[str], says: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    model = half_right("gate-never")
    args = compare_args(tmp_path / "missing.jsonl", tmp_path, "zero-shot:gate-never", *gate)
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and says in err and "Traceback" not in err
    assert model.calls == [] and not (tmp_path / "out").exists()


def test_an_unknown_gate_metric_names_the_ones_there_are(
    dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    args = compare_args(dataset, tmp_path, "zero-shot:gate-half", "--fail-under", "f2=0.5")
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "--fail-under f2: no such figure" in err and "triple_f1" in err


def test_version(monkeypatch, capsys) -> None:
    import triplesmith

    code, out, err = run_cli(["--version"], monkeypatch, capsys)
    assert code == 0 and out.strip() == f"triplesmith {triplesmith.__version__}"
