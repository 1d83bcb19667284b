"""OpenAI fine-tuning jobs at the HTTP boundary: the official client against a loopback fake API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openai_fake_server import FakeOpenAI, Reply
from typer.testing import CliRunner

from triplesmith.cli.app import app
from triplesmith.data.registry import load_dataset
from triplesmith.errors import TrainingError
from triplesmith.settings import Settings
from triplesmith.training.openai_export import export_openai, write_openai_jsonl
from triplesmith.training.openai_jobs import (
    FineTuneRun,
    JobInterrupted,
    JobStore,
    PollPolicy,
    openai_client,
    wait_for_job,
)

KEY = "sk-test-secret-0123456789"
MODEL_ID = "ft:gpt-3.5-turbo-0125:org::abc123"
FAST = PollPolicy(interval_s=0.001, max_interval_s=0.001)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("openai") / "train.jsonl"
    write_openai_jsonl(path, export_openai(load_dataset("sample:train"), 12, seed=0, system=False))
    return path


@pytest.fixture
def env(monkeypatch) -> dict[str, str]:
    """The environment of a run against the fake: key, base URL, no OpenAI base from outside."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return {"OPENAI_API_KEY": KEY}


def _client(base_url: str, max_retries: int = 2):
    return openai_client(
        Settings(openai_api_key=KEY, openai_base_url=base_url, max_retries=max_retries)
    )


