"""The graph's nodes: validate → route → extract → parse → triage → (repair) → score → finish."""

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Send

from triplesmith.chains.parser import ParseDiagnostics, parse_triples
from triplesmith.chains.registry import get_chain
from triplesmith.chains.spec import ChainSpec, parse_spec
from triplesmith.errors import ChainError, InvalidInputError
from triplesmith.graph.state import BranchState, ExtractorContext, ExtractorState
from triplesmith.graph.triage import triage
from triplesmith.schema import Example, Triple
from triplesmith.settings import get_settings
from triplesmith.text import collapse_whitespace

DEFAULT_CHAIN = "few-shot:smollm2"


MAX_CHAINS = 8  # chains one request may run
MAX_REPAIRS = 5  # re-asks one answer may get

# What LangGraph, its server and LangSmith put into `configurable` besides the run's own keys.
_INTERNAL_PREFIXES = (
    "__", "langgraph_", "thread_", "checkpoint_", "run_", "assistant_", "graph_", "user_", "x-",
)  # fmt: skip


def run_options(config: RunnableConfig | None) -> dict[str, Any]:
    """The run's configuration: LangGraph's run context (`graph.invoke(..., context={...})`),
    overlaid by `configurable` (older clients, `langgraph dev` requests). A key that is neither
    an `ExtractorContext` field nor LangGraph's own is an error naming the valid keys."""
    from langgraph.runtime import get_runtime

    valid = set(ExtractorContext.__annotations__)
    options: dict[str, Any] = {}
    try:
        context = get_runtime().context
    except RuntimeError:  # called outside a graph run
        context = None
    if isinstance(context, dict):
        options.update({k: v for k, v in context.items() if v is not None})
    configurable = (config or {}).get("configurable") or {}
    options.update({k: v for k, v in configurable.items() if not k.startswith(_INTERNAL_PREFIXES)})
    unknown = sorted(set(options) - valid)
    if unknown:
        raise InvalidInputError(
            f"unknown run configuration key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are {', '.join(sorted(valid))}"
        )
    return options


def _apply_overrides(spec: ChainSpec, options: dict[str, Any]) -> ChainSpec:
    changed = spec.model_copy(deep=True)
    if options.get("model"):
        changed.model = str(options["model"])
    if options.get("adapter"):
        if spec.kind != "hf":
            raise ChainError(f"configurable adapter applies to hf chains, not {spec}")
        changed.options["adapter"] = str(options["adapter"])
    if options.get("k") is not None and spec.kind == "few-shot":
        changed.options["k"] = int(options["k"])
    if options.get("constrained") is not None:
        changed.options["constrained"] = bool(options["constrained"])
    return parse_spec(str(changed))


def validate(state: ExtractorState, config: RunnableConfig) -> dict[str, Any]:
    """Check the input and resolve the chain specs; a bad input fails here, naming the problem."""
    sentence = state.get("sentence")
    if not isinstance(sentence, str):
        raise InvalidInputError(f'input needs "sentence" as a string, got {sentence!r}')
    sentence = collapse_whitespace(sentence)
    if not sentence:
        raise InvalidInputError('input "sentence" is empty or whitespace only')
    gold = state.get("gold")
    if gold is not None:
        try:
            gold = [Triple.model_validate(t).model_dump() for t in gold]
        except Exception as exc:
            raise InvalidInputError(
                f'input "gold" must be a list of {{"s", "relation", "object"}}: {exc}'
            ) from None
    options = run_options(config)
    requested = options.get("chain") or state.get("chains") or state.get("chain") or DEFAULT_CHAIN
    if isinstance(requested, str):
        requested = [requested]
    if not isinstance(requested, list) or not all(isinstance(s, str) for s in requested):
        raise InvalidInputError(f"chain must be a spec string or a list of them, got {requested!r}")
    if len(requested) > MAX_CHAINS:
        raise InvalidInputError(
            f"a request may run at most {MAX_CHAINS} chains, got {len(requested)}; split it"
        )
    _max_repairs(options)  # refused here, before any chain runs
    try:
        parsed = [_apply_overrides(parse_spec(s), options) for s in requested]
    except ChainError as exc:
        raise InvalidInputError(str(exc)) from None
    for spec in parsed:
        _check_roots(spec)
    specs = [str(spec) for spec in parsed]
    return {"sentence": sentence, "gold": gold, "specs": list(dict.fromkeys(specs))}


def _max_repairs(options: dict[str, Any]) -> int:
    value = options.get("max_repairs", get_settings().max_repairs)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPAIRS:
        raise InvalidInputError(
            f"max_repairs must be an integer from 0 to {MAX_REPAIRS}, got {value!r}"
        )
    return value


def _check_roots(spec: ChainSpec) -> None:
    """With `TRIPLESMITH_SERVE_ROOTS` set (`langgraph.json` sets it), a model, adapter or shots
    path named by a request must lie under one of those folders: a request cannot make the
    server read any file of the machine."""
    roots_text = os.environ.get("TRIPLESMITH_SERVE_ROOTS")
    if not roots_text:
        return
    roots = [Path(r).expanduser().resolve() for r in roots_text.split(os.pathsep) if r]
    named = {"model": spec.model, **{k: spec.options.get(k) for k in ("adapter", "shots")}}
    for what, value in named.items():
        if not isinstance(value, str) or not _looks_like_path(value):
            continue
        path = Path(value).expanduser().resolve()
        if not any(path == root or root in path.parents for root in roots):
            raise InvalidInputError(
                f"{what} {value!r} is outside the folders this server may read "
                f"(TRIPLESMITH_SERVE_ROOTS: {roots_text}); put it under one of them"
            )


