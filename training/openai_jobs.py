"""OpenAI fine-tuning jobs: upload the training file, create the job, poll it with backoff.

Every job is recorded in a small local JSON file (never with the API key), so a wait that lost
the network can continue with `--resume-job ID`, and the `ft:` model id stays findable for the
`openai-ft` chain.
"""

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import platformdirs
from openai import OpenAI
from openai.types.fine_tuning import FineTuningJob
from pydantic import BaseModel, Field, ValidationError

from triplesmith.errors import TrainingError
from triplesmith.settings import Settings

DEFAULT_STATE_PATH = platformdirs.user_cache_path("triplesmith") / "openai_jobs.json"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class JobInterrupted(TrainingError):
    """Waiting for a job stopped (network, server errors, --max-wait) while the job lives on."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class Hyperparameters(BaseModel):
    """Supervised fine-tuning hyper-parameters; None leaves OpenAI's `auto`."""

    n_epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    learning_rate_multiplier: float | None = Field(None, gt=0)

    def method(self) -> dict[str, Any] | None:
        given = self.model_dump(exclude_none=True)
        return {"type": "supervised", "supervised": {"hyperparameters": given}} if given else None


class JobRecord(BaseModel):
    """What this machine knows about one job (the state file holds one per job id)."""

    job_id: str
    model: str
    status: str
    training_file: str | None = None
    training_file_id: str | None = None
    suffix: str | None = None
    fine_tuned_model: str | None = None
    error: str | None = None
    base_url: str | None = None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class PollPolicy:
    """Exponential backoff between status checks, and how long to wait in all."""

    interval_s: float = 10.0
    factor: float = 1.5
    max_interval_s: float = 60.0
    max_wait_s: float = 6 * 3600.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class JobStore:
    """The local record of fine-tuning jobs: `{"jobs": {job_id: JobRecord}}` in one JSON file."""

    def __init__(self, path: Path = DEFAULT_STATE_PATH) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, JobRecord]:
        if not self.path.is_file():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {k: JobRecord.model_validate(v) for k, v in raw.get("jobs", {}).items()}
        except (json.JSONDecodeError, ValidationError, AttributeError) as exc:
            raise TrainingError(
                f"{self.path}: unreadable job record ({exc.__class__.__name__}); "
                "move it away and pass the job id with --resume-job"
            ) from None

    def get(self, job_id: str) -> JobRecord | None:
        return self.load().get(job_id)

    def save(self, record: JobRecord) -> None:
        jobs = self.load()
        jobs[record.job_id] = record.model_copy(update={"updated_at": _now()})
        payload = {"jobs": {k: v.model_dump(mode="json") for k, v in jobs.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=self.path.parent, prefix=".openai_jobs.", delete=False
        )
        try:
            with handle:
                json.dump(payload, handle, indent=2)
            os.replace(handle.name, self.path)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise

    def last_fine_tuned_model(self) -> str | None:
        """The `ft:` id of the most recently finished successful job, if any."""
        done = [r for r in self.load().values() if r.fine_tuned_model]
        return max(done, key=lambda r: r.updated_at).fine_tuned_model if done else None


def openai_client(settings: Settings) -> OpenAI:
    """The official client, configured from settings; refuses to start without OPENAI_API_KEY."""
    if settings.openai_api_key is None:
        raise TrainingError(
            "OPENAI_API_KEY is not set; OpenAI fine-tuning needs it: export OPENAI_API_KEY=sk-..."
        )
    options: dict[str, Any] = {}
    if settings.openai_base_url:
        options["base_url"] = settings.openai_base_url
    return OpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        max_retries=settings.max_retries,
        timeout=settings.request_timeout_s,
        **options,
    )


def _api_error(exc: openai.OpenAIError, doing: str, client: OpenAI) -> TrainingError:
    if isinstance(exc, openai.AuthenticationError):
        return TrainingError(f"OpenAI refused the API key while {doing}; check OPENAI_API_KEY")
    if isinstance(exc, openai.APIStatusError):
        return TrainingError(f"OpenAI refused {doing}: {exc.message}")
    return TrainingError(
        f"could not reach OpenAI at {client.base_url} while {doing} ({exc}); "
        "check the network or TRIPLESMITH_OPENAI_BASE_URL and retry"
    )


def upload_training_file(client: OpenAI, path: Path) -> str:
    """Upload a chat JSONL file with purpose `fine-tune`; returns the file id."""
    path = Path(path)
    try:
        uploaded = client.files.create(file=(path.name, path.read_bytes()), purpose="fine-tune")
    except openai.OpenAIError as exc:
        raise _api_error(exc, f"uploading {path}", client) from None
    return uploaded.id


