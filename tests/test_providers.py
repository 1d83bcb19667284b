"""Any LangChain provider by spec (`few-shot:ollama:llama3.2`), each with its own endpoint, and the
judge with an endpoint of its own; a provider whose package is missing is one line naming the extra.

The HTTP boundary is real: langchain-ollama's ChatOllama talks to a loopback fake of Ollama's API
(tests/ollama_fake_server.py), ChatOpenAI to the OpenAI fake.
"""

import importlib.util
import json
import subprocess
import sys

import pytest
from ollama_fake_server import FakeOllama
from openai_fake_server import FakeOpenAI

from triplesmith.chains.registry import build_chain
from triplesmith.chains.spec import parse_spec
from triplesmith.errors import ChainError, EvaluatorError
from triplesmith.evaluators.judge import build_judge_model
from triplesmith.evaluators.registry import get_evaluators
from triplesmith.providers import PROVIDERS
from triplesmith.schema import Example, Triple
from triplesmith.settings import Settings

SENTENCE = "Barack Obama was born in Hawaii."
TRIPLES = [{"s": "Barack Obama", "relation": "was born in", "object": "Hawaii"}]
EXAMPLE = Example(id="e1", sentence=SENTENCE, triples=[Triple.model_validate(TRIPLES[0])])


def ollama_answer(body: dict) -> str:
    """What a model asked for this schema answers: `{"triples": [...]}` under a JSON-schema
    `format`, the bare list otherwise."""
    if isinstance(body.get("format"), dict):
        return json.dumps({"triples": TRIPLES})
    return json.dumps(TRIPLES)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "triplesmith.cli.app", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def missing_provider() -> tuple[str, str]:
    """A provider with a triplesmith extra whose package is not installed here."""
    for name, provider in PROVIDERS.items():
        if provider.extra and importlib.util.find_spec(provider.module) is None:
            return name, provider.extra
    pytest.skip("every provider extra is installed here")


# --- acceptance: the command line ------------------------------------------------------------


def test_extract_with_an_ollama_spec_returns_triples_from_the_ollama_api():
    fake = FakeOllama(content=ollama_answer, models=("llama3.2",))
    with fake as base_url:
        done = run_cli(
            "extract",
            SENTENCE,
            "--chain",
            f"few-shot:ollama:llama3.2+base_url={base_url}",
            "--json",
        )
    assert done.returncode == 0, done.stderr
    extraction = json.loads(done.stdout)
    assert extraction["triples"] == TRIPLES and extraction["error"] is None
    assert extraction["model"] == "llama3.2" and extraction["structured"] is True
    [chat] = fake.chats()
    request = chat.json
    assert request["model"] == "llama3.2"
    assert request["format"]["title"] == "TripleList"  # Ollama's structured output
    assert request["options"]["temperature"] == 0.0
    system, *shots, user = request["messages"]
    assert system["role"] == "system" and "knowledge graph triples" in system["content"]
    assert len(shots) == 6  # k=3 example pairs
    assert user["content"].endswith(SENTENCE)


def test_a_provider_whose_package_is_missing_is_one_line_naming_the_extra():
    provider, extra = missing_provider()
    done = run_cli("extract", SENTENCE, "--chain", f"few-shot:{provider}:some-model")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"pip install 'triplesmith[{extra}]'" in lines[0]
    assert PROVIDERS[provider].package in lines[0] and "Traceback" not in done.stderr


# --- the chain on a provider -------------------------------------------------------------------


def test_an_ollama_chain_sends_the_budget_as_num_predict_and_reads_token_counts():
    fake = FakeOllama(content=ollama_answer, models=("llama3.2",))
    with fake as base_url:
        chain = build_chain(
            f"zero-shot:ollama:llama3.2+base_url={base_url}+max_new_tokens=64+structured=false"
        )
        extraction = chain.invoke({"sentence": SENTENCE})
    assert [t.model_dump() for t in extraction.triples] == TRIPLES
    assert extraction.structured is False
    [chat] = fake.chats()
    assert chat.json["options"]["num_predict"] == 64
    assert "format" not in chat.json or chat.json["format"] is None
    assert len(chat.json["messages"]) == 2  # system + sentence: zero-shot
    assert extraction.tokens_out == len(json.dumps(TRIPLES).split())
    assert extraction.tokens_in > 0


def test_a_model_the_server_does_not_have_is_an_error_on_that_sentence():
    with FakeOllama(content=ollama_answer, models=("llama3.2",)) as base_url:
        chain = build_chain(f"zero-shot:ollama:qwen3+base_url={base_url}")
        extraction = chain.invoke({"sentence": SENTENCE})
    assert extraction.triples == [] and 'model "qwen3" not found' in extraction.error


def test_two_chains_of_one_provider_keep_their_own_endpoints():
    first, second = FakeOllama(content=ollama_answer), FakeOllama(content=ollama_answer)
    with first as url_a, second as url_b:
        build_chain(f"zero-shot:ollama:llama3.2+base_url={url_a}").invoke({"sentence": SENTENCE})
        build_chain(f"zero-shot:ollama:llama3.2+base_url={url_b}").invoke({"sentence": SENTENCE})
        build_chain(f"zero-shot:ollama:llama3.2+base_url={url_b}").invoke({"sentence": SENTENCE})
    assert (len(first.chats()), len(second.chats())) == (1, 2)


