"""The command line's error boundary: the surroundings (paths, settings) fail in one line."""

import subprocess
import sys
from pathlib import Path


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "triplesmith.cli.app", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compare_refuses_an_out_that_is_a_file_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    done = run(
        ["compare", "--chains", "zero-shot:smollm2", "--dataset", "sample:test"]
        + ["--out", "afile", "--store", "s.sqlite"],
        tmp_path,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--out afile is a file" in done.stderr
    assert (tmp_path / "afile").read_text() == "mine" and not (tmp_path / "s.sqlite").exists()


def test_a_bad_environment_setting_is_named_in_one_line(tmp_path: Path) -> None:
    done = run(
        ["extract", "x", "--chain", "zero-shot:openai:m+base_url=http://127.0.0.1:9/v1"],
        tmp_path,
        env={"TRIPLESMITH_MAX_RETRIES": "many"},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "TRIPLESMITH_MAX_RETRIES='many'" in done.stderr


def test_an_unreachable_langsmith_is_found_before_any_chain_runs(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    done = run(
        ["compare", "--chains", f"zero-shot:openai:m+base_url=http://127.0.0.1:{closed}/v1"]
        + ["--dataset", "sample:test", "--out", "o", "--store", "s.sqlite"],
        tmp_path,
        env={"LANGSMITH_API_KEY": "lsv2_test", "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{closed}"},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "LangSmith is not reachable" in done.stderr and "--no-upload" in done.stderr
    assert not (tmp_path / "s.sqlite").exists()  # nothing ran
