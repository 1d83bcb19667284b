"""A study refuses bad settings before any stage runs: nothing is prepared, trained or loaded."""

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--limit", "0"], "limit"),
        (["--concurrency", "-1"], "max_concurrency"),
        (["--epochs", "-1"], "epochs"),
        (["--evaluators", "triple-f1,nope"], "unknown evaluator 'nope'"),
        (["--max-new-tokens", "0"], "max_new_tokens"),
        (["--k", "-2"], "k"),
    ],
)
def test_bad_study_settings_are_refused_before_any_stage(
    tmp_path: Path, options: list[str], words: str
) -> None:
    out = tmp_path / "study"
    done = subprocess.run(
        [sys.executable, "-m", "triplesmith.cli.app", "study", "--preset", "demo"]
        + ["--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()  # no stage ran, nothing was written


def test_a_corrupted_stages_file_is_refused_before_any_stage(tmp_path: Path) -> None:
    out = tmp_path / "study"
    out.mkdir()
    (out / "stages.json").write_text("{ not json")
    done = subprocess.run(
        [sys.executable, "-m", "triplesmith.cli.app", "study", "--preset", "demo"]
        + ["--out", str(out), "--limit", "1", "--max-steps", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "stages.json is not valid JSON" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["stages.json"]  # nothing else was written
    assert (out / "stages.json").read_text() == "{ not json"
