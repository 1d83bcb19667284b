"""Reading text files line by line with file:line errors for undecodable bytes."""

from collections.abc import Iterator
from pathlib import Path

from triplesmith.errors import DatasetError


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, text)` for each line, without its newline; 1-based numbers."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(
                    f"{path}:{number}: undecodable bytes at column {exc.start + 1} "
                    "(expected UTF-8 text; re-save the file as UTF-8)"
                ) from None
            yield number, text.rstrip("\r\n")
