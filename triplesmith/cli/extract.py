"""`triplesmith extract`: triples for one sentence, or for a JSONL file of many (batched).

With --input, nothing the user gave is rewritten: extractions are appended to --output, the
sentences whose model call failed go to a separate errors file, and a rerun extracts only the
sentences --output does not hold yet (new ones and failed ones).
"""

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from triplesmith.chains.extraction import Extraction
from triplesmith.chains.inputs import coerce_input
from triplesmith.chains.registry import get_chain
from triplesmith.chains.spec import OPTIONS, parse_spec
from triplesmith.data.registry import load_dataset
from triplesmith.errors import ChainError

console = Console()
err = Console(stderr=True, soft_wrap=True, highlight=False)  # one line per message

CHAIN_HELP = (
    "Chain spec: few-shot:smollm2[+k=3], zero-shot:smollm2, hf:smollm2+adapter=DIR, "
    f"few-shot:openai:gpt-4o-mini, openai-ft:ft:MODEL. Options: {', '.join(OPTIONS)} "
    "(ranges in chains/spec.py, checked before any model loads)."
)
ERRORS_SUFFIX = ".errors.jsonl"
MAX_BATCH = 4096
EXIT_FAILED = 1  # some sentences failed (bad input exits 2, as every command does)


def errors_path(output: Path) -> Path:
    """Where the failed sentences of a run go: `out.jsonl` → `out.errors.jsonl`."""
    return output.with_name(output.name.removesuffix(".jsonl") + ERRORS_SUFFIX)


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
            None, "--input", "-i", help="JSONL with a sentence per line; never modified."
        ),
        output: Path | None = typer.Option(
            None,
            "--output",
            "-o",
            help="JSONL of Extractions, appended to (a rerun resumes); not the --input file. "
            f"Failed sentences go to OUTPUT{ERRORS_SUFFIX} (out.jsonl → out{ERRORS_SUFFIX}), "
            "replaced on every run; rerun the same command to retry them.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        batch_size: int = typer.Option(
            16, min=1, max=MAX_BATCH, help="Sentences per batch with --input."
        ),
        shots: str | None = typer.Option(
            None, help="Few-shot pool (dataset); default sample:train."
        ),
    ) -> None:
        """Extract triples with a chain: one sentence, or --input FILE.jsonl --output OUT.jsonl.

        Exit status: 0 when every sentence was extracted, 1 when the model call failed for some
        (with --input they are in the errors file; rerun to retry them), 2 for bad input
        (refused before anything runs).
        """
        if (sentence is None) == (input is None):
            raise ChainError("give either a SENTENCE or --input FILE.jsonl (not both, not neither)")
        parse_spec(chain)  # a bad spec fails before any file is read or model loaded
        if sentence is not None:
            _extract_one(sentence, chain, shots, as_json)
        else:
            _extract_file(input, output, chain, shots, batch_size)  # type: ignore[arg-type]


def _extract_one(sentence: str, chain: str, shots: str | None, as_json: bool) -> None:
    coerce_input({"sentence": sentence})  # a bad sentence fails before any model loads
    extraction = get_chain(chain, shots=shots).invoke({"sentence": sentence})
    if as_json:
        print(json.dumps(extraction.to_output(), ensure_ascii=False))
    else:
        console.print(_table(extraction))
        for warning in extraction.diagnostics.errors[1:]:
            err.print(f"[yellow]parser:[/] {warning}", highlight=False)
    if extraction.error:
        err.print(f"[bold red]error:[/] the model call failed: {escape(extraction.error)}")
        raise typer.Exit(EXIT_FAILED)


def _extract_file(
    input: Path, output: Path | None, chain: str, shots: str | None, batch_size: int
) -> None:
    if output is None:
        raise ChainError("--input needs --output OUT.jsonl for the extractions")
    errors = errors_path(output)
    for path, what in ((output, "--output"), (errors, f"the errors file of --output {output}")):
        if _same_file(path, input):
            raise ChainError(
                f"{what} ({path}) is the --input file; give another path: --input is never modified"
            )
    rows = load_dataset(str(input))
    _check_writable(output)
    done = _finished(output)
    todo = [r for r in rows if r.id not in done]
    runnable = get_chain(chain, shots=shots)
    failed = written = 0
    try:
        errors.unlink(missing_ok=True)  # its sentences are retried now; rewritten if any fail
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
            task = progress.add_task(
                f"extract {chain}", total=len(rows), completed=len(rows) - len(todo)
            )
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                extractions = runnable.batch([{"sentence": r.sentence} for r in chunk])
                for row, extraction in zip(chunk, extractions, strict=True):
                    line = json.dumps({"id": row.id, **extraction.to_output()}, ensure_ascii=False)
                    if extraction.error is None:
                        handle.write(line + "\n")
                        written += 1
                    else:
                        with errors.open("a", encoding="utf-8") as failures:
                            failures.write(line + "\n")
                        failed += 1
                handle.flush()
                progress.advance(task, len(chunk))
    except OSError as exc:
        raise ChainError(
            f"cannot write the extractions ({exc.filename or output}): {exc.strerror or exc}; "
            "free some space or give a writable --output, then rerun to resume"
        ) from None
    if len(todo) < len(rows):
        err.print(f"resumed: {len(rows) - len(todo)} sentences were already in {output}")
    err.print(f"wrote {written} extractions to {output}")
    if failed:
        err.print(
            f"{failed} of {len(rows)} sentences failed; see {errors} "
            "(rerun the same command to retry them)"
        )
        raise typer.Exit(EXIT_FAILED)


def _same_file(path: Path, other: Path) -> bool:
    """True when two paths name one file (the same resolved path, or links to one file)."""
    if path.resolve() == other.resolve():
        return True
    try:
        return path.exists() and other.exists() and os.path.samefile(path, other)
    except OSError:
        return False


def _check_writable(output: Path) -> None:
    """Fail before any model loads when --output cannot be written (its folder is created)."""
    if output.exists() and not output.is_file():
        kind = "a folder" if output.is_dir() else "not a regular file"
        raise ChainError(f"--output {output} is {kind}; give a file path")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChainError(
            f"--output {output}: cannot create its folder ({exc.strerror or exc}); "
            "give a writable path"
        ) from None
    if not os.access(output if output.exists() else output.parent, os.W_OK):
        raise ChainError(f"--output {output} is not writable; give a writable path")


def _finished(output: Path) -> set[str]:
    """Ids of the sentences an earlier run wrote to `output`; the rows there are never rewritten.

    A file holding anything but extraction rows is refused (it is not this command's output).
    A last line without its newline is completed, or dropped when a killed run cut it short.
    """
    if not output.exists():
        return set()
    try:
        text = output.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ChainError(
            f"--output {output} exists and is not a UTF-8 JSONL file of extractions; "
            "give a new path (the same path resumes a run)"
        ) from None
    except OSError as exc:
        raise ChainError(f"cannot read --output {output}: {exc.strerror or exc}") from None
    done: set[str] = set()
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: a write cut short
                err.print(f"{output}: dropped a cut last line left by an interrupted run")
                with output.open("r+b") as handle:
                    handle.truncate(len(text.encode("utf-8")) - len(line.encode("utf-8")))
                break
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and "triples" in row):
            raise ChainError(
                f"--output {output}:{number} is not an extraction row, so this file is not the "
                "output of triplesmith extract and nothing is appended to it; give a new path"
            )
        if row.get("error") is None:
            done.add(row["id"])
        if number == len(lines):  # a complete row without its newline: the next row starts anew
            with output.open("a", encoding="utf-8") as handle:
                handle.write("\n")
    return done
