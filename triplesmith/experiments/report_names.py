"""What the report modules read of a comparison (`Comparison`), and readable chain names for
reports: "fine-tuned SmolLM2-135M-Instruct (LoRA)" rather than a spec that may carry the run
machine's folders (the spec stays on hover and in provenance)."""

from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import pandas as pd

from triplesmith.chains.spec import ChainSpec, parse_spec
from triplesmith.errors import ChainError, TrainingError
from triplesmith.models import EMBEDDED_MODELS
from triplesmith.settings import get_settings
from triplesmith.training.manifest import read_manifest


class Comparison(Protocol):
    """What the report reads of a comparison (`experiments.compare.ComparisonResult`), typed by
    its shape: the renderer needs nothing from the module that builds comparisons."""

    dataset: str
    chains: list[str]
    metrics: list[str]
    summary_metrics: list[str]
    tags: list[str]
    table: pd.DataFrame
    per_example: pd.DataFrame
    examples: pd.DataFrame
    paired: pd.DataFrame
    correlations: pd.DataFrame
    experiments: list[Any]
    baseline: str

    @property
    def primary_metric(self) -> str | None: ...


PROVIDER_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic", "ollama": "Ollama"}
ADAPTER_METHODS = {"lora": "LoRA", "qlora": "QLoRA"}


# --- chain names ---------------------------------------------------------------------------------


def chain_name(spec: str, metadata: Mapping[str, Any] | None = None) -> str:
    """A readable name for a chain, free of the machine's folders: `few-shot
    SmolLM2-135M-Instruct (k=3)`, `fine-tuned SmolLM2-135M-Instruct (LoRA)`, `zero-shot
    gpt-4o-mini (OpenAI)`. `metadata` is the experiment's (its settings give the default k)."""
    try:
        parsed = parse_spec(spec)
    except ChainError:  # a hand-made chain with a free-form spec
        return spec.split("+", 1)[0]
    model, where = _model_and_host(parsed)
    options = parsed.options
    if parsed.kind == "few-shot":
        settings = (metadata or {}).get("settings") or {}
        k = options.get("k", settings.get("few_shot_k", get_settings().few_shot_k))
        details = [f"k={k}", *(["similar shots"] if options.get("similar") else []), where]
        return f"few-shot {model} ({', '.join(d for d in details if d)})"
    if parsed.kind == "hf":
        adapter = options.get("adapter")
        if adapter is None:
            return f"zero-shot {model} (transformers)"
        return f"fine-tuned {model} ({_adapter_method(str(adapter), metadata)})"
    kind = "fine-tuned" if parsed.kind == "openai-ft" else parsed.kind
    return f"{kind} {model}" + (f" ({where})" if where else "")


def _model_and_host(parsed: ChainSpec) -> tuple[str, str]:
    """The model's short name and where it runs (a provider, or a server's host)."""
    model, provider = parsed.model, ""
    if model in EMBEDDED_MODELS:
        model = EMBEDDED_MODELS[model]["hub_id"]
    elif model.startswith("ft:"):  # ft:BASE:ORG:SUFFIX:ID
        model, provider = model.split(":")[1], "openai"
    elif ":" in model and "/" not in model.split(":", 1)[0]:
        provider, model = model.split(":", 1)
    if parsed.kind == "openai-ft" and not provider:
        provider = "openai"
    model = model.rstrip("/").rsplit("/", 1)[-1] or model  # a folder or a Hub id: its last part
    base_url = parsed.options.get("base_url")
    if base_url:
        parts = urlsplit(str(base_url))
        host = parts.hostname or ""
        return model, f"{host}:{parts.port}" if parts.port else host
    return model, PROVIDER_NAMES.get(provider, provider)


def _adapter_method(adapter: str, metadata: Mapping[str, Any] | None) -> str:
    """`LoRA` or `QLoRA` from the adapter's manifest when it can be read here, else `adapter`
    with the short hash the experiment recorded."""
    recorded = (metadata or {}).get("adapter_method")
    if recorded:  # recorded when the experiment ran: the adapter may be gone since
        return ADAPTER_METHODS.get(str(recorded), str(recorded))
    try:
        method = read_manifest(adapter).method
        return ADAPTER_METHODS.get(method, method)
    except (TrainingError, OSError, ValueError):
        digest = str((metadata or {}).get("adapter_hash") or "")[:8]
        return f"adapter {digest}".strip()


def _short_value(value: Any) -> str:
    text = str(value)
    if text.startswith(("http://", "https://")):
        return urlsplit(text).netloc.rsplit("@", 1)[-1]
    return text.rstrip("/").rsplit("/", 1)[-1] if "/" in text else text


def chain_names(result: Comparison) -> list[str]:
    """Readable, distinct names for `result.chains`, in their order. Chains whose names would
    be equal get the spec options that tell them apart (folders by their last part), then a
    number."""
    specs = specs_of(result)
    experiments = result.experiments if len(result.experiments) == len(specs) else []
    metadata = [e.record.metadata for e in experiments] or [{}] * len(specs)
    names = [chain_name(s, m) for s, m in zip(specs, metadata, strict=True)]
    for name in set(names):
        group = [i for i, n in enumerate(names) if n == name]
        if len(group) < 2:
            continue
        options = [_options(specs[i]) for i in group]
        keys = sorted({k for o in options for k in o})
        differing = [k for k in keys if len({str(o.get(k)) for o in options}) > 1]
        for i, opts in zip(group, options, strict=True):
            shown = [f"{k}={_short_value(opts[k])}" for k in differing if k in opts]
            if shown:
                names[i] = f"{name} [{', '.join(shown)}]"
    counts, seen = Counter(names), Counter[str]()
    for i, name in enumerate(names):
        if counts[name] > 1:
            seen[name] += 1
            names[i] = f"{name} #{seen[name]}"
    return names


def specs_of(result: Comparison) -> list[str]:
    """The spec of each chain (a label may carry a `#2` when a spec ran twice)."""
    if len(result.experiments) == len(result.chains):
        return [e.chain for e in result.experiments]
    return list(result.chains)


def _options(spec: str) -> dict[str, Any]:
    try:
        return dict(parse_spec(spec).options)
    except ChainError:
        return {}
