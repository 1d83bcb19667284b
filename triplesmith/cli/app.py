"""The `triplesmith` command: one Typer app, one sub-command group per capability."""

import logging
import os
import sqlite3
import sys

import typer
from langsmith.utils import LangSmithError
from rich.console import Console
from rich.markup import escape

from triplesmith.cli import data as data_cli
from triplesmith.cli import models as models_cli
from triplesmith.errors import TriplesmithError

app = typer.Typer(
    help="Prompt a big model or fine-tune a small one? Knowledge-graph triple extraction, end to end.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cli.app, name="data")
app.add_typer(models_cli.app, name="models")

err = Console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        import triplesmith

        typer.echo(f"triplesmith {triplesmith.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-v, -vv)."),
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Exit status: 0 done; 1 a CI gate failed (compare/study --fail-under, --fail-if-worse) or
    some rows failed (extract --input); 2 a refused input (an option, spec, dataset or file the
    command cannot use, named in one line); 3 a failure of the surroundings (disk, store, network)."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose == 0:
        for noisy in ("httpx", "transformers", "langsmith", "bitsandbytes"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def register(module_name: str, name: str | None = None) -> None:
    """Attach a capability's sub-app or command (kept optional so one missing extra never breaks all)."""
    import importlib

    module = importlib.import_module(f"triplesmith.cli.{module_name}")
    if hasattr(module, "app"):
        app.add_typer(module.app, name=name or module_name)
    else:
        module.register(app)


for _module in (
    "extract",
    "serve",
    "train",
    "export",
    "openai",
    "score",
    "compare",
    "rescore",
    "study",
):
    try:
        register(_module)
    except ModuleNotFoundError as exc:
        if exc.name != f"triplesmith.cli.{_module}":
            raise


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The commands draw Rich progress; third-party tqdm bars (langsmith.evaluate, datasets,
    # transformers) would interleave with them.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    try:
        app()
    except TriplesmithError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # the surroundings: a path not writable, a full disk, a folder
        where = f" ({exc.filename})" if exc.filename else ""
        err.print(
            f"[bold red]error:[/] {exc.strerror or exc}{where}; give a writable path with room "
            "to spare (finished work is saved: rerun to resume)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(3)
    except LangSmithError as exc:
        err.print(
            f"[bold red]error:[/] LangSmith failed: {type(exc).__name__}; check "
            "LANGSMITH_ENDPOINT and LANGSMITH_API_KEY, or run offline with --no-upload (finished "
            "work is saved: rerun to resume)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(3)
    except sqlite3.DatabaseError as exc:
        err.print(
            f"[bold red]error:[/] the experiment store is damaged ({exc}); move it away to start "
            "a new one, or give another --store",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(3)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        # Typer turns Ctrl-C inside a command into a silent `Exit(130)`; say what to do. A command
        # that handled the interrupt itself (train names its checkpoints) raised Exit(130) with no
        # KeyboardInterrupt behind it and has already said so.
        if exc.code == 130 and isinstance(
            getattr(exc.__context__, "__cause__", None), KeyboardInterrupt
        ):
            _interrupted()
        raise


def _interrupted() -> None:
    err.print("interrupted; finished work is saved, rerun the same command to resume")
    sys.exit(130)


if __name__ == "__main__":
    main()
