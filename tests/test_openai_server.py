"""`triplesmith serve` for real: the embedded SmolLM2 (and a PEFT adapter by name) behind an
OpenAI-compatible server on loopback, reached by chains through `+base_url`."""

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from triplesmith.chains.registry import build_chain
from triplesmith.settings import Settings

pytestmark = pytest.mark.slow

SENTENCES = ["Barack Obama was born in Hawaii.", "Paris is the capital of France."]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained, non-zero) LoRA adapter on SmolLM2, saved as `triplesmith train` does."""
    from peft import LoraConfig, get_peft_model

    from triplesmith.models import load

    model, _ = load("smollm2")
    config = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    path = tmp_path_factory.mktemp("served") / "adapter"
    get_peft_model(model, config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(adapter_dir: Path) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "triplesmith.cli.app", "serve", "--port", str(port)]
    command += ["--adapter", f"tuned={adapter_dir}", "--max-new-tokens", "64"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {process.stderr.read() if process.stderr else ''}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not start within 300 s")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def no_key_settings() -> Settings:
    return Settings.from_env({})  # no OPENAI_API_KEY: the chain's own endpoint is enough


def test_the_server_lists_the_base_model_and_the_served_adapter(server: str) -> None:
    ids = [m["id"] for m in httpx.get(f"{server}/models").json()["data"]]
    assert ids == ["smollm2", "tuned"]


def test_a_fine_tuned_chain_on_the_server_gets_schema_valid_json_and_confidences(
    server: str,
) -> None:
    chain = build_chain(
        f"openai-ft:smollm2+base_url={server}+timeout=600", settings=no_key_settings()
    )
    extractions = chain.batch([{"sentence": s} for s in SENTENCES])
    # The base model answers the zero-shot prompt for Paris with a triple, under the grammar.
    assert any(e.triples for e in extractions), [e.raw for e in extractions]
    for extraction in extractions:
        assert extraction.error is None, extraction.error
        items = json.loads(extraction.raw)  # the grammar made it strict JSON
        assert isinstance(items, list)
        assert all(set(item) == {"s", "relation", "object"} for item in items)
        assert extraction.tokens_in > 0 and extraction.tokens_out > 0
        assert extraction.confidences is not None
        assert len(extraction.confidences) == len(extraction.triples)
        assert all(c <= 0 for c in extraction.confidences)


def test_a_served_adapter_answers_by_its_name(server: str) -> None:
    tuned = build_chain(
        f"openai-ft:tuned+base_url={server}+timeout=600", settings=no_key_settings()
    )
    extraction = tuned.invoke({"sentence": SENTENCES[1]})
    assert extraction.error is None and isinstance(json.loads(extraction.raw), list)

    def free_answer(model: str) -> dict:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"Describe: {SENTENCES[0]}"}],
            "max_tokens": 12,
            "logprobs": True,
        }
        reply = httpx.post(f"{server}/chat/completions", json=body, timeout=600)
        assert reply.status_code == 200, reply.text
        return reply.json()

    base, adapted = free_answer("smollm2"), free_answer("tuned")
    assert adapted["model"] == "tuned" and adapted["usage"]["completion_tokens"] > 0
    tokens = adapted["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == adapted["choices"][0]["message"]["content"]
    # The adapter's random LoRA weights change the model: its log-probs are not the base's.
    lp = [[t["logprob"] for t in r["choices"][0]["logprobs"]["content"]] for r in (base, adapted)]
    assert lp[0] != lp[1]


def test_a_few_shot_chain_gets_structured_output_through_the_json_schema(server: str) -> None:
    chain = build_chain(
        f"few-shot:openai:smollm2+base_url={server}+timeout=600", settings=no_key_settings()
    )
    extraction = chain.invoke({"sentence": SENTENCES[1]})
    assert extraction.error is None, extraction.error
    assert extraction.structured  # LangChain parsed the schema-shaped answer


def test_requests_the_server_cannot_honour_are_refused_by_name(server: str) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}
    cases = [
        ({**body, "temperature": 0.7}, "greedily"),
        ({**body, "stream": True}, "streaming"),
        ({**body, "model": "nope"}, "not served"),
        ({**body, "tools": [{"type": "function"}]}, "tools"),
        ({**body, "response_format": {"type": "json_schema", "json_schema": {}}}, "schema"),
    ]
    for request, words in cases:
        reply = httpx.post(f"{server}/chat/completions", json=request, timeout=600)
        assert reply.status_code in (400, 404), reply.text
        assert words in reply.json()["error"]["message"]
