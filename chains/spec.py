"""Chain spec strings: how the CLI, the graph's config and experiments name a chain.

Grammar: `KIND[:MODEL][+key=value]...`

- `few-shot:smollm2+k=3`, `zero-shot:smollm2` — the prompt chain on a local causal LM
  (an embedded name, a directory, or a Hub id), batched and with per-triple confidences;
- `few-shot:openai:gpt-4o-mini`, `few-shot:anthropic:claude-3-5-haiku-latest`,
  `few-shot:ollama:llama3.2+base_url=http://host:11434` — the prompt chain on a chat model of
  any LangChain provider (triplesmith/providers.py: its package is an extra of triplesmith);
- `hf:smollm2+adapter=adapters/run1` — a fine-tuned local model (zero-shot prompt); the
  adapter is a directory or a Hub id (`owner/name`, read from the Hub cache when offline);
- `openai-ft:ft:gpt-3.5-turbo:org::id` — a fine-tuned OpenAI model, or any OpenAI-compatible
  server through `+base_url=http://host:port/v1` (or `TRIPLESMITH_OPENAI_BASE_URL`).

The model part may itself contain colons (`ft:` ids do); a first part that names a provider
(`ollama:`) makes the chain remote. Options are split on `+`, so no value may contain one.
Every option has a type, a valid range and the chains that use it (`OPTIONS`); `parse_spec`
refuses anything else before any model loads.
"""

import math
import re
from dataclasses import dataclass

from pydantic import BaseModel, Field

from triplesmith.chains.confidence import CONFIDENCES
from triplesmith.errors import ChainError
from triplesmith.providers import PROVIDERS as CHAT_PROVIDERS
from triplesmith.providers import split_provider
from triplesmith.redaction import redact_url

KINDS = ("few-shot", "zero-shot", "hf", "openai-ft")
DEFAULT_MODEL = "smollm2"
LOCAL, REMOTE = "local", "remote"
PROVIDERS = (LOCAL, REMOTE)  # where a chain runs; `ChainSpec.provider` names the chat provider
_PROVIDER_NAMES = {
    LOCAL: "local chains (a model run in this process)",
    REMOTE: "remote chains (a chat model provider, or an OpenAI-compatible endpoint)",
}
_PROVIDER_WORD = re.compile(r"[a-z][a-z0-9_-]+")
_TRUE = ("1", "true", "yes", "on", "json")
_FALSE = ("0", "false", "no", "off")

OptionValue = str | int | float | bool


