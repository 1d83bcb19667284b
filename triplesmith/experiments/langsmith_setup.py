"""The LangSmith client an experiment runs with: the real API with a key, a sealed one without.

Without `LANGSMITH_API_KEY`, `langsmith.evaluate` still builds a client, asks it for the
server's `/info`, and lets LangChain's tracer post runs when `LANGSMITH_TRACING` is on. The
offline client has its `info` given up front and no background tracing thread, and the target
and evaluators run inside `tracing_context(enabled=False)`, so nothing opens a connection
(tests/test_experiments.py checks this at the socket level).
"""

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

from langsmith import Client
from langsmith.run_helpers import tracing_context
from langsmith.schemas import LangSmithInfo

# Never contacted; if a future SDK tried anyway, it would fail at once on the loopback.
OFFLINE_URL = "http://127.0.0.1:1"

F = TypeVar("F", bound=Callable[..., Any])


def langsmith_configured() -> bool:
    """True when a LangSmith API key is in the environment (read fresh, not cached)."""
    return bool(os.environ.get("LANGSMITH_API_KEY") or os.environ.get("LANGCHAIN_API_KEY"))


def offline_client() -> Client:
    """A client that `evaluate(..., upload_results=False)` can use without any network."""
    return Client(
        api_url=OFFLINE_URL,
        api_key="offline",
        info=LangSmithInfo(),
        auto_batch_tracing=False,
    )


def experiment_client(upload: bool, client: Client | None = None) -> Client:
    """The client given, else the environment's (`upload`) or the offline one."""
    if client is not None:
        return client
    return Client() if upload else offline_client()


@contextmanager
def no_tracing(offline: bool) -> Iterator[None]:
    """Turn LangChain/LangSmith tracing off inside this block when running offline."""
    with tracing_context(enabled=False) if offline else nullcontext():
        yield


def untraced(function: F, offline: bool) -> F:
    """`function` run with tracing off when offline (signature kept for `evaluate`)."""
    if not offline:
        return function

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with tracing_context(enabled=False):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def check_reachable(client: Client) -> None:
    """Fail now, in one line, when LangSmith cannot be reached with the configured key: before
    any model runs, not after the work (the error names the endpoint and what to do)."""
    from langsmith.utils import LangSmithError

    from triplesmith.errors import ExperimentError

    try:
        next(iter(client.list_datasets(limit=1)), None)
    except LangSmithError as exc:
        kind = type(exc).__name__
        raise ExperimentError(
            f"LangSmith is not reachable at {client.api_url} ({kind}); check LANGSMITH_ENDPOINT "
            "and LANGSMITH_API_KEY, or run offline with --no-upload"
        ) from None
