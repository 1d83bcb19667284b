"""Chains: spec strings, confidences, the chat chain's plumbing (fake chat models), batch errors."""

import json
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from triplesmith.chains.chat import ChatChain
from triplesmith.chains.confidence import span_confidences, triple_spans
from triplesmith.chains.registry import get_chain
from triplesmith.chains.spec import parse_spec
from triplesmith.errors import ChainError
from triplesmith.schema import Triple

ANSWER = '[{"s": "Barack Obama", "relation": "was born in", "object": "Hawaii"}]'


# --- spec strings ----------------------------------------------------------------------------


def test_spec_round_trips_and_keeps_colons_of_ft_ids() -> None:
    spec = parse_spec("openai-ft:ft:gpt-3.5-turbo-0125:org::abc123")
    assert (spec.kind, spec.model, spec.provider) == (
        "openai-ft",
        "ft:gpt-3.5-turbo-0125:org::abc123",
        "openai",
    )
    spec = parse_spec("hf:smollm2+adapter=adapters/run1+max_new_tokens=64")
    assert spec.options == {"adapter": "adapters/run1", "max_new_tokens": 64}
    assert str(spec) == "hf:smollm2+adapter=adapters/run1+max_new_tokens=64"
    assert parse_spec("few-shot").model == "smollm2"
    assert parse_spec("few-shot:openai:gpt-4o-mini").model_name == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus:smollm2", "unknown kind 'bogus'"),
        ("few-shot:smollm2+k", "must look like key=value"),
        ("few-shot:smollm2+colour=red", "unknown option 'colour'"),
        ("few-shot:smollm2+k=three", "k must be an integer >= 0"),
        ("zero-shot:smollm2+k=2", "zero-shot means k=0"),
        ("few-shot:smollm2+adapter=x", "adapter .* applies only to hf chains"),
        ("openai-ft", "needs a model id"),
        ("", "non-empty string"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ChainError, match=message):
        parse_spec(spec)


def test_openai_chain_without_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from triplesmith.chains.registry import build_chain
    from triplesmith.settings import Settings

    with pytest.raises(ChainError, match="OPENAI_API_KEY"):
        build_chain("openai-ft:ft:gpt-3.5-turbo:org::x", settings=Settings())


# --- confidences ------------------------------------------------------------------------------


def test_span_confidence_is_the_mean_logprob_of_each_triples_tokens() -> None:
    pieces = ['[{"s": "', "A", '", "relation": "', "r", '", "object": "', "B", '"}, {"s": "', "C",
              '", "relation": "', "r", '", "object": "', "D", '"}]']  # fmt: skip
    text = "".join(pieces)
    logprobs = [-1.0, -0.5, -1.0, -0.1, -1.0, -0.3, -2.0, -4.0, -2.0, -0.1, -2.0, -0.2, -9.0]
    triples = [Triple(s="A", relation="r", object="B"), Triple(s="C", relation="r", object="D")]
    spans = triple_spans(text, triples)
    assert text[spans[0][0] : spans[0][1]].startswith("A") and text[
        spans[1][0] : spans[1][1]
    ].endswith("D")
    first, second = span_confidences(text, pieces, logprobs, triples)
    assert first == pytest.approx((-0.5 - 1.0 - 0.1 - 1.0 - 0.3) / 5)
    assert second == pytest.approx((-4.0 - 2.0 - 0.1 - 2.0 - 0.2) / 5)
    assert span_confidences(text, pieces, [], triples) is None


# --- the chat chain with fake chat models ------------------------------------------------------


class RecordingChat(FakeListChatModel):
    """A fake chat model that records the messages it was sent and fails on a marked sentence."""

    seen: list[Any] = []

    def _call(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        self.seen.append(messages)
        if "EXPLODE" in messages[-1].content:
            raise TimeoutError("the model timed out")
        return super()._call(messages, stop, run_manager, **kwargs)


def test_few_shot_chat_chain_parses_text_answers_and_records_the_prompt() -> None:
    model = RecordingChat(responses=[f"Sure! Here they are:\n```json\n{ANSWER}\n```"], seen=[])
    chain = get_chain("few-shot", model=model, k=2)
    extraction = chain.invoke({"sentence": "Barack Obama was born in Hawaii."})
    assert extraction.triples == [Triple(s="Barack Obama", relation="was born in", object="Hawaii")]
    assert extraction.error is None and extraction.chain == "few-shot:smollm2+k=2"
    sent = model.seen[0]
    assert sent[0].type == "system" and "knowledge graph triples" in sent[0].content
    assert len(sent) == 1 + 2 * 2 + 1  # system, two shot pairs, the sentence
    assert sent[-1].content.endswith("Barack Obama was born in Hawaii.")


def test_one_failing_sentence_never_kills_a_batch() -> None:
    model = RecordingChat(responses=[ANSWER], seen=[])
    chain = ChatChain("zero-shot:fake", model)
    out = chain.batch(
        [
            {"sentence": "Barack Obama was born in Hawaii."},
            {"sentence": "EXPLODE now."},
            {"sentence": "  "},
        ]
    )
    assert [bool(e.triples) for e in out] == [True, False, False]
    assert "timed out" in out[1].error
    assert "empty" in out[2].error
    assert len(model.seen) == 2  # the empty sentence never reached the model


def test_empty_sentence_is_refused_before_any_model_call() -> None:
    model = RecordingChat(responses=[ANSWER], seen=[])
    with pytest.raises(ChainError, match="empty or whitespace"):
        ChatChain("zero-shot:fake", model).invoke({"sentence": " \n "})
    with pytest.raises(ChainError, match='needs "sentence"'):
        ChatChain("zero-shot:fake", model).invoke({"text": "x"})
    assert model.seen == []


def test_repair_turn_carries_the_bad_output_and_the_parser_error() -> None:
    model = RecordingChat(responses=[ANSWER], seen=[])
    ChatChain("zero-shot:fake", model).invoke(
        {
            "sentence": "Barack Obama was born in Hawaii.",
            "repair": {"output": "[{", "error": "cut off"},
        }
    )
    sent = model.seen[0]
    assert sent[-2].type == "ai" and sent[-2].content == "[{"
    assert "cut off" in sent[-1].content


class ToolCallingChat(FakeListChatModel):
    """A fake chat model with tool calling: answers with a TripleList tool call."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        args = {"triples": json.loads(ANSWER)}
        message = AIMessage(
            content="",
            tool_calls=[{"name": "TripleList", "args": args, "id": "call_1"}],
            usage_metadata={"input_tokens": 120, "output_tokens": 30, "total_tokens": 150},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_structured_output_is_used_when_the_model_supports_tools() -> None:
    chain = ChatChain("few-shot:fake", ToolCallingChat(responses=["unused"]))
    extraction = chain.invoke({"sentence": "Barack Obama was born in Hawaii."})
    assert extraction.structured is True
    assert extraction.triples == [Triple(s="Barack Obama", relation="was born in", object="Hawaii")]
    assert (extraction.tokens_in, extraction.tokens_out) == (120, 30)


def test_few_shot_pool_must_not_hold_test_ids() -> None:
    from triplesmith.data.registry import load_dataset

    pool = load_dataset("sample:train")
    with pytest.raises(ChainError, match="overlaps the test split"):
        get_chain(
            "few-shot",
            model=RecordingChat(responses=[ANSWER]),
            shots=pool,
            exclude_ids=[pool[0].id],
        )
