"""`triplesmith rescore`: score stored answers with other evaluators, generating nothing."""

from pathlib import Path

import typer
from rich.console import Console

from triplesmith.run_config import DEFAULT_EVALUATORS, RunConfig

console = Console()


def register(app: typer.Typer) -> None:
    @app.command()
    def rescore(
        evaluators: str = typer.Option(
            ",".join(DEFAULT_EVALUATORS),
            "--evaluators",
            "-e",
            help="Comma-separated: carb, benchie, triple-f1, triple-f1-exact, format, judge.",
        ),
        experiment: list[str] = typer.Option(
            [], "--experiment", "-x", help="An experiment key (repeatable); default: all."
        ),
        store: Path | None = typer.Option(
            None, "--store", help="Experiment store (SQLite); default ~/.cache/triplesmith/."
        ),
        judge_model: str | None = typer.Option(
            None, "--judge-model", help="provider:model for the judge evaluator."
        ),
        no_upload: bool = typer.Option(
            False, "--no-upload", help="Keep new scores local even for uploaded experiments."
        ),
    ) -> None:
        """Score the stored answers of experiments with EVALUATORS: an answer is never generated
        again, and an evaluator it already has scores from does not run again."""
        from triplesmith.errors import ExperimentError
        from triplesmith.experiments.scoring import rescore as rescore_experiment
        from triplesmith.experiments.store import ExperimentStore

        with ExperimentStore(store) as db:
            config = RunConfig.of(
                evaluators, store=db, judge_model=judge_model, upload=not no_upload
            )
            keys = experiment or [record.key for record in db.experiments()]
            if not keys:
                raise ExperimentError(f"the store {db.path} holds no experiment to score")
            console.print(f"scoring stored answers in {db.path}; nothing is generated")
            for key in keys:
                result = rescore_experiment(key, config)
                figures = ", ".join(
                    f"{f.key} {f.score:.3f}" for f in result.summary if f.score is not None
                )
                console.print(
                    f"{key}: {len(result.rows)} answers, {result.rescored} scored now"
                    + (f"; {figures}" if figures else "")
                )
