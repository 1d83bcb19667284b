"""`triplesmith serve`: a local model (and adapters by name) as an OpenAI-compatible server."""

import typer
from rich.console import Console

from triplesmith.errors import ChainError

err = Console(stderr=True)


def _served(model: str, name: str | None, adapters: list[str]) -> list:
    from triplesmith.chains.engines.server import ServedModel

    served = [ServedModel(name or model, model)]
    for entry in adapters:
        label, sep, path = entry.partition("=")
        if not sep or not label or not path:
            raise ChainError(f"--adapter {entry!r} must look like NAME=DIR (a PEFT adapter folder)")
        served.append(ServedModel(label, model, path))
    names = [s.name for s in served]
    if len(set(names)) != len(names):
        raise ChainError(f"served names must differ, got {names}")
    return served


def serve(
    model: str = typer.Option(
        "smollm2", help="Base model: an embedded name, a directory or a Hub id."
    ),
    name: str | None = typer.Option(None, help="The name clients ask for (default: --model)."),
    adapter: list[str] = typer.Option(
        [],
        "--adapter",
        help="NAME=DIR: also serve the base with this PEFT adapter as NAME (repeatable).",
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    batch_size: int | None = typer.Option(
        None, min=1, max=4096, help="Rows per batch (default: the engine's)."
    ),
    max_new_tokens: int | None = typer.Option(
        None, min=1, max=4096, help="Default answer budget when a request sets no max_tokens."
    ),
) -> None:
    """Serve local models at http://HOST:PORT/v1 (chat completions, JSON-schema response_format,
    logprobs); chains reach it with +base_url=http://HOST:PORT/v1."""
    import uvicorn

    from triplesmith.chains.engines import GenerationOptions, get_engine
    from triplesmith.chains.engines.server import build_app

    served = _served(model, name, adapter)
    with err.status("loading models"):
        engines = {s.name: get_engine(s.model, s.adapter) for s in served}
    options = GenerationOptions(max_new_tokens=max_new_tokens, batch_size=batch_size)
    err.print(f"serving {', '.join(engines)} at http://{host}:{port}/v1", highlight=False)
    uvicorn.run(build_app(engines, options), host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
