"""Build chains from a spec string or keyword arguments; chains are cached per process.

A remote chain's model comes from its provider (`openai:` through `ChatOpenAI` with the
settings' key, any other through `init_chat_model`, triplesmith/providers.py); a local chain's
from an engine, with its adapter (a directory or a Hub id) resolved to a local folder first.
"""

import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel

from triplesmith.chains.base import ExtractionChain
from triplesmith.chains.chat import ChatChain
from triplesmith.chains.engines import GenerationOptions, get_engine
from triplesmith.chains.engines.grammar import TRIPLES_SCHEMA
from triplesmith.chains.local import LocalChain
from triplesmith.chains.shots import ShotSelector
from triplesmith.chains.spec import LOCAL, ChainSpec, parse_spec
from triplesmith.errors import ChainError, ModelError, TriplesmithError
from triplesmith.models import resolve_adapter
from triplesmith.providers import build_chat_model
from triplesmith.schema import Example
from triplesmith.settings import Settings, get_settings

DEFAULT_SHOTS = "sample:train"

_CHAT_MODELS: dict[str, BaseChatModel] = {}
_CACHE: dict[tuple[str, str, frozenset[str]], ExtractionChain] = {}
_LOCK = threading.Lock()


def register_chat_model(name: str, model: BaseChatModel) -> None:
    """Make `few-shot:NAME` / `zero-shot:NAME` specs use this chat model (any LangChain chat
    model: Anthropic, a local server, a fake in tests), from the CLI, the graph and experiments."""
    if not name or any(c in name for c in ":+="):
        raise ChainError(f"chat model name {name!r} must be non-empty, without ':', '+' or '='")
    with _LOCK:
        _CHAT_MODELS[name] = model
        for key in [key for key in _CACHE if parse_spec(key[0]).model == name]:
            del _CACHE[key]


def _pool(shots: str | Sequence[Example] | None) -> tuple[str, list[Example]]:
    from triplesmith.data.registry import load_dataset

    if shots is None:
        shots = DEFAULT_SHOTS
    if isinstance(shots, str):
        try:
            return shots, load_dataset(shots)
        except TriplesmithError as exc:
            raise ChainError(f"few-shot pool {shots!r}: {exc}") from exc
    examples = list(shots)
    return "ids:" + ",".join(sorted(e.id for e in examples)), examples


def _openai_model(spec: ChainSpec, settings: Settings) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    key = settings.openai_api_key
    base_url = spec.options.get("base_url") or settings.openai_base_url
    if key is None and not base_url:
        raise ChainError(
            f"chain {spec}: set OPENAI_API_KEY, or give the chain an OpenAI-compatible server "
            "with +base_url=http://HOST:PORT/v1 (or TRIPLESMITH_OPENAI_BASE_URL for every chain)"
        )
    return ChatOpenAI(
        model=spec.model_name,
        api_key=key.get_secret_value() if key else "unused",
        base_url=str(base_url) if base_url else None,
        temperature=float(spec.options.get("temperature", 0.0)),
        max_retries=settings.max_retries,
        timeout=float(spec.options.get("timeout", settings.request_timeout_s)),
        logprobs=spec.kind == "openai-ft",
        max_tokens=spec.options.get("max_new_tokens"),
    )


def _provider_model(spec: ChainSpec, settings: Settings) -> BaseChatModel:
    """The chat model of a remote chain: OpenAI's with the settings' key and endpoint, any
    other provider's through `init_chat_model` (its key from the provider's own variable)."""
    if spec.provider == "openai":
        return _openai_model(spec, settings)
    opts = spec.options
    try:
        return build_chat_model(
            spec.provider,
            spec.model_name,
            base_url=opts.get("base_url"),  # type: ignore[arg-type]
            temperature=float(opts.get("temperature", 0.0)),
            timeout=float(opts.get("timeout", settings.request_timeout_s)),
            max_tokens=opts.get("max_new_tokens"),  # type: ignore[arg-type]
            max_retries=settings.max_retries,
        )
    except ModelError as exc:
        raise ChainError(f"chain {str(spec)!r}: {exc}") from None