def test_a_missing_provider_package_fails_when_the_chain_is_built():
    provider, extra = missing_provider()
    with pytest.raises(ChainError, match=rf"pip install 'triplesmith\[{extra}\]'"):
        build_chain(f"zero-shot:{provider}:some-model")


# --- specs ---------------------------------------------------------------------------------


def test_a_provider_prefix_makes_a_remote_chain_and_round_trips():
    spec = parse_spec("few-shot:ollama:llama3.2+base_url=http://127.0.0.1:11434+k=2")
    assert (spec.provider, spec.model, spec.model_name) == ("ollama", "ollama:llama3.2", "llama3.2")
    assert str(spec) == "few-shot:ollama:llama3.2+base_url=http://127.0.0.1:11434+k=2"
    assert parse_spec("few-shot:anthropic:claude-3-5-haiku-latest").provider == "anthropic"
    assert parse_spec("few-shot:smollm2").provider == "local"
    assert parse_spec("openai-ft:ft:gpt-4o-mini:org::x").model_name == "ft:gpt-4o-mini:org::x"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("hf:ollama:llama3.2", "hf chains run a local model; use few-shot:ollama:llama3.2"),
        ("few-shot:nowhere:model", "unknown chat model provider 'nowhere'"),
        ("few-shot:ollama:", "name the ollama model"),
        (
            "few-shot:google_genai:gemini-2.5-flash+base_url=http://h",
            "the google_genai provider takes no base URL",
        ),
        ("few-shot:ollama:llama3.2+batch_size=4", "remote chains decode on the server"),
    ],
)
def test_provider_specs_are_checked_before_anything_is_built(spec, says):
    with pytest.raises(ChainError, match="chain spec") as refused:
        parse_spec(spec)
    assert says in str(refused.value)


# --- the judge's own endpoint ------------------------------------------------------------------


VERDICT = json.dumps({"reasoning": "All found. Thus, the score should be: 90.", "score": 90})
OUTPUTS = {"triples": TRIPLES}


def test_the_judge_has_its_own_endpoint_apart_from_the_chains():
    chains_server, judge_server = FakeOpenAI(chat_content="[]"), FakeOpenAI(chat_content=VERDICT)
    with chains_server as chains_url, judge_server as judge_url:
        settings = Settings(openai_api_key="sk-test", openai_base_url=chains_url)
        spec = f"openai:gpt-4o-mini+base_url={judge_url}"
        [judge] = get_evaluators("judge", judge_model=spec, settings=settings)
        [feedback] = judge.evaluate(OUTPUTS, EXAMPLE)
    assert feedback.score == 0.9
    assert len(judge_server.requests_to("POST /chat/completions")) == 1
    assert chains_server.requests == []


def test_the_judge_endpoint_comes_from_triplesmith_judge_base_url():
    chains_server, judge_server = FakeOpenAI(chat_content="[]"), FakeOpenAI(chat_content=VERDICT)
    with chains_server as chains_url, judge_server as judge_url:
        settings = Settings.from_env(
            {
                "OPENAI_API_KEY": "sk-test",
                "TRIPLESMITH_OPENAI_BASE_URL": chains_url,
                "TRIPLESMITH_JUDGE_BASE_URL": judge_url,
                "TRIPLESMITH_JUDGE_MODEL": "openai:gpt-4o-mini",
            }
        )
        [judge] = get_evaluators("judge", settings=settings)
        [feedback] = judge.evaluate(OUTPUTS, EXAMPLE)
    assert feedback.score == 0.9 and chains_server.requests == []


def test_an_ollama_judge_grades_through_a_json_schema_format():
    fake = FakeOllama(content=VERDICT, models=("llama3.2",))
    with fake as base_url:
        [judge] = get_evaluators(
            "judge", judge_model=f"ollama:llama3.2+base_url={base_url}", settings=Settings()
        )
        [feedback] = judge.evaluate(OUTPUTS, EXAMPLE)
    assert feedback.score == 0.9
    [chat] = fake.chats()
    assert chat.json["format"]["properties"]["score"]["maximum"] == 100


def test_a_judge_spec_with_another_option_or_a_missing_package_is_refused():
    with pytest.raises(EvaluatorError, match="the only option a judge takes is"):
        build_judge_model("openai:gpt-4o-mini+temperature=0", Settings())
    provider, extra = missing_provider()
    with pytest.raises(EvaluatorError, match=rf"pip install 'triplesmith\[{extra}\]'"):
        build_judge_model(f"{provider}:some-model", Settings())


def test_written_settings_redact_the_judge_endpoints():
    settings = Settings(
        judge_model="openai:gpt-4o-mini+base_url=http://user:s3cret@host/v1",
        judge_base_url="http://host/v1?api_key=s3cret",
    )
    public = json.dumps(settings.public_dict())
    assert "s3cret" not in public and "host/v1" in public
    assert "judge_base_url" not in Settings().public_dict()  # unset: experiment keys unchanged


def test_a_judge_base_url_that_is_not_http_names_the_variable():
    from triplesmith.errors import SettingsError

    with pytest.raises(SettingsError, match="TRIPLESMITH_JUDGE_BASE_URL"):
        Settings.from_env({"TRIPLESMITH_JUDGE_BASE_URL": "localhost:8000"})
