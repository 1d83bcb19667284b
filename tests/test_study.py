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
        "predictions/zero-shot.tsv",
        "predictions/few-shot.tsv",
        "predictions/fine-tuned.tsv",
    ):
        assert (out / "report" / name).is_file(), name
    report = (out / "report" / "report.md").read_text()
    assert report.startswith("# Study: demo") and "wall time" in report
    # The study's question, answered in the report: fine-tuned against few-shot, paired.
    assert "## Prompt or fine-tune? The fine-tuned chain against few-shot" in report
    assert "- fine-tuned `format_error` below 2 %: **" in report
    assert "## Paired tests against `few-shot:smollm2" in report
    assert "OpenIE-4" not in report  # a demo on two sentences is not the CaRB test set
    for label in ("zero-shot smollm2", "few-shot smollm2 (k=3)", "fine-tuned smollm2"):
        assert label in first.stdout
    # Only our own progress and messages: no third-party bars or banners.
    for output in (first.stdout, first.stderr):
        assert "Starting evaluation" not in output and "it/s]" not in output
    manifest = json.loads((out / "adapter" / "manifest.json").read_text())
    assert manifest["steps"] == 2 and manifest["method"] == "lora"
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) >= {"prepare", "train"}
    assert [run["outcome"] for run in stages["runs"]] == ["finished"]

    second = run_study(out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "prepare: reused" in second.stderr and "train: reused" in second.stderr
    assert "reused stages: prepare, train" in second.stdout
    runs = json.loads((out / "stages.json").read_text())["runs"]
    assert [run["outcome"] for run in runs] == ["finished", "finished"]
    report = (out / "report" / "report.md").read_text()
    assert f"2 runs of this study since {runs[0]['started_at']}" in report

    # The report rendered again from the store alone: the adapter may be gone, nothing runs.
    import shutil

    shutil.rmtree(out / "adapter")
    (out / "report" / "report.md").unlink()
    third = subprocess.run(
        [
            sys.executable,
            "-m",
            "triplesmith.cli.app",
            "study",
            *ARGS,
            "--out",
            str(out),
            "--render-only",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert "train:" not in third.stderr and "evaluate:" not in third.stderr
    again = (out / "report" / "report.md").read_text()
    assert "rendered again from the study's store" in again
    assert f"- command: `{runs[-1]['command']}`" in again  # the recorded run's own command
    assert again.split("## This run")[0] == report.split("## This run")[0]  # same verdict
    assert len(json.loads((out / "stages.json").read_text())["runs"]) == 2  # not a run


def test_ctrl_c_during_evaluation_exits_promptly_and_the_rerun_resumes(tmp_path: Path) -> None:
    """Acceptance: interrupt the study while it evaluates, rerun, nothing finished is redone."""
    import os
    import signal
    import threading
    import time

    out = tmp_path / "study"
    # Long budgets: the base model chit-chats, so the first batch runs for minutes if not stopped.
    args = ["--preset", "demo", "--max-steps", "1", "--limit", "3", "--max-new-tokens", "400"]
    command = [sys.executable, "-m", "triplesmith.cli.app", "study", *args, "--out", str(out)]
    env = {**os.environ, "COLUMNS": "200"}
    # A shell that starts a job in the background makes it ignore SIGINT, and children inherit
    # that (Python then installs no KeyboardInterrupt handler): give the study the default back.
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode() for line in process.stderr), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 600
    while not any("evaluate:" in line for line in lines):
        assert process.poll() is None, "".join(lines)[-3000:]
        assert time.monotonic() < deadline, "the study never reached its evaluation"
        time.sleep(0.2)
    time.sleep(5)  # the first batch is generating now
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=60)
    waited = time.monotonic() - interrupted
    reader.join(timeout=5)
    log = "".join(lines)
    assert code == 130, log[-3000:]
    assert waited < 15, f"exit took {waited:.1f} s after Ctrl-C"
    assert "rerun the same command to resume" in log
    stages = json.loads((out / "stages.json").read_text())
    assert {"prepare", "train"} <= set(stages)
    assert [run["outcome"] for run in stages["runs"]] == ["interrupted"]

    quick = [a if a != "400" else "8" for a in command]  # the same stages, a short evaluation
    rerun = subprocess.run(
        quick,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "prepare: reused" in rerun.stderr and "train: reused" in rerun.stderr
    assert (out / "report" / "report.md").is_file()