def _chat_chain(
    spec: ChainSpec, model: BaseChatModel, selector: ShotSelector | None, named: bool
) -> ChatChain:
    """A chat chain; on a server of its own (`+base_url`), an OpenAI chain's structured output
    goes through a JSON-schema `response_format` (servers rarely call tools), and a fine-tuned
    model is asked for the bare triple list it was trained to write. Other providers use their
    own default way to structured output (Ollama's is a JSON-schema `format`)."""
    structured = spec.options.get("structured")
    served = "base_url" in spec.options
    method: str | None = None
    if spec.provider == "openai" or spec.provider == LOCAL:  # LOCAL: a registered chat model
        method = "json_schema" if served else "function_calling"
    response_format = None
    if spec.kind == "openai-ft":
        if served and structured is not False:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "triples", "schema": TRIPLES_SCHEMA},
            }
        structured = False  # fine-tuned on plain JSON answers
    return ChatChain(
        str(spec),
        model,
        shots=selector,
        structured=None if structured is None else bool(structured),
        model_name=spec.model_name if named else None,
        structured_method=method,
        response_format=response_format,
    )


def build_chain(
    spec: str | ChainSpec,
    shots: str | Sequence[Example] | None = None,
    exclude_ids: Sequence[str] = (),
    chat_model: BaseChatModel | None = None,
    settings: Settings | None = None,
) -> ExtractionChain:
    """A new chain for `spec` (see chains/spec.py). `shots` is the few-shot pool (a dataset name
    or examples; default the sample's train split); `exclude_ids` are test ids it must not hold."""
    spec = parse_spec(spec)
    settings = settings or get_settings()
    opts = spec.options
    k = int(opts.get("k", settings.few_shot_k if spec.kind == "few-shot" else 0))
    if spec.kind == "zero-shot":
        k = 0
    selector = None
    if shots is None and "shots" in opts:
        shots = str(opts["shots"])
    if k > 0:
        _, pool = _pool(shots)
        selector = ShotSelector(
            pool,
            k,
            seed=int(opts.get("seed", settings.few_shot_seed)),
            exclude_ids=exclude_ids,
            similar=bool(opts.get("similar", False)),
        )
    if chat_model is None and spec.model in _CHAT_MODELS:
        chat_model = _CHAT_MODELS[spec.model]
        if spec.kind in ("hf", "openai-ft"):
            raise ChainError(f"chain {spec}: a registered chat model runs few-shot or zero-shot")
    if chat_model is not None or spec.provider != LOCAL:
        model = chat_model or _provider_model(spec, settings)
        named = chat_model is None or spec.model in _CHAT_MODELS
        return _chat_chain(spec, model, selector, named)
    adapter = opts.get("adapter")
    if adapter is not None:
        try:
            adapter = str(resolve_adapter(str(adapter)))
        except ModelError as exc:
            raise ChainError(f"chain {str(spec)!r}: {exc}") from None
    engine = get_engine(spec.model, adapter=adapter)
    options = GenerationOptions(
        max_new_tokens=opts.get("max_new_tokens"),  # type: ignore[arg-type]
        repetition_penalty=opts.get("repetition_penalty"),  # type: ignore[arg-type]
        no_repeat_ngram_size=opts.get("no_repeat_ngram_size"),  # type: ignore[arg-type]
        stop_repeats=bool(opts.get("stop_repeats", True)),
        close_loops=bool(opts.get("close_loops", True)),
        constrained=bool(opts.get("constrained", True)),
        batch_size=opts.get("batch_size"),  # type: ignore[arg-type]
        confidence=str(opts.get("confidence", "mean")),
        temperature=float(opts.get("temperature", 0.0)) or None,  # 0: greedy
        seed=int(opts.get("sample_seed", 0)),
    )
    return LocalChain(str(spec), engine, shots=selector, options=options)


def get_chain(
    kind_or_spec: str,
    model: str | BaseChatModel | None = None,
    shots: str | Sequence[Example] | None = None,
    exclude_ids: Sequence[str] = (),
    **options: Any,
) -> ExtractionChain:
    """`get_chain("few-shot", model="smollm2", k=3)`, `get_chain("hf:smollm2+adapter=DIR")`,
    or `get_chain("few-shot", model=any_chat_model)`. Chains of spec strings are cached."""
    chat_model = model if isinstance(model, BaseChatModel) else None
    if ":" in kind_or_spec or (model is None and not options):
        spec = parse_spec(kind_or_spec)
    else:
        text = kind_or_spec
        if isinstance(model, str):
            text += f":{model}"
        text += "".join(f"+{key}={value}" for key, value in options.items())
        spec = parse_spec(text)
    if chat_model is not None:
        return build_chain(spec, shots=shots, exclude_ids=exclude_ids, chat_model=chat_model)
    pool_name = _pool(shots)[0] if spec.kind == "few-shot" and shots is not None else ""
    key = (str(spec), pool_name, frozenset(exclude_ids))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build_chain(spec, shots=shots, exclude_ids=exclude_ids)
        return _CACHE[key]
