"""`triplesmith models`: list the embedded models and warm their converted cache."""

import json
import time

import typer
from rich.console import Console
from rich.table import Table

from triplesmith import models

app = typer.Typer(help="The embedded models and their cache.", no_args_is_help=True)
console = Console()


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """Embedded models, whether installed, and whether converted."""
    rows = models.list_models()
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="embedded models")
    for column in ("name", "description", "installed", "converted", "cache"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(str(row[c]) for c in ("name", "description", "installed", "converted", "cache"))
        )
    console.print(table)


@app.command()
def warm(name: str = typer.Argument("smollm2")) -> None:
    """Convert an embedded model to the safetensors cache now, then time a load."""
    with console.status(f"converting {name} (first time only)"):
        models.convert_embedded(name)
    started = time.perf_counter()
    models.load(name)
    console.print(f"{name} ready: loads in {time.perf_counter() - started:.2f} s")