def _looks_like_path(value: str) -> bool:
    """A local path rather than an embedded model, a Hub id (`owner/name`) or a dataset name."""
    if value.startswith(("/", ".", "~")) or Path(value).exists():
        return True
    return value.count("/") > 1


def route(state: ExtractorState, config: RunnableConfig) -> list[Send]:
    """One branch per chain, run concurrently (comparison mode when there are several)."""
    options = run_options(config)
    max_repairs = _max_repairs(options)
    return [
        Send(
            "run_chain",
            {
                "sentence": state["sentence"],
                "gold": state.get("gold"),
                "spec": spec,
                "max_repairs": max_repairs,
                "attempts": [],
            },  # fmt: skip
        )
        for spec in state["specs"]
    ]


def _chain(spec: str) -> Any:
    return get_chain(spec)


def extract(state: BranchState) -> dict[str, Any]:
    """Ask the chain; a model failure is recorded as the attempt's error. A chain that cannot
    be built from its configuration (no such model, not an adapter folder, a bad shots file)
    is the request's error, named (a 4xx from the server, not an internal error)."""
    try:
        chain = _chain(state["spec"])
    except ChainError as exc:
        raise InvalidInputError(str(exc)) from None
    extraction = chain.invoke({"sentence": state["sentence"]})
    return {"extraction": extraction.to_output()}


def repair(state: BranchState) -> dict[str, Any]:
    """Re-ask the same chain with its bad output and what the parser said about it."""
    previous = state["extraction"]
    problems = "; ".join(previous["diagnostics"].get("errors", [])[1:3]) or "no JSON triples found"
    chain = _chain(state["spec"])
    extraction = chain.invoke(
        {
            "sentence": state["sentence"],
            "repair": {"output": previous["raw"][:2000], "error": problems},
        }
    )
    return {"extraction": extraction.to_output()}


def parse(state: BranchState) -> dict[str, Any]:
    """Record the parse of the raw answer as an attempt (chains parse already; a result that
    comes without diagnostics, e.g. from a custom chain, is parsed here)."""
    extraction = dict(state["extraction"])
    if not extraction.get("diagnostics") and not extraction.get("error"):
        parsed = parse_triples(extraction["raw"])
        extraction["triples"] = [t.model_dump() for t in parsed.triples]
        extraction["diagnostics"] = parsed.diagnostics.model_dump()
    attempt = {
        "raw": extraction["raw"],
        "error": extraction.get("error"),
        "triples": len(extraction["triples"]),
        "diagnostics": extraction["diagnostics"],
    }
    return {"extraction": extraction, "attempts": [*state.get("attempts", []), attempt]}


def triage_node(state: BranchState) -> dict[str, Any]:
    """Tag the answer's failure modes (graph/triage.py), with the prompt's few-shot examples."""
    extraction = state["extraction"]
    chain = _chain(state["spec"])
    shots: list[Example] = (
        chain.shots.for_sentence(state["sentence"]) if getattr(chain, "shots", None) else []
    )
    gold = [Triple.model_validate(t) for t in state["gold"]] if state.get("gold") else None
    tags = triage(
        state["sentence"],
        extraction["raw"],
        [Triple.model_validate(t) for t in extraction["triples"]],
        gold=gold,
        prompt_examples=shots,
        diagnostics=ParseDiagnostics.model_validate(extraction["diagnostics"]),
        thresholds=get_settings().triage,
    )
    return {"tags": [tag.model_dump() for tag in tags]}


def needs_repair(state: BranchState) -> str:
    """Repair when the answer did not parse (or carries format_error) and attempts remain."""
    extraction = state["extraction"]
    if extraction.get("error"):
        return "score"  # a model failure, not a format problem
    broken = not extraction["diagnostics"].get("complete") or any(
        t["name"] == "format_error" for t in state.get("tags", [])
    )
    if broken and len(state.get("attempts", [])) <= state.get("max_repairs", 1):
        return "repair"
    return "score"


@lru_cache(maxsize=1)
def _gold_evaluators() -> list[Any]:
    """The deterministic evaluators the score node runs, built once per process."""
    from triplesmith.evaluators.registry import get_evaluators

    return get_evaluators("triple-f1,triple-f1-exact,format,carb")


def score(state: BranchState) -> dict[str, Any]:
    """Score against gold when gold triples came with the input (deterministic evaluators), and
    write this chain's result into the shared `results` under its spec."""
    scores: dict[str, float | None] = {}
    if state.get("gold"):
        from triplesmith.evaluators.base import evaluate_all

        example = Example(id="input", sentence=state["sentence"], triples=state["gold"])
        outputs = {**state["extraction"], "tags": state.get("tags", [])}
        feedback = evaluate_all(_gold_evaluators(), outputs, example)
        scores = {f.key: f.score for f in feedback if f.error is None}
    return finish({**state, "scores": scores})


def finish(state: BranchState) -> dict[str, Any]:
    """This chain's result, keyed by its spec, for the shared `results`."""
    result = {
        **state["extraction"],
        "tags": state.get("tags", []),
        "scores": state.get("scores", {}),
        "attempts": state.get("attempts", []),
    }
    return {"results": {state["spec"]: result}}
