"""Credentials inside a base URL never reach what a run writes: store, metadata, reports."""

import json
from pathlib import Path

import pytest
from openai_fake_server import FakeOpenAI

from triplesmith.chains.spec import parse_spec
from triplesmith.experiments.compare import compare
from triplesmith.redaction import redact_url
from triplesmith.schema import Example, Triple
from triplesmith.settings import Settings, get_settings

SECRET = "hunter2-planted-secret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://user:{SECRET}@host:8000/v1", "http://***@host:8000/v1"),
        (f"https://host/v1?api-key={SECRET}&model=x", "https://host/v1?api-key=***&model=x"),
        (f"https://host/v1?token={SECRET}", "https://host/v1?token=***"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ],
)
def test_redact_url_hides_user_info_and_secret_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_spec_names_its_base_url_redacted_but_the_chain_keeps_it() -> None:
    spec = parse_spec(f"openai-ft:m+base_url=http://u:{SECRET}@host/v1")
    assert SECRET not in str(spec)
    assert spec.options["base_url"] == f"http://u:{SECRET}@host/v1"


def test_settings_written_to_disk_name_the_endpoint_redacted() -> None:
    settings = Settings.from_env({"TRIPLESMITH_OPENAI_BASE_URL": f"http://u:{SECRET}@host/v1"})
    assert SECRET not in json.dumps(settings.public_dict())


def test_a_comparison_through_a_url_with_credentials_writes_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-planted-openai-key-0000"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("LANGSMITH_API_KEY", "")  # offline: upload=False below anyway
    example = Example(
        id="paris",
        sentence="Paris is the capital of France.",
        triples=[Triple(s="Paris", relation="is the capital of", object="France")],
    )
    answer = '[{"s": "Paris", "relation": "is the capital of", "object": "France"}]'
    get_settings.cache_clear()
    with FakeOpenAI(chat_content=answer) as base_url:
        planted = base_url.replace("http://", f"http://user:{SECRET}@")
        spec = f"openai-ft:ft:m+base_url={planted}"
        store = tmp_path / "store.sqlite"
        result = compare([spec], [example], "triple-f1,format", store=store, upload=False)
        result.write(tmp_path / "report")
    assert result.experiments[0].rows[0].error is None  # the chain did reach the server
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    get_settings.cache_clear()
    for path in written:
        content = path.read_bytes()
        assert SECRET.encode() not in content and key.encode() not in content, path