def create_job(
    client: OpenAI,
    training_file_id: str,
    model: str,
    suffix: str | None = None,
    hyperparameters: Hyperparameters | None = None,
    seed: int | None = None,
) -> FineTuningJob:
    """Create a supervised fine-tuning job on an uploaded file."""
    options: dict[str, Any] = {}
    if suffix:
        options["suffix"] = suffix
    if seed is not None:
        options["seed"] = seed
    method = hyperparameters.method() if hyperparameters else None
    if method:
        options["method"] = method
    try:
        return client.fine_tuning.jobs.create(
            model=model, training_file=training_file_id, **options
        )
    except openai.OpenAIError as exc:
        raise _api_error(exc, f"creating a {model} fine-tuning job", client) from None


def _retrieve(client: OpenAI, job_id: str) -> FineTuningJob:
    try:
        return client.fine_tuning.jobs.retrieve(job_id)
    except openai.NotFoundError:
        raise TrainingError(f"OpenAI has no fine-tuning job {job_id}; check the id") from None
    except openai.AuthenticationError as exc:
        raise _api_error(exc, f"checking job {job_id}", client) from None
    except openai.OpenAIError as exc:
        what = "lost contact with" if isinstance(exc, openai.APIConnectionError) else "errors from"
        raise JobInterrupted(
            f"{what} OpenAI while polling job {job_id} ({exc}); the job goes on there: "
            f"continue with `triplesmith openai finetune --resume-job {job_id}`",
            job_id,
        ) from None


def wait_for_job(
    client: OpenAI,
    job_id: str,
    policy: PollPolicy = PollPolicy(),
    on_update: Callable[[FineTuningJob], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FineTuningJob:
    """Poll until the job succeeds, fails or is cancelled; JobInterrupted if it cannot say."""
    start = clock()
    interval = policy.interval_s
    while True:
        job = _retrieve(client, job_id)
        if on_update is not None:
            on_update(job)
        if job.status in TERMINAL:
            return job
        waited = clock() - start
        if waited + interval > policy.max_wait_s:
            raise JobInterrupted(
                f"job {job_id} is still {job.status} after {waited:.0f} s (--max-wait); "
                f"it goes on at OpenAI: continue with `triplesmith openai finetune --resume-job {job_id}`",
                job_id,
            )
        sleep(interval)
        interval = min(interval * policy.factor, policy.max_interval_s)


def fine_tuned_model(job: FineTuningJob) -> str:
    """The `ft:` model id of a finished job, or TrainingError saying why there is none."""
    if job.status == "succeeded" and job.fine_tuned_model:
        return job.fine_tuned_model
    if job.status == "failed":
        error = job.error
        reason = "no reason given"
        if error is not None:
            param = f", param {error.param}" if error.param else ""
            reason = f"{error.message} (code {error.code}{param})"
        raise TrainingError(f"OpenAI fine-tuning job {job.id} failed: {reason}")
    if job.status == "cancelled":
        raise TrainingError(f"OpenAI fine-tuning job {job.id} was cancelled")
    raise TrainingError(f"OpenAI fine-tuning job {job.id} ended as {job.status} without a model")


class FineTuneRun:
    """Upload → create → poll, recording each step of the job in a JobStore."""

    def __init__(
        self,
        client: OpenAI,
        store: JobStore,
        policy: PollPolicy = PollPolicy(),
        on_update: Callable[[FineTuningJob], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.store, self.policy = client, store, policy
        self.on_update, self.sleep, self.clock = on_update, sleep, clock

    def start(
        self,
        file: Path,
        model: str,
        suffix: str | None = None,
        hyperparameters: Hyperparameters | None = None,
        seed: int | None = None,
    ) -> JobRecord:
        """Upload the file and create the job; the record is saved before anything can fail."""
        file_id = upload_training_file(self.client, file)
        job = create_job(self.client, file_id, model, suffix, hyperparameters, seed)
        record = JobRecord(
            job_id=job.id,
            model=model,
            status=job.status,
            training_file=str(Path(file).resolve()),
            training_file_id=file_id,
            suffix=suffix,
            base_url=str(self.client.base_url),
            created_at=_now(),
            updated_at=_now(),
        )
        self.store.save(record)
        return record

    def wait(self, job_id: str) -> JobRecord:
        """Poll a job to its end; saves the outcome, and the last status when interrupted."""
        record = self.store.get(job_id) or JobRecord(
            job_id=job_id,
            model="?",
            status="unknown",
            base_url=str(self.client.base_url),
            created_at=_now(),
            updated_at=_now(),
        )
        self.store.save(record)

        def update(job: FineTuningJob) -> None:
            nonlocal record
            if job.status != record.status or record.model == "?":
                record = record.model_copy(update={"status": job.status, "model": job.model})
                self.store.save(record)
            if self.on_update is not None:
                self.on_update(job)

        job = wait_for_job(self.client, job_id, self.policy, update, self.sleep, self.clock)
        try:
            model_id = fine_tuned_model(job)
        except TrainingError as exc:
            self.store.save(record.model_copy(update={"status": job.status, "error": str(exc)}))
            raise
        record = record.model_copy(update={"status": job.status, "fine_tuned_model": model_id})
        self.store.save(record)
        return record
