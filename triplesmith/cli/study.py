"""`triplesmith study`: the prompt-or-fine-tune study in one command (`make demo` runs the demo)."""

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


COLUMNS = [  # (metric, header, has a CI)
    ("judge", "judge (0-100 scaled)", True),
    ("triple_f1", "triple F1", True),
    ("carb_example_f1", "CaRB F1 / sentence", True),
    ("carb_f1", "CaRB F1", False),
    ("carb_auc", "CaRB AUC", False),
    ("benchie_f1", "BenchIE F1", False),
    ("format", "format valid", True),
    ("tag:format_error", "format_error", False),
    ("s_per_sentence", "s / sentence (wall)", False),
]


def chain_label(spec: str) -> str:
    """A short row label: the chain kind and model, without paths."""
    kind, _, rest = spec.partition(":")
    model = rest.split("+")[0]
    if kind == "hf" and "+adapter=" in rest:
        return f"fine-tuned {model} (hf)"
    shots = next((o for o in rest.split("+")[1:] if o.startswith("k=")), "")
    return f"{kind} {model}" + (f" ({shots})" if shots else "")


def results_table(comparison) -> Table:  # noqa: ANN001 - a ComparisonResult
    """One row per chain, the reference's table shape: judge where present, exact scores always."""
    frame = comparison.table
    table = Table(title="prompt or fine-tune? means with bootstrap 95 % CIs")
    table.add_column("chain")
    table.add_column("n", justify="right")
    shown = [(m, h, ci) for m, h, ci in COLUMNS if m in frame.columns]
    for _, header, _ in shown:
        table.add_column(header, justify="right")
    for spec, row in frame.iterrows():
        cells = []
        for metric, _, ci in shown:
            value = row[metric]
            if value != value:  # NaN
                cells.append("–")
            elif ci and f"{metric}_low" in frame.columns:
                cells.append(
                    f"{value:.3f} [{row[metric + '_low']:.3f}, {row[metric + '_high']:.3f}]"
                )
            elif metric.startswith("tag:"):
                cells.append(f"{value:.0%}")
            else:
                cells.append(f"{value:.3f}" if metric != "s_per_sentence" else f"{value:.2f}")
        table.add_row(chain_label(str(spec)), str(int(row["n"])), *cells)
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def study(
        preset: str = typer.Option(
            "demo", help="demo (embedded sample, SmolLM2) or carb (CaRB benchmark split)."
        ),
        out: Path | None = typer.Option(None, help="Report folder; default runs/study-PRESET."),
        carb_dir: Path | None = typer.Option(None, help="CaRB checkout (carb preset)."),
        benchie_dir: Path | None = typer.Option(
            None, help="BenchIE folder (carb preset, optional)."
        ),
        base: str | None = typer.Option(None, help="Base model: smollm2, a directory or a Hub id."),
        epochs: float | None = typer.Option(None, help="Training epochs."),
        max_steps: int | None = typer.Option(None, help="Training steps (overrides epochs)."),
        max_seq_len: int | None = typer.Option(None, help="Longest training example in tokens."),
        learning_rate: float | None = typer.Option(None, help="Training learning rate."),
        batch_size: int | None = typer.Option(None, help="Training batch size."),
        lora_r: int | None = typer.Option(None, help="LoRA rank (default 16)."),
        lora_alpha: int | None = typer.Option(None, help="LoRA alpha (default: twice the rank)."),
        lora_targets: str | None = typer.Option(
            None, help="LoRA targets: all-linear (default), attention, or module names."
        ),
        nary: str | None = typer.Option(
            None,
            help="CaRB's n-ary tuples as training targets: join (default), drop or split.",
        ),
        limit: int | None = typer.Option(None, help="Evaluate on the first N test sentences only."),
        k: int | None = typer.Option(None, help="Few-shot examples."),
        seeds: int | None = typer.Option(
            None,
            help="Training seeds: one adapter each, same data and split; the verdict uses "
            "their mean (demo 1, carb 3).",
        ),
        max_new_tokens: int | None = typer.Option(None, help="Token budget of every local chain."),
        concurrency: int | None = typer.Option(
            None, help="Sentences in flight (local chains batch them); demo 32, carb 64."
        ),
        max_repairs: int | None = typer.Option(
            None, help="Re-asks after a format error; demo 0, carb 1 (settings)."
        ),
        evaluators: str | None = typer.Option(None, help="e.g. triple-f1,format,carb,benchie"),
        judge_model: str | None = typer.Option(None, help="LLM judge, e.g. openai:gpt-4o-mini."),
        openai_ft_model: str | None = typer.Option(
            None, help="An ft: model for the openai-ft chain."
        ),
        fail_under: list[str] = typer.Option(
            [],
            "--fail-under",
            help="A CI gate on the fine-tuned chain, repeatable: METRIC=VALUE (e.g. "
            "carb_f1=0.44); exit 1 when it is below.",
        ),
        fail_if_worse: str | None = typer.Option(
            None,
            "--fail-if-worse",
            help="A CI gate: a stored experiment key (e.g. an earlier study's fine-tuned chain); "
            "exit 1 when the fine-tuned chain is worse on a metric (paired p < 0.05).",
        ),
        render_only: bool = typer.Option(
            False,
            "--render-only",
            help="Render the report again from the study's store (after a change to the "
            "report): nothing trained, generated or scored; --out is the study's folder as it "
            "named it, with the study's own options.",
        ),
    ) -> None:
        """Prepare → fine-tune → evaluate every chain → compare → failure analysis → curate.

        Exit status: 0 done, 1 a gate failed, 2 a refused input, 3 a failure of the surroundings.
        """
        from triplesmith.cli.compare import check_gates
        from triplesmith.errors import ExperimentError
        from triplesmith.experiments.gates import parse_floors
        from triplesmith.study import StudyConfig, run_study

        if preset not in ("demo", "carb"):
            raise ExperimentError(f"unknown preset {preset!r}; use demo or carb")
        config = StudyConfig.from_preset(
            preset,  # type: ignore[arg-type]
            out or Path("runs") / f"study-{preset}",
            carb_dir=carb_dir,
            benchie_dir=benchie_dir,
            base=base,
            epochs=epochs,
            max_steps=max_steps,
            max_seq_len=max_seq_len,
            learning_rate=learning_rate,
            batch_size=batch_size,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_targets=lora_targets,
            nary=nary,
            limit=limit,
            k=k,
            seeds=seeds,
            max_new_tokens=max_new_tokens,
            max_concurrency=concurrency,
            max_repairs=max_repairs,
            evaluators=evaluators,
            judge_model=judge_model,
            openai_ft_model=openai_ft_model,
        )
        floors = parse_floors(fail_under)  # refused before any stage runs
        command = "triplesmith " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if render_only:
            from triplesmith.study import rerender_report

            console.print(f"report: {rerender_report(config, command)}")
            return
        result = run_study(config, console=err, command=command)
        console.print(results_table(result.comparison))
        console.print(f"report: {result.report}")
        console.print(f"curated dataset: {result.curated}")
        console.print(
            f"wall time: {result.wall_s / 60:.1f} min; reused stages: {', '.join(result.reused) or 'none'}"
        )
        run = config.run.model_copy(update={"store": result.out / "experiments.sqlite"})
        check_gates(result.comparison, floors, fail_if_worse, run, [result.roles["fine-tuned"]])
