"""Chain spec strings: how the CLI, the graph's config and experiments name a chain.

Grammar: `KIND[:MODEL][+key=value]...`

- `few-shot:smollm2+k=3`, `zero-shot:smollm2` — the prompt chain on a local causal LM
  (an embedded name, a directory, or a Hub id), batched and with per-triple confidences;
- `few-shot:openai:gpt-4o-mini` — the prompt chain on an OpenAI chat model;
- `hf:smollm2+adapter=adapters/run1` — a fine-tuned local model (zero-shot prompt);
- `openai-ft:ft:gpt-3.5-turbo:org::id` — a fine-tuned OpenAI model (or any OpenAI-compatible
  server through `TRIPLESMITH_OPENAI_BASE_URL`).

The model part may itself contain colons (`ft:` ids do); options never do.
"""

from pydantic import BaseModel, Field

from triplesmith.errors import ChainError

KINDS = ("few-shot", "zero-shot", "hf", "openai-ft")
DEFAULT_MODEL = "smollm2"

# Options each kind accepts, with the type they parse to.
_INT_OPTIONS = {"k", "seed", "max_new_tokens", "batch_size", "no_repeat_ngram_size"}
_FLOAT_OPTIONS = {"repetition_penalty", "temperature", "timeout"}
_BOOL_OPTIONS = {"constrained", "structured", "similar", "stop_repeats", "close_loops"}
_STR_OPTIONS = {"adapter", "shots"}
OPTIONS = _INT_OPTIONS | _FLOAT_OPTIONS | _BOOL_OPTIONS | _STR_OPTIONS


class ChainSpec(BaseModel):
    """A parsed chain spec. `str(spec)` gives back the canonical string (options sorted)."""

    kind: str
    model: str = DEFAULT_MODEL
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @property
    def provider(self) -> str:
        """`openai` for OpenAI models, `local` for transformers models."""
        if self.kind == "openai-ft" or self.model.startswith("openai:"):
            return "openai"
        return "local"

    @property
    def model_name(self) -> str:
        """The model without its provider prefix (`openai:gpt-4o-mini` → `gpt-4o-mini`)."""
        return self.model.removeprefix("openai:")

    def __str__(self) -> str:
        opts = "".join(f"+{key}={_show(value)}" for key, value in sorted(self.options.items()))
        return f"{self.kind}:{self.model}{opts}"


def _show(value: str | int | float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _convert(key: str, value: str, spec: str) -> str | int | float | bool:
    try:
        if key in _INT_OPTIONS:
            return int(value)
        if key in _FLOAT_OPTIONS:
            return float(value)
    except ValueError:
        raise ChainError(f"chain spec {spec!r}: option {key}={value!r} must be a number") from None
    if key in _BOOL_OPTIONS:
        if value.lower() in ("1", "true", "yes", "on", "json"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ChainError(f"chain spec {spec!r}: option {key}={value!r} must be true or false")
    return value


def parse_spec(spec: str | ChainSpec) -> ChainSpec:
    """Parse `KIND[:MODEL][+key=value]...`; a clear error names what is wrong and what is valid."""
    if isinstance(spec, ChainSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ChainError(
            f"chain spec must be a non-empty string like 'few-shot:smollm2', got {spec!r}"
        )
    text = spec.strip()
    head, *option_parts = text.split("+")
    kind, _, model = head.partition(":")
    if kind not in KINDS:
        raise ChainError(
            f"chain spec {spec!r}: unknown kind {kind!r}; use one of {', '.join(KINDS)}"
        )
    model = model.strip()
    if kind == "openai-ft" and not model:
        raise ChainError(
            f"chain spec {spec!r}: openai-ft needs a model id, e.g. openai-ft:ft:gpt-3.5-turbo:org::id"
        )
    options: dict[str, str | int | float | bool] = {}
    for part in option_parts:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ChainError(f"chain spec {spec!r}: option {part!r} must look like key=value")
        if key not in OPTIONS:
            raise ChainError(
                f"chain spec {spec!r}: unknown option {key!r}; use one of {', '.join(sorted(OPTIONS))}"
            )
        options[key] = _convert(key, value.strip(), spec)
    if kind == "zero-shot" and options.get("k", 0) not in (0,):
        raise ChainError(f"chain spec {spec!r}: zero-shot means k=0; use few-shot for k > 0")
    if "adapter" in options and kind != "hf":
        raise ChainError(f"chain spec {spec!r}: adapter= only applies to hf chains")
    return ChainSpec(kind=kind, model=model or DEFAULT_MODEL, options=options)
