"""`triplesmith study` end to end on a tiny budget, then rerun: finished stages are reused (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARGS = ["--preset", "demo", "--max-steps", "2", "--limit", "2", "--max-new-tokens", "8"]


def run_study(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "triplesmith.cli.app", "study", *ARGS, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )


def test_study_writes_the_report_and_a_rerun_reuses_finished_stages(tmp_path: Path) -> None:
    out = tmp_path / "study"
    first = run_study(out)
    assert first.returncode == 0, first.stderr[-3000:]
    for name in (
        "report.md",
        "report.html",
        "scores.png",
        "tags.png",
        "quality.png",
        "curated.jsonl",
    ):
        assert (out / "report" / name).is_file(), name
    report = (out / "report" / "report.md").read_text()
    assert report.startswith("# Study: demo") and "wall time" in report
    for label in ("zero-shot smollm2", "few-shot smollm2 (k=3)", "fine-tuned smollm2"):
        assert label in first.stdout
    manifest = json.loads((out / "adapter" / "manifest.json").read_text())
    assert manifest["steps"] == 2 and manifest["method"] == "lora"
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) >= {"prepare", "train"}

    second = run_study(out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "prepare: reused" in second.stderr and "train: reused" in second.stderr
    assert "reused stages: prepare, train" in second.stdout
