"""`triplesmith data`: prepare leak-free splits, print statistics, fetch CaRB."""

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from triplesmith.data.fetch import fetch_carb
from triplesmith.data.registry import dataset_stats, load_dataset
from triplesmith.data.split import SplitRule, make_split, write_split

app = typer.Typer(help="Datasets: prepare splits, statistics, downloads.", no_args_is_help=True)
console = Console()


@app.command()
def prepare(
    carb_dir: Path = typer.Option(..., help="CaRB checkout with gold/dev.tsv and gold/test.tsv."),
    out: Path = typer.Option(..., help="Folder for train.jsonl, test.jsonl and manifest.json."),
    benchie_dir: Path | None = typer.Option(None, help="BenchIE folder with gold_en.txt."),
    split: SplitRule = typer.Option("benchmark", help="benchmark (CaRB test = test) or random."),
    test_size: int = typer.Option(100, help="Test sentences for --split random."),
    seed: int = typer.Option(0, help="Seed for --split random."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Write a leak-free train/test split (by normalised sentence) with a manifest."""
    train, test, manifest = make_split(carb_dir, benchie_dir, split, test_size, seed)
    write_split(out, train, test, manifest)
    if as_json:
        print(manifest.model_dump_json(indent=2))
        return
    table = Table(title=f"{split} split -> {out}")
    table.add_column("part")
    table.add_column("sentences", justify="right")
    table.add_column("triples", justify="right")
    for part in ("train", "test"):
        table.add_row(
            part,
            str(manifest.counts[f"{part}_sentences"]),
            str(manifest.counts[f"{part}_triples"]),
        )
    console.print(table)
    console.print("overlap by normalised sentence: 0")


@app.command()
def stats(
    path: str = typer.Argument(
        ..., help="sample, a .jsonl file, a prepared folder or langsmith:NAME."
    ),
    split: str | None = typer.Option(None, help="train or test, for a prepared folder."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Sentences, triples, triples per sentence and sources of a dataset."""
    figures = dataset_stats(load_dataset(path, split=split))
    if as_json:
        print(json.dumps(figures))
        return
    table = Table(title=f"dataset {path}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        shown = (
            ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else value
        )
        table.add_row(key, str(shown))
    console.print(table)


@app.command()
def fetch(
    name: str = typer.Argument(
        ..., help="Only 'carb' can be fetched (BenchIE's licence: get it yourself)."
    ),
    to: Path = typer.Option(..., help="Target folder."),
    base_url: str | None = typer.Option(
        None, help="Mirror of CaRB's data/ folder (default: GitHub)."
    ),
) -> None:
    """Download a benchmark at its pinned commit and verify every file's sha256."""
    if name != "carb":
        raise typer.BadParameter(f"cannot fetch {name!r}; only 'carb' is downloadable")
    files = fetch_carb(to, **({"base_url": base_url} if base_url else {}))
    console.print(f"CaRB: {len(files)} files verified in {to}")
