"""chains/confidence.py: each way of turning a triple's token log-probs into its confidence."""

import pytest

from triplesmith.chains.confidence import relation_span, span_confidences, triple_spans
from triplesmith.schema import Triple

PIECES = ['[{"s": "', "A", '", "relation": "', "r", "s", '", "object": "', "B", '"}, {"s": "',
          "C", '", "relation": "', "q", '", "object": "', "D", '"}]']  # fmt: skip
LOGPROBS = [-1.0, -0.5, -1.0, -0.1, -0.3, -1.0, -0.2, -2.0, -4.0, -2.0, -0.7, -2.0, -0.2, -9.0]
TEXT = "".join(PIECES)
TRIPLES = [Triple(s="A", relation="rs", object="B"), Triple(s="C", relation="q", object="D")]
# The tokens overlapping each triple's span, subject to object, and its relation's tokens.
FIRST = [-0.5, -1.0, -0.1, -0.3, -1.0, -0.2]
SECOND = [-4.0, -2.0, -0.7, -2.0, -0.2]


def test_mean_is_the_default_and_averages_the_whole_span():
    assert span_confidences(TEXT, PIECES, LOGPROBS, TRIPLES) == pytest.approx(
        [sum(FIRST) / len(FIRST), sum(SECOND) / len(SECOND)]
    )
    assert span_confidences(TEXT, PIECES, LOGPROBS, TRIPLES, "mean") == span_confidences(
        TEXT, PIECES, LOGPROBS, TRIPLES
    )


def test_relation_averages_the_relations_tokens_only():
    assert span_confidences(TEXT, PIECES, LOGPROBS, TRIPLES, "relation") == pytest.approx(
        [(-0.1 - 0.3) / 2, -0.7]
    )


def test_min_is_the_least_likely_token_and_sum_the_total():
    assert span_confidences(TEXT, PIECES, LOGPROBS, TRIPLES, "min") == pytest.approx([-1.0, -4.0])
    assert span_confidences(TEXT, PIECES, LOGPROBS, TRIPLES, "sum") == pytest.approx(
        [sum(FIRST), sum(SECOND)]
    )


def test_a_triple_not_in_the_text_gets_the_answers_aggregate():
    missing = [Triple(s="Z", relation="rs", object="B")]
    assert span_confidences(TEXT, PIECES, LOGPROBS, missing, "min") == [-9.0]
    assert span_confidences(TEXT, PIECES, LOGPROBS, missing, "sum") == pytest.approx(
        [sum(LOGPROBS)]
    )


def test_relation_span_falls_back_to_the_triple_span():
    span = triple_spans(TEXT, TRIPLES)[0]
    assert TEXT[slice(*relation_span(TEXT, TRIPLES[0], span))] == "rs"
    odd = Triple(s="A", relation="not written", object="B")
    assert relation_span(TEXT, odd, span) == span


def test_no_logprobs_and_an_unknown_way():
    assert span_confidences(TEXT, PIECES, [], TRIPLES, "min") is None
    with pytest.raises(ValueError, match="relation"):
        span_confidences(TEXT, PIECES, LOGPROBS, TRIPLES, "median")  # type: ignore[arg-type]


def test_the_chain_option_is_checked_and_changes_the_answers_key():
    from triplesmith.chains.engines.base import GenerationOptions
    from triplesmith.chains.spec import parse_spec
    from triplesmith.errors import ChainError

    assert parse_spec("hf:smollm2+confidence=min").options == {"confidence": "min"}
    with pytest.raises(ChainError, match="one of mean, relation, min, sum"):
        parse_spec("hf:smollm2+confidence=median")
    with pytest.raises(ChainError, match="confidence"):
        parse_spec("few-shot:openai:gpt-4o-mini+confidence=min")
    assert "confidence" not in GenerationOptions().decoding()  # earlier stores keep their keys
    assert GenerationOptions(confidence="sum").decoding()["confidence"] == "sum"
