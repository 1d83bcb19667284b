"""`RunConfig`: what one run is told — chains, evaluators, concurrency, repairs, limits, upload.

Documented and defaulted here once. `compare`, `run_experiment`, the study and the CLI take it;
the graph reads the fields of `GRAPH_FIELDS` from LangGraph's run context
(`graph.invoke(..., context={...})`) or, for older clients, from `configurable`. Unknown keys
are an error naming the valid ones, wherever they come from.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from typing_extensions import TypedDict

from triplesmith.errors import ConfigError

DEFAULT_CHAIN = "few-shot:smollm2"
DEFAULT_EVALUATORS = ("triple-f1", "format")
MAX_CHAINS = 8  # chains one graph request may run
MAX_REPAIRS = 5  # re-asks one answer may get


def _default_repairs() -> int:
    from triplesmith.settings import get_settings

    return get_settings().max_repairs


class RunConfig(BaseModel):
    """One run's configuration. Every field has its default here and nowhere else."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    chains: list[str] = Field(
        default_factory=lambda: [DEFAULT_CHAIN],
        validation_alias=AliasChoices("chains", "chain"),
        description="chain specs (`chain` is accepted too); the graph fans out to each",
    )
    model: str | None = Field(None, description="overrides the model of every chain spec")
    adapter: str | None = Field(None, description="overrides the adapter of every hf chain")
    k: int | None = Field(None, ge=0, le=64, description="few-shot examples of few-shot chains")
    constrained: bool | None = Field(
        None, description="grammar-constrained JSON for local chains (their default: on)"
    )
    max_repairs: int = Field(
        default_factory=_default_repairs,
        ge=0,
        le=MAX_REPAIRS,
        description="re-asks after a format error (default: TRIPLESMITH_MAX_REPAIRS, 1)",
    )
    evaluators: list[Any] = Field(
        default_factory=lambda: list(DEFAULT_EVALUATORS),
        description="evaluator names (or Evaluator objects from Python); run once per answer",
    )
    judge_model: Any = Field(
        None, description="the judge evaluator's model: 'provider:model' or a chat model"
    )
    score: bool = Field(
        True,
        description="the graph scores an input that carries gold with `evaluators`; experiments "
        "set it off and score each answer once themselves",
    )
    max_concurrency: int = Field(
        16, ge=0, le=4096, description="examples in flight; local chains batch them"
    )
    limit: int | None = Field(None, ge=1, description="only the first N examples")
    upload: bool | None = Field(
        None, description="send experiments to LangSmith (default: when LANGSMITH_API_KEY is set)"
    )
    via_graph: bool = Field(
        True, description="run spec chains through the graph (triage, repair); False: directly"
    )
    baseline: str | int = Field(0, description="the paired tests' reference: a spec or index")
    store: Any = Field(
        None,
        exclude=True,
        description="the experiment store: a path or an open ExperimentStore (default "
        "TRIPLESMITH_STORE or the user cache)",
    )
    client: Any = Field(None, exclude=True, description="a langsmith.Client to upload with")

    @field_validator("store", mode="before")
    @classmethod
    def _store(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str) else value

    @field_validator("chains", mode="before")
    @classmethod
    def _chains(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("evaluators", mode="before")
    @classmethod
    def _evaluators(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, Sequence) and not value:
            raise ValueError("no evaluators given; name some, e.g. 'triple-f1,format'")
        # Names are checked against the registry where they are resolved (before any work).
        return list(dict.fromkeys(value))

    @classmethod
    def of(
        cls, config: "RunConfig | str | Sequence[Any] | None" = None, **options: Any
    ) -> "RunConfig":
        """A configuration from a RunConfig, evaluator names (the shorthand `"triple-f1,format"`)
        or nothing, with `options` (RunConfig fields) over it. A bad field or value is a
        `ConfigError` naming it and the valid fields."""
        if isinstance(config, RunConfig):
            base = {name: getattr(config, name) for name in config.model_fields_set}
        elif config is None:
            base = {}
        else:
            base = {"evaluators": config}
        return parse_run_config({**base, **options})

    def evaluator_names(self) -> list[str]:
        return [e if isinstance(e, str) else e.name for e in self.evaluators]


def parse_run_config(values: Mapping[str, Any], valid: Sequence[str] | None = None) -> RunConfig:
    """`RunConfig` from a mapping; keys outside `valid` (default: every field) and bad values are
    an `ConfigError` naming the key and the valid ones."""
    allowed = set(valid) if valid is not None else set(RunConfig.model_fields) | {"chain"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown run configuration key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are {', '.join(sorted(allowed))}"
        )
    try:
        return RunConfig.model_validate(dict(values))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"bad run configuration: {problems}") from None


# The fields a graph run reads (the others concern experiments: store, concurrency, upload...).
GRAPH_FIELDS = (
    "chains",
    "model",
    "adapter",
    "k",
    "constrained",
    "max_repairs",
    "evaluators",
    "judge_model",
    "score",
)
GRAPH_KEYS = (*GRAPH_FIELDS, "chain")

RunContext = TypedDict(  # the graph's context schema, as LangGraph Studio shows it
    "RunContext",
    {
        "chain": str | list[str],
        **{name: RunConfig.model_fields[name].annotation for name in GRAPH_FIELDS},
    },
    total=False,
)
