"""JSONL in the shared format: one `{"id", "sentence", "triples": [{s, relation, object}], ...}` a line."""

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from triplesmith.data.lines import read_lines
from triplesmith.errors import DatasetError
from triplesmith.schema import Example


def describe_validation_error(error: ValidationError) -> str:
    """The first problem of a pydantic error as `"field" must be ..., got ...`."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "row"
    got = first.get("input")
    shown = json.dumps(got, ensure_ascii=False)[:60] if got is not None else "nothing"
    if first["type"] == "missing":
        return f'"{where}" is required'
    if where.startswith("triples") and first["type"] in {"list_type", "model_type"}:
        return f'"{where}" must be a list of {{s, relation, object}}, got {shown}'
    return f'"{where}": {first["msg"]}, got {shown}'


def read_jsonl(path: Path, source: str | None = None) -> list[Example]:
    """Read examples; ids default to `{file stem}-{line}` and must be unique."""
    path = Path(path)
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(row, dict):
            raise DatasetError(
                f'{path}:{number}: expected a JSON object with "sentence" and "triples", '
                f"got {type(row).__name__}"
            )
        row.setdefault("id", f"{path.stem}-{number}")
        row["id"] = str(row["id"])
        if source and "source" not in row:
            row["source"] = source
        try:
            example = Example.model_validate(row)
        except ValidationError as exc:
            raise DatasetError(f"{path}:{number}: {describe_validation_error(exc)}") from None
        if example.id in seen:
            raise DatasetError(
                f"{path}:{number}: duplicate id {example.id!r} (first on line {seen[example.id]})"
            )
        seen[example.id] = number
        examples.append(example)
    return examples


def write_lines_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write one line per item atomically: a temporary file in the same folder renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    )
    try:
        with handle:
            for line in lines:
                handle.write(line + "\n")
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, examples: Iterable[Example]) -> None:
    """Write examples atomically, one JSON object a line."""
    write_lines_atomic(path, (example.model_dump_json() for example in examples))
