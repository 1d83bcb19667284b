"""`triplesmith compare`: several chains on one dataset, a Rich table, and a report folder."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from triplesmith.chains.spec import parse_spec
from triplesmith.errors import ExperimentError
from triplesmith.run_config import DEFAULT_EVALUATORS, RunConfig

console = Console()
err = Console(stderr=True)

CHAINS_HELP = (
    "Comma-separated chain specs; the first is the baseline of the paired tests unless "
    "--baseline names another, e.g. "
    "zero-shot:smollm2,few-shot:smollm2,hf:smollm2+adapter=DIR."
)


def rich_table(frame: pd.DataFrame, title: str) -> Table:
    """A per-chain DataFrame of display strings as a Rich table, one column per chain (chains
    are few and metrics many, so this reads in a narrow terminal)."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for chain in frame.index:
        table.add_column(str(chain), justify="right", no_wrap=True)
    for column in frame.columns:
        table.add_row(str(column), *(str(v) for v in frame[column]))
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        chains: str = typer.Option(..., "--chains", "-c", help=CHAINS_HELP),
        dataset: str = typer.Option(
            "sample:test",
            "--dataset",
            "-d",
            help="sample[:test], a .jsonl file, a folder, or langsmith:NAME[@TAG][:SPLIT].",
        ),
        evaluators: str = typer.Option(
            ",".join(DEFAULT_EVALUATORS),
            "--evaluators",
            "-e",
            help="Comma-separated: carb, benchie, triple-f1, triple-f1-exact, format, judge.",
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for report.md/html and plots."),
        max_concurrency: int | None = typer.Option(
            None,
            "--max-concurrency",
            help="Examples in flight per chain (local models batch them); default 16.",
        ),
        max_repairs: int | None = typer.Option(
            None, "--max-repairs", help="Re-asks after a format error (0-5); default 1."
        ),
        limit: int | None = typer.Option(None, "--limit", help="Only the first N examples."),
        store: Path | None = typer.Option(
            None, "--store", help="Experiment store (SQLite); default ~/.cache/triplesmith/."
        ),
        judge_model: str | None = typer.Option(
            None, "--judge-model", help="provider:model for the judge evaluator."
        ),
        no_graph: bool = typer.Option(
            False, "--no-graph", help="Call the chains directly (no triage, no repair)."
        ),
        no_upload: bool = typer.Option(
            False, "--no-upload", help="Stay offline even when LANGSMITH_API_KEY is set."
        ),
        baseline: str | None = typer.Option(
            None, "--baseline", help="The chain (one of --chains) the paired tests are against."
        ),
        fail_under: list[str] = typer.Option(
            [],
            "--fail-under",
            help="A CI gate, repeatable: METRIC=VALUE (e.g. triple_f1=0.5); exit 1 when any "
            "chain's figure is below it.",
        ),
        fail_if_worse: str | None = typer.Option(
            None,
            "--fail-if-worse",
            help="A CI gate: a chain of --chains or a stored experiment key; exit 1 when a chain "
            "is worse than it on a metric (paired Wilcoxon p < 0.05).",
        ),
    ) -> None:
        """Compare chains on one dataset with the same evaluators; resumable (rerun to finish).

        Exit status: 0 done, 1 a --fail-under / --fail-if-worse gate failed (one line each),
        2 a refused input (option, spec, dataset), 3 a failure of the surroundings (disk,
        store, network)."""
        from triplesmith.experiments.compare import compare as run_compare
        from triplesmith.experiments.gates import parse_floors
        from triplesmith.experiments.report import corpus_table, cost_table, score_table, tag_table

        specs = [c.strip() for c in chains.split(",") if c.strip()]
        if not specs:
            raise ExperimentError(f"--chains {chains!r} names no chain; e.g. few-shot:smollm2")
        for spec in specs:  # every spec is refused or accepted before anything is written
            parse_spec(spec)
        floors = parse_floors(fail_under)
        if out.exists() and not out.is_dir():
            raise ExperimentError(f"--out {out} is a file; give a folder for the report")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExperimentError(
                f"--out {out}: cannot create the report folder ({exc.strerror}); give a "
                "writable folder"
            ) from None
        if baseline is not None and baseline.strip() not in specs:
            raise ExperimentError(
                f"--baseline {baseline!r} is not one of --chains: {', '.join(specs)}"
            )
        given = {
            "max_concurrency": max_concurrency,
            "max_repairs": max_repairs,
            "limit": limit,
            "store": store,
            "judge_model": judge_model,
            "baseline": baseline.strip() if baseline is not None else None,
            "upload": False if no_upload else None,
        }
        config = RunConfig.of(
            evaluators,
            via_graph=not no_graph,
            **{name: value for name, value in given.items() if value is not None},
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        ) as bar:
            tasks = {spec: bar.add_task(spec, total=None) for spec in specs}

            def progress(chain: str, done: int, total: int) -> None:
                task = tasks.get(chain)
                if task is None:
                    task = tasks[chain] = bar.add_task(chain, total=total)
                bar.update(task, completed=done, total=total)

            result = run_compare(specs, dataset, config, progress=progress)
        console.print(rich_table(score_table(result), "Scores (mean, 95 % CI)"))
        if result.summary_metrics:
            console.print(rich_table(corpus_table(result), "Corpus-level figures"))
        console.print(rich_table(cost_table(result), "Speed and cost"))
        if result.tags:
            console.print(rich_table(tag_table(result), "Failure tags"))
        paths = result.write(out)
        reused = sum(e.skipped for e in result.experiments)
        if reused:
            err.print(f"reused {reused} finished examples from {result.experiments[0].store}")
        console.print(f"report: {paths['report.md']} (and report.html, plots) in {out}")
        check_gates(result, floors, fail_if_worse, config)


def check_gates(
    result: Any,  # a ComparisonResult (imported lazily: the CLI starts fast)
    floors: Sequence[Any],
    fail_if_worse: str | None,
    config: RunConfig,
    chains: Sequence[str] | None = None,
) -> None:
    """Print each failed CI gate on one line and exit 1 (gated: `chains`, default all)."""
    from triplesmith.experiments.gates import baseline_experiment, below_floors, worse_than

    failures = below_floors(result, floors, chains)
    if fail_if_worse:
        baseline = baseline_experiment(result, fail_if_worse.strip(), config)
        failures += worse_than(baseline, result, chains)
    for line in failures:
        err.print(line, highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)
