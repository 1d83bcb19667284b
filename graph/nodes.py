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
from triplesmith.errors import ChainError, ConfigError, InvalidInputError, TriplesmithError
from triplesmith.evaluators.triage import triage
from triplesmith.graph.state import BranchState, ExtractorState
from triplesmith.run_config import GRAPH_KEYS, MAX_CHAINS, RunConfig, parse_run_config
from triplesmith.schema import Example, Triple
from triplesmith.settings import get_settings
from triplesmith.text import collapse_whitespace

# What LangGraph, its server and LangSmith put into `configurable` besides the run's own keys.
_INTERNAL_PREFIXES = (
    "__", "langgraph_", "thread_", "checkpoint_", "run_", "assistant_", "graph_", "user_", "x-",
)  # fmt: skip


def run_options(config: RunnableConfig | None) -> RunConfig:
    """The run's `RunConfig` (its graph fields): LangGraph's run context
    (`graph.invoke(..., context={...})`), overlaid by `configurable` (older clients,
    `langgraph dev` requests). A key that is not a graph field of RunConfig (nor LangGraph's
    own) or a bad value is an input error naming the valid keys."""
    from langgraph.runtime import get_runtime

    options: dict[str, Any] = {}
    try:
        context = get_runtime().context
    except RuntimeError:  # called outside a graph run
        context = None
    if isinstance(context, dict):
        options.update({k: v for k, v in context.items() if v is not None})
    configurable = (config or {}).get("configurable") or {}
    options.update({k: v for k, v in configurable.items() if not k.startswith(_INTERNAL_PREFIXES)})
    try:
        run = parse_run_config(options, GRAPH_KEYS)
    except ConfigError as exc:
        raise InvalidInputError(str(exc)) from None
    if not all(isinstance(e, str) for e in run.evaluators):
        raise InvalidInputError("a graph run names its evaluators, e.g. ['triple-f1', 'carb']")
    return run


def _apply_overrides(spec: ChainSpec, run: RunConfig) -> ChainSpec:
    changed = spec.model_copy(deep=True)
    if run.model:
        changed.model = run.model
    if run.adapter:
        if spec.kind != "hf":
            raise ChainError(f"configurable adapter applies to hf chains, not {spec}")
        changed.options["adapter"] = run.adapter
    if run.k is not None and spec.kind == "few-shot":
        changed.options["k"] = run.k
    if run.constrained is not None:
        changed.options["constrained"] = run.constrained
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
    run = run_options(config)
    requested: Any = run.chains
    if "chains" not in run.model_fields_set:  # the input may name them instead
        requested = state.get("chains") or state.get("chain") or run.chains
    if isinstance(requested, str):
        requested = [requested]
    if not isinstance(requested, list) or not all(isinstance(s, str) for s in requested):
        raise InvalidInputError(f"chain must be a spec string or a list of them, got {requested!r}")
    if len(requested) > MAX_CHAINS:
        raise InvalidInputError(
            f"a request may run at most {MAX_CHAINS} chains, got {len(requested)}; split it"
        )
    try:
        parsed = [_apply_overrides(parse_spec(s), run) for s in requested]
    except ChainError as exc:
        raise InvalidInputError(str(exc)) from None
    for spec in parsed:
        _check_roots(spec)
    if run.score and gold:  # an unknown evaluator or a missing judge: refused before any chain
        try:
            _evaluators(tuple(run.evaluators), run.judge_model)
        except TriplesmithError as exc:
            raise InvalidInputError(str(exc)) from None
    specs = [str(spec) for spec in parsed]
    return {"sentence": sentence, "gold": gold, "specs": list(dict.fromkeys(specs))}


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
    run = run_options(config)
    scoring = None
    if run.score and state.get("gold"):
        scoring = {"evaluators": run.evaluators, "judge_model": run.judge_model}
    return [
        Send(
            "run_chain",
            {
                "sentence": state["sentence"],
                "gold": state.get("gold"),
                "meta": state.get("meta") or {},
                "example_id": state.get("example_id"),
                "spec": spec,
                "max_repairs": run.max_repairs,
                "scoring": scoring,
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
    """Tag the answer's failure modes (evaluators/triage.py), with the prompt's few-shot examples."""
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


@lru_cache(maxsize=8)
def _evaluators(names: tuple[str, ...], judge_model: str | None) -> list[Any]:
    """The run's evaluators, built once per process for each configuration."""
    from triplesmith.evaluators.registry import get_evaluators

    return get_evaluators(list(names), judge_model=judge_model)


def score(state: BranchState) -> dict[str, Any]:
    """Score against gold with the run's evaluators, once, when gold came with the input and the
    run asked for scores (experiments do not: they score each answer themselves); then write
    this chain's result into the shared `results` under its spec."""
    scoring = state.get("scoring")
    if not scoring:
        return finish(state)
    from triplesmith.evaluators.base import evaluate_all

    example = Example(
        id=state.get("example_id") or "input",
        sentence=state["sentence"],
        triples=state["gold"],
        meta=state.get("meta") or {},
    )
    outputs = {**state["extraction"], "tags": state.get("tags", [])}
    evaluators = _evaluators(tuple(scoring["evaluators"]), scoring.get("judge_model"))
    feedback = evaluate_all(evaluators, outputs, example)
    scores = {f.key: f.score for f in feedback if f.error is None}
    return finish({**state, "scores": scores})


def finish(state: BranchState) -> dict[str, Any]:
    """This chain's result, keyed by its spec, for the shared `results`."""
    result = {
        **state["extraction"],
        "tags": state.get("tags", []),
        "attempts": state.get("attempts", []),
    }
    if state.get("scoring"):
        result["scores"] = state.get("scores", {})
    return {"results": {state["spec"]: result}}
