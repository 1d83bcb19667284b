"""Run-time settings, read from the environment (`TRIPLESMITH_*`, plus the providers' own keys).

Endpoints are kept apart: `TRIPLESMITH_OPENAI_BASE_URL` (or `OPENAI_BASE_URL`) moves the OpenAI
chains, `TRIPLESMITH_JUDGE_BASE_URL` moves the judge; a chain's own `+base_url=` and a judge
model's `+base_url=` win over both.

Secrets are `SecretStr`: they never print, and `public_dict()` leaves them out of anything
written to disk (manifests, reports, the experiment store).
"""

import os
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

from triplesmith.errors import SettingsError
from triplesmith.redaction import redact_url


class TriageThresholds(BaseModel):
    """Named thresholds of the triage rules (evaluators/triage.py). Fuzzy scores are rapidfuzz's 0-100."""

    grounding: float = Field(
        80.0, description="fuzzy score an ordinary word needs to count as in a text"
    )
    hallucination_share: float = Field(
        0.5, description="share of ungrounded content words that tags a subject or object"
    )
    echo_words: int = Field(5, description="words copied in a row from the instructions: an echo")
    echo_content_words: int = Field(
        6, description="distinct content words a prose sentence needs to count as a restatement"
    )
    echo_share: float = Field(
        0.75, description="share of those words from the instructions that makes a restatement"
    )
    chit_chat_words: int = Field(3, description="words of prose outside the answer: chit-chat")
    repetition_ngram: int = Field(4, description="n of the recurring n-gram check in the prose")
    repetition_count: int = Field(
        3, description="repeats of one n-gram in the prose, or of one stretch in a row"
    )
    repetition_long_unit: int = Field(
        8, description="a stretch at least this many words long repeated twice in a row loops"
    )
    near_duplicate: float = Field(
        90.0, description="fuzzy score each field of two triples needs to make them near-duplicates"
    )
    omission_recall: float = Field(0.5, description="recall below this (with gold) tags omission")
    over_extraction_ratio: float = Field(
        2.0, description="predicted/gold count at or above this ..."
    )
    over_extraction_precision: float = Field(
        0.5, description="... with precision below this tags over_extraction"
    )


class Settings(BaseModel):
    """Everything configurable without code. Build with `Settings.from_env()`."""

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    langsmith_api_key: SecretStr | None = None
    few_shot_k: int = 3
    few_shot_seed: int = 0
    max_repairs: int = 1
    request_timeout_s: float = 120.0
    max_retries: int = 2
    judge_model: str | None = Field(
        None, description="the judge: 'provider:model[+base_url=URL]', e.g. openai:gpt-4o-mini"
    )
    judge_base_url: str | None = Field(
        None, description="the judge's endpoint (a judge model's own +base_url wins)"
    )
    triple_match_threshold: float = 85.0
    triage: TriageThresholds = Field(default_factory=TriageThresholds)

    @field_validator("judge_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be a URL starting with http:// or https://")
        return value

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("OPENAI_API_KEY"):
            values["openai_api_key"] = SecretStr(env["OPENAI_API_KEY"])
        base_url = env.get("TRIPLESMITH_OPENAI_BASE_URL") or env.get("OPENAI_BASE_URL")
        if base_url:
            values["openai_base_url"] = base_url
        if env.get("LANGSMITH_API_KEY"):
            values["langsmith_api_key"] = SecretStr(env["LANGSMITH_API_KEY"])
        for name, field in cls.model_fields.items():
            key = f"TRIPLESMITH_{name.upper()}"
            if key in env and name not in values and field.annotation in (int, float, str | None):
                values[name] = env[key]
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"TRIPLESMITH_{'.'.join(map(str, e['loc'])).upper()}={e.get('input')!r}: {e['msg']}"
                for e in exc.errors()
            )
            raise SettingsError(f"bad environment setting: {problems}") from None

    def public_dict(self) -> dict[str, Any]:
        """The settings without secrets, safe to write into manifests and reports."""
        public = self.model_dump(mode="json", exclude={"openai_api_key", "langsmith_api_key"})
        if public["judge_base_url"] is None:  # unset, it leaves experiment keys as they were
            del public["judge_base_url"]
        for key in ("openai_base_url", "judge_base_url"):
            if public.get(key):
                public[key] = redact_url(public[key])
        if public.get("judge_model") and "+base_url=" in public["judge_model"]:
            head, _, url = public["judge_model"].partition("+base_url=")
            url, plus, rest = url.partition("+")
            public["judge_model"] = f"{head}+base_url={redact_url(url)}{plus}{rest}"
        return public


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
