"""The loopback OpenAI fake answers in the real API's shapes (checked by the client's strict mode)."""

import json

import openai
import pytest
from openai import OpenAI
from openai_fake_server import FakeOpenAI, Reply


def _strict_client(base_url: str, max_retries: int = 0) -> OpenAI:
    # Strict validation makes the client refuse any body that does not match its types.
    return OpenAI(
        api_key="test", base_url=base_url, max_retries=max_retries, _strict_response_validation=True
    )


def test_files_jobs_and_events_match_the_client_types():
    with FakeOpenAI(statuses=("validating_files", "queued", "running", "succeeded")) as base_url:
        client = _strict_client(base_url)
        uploaded = client.files.create(file=("t.jsonl", b"{}\n"), purpose="fine-tune")
        assert (uploaded.object, uploaded.purpose, uploaded.bytes) == ("file", "fine-tune", 3)
        job = client.fine_tuning.jobs.create(model="gpt-3.5-turbo-0125", training_file=uploaded.id)
        seen = [job.status] + [client.fine_tuning.jobs.retrieve(job.id).status for _ in range(5)]
        assert (
            seen
            == ["validating_files", "validating_files", "queued", "running"] + ["succeeded"] * 2
        )
        done = client.fine_tuning.jobs.retrieve(job.id)
        assert done.fine_tuned_model == "ft:gpt-3.5-turbo-0125:org::abc123"
        assert done.finished_at is not None and done.error is None
        events = client.fine_tuning.jobs.list_events(job.id).data
        assert events[0].message == "The job has successfully completed"
        assert client.files.content(uploaded.id).read() == b"{}\n"


def test_failed_job_carries_the_error_object():
    error = {"code": "invalid_training_file", "message": "bad file", "param": "training_file"}
    with FakeOpenAI(statuses=("validating_files", "failed"), job_error=error) as base_url:
        client = _strict_client(base_url)
        job_id = client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=client.files.create(file=b"x", purpose="fine-tune").id,
        ).id
        client.fine_tuning.jobs.retrieve(job_id)
        failed = client.fine_tuning.jobs.retrieve(job_id)
    assert failed.status == "failed" and failed.fine_tuned_model is None
    assert failed.error.model_dump() == error


def test_chat_completion_has_usage_logprobs_and_length_cut():
    fake = FakeOpenAI(
        chat_content='[{"s": "a", "relation": "b", "object": "c"}]', token_logprob=-0.5
    )
    with fake as base_url:
        client = _strict_client(base_url)
        messages = [{"role": "user", "content": "Extract triplets"}]
        answer = client.chat.completions.create(
            model="ft:x", messages=messages, logprobs=True, top_logprobs=1
        )
        cut = client.chat.completions.create(model="ft:x", messages=messages, max_tokens=2)
    choice = answer.choices[0]
    assert json.loads(choice.message.content) == [{"s": "a", "relation": "b", "object": "c"}]
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    assert {t.logprob for t in tokens} == {-0.5}
    assert answer.usage.completion_tokens == len(tokens)
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + len(tokens)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2


def test_streamed_chat_reassembles_the_answer_with_usage():
    with FakeOpenAI(chat_content="[] ok") as base_url:
        stream = _strict_client(base_url).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[] ok" and chunks[-1].usage.completion_tokens == 2


def test_scripted_errors_are_raised_and_recorded_without_the_key():
    fake = FakeOpenAI()
    fake.script("POST /chat/completions", Reply.error(500), Reply.chat("scripted"))
    fake.script("GET /fine_tuning/jobs/{id}", Reply.disconnect())
    with fake as base_url:
        client = _strict_client(base_url)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(**body)
        assert client.chat.completions.create(**body).choices[0].message.content == "scripted"
        with pytest.raises(openai.APIConnectionError):
            client.fine_tuning.jobs.retrieve(fake.add_job())
        with pytest.raises(openai.NotFoundError, match="Invalid URL"):
            client.models.list()
    assert all(r.headers.get("authorization") == "<redacted>" for r in fake.requests)
    assert [r.route for r in fake.requests][-1] is None
    with pytest.raises(ValueError, match="unknown route"):
        fake.script("GET /nope", Reply.normal())


def test_langchain_chat_openai_reads_the_fake():
    from langchain_openai import ChatOpenAI

    with FakeOpenAI(chat_content='[{"s": "a", "relation": "b", "object": "c"}]') as base_url:
        chat = ChatOpenAI(
            model="ft:gpt-3.5-turbo-0125:org::abc123",
            api_key="test",
            base_url=base_url,
            max_retries=0,
            logprobs=True,
        )
        message = chat.invoke("Extract triplets from the following sentence:\n\nA b c.")
    assert message.content.startswith('[{"s": "a"')
    assert message.usage_metadata["output_tokens"] > 0
    assert message.response_metadata["logprobs"]["content"][0]["logprob"] == -0.1
