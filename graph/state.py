"""The graph's state: the input sentence, the chains asked for, and one result per chain.

`results` merges by chain spec, so fan-out branches (one per chain, sent with `Send`) write
their results side by side into one state.
"""

from typing import Annotated, Any

from typing_extensions import TypedDict


def merge_results(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer: each branch adds `{spec: result}`; a later write for the same spec replaces it."""
    return {**(left or {}), **(right or {})}


class ExtractorInput(TypedDict, total=False):
    """What a caller sends: a sentence, optionally gold triples, a chain or several."""

    sentence: str
    gold: list[dict[str, str]] | None
    meta: dict[str, Any] | None  # benchmark gold beside the triples (CaRB tuples, BenchIE facts)
    example_id: str | None
    chain: str | None
    chains: list[str] | None


class ExtractorState(ExtractorInput, total=False):
    """Input plus the resolved chain specs and every chain's result."""

    specs: list[str]
    results: Annotated[dict[str, Any], merge_results]


class ExtractorOutput(TypedDict, total=False):
    sentence: str
    specs: list[str]
    results: dict[str, Any]


class BranchState(TypedDict, total=False):
    """One chain's run inside the fan-out: its attempts, the current answer, tags and scores."""

    sentence: str
    gold: list[dict[str, str]] | None
    meta: dict[str, Any]
    example_id: str | None
    spec: str
    max_repairs: int
    scoring: dict[str, Any] | None  # the run's evaluators and judge, when it scores
    extraction: dict[str, Any]
    attempts: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    scores: dict[str, float | None]
    results: Annotated[dict[str, Any], merge_results]


class BranchOutput(TypedDict, total=False):
    """What a branch hands back to the parent graph: only its result (no shared keys clash)."""

    results: Annotated[dict[str, Any], merge_results]