def _cli(args: list[str], base_url: str, **env: str) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it (exit codes and error printing included)."""
    full_env = {**os.environ, "OPENAI_API_KEY": KEY, "TRIPLESMITH_OPENAI_BASE_URL": base_url, **env}
    full_env.pop("OPENAI_BASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "triplesmith.cli.app", "openai", "finetune", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def _invoke(args: list[str], base_url: str):
    """The real Typer app in-process (errors come back as `result.exception`)."""
    return CliRunner().invoke(
        app, ["openai", "finetune", *args], env={"TRIPLESMITH_OPENAI_BASE_URL": base_url}
    )


def test_cli_uploads_creates_polls_and_prints_the_model_id(train_file: Path, tmp_path: Path, env):
    state = tmp_path / "jobs.json"
    fake = FakeOpenAI(api_key=KEY)
    with fake as base_url:
        args = ["--file", str(train_file), "--model", "gpt-3.5-turbo-0125"]
        result = _invoke([*args, "--poll-interval", "0.001", "--state", str(state)], base_url)
    assert result.exit_code == 0, result.output
    assert f"fine-tuned model: {MODEL_ID}" in result.stdout
    for status in ("validating_files", "running", "succeeded"):
        assert f": {status}" in result.stderr

    (upload,) = fake.requests_to("POST /files")
    assert upload.form == {"purpose": "fine-tune"}
    assert upload.files["file"].filename == "train.jsonl"
    assert upload.files["file"].content == train_file.read_bytes()
    assert upload.headers["authorization"] == "<redacted>"
    (create,) = fake.requests_to("POST /fine_tuning/jobs")
    file_id = next(iter(fake.files))
    assert create.json == {"model": "gpt-3.5-turbo-0125", "training_file": file_id}
    job_id = next(iter(fake.jobs))
    polls = fake.requests_to("GET /fine_tuning/jobs/{id}")
    assert [p.path for p in polls] == [f"/v1/fine_tuning/jobs/{job_id}"] * 3

    record = json.loads(state.read_text())["jobs"][job_id]
    assert record["status"] == "succeeded" and record["fine_tuned_model"] == MODEL_ID
    assert record["training_file_id"] == file_id
    assert KEY not in state.read_text() + result.output
    assert JobStore(state).last_fine_tuned_model() == MODEL_ID


def test_network_error_while_polling_keeps_the_job_and_resume_finishes(
    train_file: Path, tmp_path: Path, env
):
    state = tmp_path / "jobs.json"
    fake = FakeOpenAI()
    fake.script("GET /fine_tuning/jobs/{id}", Reply.normal(), Reply.disconnect())
    with fake as base_url:
        args = ["--poll-interval", "0.001", "--state", str(state)]
        first = _cli(["--file", str(train_file), *args], base_url, TRIPLESMITH_MAX_RETRIES="0")
        job_id = next(iter(fake.jobs))
        assert first.returncode == 2
        assert f"lost contact with OpenAI while polling job {job_id}" in first.stderr
        assert f"--resume-job {job_id}" in first.stderr
        assert "Traceback" not in first.stderr
        recorded = json.loads(state.read_text())["jobs"][job_id]
        assert recorded["status"] == "validating_files" and recorded["fine_tuned_model"] is None

        second = _invoke(["--resume-job", job_id, *args], base_url)
    assert second.exit_code == 0, second.output
    assert MODEL_ID in second.stdout
    assert len(fake.requests_to("POST /files")) == 1
    assert len(fake.requests_to("POST /fine_tuning/jobs")) == 1
    assert json.loads(state.read_text())["jobs"][job_id]["fine_tuned_model"] == MODEL_ID


def test_failed_job_is_an_error_with_openai_message(train_file: Path, tmp_path: Path, env):
    state = tmp_path / "jobs.json"
    error = {
        "code": "invalid_training_file",
        "message": "Training file has 12 example(s), but must have at least 10 examples",
        "param": "training_file",
    }
    with FakeOpenAI(statuses=("validating_files", "failed"), job_error=error) as base_url:
        result = _invoke(
            ["--file", str(train_file), "--poll-interval", "0.001", "--state", str(state)],
            base_url,
        )
    assert isinstance(result.exception, TrainingError)
    message = str(result.exception)
    assert "failed: Training file has 12 example(s)" in message
    assert "invalid_training_file" in message
    (record,) = json.loads(state.read_text())["jobs"].values()
    assert record["status"] == "failed" and record["job_id"] in message
    assert "Training file has 12" in record["error"]


def test_rate_limited_upload_is_retried_by_the_client(train_file: Path, tmp_path: Path, env):
    fake = FakeOpenAI()
    fake.script("POST /files", Reply.rate_limited(retry_after_s=0.01))
    with fake as base_url:
        run = FineTuneRun(_client(base_url), JobStore(tmp_path / "jobs.json"), FAST)
        record = run.wait(run.start(train_file, "gpt-3.5-turbo-0125").job_id)
    first, second = fake.requests_to("POST /files")
    assert (
        first.headers["x-stainless-retry-count"],
        second.headers["x-stainless-retry-count"],
    ) == (
        "0",
        "1",
    )
    assert record.fine_tuned_model == MODEL_ID


def test_server_errors_past_the_retries_interrupt_the_wait_with_the_job_id(tmp_path: Path):
    fake = FakeOpenAI()
    busy = Reply.error(500, headers={"retry-after": "0.001"})
    fake.script("GET /fine_tuning/jobs/{id}", busy, busy, busy)
    with fake as base_url:
        job_id = fake.add_job()
        with pytest.raises(JobInterrupted) as caught:
            wait_for_job(_client(base_url, max_retries=2), job_id, FAST)
        assert caught.value.job_id == job_id and f"--resume-job {job_id}" in str(caught.value)
        assert len(fake.requests_to("GET /fine_tuning/jobs/{id}")) == 3
        assert wait_for_job(_client(base_url), job_id, FAST).status == "succeeded"


def test_polling_backs_off_exponentially_up_to_the_cap():
    slept: list[float] = []
    fake = FakeOpenAI(statuses=("validating_files", "queued", *["running"] * 4, "succeeded"))
    with fake as base_url:
        job = wait_for_job(
            _client(base_url),
            fake.add_job(),
            PollPolicy(interval_s=1, factor=2, max_interval_s=5),
            sleep=slept.append,
        )
    assert job.status == "succeeded" and job.fine_tuned_model == MODEL_ID
    assert slept == [1, 2, 4, 5, 5, 5]


def test_max_wait_stops_polling_with_the_job_id():
    slept: list[float] = []
    fake = FakeOpenAI(statuses=("running",))
    with fake as base_url:
        job_id = fake.add_job()
        with pytest.raises(
            JobInterrupted, match=r"still running after 7 s .*--resume-job"
        ) as caught:
            wait_for_job(
                _client(base_url),
                job_id,
                PollPolicy(interval_s=1, factor=2, max_interval_s=8, max_wait_s=10),
                sleep=slept.append,
                clock=lambda: sum(slept),
            )
    assert caught.value.job_id == job_id and slept == [1, 2, 4]


def test_no_wait_records_the_job_without_polling(train_file: Path, tmp_path: Path, env):
    state = tmp_path / "jobs.json"
    fake = FakeOpenAI()
    with fake as base_url:
        result = _invoke(
            ["--file", str(train_file), "--no-wait", "--suffix", "kg", "--epochs", "3"]
            + ["--lr-multiplier", "0.5", "--state", str(state), "--json"],
            base_url,
        )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "validating_files" and record["suffix"] == "kg"
    assert fake.requests_to("GET /fine_tuning/jobs/{id}") == []
    (create,) = fake.requests_to("POST /fine_tuning/jobs")
    assert create.json["suffix"] == "kg"
    assert create.json["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 0.5}},
    }
    assert JobStore(state).get(record["job_id"]).training_file_id == create.json["training_file"]


def test_missing_api_key_names_the_variable(train_file: Path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake = FakeOpenAI()
    with fake as base_url:
        result = _invoke(["--file", str(train_file)], base_url)
    assert isinstance(result.exception, TrainingError)
    assert "OPENAI_API_KEY is not set" in str(result.exception)
    assert fake.requests == []


def test_rejected_key_and_unknown_job_are_clear_errors(train_file: Path, tmp_path: Path):
    with FakeOpenAI(api_key="sk-the-right-one") as base_url:
        run = FineTuneRun(_client(base_url), JobStore(tmp_path / "jobs.json"), FAST)
        with pytest.raises(TrainingError, match="refused the API key .* check OPENAI_API_KEY"):
            run.start(train_file, "gpt-3.5-turbo-0125")
    with FakeOpenAI() as base_url:
        run = FineTuneRun(_client(base_url), JobStore(tmp_path / "jobs.json"), FAST)
        with pytest.raises(TrainingError, match="no fine-tuning job ftjob-nope"):
            run.wait("ftjob-nope")


def test_too_small_file_is_refused_before_any_upload(tmp_path: Path, env):
    small = tmp_path / "small.jsonl"
    write_openai_jsonl(small, export_openai(load_dataset("sample:train"), 5, seed=0, system=False))
    fake = FakeOpenAI()
    with fake as base_url:
        result = _invoke(["--file", str(small)], base_url)
    assert "at least 10" in str(result.exception)
    assert fake.requests == []


def test_finetune_needs_a_file_or_a_job_id(env):
    result = CliRunner().invoke(app, ["openai", "finetune"])
    assert result.exit_code == 2 and "--resume-job" in result.output
