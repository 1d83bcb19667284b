"""Chat models of any LangChain provider by name (`anthropic:claude-...`, `ollama:llama3.2`).

Models are built with LangChain's `init_chat_model`; each provider's integration package is an
optional extra of triplesmith (`pip install 'triplesmith[ollama]'`), and a missing one is named
before anything is built. `PROVIDERS` also says which providers take a base URL (a server of the
chain's own, `+base_url=`) and what each calls the answer budget and the request timeout.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from triplesmith.errors import ModelError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


@dataclass(frozen=True)
class Provider:
    """A LangChain chat model provider, as `init_chat_model` names it.

    `module` is its integration package's import name and `package` its pip name; `extra` is the
    triplesmith extra that installs it (None: installed with triplesmith, or no extra);
    `base_url` says whether its chat model takes an endpoint; `max_tokens` and `timeout` are its
    names for the answer budget and the seconds per request (None: it has no such setting);
    `retries` whether it takes `max_retries`.
    """

    module: str
    package: str
    extra: str | None = None
    base_url: bool = False
    max_tokens: str = "max_tokens"
    timeout: str | None = "timeout"
    retries: bool = True

    def install_hint(self) -> str:
        if self.extra:
            return f"pip install 'triplesmith[{self.extra}]'"
        return f"pip install {self.package}"


PROVIDERS: dict[str, Provider] = {
    "openai": Provider("langchain_openai", "langchain-openai", base_url=True),
    "azure_openai": Provider("langchain_openai", "langchain-openai"),
    "anthropic": Provider("langchain_anthropic", "langchain-anthropic", "anthropic", True),
    # ChatOllama calls the budget num_predict; its timeout goes to the HTTP client, and it
    # does not retry.
    "ollama": Provider(
        "langchain_ollama",
        "langchain-ollama",
        "ollama",
        True,
        max_tokens="num_predict",
        timeout=None,
        retries=False,
    ),
    "google_genai": Provider("langchain_google_genai", "langchain-google-genai", "google"),
    "google_vertexai": Provider("langchain_google_vertexai", "langchain-google-vertexai"),
    "groq": Provider("langchain_groq", "langchain-groq", "groq", True),
    "mistralai": Provider("langchain_mistralai", "langchain-mistralai", "mistralai", True),
    "deepseek": Provider("langchain_deepseek", "langchain-deepseek", base_url=True),
    "xai": Provider("langchain_xai", "langchain-xai"),
    "fireworks": Provider("langchain_fireworks", "langchain-fireworks"),
    "together": Provider("langchain_together", "langchain-together"),
    "cohere": Provider("langchain_cohere", "langchain-cohere"),
    "bedrock_converse": Provider("langchain_aws", "langchain-aws"),
    "huggingface": Provider("langchain_huggingface", "langchain-huggingface", "huggingface"),
}


def split_provider(model: str) -> tuple[str, str] | None:
    """`("ollama", "llama3.2")` for `ollama:llama3.2`; None when the prefix names no provider."""
    head, sep, rest = model.partition(":")
    if sep and head in PROVIDERS:
        return head, rest
    return None


def require(provider: str) -> Provider:
    """The provider's entry, or a one-line `ModelError` naming what to install."""
    entry = PROVIDERS.get(provider)
    if entry is None:
        raise ModelError(
            f"unknown chat model provider {provider!r}; use one of {', '.join(PROVIDERS)}"
        )
    if importlib.util.find_spec(entry.module) is None:
        raise ModelError(
            f"the {provider} provider needs the {entry.package} package; install it with: "
            f"{entry.install_hint()}"
        )
    return entry


def build_chat_model(
    provider: str,
    model: str,
    *,
    base_url: str | None = None,
    temperature: float | None = None,
    timeout: float | None = None,
    max_tokens: int | None = None,
    max_retries: int | None = None,
    **extra: Any,
) -> BaseChatModel:
    """A chat model of `provider` built by `init_chat_model`, each setting under the name that
    provider gives it; settings the provider has no name for are left out. `extra` goes to the
    model as given (an `api_key`, say). Raises `ModelError` (one line) when the package is
    missing, the provider takes no base URL, or the provider refuses the settings."""
    entry = require(provider)
    if base_url and not entry.base_url:
        raise ModelError(
            f"the {provider} provider takes no base URL; drop +base_url (providers that take "
            f"one: {', '.join(name for name, p in PROVIDERS.items() if p.base_url)})"
        )
    kwargs: dict[str, Any] = dict(extra)
    if base_url:
        kwargs["base_url"] = base_url
    if temperature is not None:
        kwargs["temperature"] = temperature
    if max_tokens is not None:
        kwargs[entry.max_tokens] = max_tokens
    if timeout is not None:
        if entry.timeout:
            kwargs[entry.timeout] = timeout
        elif provider == "ollama":
            kwargs["client_kwargs"] = {"timeout": timeout}
    if max_retries is not None and entry.retries:
        kwargs["max_retries"] = max_retries
    from langchain.chat_models import init_chat_model

    try:
        return init_chat_model(model, model_provider=provider, **kwargs)
    except ImportError as exc:  # a package present but broken (a missing dependency of it)
        raise ModelError(
            f"the {provider} provider cannot be imported ({exc}); reinstall it with: "
            f"{entry.install_hint()}"
        ) from None
    except Exception as exc:  # providers raise their own types for a bad name, key or setting
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot build the {provider} chat model {model!r}: {first}; check the model name "
            "and the provider's API key"
        ) from None
