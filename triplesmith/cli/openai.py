"""`triplesmith openai`: export chat fine-tuning data and run OpenAI fine-tuning jobs."""

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from triplesmith.data.registry import load_dataset
from triplesmith.settings import Settings
from triplesmith.training.openai_export import (
    export_openai,
    validate_openai_file,
    write_openai_jsonl,
)

if TYPE_CHECKING:
    from openai.types.fine_tuning import FineTuningJob

    from triplesmith.training.openai_jobs import JobRecord

app = typer.Typer(help="OpenAI fine-tuning: export chat JSONL, run jobs.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.command()
def export(
    dataset: str = typer.Option(
        ..., help="sample, a .jsonl file, a prepared folder or langsmith:NAME."
    ),
    out: Path = typer.Option(..., help="The chat JSONL file to write."),
    n: int = typer.Option(50, help="Examples to draw (only examples with gold triples count)."),
    seed: int = typer.Option(0, help="Seed of the draw."),
    split: str | None = typer.Option(
        None, help="Split of a prepared folder or the sample (default: train)."
    ),
    system: bool = typer.Option(
        False, "--system", help="Start each example with the system prompt."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the validation report as JSON."),
) -> None:
    """Write chat JSONL in the reference format (user sentence, assistant triples) and validate it."""
    if split is None and ":" not in dataset:
        split = "train"
    examples = load_dataset(dataset, split=split)
    write_openai_jsonl(out, export_openai(examples, n, seed, system))
    report = validate_openai_file(out)
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(
        f"wrote {report.examples} examples ({report.triples} triples) to {out}; every line is valid",
        highlight=False,
    )


@app.command()
def finetune(
    file: Path | None = typer.Option(None, help="Chat JSONL from `triplesmith openai export`."),
    model: str = typer.Option("gpt-3.5-turbo-0125", help="Base model to fine-tune."),
    suffix: str | None = typer.Option(None, help="Up to 64 characters added to the model id."),
    epochs: int | None = typer.Option(None, help="n_epochs (default: OpenAI's auto)."),
    batch_size: int | None = typer.Option(None, help="batch_size (default: auto)."),
    lr_multiplier: float | None = typer.Option(
        None, help="learning_rate_multiplier (default: auto)."
    ),
    seed: int | None = typer.Option(None, help="Seed of the job, for reproducibility."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Poll until the job ends."),
    resume_job: str | None = typer.Option(None, help="Continue polling this job id (no upload)."),
    poll_interval: float = typer.Option(10.0, help="First wait between status checks, seconds."),
    max_wait: float = typer.Option(6 * 3600.0, help="Give up polling after this many seconds."),
    state: Path | None = typer.Option(
        None,
        envvar="TRIPLESMITH_OPENAI_JOBS_FILE",
        help="Local record of jobs and their ft: model ids "
        "(default: openai_jobs.json in the user cache folder, e.g. ~/.cache/triplesmith).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the job record as JSON."),
) -> None:
    """Upload the file, create the job, poll it with backoff, and print the ft: model id."""
    # The openai package takes a second to import: only this command pays for it.
    from triplesmith.training.openai_jobs import (
        DEFAULT_STATE_PATH,
        FineTuneRun,
        Hyperparameters,
        JobStore,
        PollPolicy,
        openai_client,
    )

    if (file is None) == (resume_job is None):
        raise typer.BadParameter("give either --file (a new job) or --resume-job ID")
    client = openai_client(Settings.from_env())
    if file is not None:
        report = validate_openai_file(file, require_minimum=True)
        err.print(f"{file}: {report.examples} valid examples", highlight=False)
    hyperparameters = Hyperparameters(
        n_epochs=epochs, batch_size=batch_size, learning_rate_multiplier=lr_multiplier
    )
    policy = PollPolicy(
        interval_s=poll_interval,
        max_interval_s=max(poll_interval, PollPolicy.max_interval_s),
        max_wait_s=max_wait,
    )
    state = state or DEFAULT_STATE_PATH
    store = JobStore(state)
    shown: list[str] = []

    def show(job: "FineTuningJob") -> None:
        if not shown or shown[-1] != job.status:
            shown.append(job.status)
            err.print(f"job {job.id}: {job.status}", highlight=False)

    run = FineTuneRun(client, store, policy, on_update=show)
    if resume_job is None:
        record = run.start(file, model, suffix, hyperparameters, seed)
        err.print(f"created job {record.job_id} ({record.status}), recorded in {state}")
        if not wait:
            _print_record(record, as_json)
            err.print(f"continue with: triplesmith openai finetune --resume-job {record.job_id}")
            return
        job_id = record.job_id
    else:
        job_id = resume_job
    _print_record(run.wait(job_id), as_json)


def _print_record(record: "JobRecord", as_json: bool) -> None:
    if as_json:
        print(json.dumps(record.model_dump(mode="json"), indent=2))
    elif record.fine_tuned_model:
        console.print(f"fine-tuned model: {record.fine_tuned_model}", highlight=False)
        console.print(
            f"extract with: triplesmith extract --chain openai-ft:{record.fine_tuned_model}",
            highlight=False,
        )
    else:
        console.print(f"job {record.job_id}: {record.status}", highlight=False)
