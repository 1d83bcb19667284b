"""`triplesmith extract`: triples for one sentence, or for a JSONL file of many (batched)."""

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from triplesmith.chains.extraction import Extraction
from triplesmith.chains.inputs import coerce_input
from triplesmith.chains.registry import get_chain
from triplesmith.data.registry import load_dataset
from triplesmith.errors import ChainError

console = Console()
err = Console(stderr=True)

CHAIN_HELP = (
    "Chain spec: few-shot:smollm2[+k=3], zero-shot:smollm2, hf:smollm2+adapter=DIR, "
    "few-shot:openai:gpt-4o-mini, openai-ft:ft:MODEL."
)


def _table(extraction: Extraction) -> Table:
    table = Table(title=f"{extraction.chain}: {extraction.sentence}")
    for column in ("s", "relation", "object", "confidence"):
        table.add_column(column)
    confidences = extraction.confidences or [None] * len(extraction.triples)
    for triple, confidence in zip(extraction.triples, confidences, strict=True):
        shown = "" if confidence is None else f"{confidence:.3f}"
        table.add_row(triple.s, triple.relation, triple.object, shown)
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def extract(
        sentence: str | None = typer.Argument(None, help="The sentence (or use --input)."),
        chain: str = typer.Option("few-shot:smollm2", "--chain", "-c", help=CHAIN_HELP),
        input: Path | None = typer.Option(
            None, "--input", "-i", help="JSONL with a sentence per line."
        ),
        output: Path | None = typer.Option(None, "--output", "-o", help="JSONL of Extractions."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        batch_size: int = typer.Option(16, help="Sentences per batch with --input."),
        shots: str | None = typer.Option(
            None, help="Few-shot pool (dataset); default sample:train."
        ),
    ) -> None:
        """Extract triples with a chain: one sentence, or --input FILE.jsonl --output OUT.jsonl."""
        if (sentence is None) == (input is None):
            raise ChainError("give either a SENTENCE or --input FILE.jsonl (not both, not neither)")
        if sentence is not None:
            coerce_input({"sentence": sentence})  # a bad sentence fails before any model loads
        runnable = get_chain(chain, shots=shots)
        if sentence is not None:
            extraction = runnable.invoke({"sentence": sentence})
            if as_json:
                print(json.dumps(extraction.to_output(), ensure_ascii=False))
            else:
                console.print(_table(extraction))
                for warning in extraction.diagnostics.errors[1:]:
                    err.print(f"[yellow]parser:[/] {warning}", highlight=False)
            if extraction.error:
                raise ChainError(extraction.error)
            return
        if output is None:
            raise ChainError("--input needs --output OUT.jsonl for the extractions")
        rows = load_dataset(str(input))
        done = _finished(output)
        todo = [r for r in rows if r.id not in done]
        failed = 0
        with (
            output.open("a", encoding="utf-8") as handle,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
            ) as progress,
        ):
            task = progress.add_task(f"extract {chain}", total=len(rows), completed=len(done))
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                extractions = runnable.batch([{"sentence": r.sentence} for r in chunk])
                for row, extraction in zip(chunk, extractions, strict=True):
                    line = {"id": row.id, **extraction.to_output()}
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                    failed += extraction.error is not None
                handle.flush()
                progress.advance(task, len(chunk))
        if done:
            err.print(f"resumed: {len(done)} sentences were already in {output}")
        err.print(f"wrote {len(todo)} extractions to {output} ({failed} with errors)")


def _finished(output: Path) -> set[str]:
    """Ids already written to `output` by an earlier, interrupted run (a cut last line is dropped)."""
    if not output.exists():
        return set()
    done, keep = set(), []
    for line in output.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            done.add(row["id"])
            keep.append(line)
    output.write_text("".join(f"{line}\n" for line in keep), encoding="utf-8")
    return done
