"""`triplesmith score`: score a system's output file against CaRB or BenchIE gold."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from triplesmith.errors import TriplesmithError
from triplesmith.evaluators.benchie import (
    read_benchie_gold,
    read_benchie_predictions,
    score_benchie,
)
from triplesmith.evaluators.carb import read_carb_gold, read_carb_predictions, score_carb

app = typer.Typer(
    help="Score a system output file with CaRB's or BenchIE's scorer.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


class CarbFormat(StrEnum):
    """The prediction formats `read_carb_predictions` reads."""

    openie4 = "openie4"
    openie5 = "openie5"
    clausie = "clausie"
    props = "props"
    reverb = "reverb"
    tabbed = "tabbed"


def _file_option(help_text: str) -> Any:
    return typer.Option(..., exists=True, dir_okay=False, readable=True, help=help_text)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad input ends the command with its message and exit status 2, never a traceback."""
    try:
        yield
    except TriplesmithError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except UnicodeDecodeError as exc:
        err.print(
            f"[bold red]error:[/] an input file is not UTF-8 text ({exc}); re-encode it as UTF-8",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2) from None


def _print_figures(title: str, caption: str, figures: dict[str, Any]) -> None:
    table = Table(title=title, caption=caption)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    console.print(table)


@app.command()
def carb(
    gold: Path = _file_option("CaRB gold TSV: sentence, relation, arg1, arg2, ..."),
    pred: Path = _file_option("The system's extractions."),
    fmt: CarbFormat = typer.Option(..., "--format", help="Format of --pred."),
    binary: bool = typer.Option(
        False, "--binary", help="Binarise n-ary tuples first, as the reference's --binary does."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """CaRB's AUC and best-F1 point (precision, recall, F1), as its reference scorer gives them."""
    with _user_errors():
        score = score_carb(
            read_carb_gold(gold), read_carb_predictions(pred, fmt.value), binary=binary
        )
    figures = {
        "auc": score.auc,
        "precision": score.precision,
        "recall": score.recall,
        "f1": score.f1,
        "threshold": score.threshold,
        "unmatched_sentences": score.unmatched_sentences,
    }
    if as_json:
        print(json.dumps(figures))
        return
    mode = " --binary" if binary else ""
    _print_figures(f"CaRB ({fmt.value}{mode})", f"{pred} against {gold}", figures)
    if score.unmatched_sentences:
        err.print(
            f"{score.unmatched_sentences} predicted sentences are not in the gold; "
            "they were not scored",
            highlight=False,
        )


@app.command()
def benchie(
    gold: Path = _file_option("BenchIE gold: fact synsets (gold_en.txt)."),
    pred: Path = _file_option("The system's extractions: sent_id, subject, relation, object."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """BenchIE's precision, recall and F1 (an extraction is correct when it matches a fact synset)."""
    with _user_errors():
        score = score_benchie(read_benchie_gold(gold), read_benchie_predictions(pred))
    figures = score.model_dump()
    if as_json:
        print(json.dumps(figures))
        return
    _print_figures("BenchIE", f"{pred} against {gold}", figures)
    if score.unmatched_sentences:
        err.print(
            f"{score.unmatched_sentences} predicted sentence ids are not in the gold; "
            f"their {score.ignored_extractions} extractions were not scored",
            highlight=False,
        )
