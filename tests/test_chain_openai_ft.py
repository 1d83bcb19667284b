"""The openai-ft chain at the HTTP boundary: a loopback OpenAI-compatible server (tests/openai_fake_server.py)."""

import pytest
from openai_fake_server import FakeOpenAI, Reply

from triplesmith.chains.registry import build_chain
from triplesmith.settings import Settings

MODEL = "ft:gpt-3.5-turbo-0125:org::abc123"
ANSWER = '[{"s": "Barack Obama", "relation": "was born in", "object": "Hawaii"}]'
SENTENCE = "Barack Obama was born in Hawaii."


def settings_for(base_url: str, retries: int = 2) -> Settings:
    return Settings.from_env(
        {
            "OPENAI_API_KEY": "sk-test",
            "TRIPLESMITH_OPENAI_BASE_URL": base_url,
            "TRIPLESMITH_MAX_RETRIES": str(retries),
        }
    )


def test_openai_ft_chain_sends_the_reference_prompt_and_reads_logprobs() -> None:
    fake = FakeOpenAI(chat_content=ANSWER, token_logprob=-0.25)
    with fake as base_url:
        chain = build_chain(f"openai-ft:{MODEL}", settings=settings_for(base_url))
        extraction = chain.invoke({"sentence": SENTENCE})
    assert extraction.error is None
    assert [t.as_tuple() for t in extraction.triples] == [("Barack Obama", "was born in", "Hawaii")]
    assert extraction.confidences == [pytest.approx(-0.25)]
    assert extraction.tokens_in > 0 and extraction.tokens_out > 0
    (request,) = fake.requests_to("POST /chat/completions")
    body = request.json
    assert body["model"] == MODEL and body["logprobs"] is True and body["temperature"] == 0.0
    assert body["messages"][-1] == {
        "role": "user",
        "content": f"Extract triplets from the following sentence:\n\n{SENTENCE}",
    }
    assert "tools" not in body  # fine-tuned on plain JSON answers: no structured output
    assert request.headers.get("authorization") == "<redacted>" or "sk-test" not in str(
        request.headers
    )


def test_a_429_is_retried_and_the_second_answer_used() -> None:
    fake = FakeOpenAI(chat_content=ANSWER)
    fake.script("POST /chat/completions", Reply.rate_limited(0.01), Reply.normal())
    with fake as base_url:
        extraction = build_chain(f"openai-ft:{MODEL}", settings=settings_for(base_url)).invoke(
            {"sentence": SENTENCE}
        )
    assert extraction.error is None and len(extraction.triples) == 1
    assert len(fake.requests_to("POST /chat/completions")) == 2


def test_a_500_is_recorded_as_the_sentences_error_and_the_batch_goes_on() -> None:
    fake = FakeOpenAI(chat_content=ANSWER)
    fake.script(
        "POST /chat/completions",
        Reply.error(500, "The server had an error while processing your request."),
    )
    with fake as base_url:
        chain = build_chain(f"openai-ft:{MODEL}", settings=settings_for(base_url, retries=0))
        chain.max_concurrency = 1
        first, second = chain.batch(
            [{"sentence": SENTENCE}, {"sentence": "Paris is the capital of France."}]
        )
    assert first.error is not None and "Error code: 500" in first.error
    assert first.triples == []
    assert second.error is None and len(second.triples) == 1