@dataclass(frozen=True)
class Option:
    """One spec option: its type, its valid range, and the chains that use it.

    `kinds` and `providers` both have to match (`providers` are where the chain runs: `local`,
    or `remote` for every chat provider, see `ChainSpec.provider`); `minimum`
    and `maximum` bound numbers (`above` makes the minimum exclusive); `prefixes` are the
    allowed beginnings of a string, `choices` its only values; `why_not` explains the refusal on a provider it skips.
    """

    type: type[OptionValue]
    help: str
    kinds: tuple[str, ...] = KINDS
    providers: tuple[str, ...] = PROVIDERS
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    prefixes: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    default: OptionValue | None = None
    why_not: str = ""

    def range_text(self) -> str:
        """The valid values in words: `an integer from 1 to 4096`, `true or false`."""
        if self.type is bool:
            return "true or false"
        if self.type is str:
            if self.choices:
                return "one of " + ", ".join(self.choices)
            if self.prefixes:
                return "a URL starting with " + " or ".join(self.prefixes)
            return "a non-empty string"
        noun = "an integer" if self.type is int else "a number"
        low, high = _number(self.minimum), _number(self.maximum)
        if self.minimum is not None and self.maximum is not None:
            if self.above:
                return f"{noun} > {low} and <= {high}"
            return f"{noun} from {low} to {high}"
        if self.minimum is not None:
            return f"{noun} {'>' if self.above else '>='} {low}"
        return noun

    def scope_text(self) -> str:
        """The chains that use this option, in words."""
        if self.providers == PROVIDERS:
            return "every chain" if self.kinds == KINDS else f"{'/'.join(self.kinds)} chains"
        scope = _PROVIDER_NAMES[self.providers[0]]
        return scope if self.kinds == KINDS else f"{'/'.join(self.kinds)} {scope}"

    def applies_to(self, kind: str, provider: str) -> bool:
        """`provider` is `ChainSpec.provider`: `local`, or the name of a chat provider."""
        where = LOCAL if provider == LOCAL else REMOTE
        return kind in self.kinds and where in self.providers

    def convert(self, raw: str) -> OptionValue:
        """`raw` as this option's type; ValueError when it is not one of the valid values."""
        if self.type is bool:
            if raw.lower() not in _TRUE + _FALSE:
                raise ValueError(raw)
            return raw.lower() in _TRUE
        if self.type is str:
            if not raw or not raw.startswith(self.prefixes or ("",)):
                raise ValueError(raw)
            if self.choices and raw not in self.choices:
                raise ValueError(raw)
            return raw
        value = int(raw) if self.type is int else float(raw)
        if not self.in_range(value):
            raise ValueError(raw)
        return value

    def in_range(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (
            value < self.minimum or (self.above and value == self.minimum)
        ):
            return False
        return self.maximum is None or value <= self.maximum


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


_LOCAL_ONLY = "remote chains decode on the server"
OPTIONS: dict[str, Option] = {
    "k": Option(
        int,
        "few-shot examples in the prompt (default: TRIPLESMITH_FEW_SHOT_K, 3)",
        ("few-shot", "zero-shot"),
        minimum=0,
    ),
    "seed": Option(
        int,
        "seed of the few-shot draw (default: TRIPLESMITH_FEW_SHOT_SEED, 0)",
        ("few-shot",),
        minimum=0,
    ),
    "shots": Option(str, "few-shot pool: a dataset name or path", ("few-shot",)),
    "similar": Option(
        bool, "pick the most similar pool sentences as shots", ("few-shot",), default=False
    ),
    "max_new_tokens": Option(int, "answer budget in tokens", minimum=1, maximum=4096),
    "adapter": Option(
        str, "PEFT adapter of a fine-tuned model: a directory or a Hub id owner/name", ("hf",)
    ),
    "batch_size": Option(
        int,
        "prompts per generate call",
        providers=(LOCAL,),
        minimum=1,
        maximum=4096,
        why_not=_LOCAL_ONLY,
    ),
    "no_repeat_ngram_size": Option(
        int,
        "forbid repeating n-grams of this size (0: off)",
        providers=(LOCAL,),
        minimum=0,
        why_not=_LOCAL_ONLY,
    ),
    "repetition_penalty": Option(
        float,
        "penalty on repeated tokens (1: none)",
        providers=(LOCAL,),
        minimum=0,
        maximum=10,
        above=True,
        why_not=_LOCAL_ONLY,
    ),
    "stop_repeats": Option(
        bool,
        "stop at a repeated item (the loop guard)",
        providers=(LOCAL,),
        default=True,
        why_not=_LOCAL_ONLY,
    ),
    "close_loops": Option(
        bool,
        "close a JSON string that loops on a phrase",
        providers=(LOCAL,),
        default=True,
        why_not=_LOCAL_ONLY,
    ),
    "constrained": Option(
        bool,
        "grammar-constrained JSON decoding",
        providers=(LOCAL,),
        default=True,
        why_not=_LOCAL_ONLY,
    ),
    "confidence": Option(
        str,
        "a triple's confidence from its tokens' log-probs: their mean over the triple, over "
        "its relation only, the least likely token, or their sum (chains/confidence.py)",
        providers=(LOCAL,),
        choices=CONFIDENCES,
        default="mean",
        why_not="remote chains' confidences are the mean over the triple",
    ),
    "temperature": Option(
        float,
        "sampling temperature (0: greedy); a local model samples with +sample_seed",
        minimum=0,
        maximum=2,
        default=0.0,
    ),
    "sample_seed": Option(
        int,
        "seed of a local model's sampling (+temperature > 0), one per batch of prompts",
        providers=(LOCAL,),
        minimum=0,
        default=0,
        why_not="remote chains sample on the server",
    ),
    "timeout": Option(
        float,
        "seconds per request",
        providers=(REMOTE,),
        minimum=0,
        above=True,
        why_not="local chains make no requests",
    ),
    "structured": Option(
        bool,
        "structured output (tool calling)",
        providers=(REMOTE,),
        why_not="local chains answer in text for the parser",
    ),
    "base_url": Option(
        str,
        "endpoint of this chain: an OpenAI-compatible server, or the provider's own "
        "(Ollama, Anthropic, ...; see triplesmith/providers.py)",
        providers=(REMOTE,),
        prefixes=("http://", "https://"),
        why_not="local chains make no requests",
    ),
}


def describe_options() -> str:
    """One line per option: name, valid values, the chains that use it, its default and use."""
    lines = []
    for name, option in OPTIONS.items():
        default = "" if option.default is None else f"; default {_show(option.default)}"
        lines.append(
            f"+{name}: {option.range_text()}; {option.scope_text()}{default} — {option.help}"
        )
    return "\n".join(lines)


class ChainSpec(BaseModel):
    """A parsed chain spec. `str(spec)` gives back the canonical string (options sorted)."""

    kind: str
    model: str = DEFAULT_MODEL
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @property
    def provider(self) -> str:
        """The chat provider of a remote chain (`openai` for openai-ft and `openai:` models,
        `ollama` for `ollama:llama3.2`, ...), else `local`."""
        if self.kind == "openai-ft":
            return "openai"
        split = split_provider(self.model) if self.kind != "hf" else None
        return split[0] if split else LOCAL

    @property
    def model_name(self) -> str:
        """The model without its provider prefix (`openai:gpt-4o-mini` → `gpt-4o-mini`)."""
        split = split_provider(self.model) if self.kind != "openai-ft" else None
        return split[1] if split else self.model

    def __str__(self) -> str:
        """The canonical spec; a `base_url` is shown with its credentials redacted (the string
        names the chain in stores, reports and LangSmith; the chain itself keeps the URL)."""
        opts = "".join(
            f"+{key}={redact_url(str(value)) if key == 'base_url' else _show(value)}"
            for key, value in sorted(self.options.items())
        )
        return f"{self.kind}:{self.model}{opts}"


def _show(value: OptionValue) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _option(spec: str, kind: str, provider: str, key: str, raw: str) -> OptionValue:
    """One option's value, checked against the table (the spec is named in every error)."""
    option = OPTIONS.get(key)
    if option is None:
        raise ChainError(
            f"chain spec {spec!r}: unknown option {key!r}; use one of {', '.join(OPTIONS)}"
        )
    if not option.applies_to(kind, provider):
        usage = f"{key} ({option.range_text()}) applies only to {option.scope_text()}"
        if kind not in option.kinds:
            reason = f"{usage}, not to {kind} chains"
        else:
            reason = f"{option.why_not}: {usage}"
        raise ChainError(f"chain spec {spec!r}: {reason}; drop +{key}")
    try:
        return option.convert(raw)
    except ValueError:
        raise ChainError(
            f"chain spec {spec!r}: invalid {key}={raw}; {key} must be {option.range_text()}"
        ) from None


def _check_provider(spec: str, parsed: ChainSpec) -> None:
    """Refuse a provider prefix on a local kind, and a prefix that names no provider."""
    head, sep, rest = parsed.model.partition(":")
    if not sep or parsed.kind == "openai-ft":
        return
    if head in CHAT_PROVIDERS:
        if parsed.kind == "hf":
            raise ChainError(
                f"chain spec {spec!r}: hf chains run a local model; use few-shot:{parsed.model} "
                f"or zero-shot:{parsed.model} for a {head} chat model"
            )
        if not rest:
            raise ChainError(f"chain spec {spec!r}: name the {head} model, e.g. {head}:MODEL")
    elif _PROVIDER_WORD.fullmatch(head):
        raise ChainError(
            f"chain spec {spec!r}: unknown chat model provider {head!r}; use one of "
            f"{', '.join(CHAT_PROVIDERS)} (LangChain's init_chat_model names), or a local model"
        )


def parse_spec(spec: str | ChainSpec) -> ChainSpec:
    """Parse `KIND[:MODEL][+key=value]...` and check every option against `OPTIONS`.

    A `ChainError` names the spec, what is wrong, and the valid range or the chains that use
    the option; nothing is loaded here, so a bad spec fails before any model does.
    """
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
    parsed = ChainSpec(kind=kind, model=model or DEFAULT_MODEL)
    _check_provider(spec, parsed)
    for part in option_parts:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ChainError(f"chain spec {spec!r}: option {part!r} must look like key=value")
        if key in parsed.options:
            raise ChainError(f"chain spec {spec!r}: option {key} is given twice; keep one")
        parsed.options[key] = _option(spec, kind, parsed.provider, key, value.strip())
    if "base_url" in parsed.options and not CHAT_PROVIDERS[parsed.provider].base_url:
        takers = ", ".join(name for name, p in CHAT_PROVIDERS.items() if p.base_url)
        raise ChainError(
            f"chain spec {spec!r}: the {parsed.provider} provider takes no base URL; drop "
            f"+base_url (providers that take one: {takers})"
        )
    if "sample_seed" in parsed.options and not parsed.options.get("temperature"):
        raise ChainError(
            f"chain spec {spec!r}: sample_seed seeds sampling, and this chain decodes greedily; "
            "add +temperature=T (T > 0) or drop +sample_seed"
        )
    if kind == "zero-shot" and parsed.options.get("k", 0) != 0:
        raise ChainError(f"chain spec {spec!r}: zero-shot means k=0; use few-shot for k > 0")
    return parsed
