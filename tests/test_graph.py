"""The extraction graph: routing, fan-out, self-repair, scoring, bad input (fake chat models),
and one real embedded-model run (slow)."""

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from triplesmith.chains.registry import register_chat_model
from triplesmith.errors import ChainError
from triplesmith.graph import build_graph, get_graph

SENTENCE = "Barack Obama was born in Hawaii."
ANSWER = '[{"s": "Barack Obama", "relation": "was born in", "object": "Hawaii"}]'
GOLD = [{"s": "Barack Obama", "relation": "was born in", "object": "Hawaii"}]


def test_broken_json_is_repaired_on_the_second_attempt_and_both_attempts_are_recorded() -> None:
    register_chat_model(
        "broken-then-fixed",
        FakeListChatModel(responses=['[{"s": "Barack Obama", "relation": "was', ANSWER]),
    )
    out = build_graph().invoke(
        {"sentence": SENTENCE}, config={"configurable": {"chain": "zero-shot:broken-then-fixed"}}
    )
    result = out["results"]["zero-shot:broken-then-fixed"]
    first, second = result["attempts"]
    assert first["triples"] == 0 and first["diagnostics"]["truncated"] is True
    assert second["triples"] == 1 and second["diagnostics"]["complete"] is True
    assert result["triples"] == GOLD and result["tags"] == []


def test_repairs_are_bounded_by_max_repairs() -> None:
    register_chat_model("always-broken", FakeListChatModel(responses=["I cannot do that."]))
    config = {"configurable": {"chain": "zero-shot:always-broken", "max_repairs": 2}}
    result = build_graph().invoke({"sentence": SENTENCE}, config=config)["results"][
        "zero-shot:always-broken"
    ]
    assert len(result["attempts"]) == 3
    assert {t["name"] for t in result["tags"]} >= {"format_error"}
    config["configurable"]["max_repairs"] = 0
    result = build_graph().invoke({"sentence": SENTENCE}, config=config)["results"][
        "zero-shot:always-broken"
    ]
    assert len(result["attempts"]) == 1


def test_fan_out_returns_every_chain_and_scores_against_gold() -> None:
    register_chat_model("right", FakeListChatModel(responses=[ANSWER]))
    register_chat_model(
        "invents",
        FakeListChatModel(
            responses=['[{"s": "Homer Simpson", "relation": "lives in", "object": "Springfield"}]']
        ),
    )
    out = get_graph().invoke(
        {"sentence": SENTENCE, "gold": GOLD, "chains": ["zero-shot:right", "zero-shot:invents"]}
    )
    assert set(out["results"]) == {"zero-shot:right", "zero-shot:invents"}
    right, invents = out["results"]["zero-shot:right"], out["results"]["zero-shot:invents"]
    assert right["scores"]["triple_f1"] == 1.0 and right["scores"]["format"] == 1.0
    assert invents["scores"]["triple_f1"] == 0.0
    assert "hallucination" in {t["name"] for t in invents["tags"]}


def test_configurable_chain_wins_over_the_input_and_overrides_apply() -> None:
    register_chat_model("cfg", FakeListChatModel(responses=[ANSWER]))
    out = get_graph().invoke(
        {"sentence": SENTENCE, "chain": "zero-shot:ignored"},
        config={"configurable": {"chain": "few-shot:cfg", "k": 1}},
    )
    assert out["specs"] == ["few-shot:cfg+k=1"]


@pytest.mark.parametrize(
    ("state", "config", "message"),
    [
        ({"sentence": "   "}, {}, "empty or whitespace"),
        ({"text": SENTENCE}, {}, 'needs "sentence"'),
        ({"sentence": SENTENCE, "gold": [{"s": "x"}]}, {}, '"gold" must be a list'),
        ({"sentence": SENTENCE}, {"configurable": {"chain": "telepathy:x"}}, "unknown kind"),
    ],
)
def test_bad_input_fails_in_validate_naming_the_problem(
    state: dict, config: dict, message: str
) -> None:
    with pytest.raises(ChainError, match=message):
        get_graph().invoke(state, config=config)


def test_the_context_schema_shows_the_run_options() -> None:
    schema = get_graph().get_context_jsonschema()
    assert {"chain", "model", "adapter", "k", "max_repairs", "constrained"} <= set(
        schema["properties"]
    )


@pytest.mark.slow
def test_real_embedded_model_single_chain_and_comparison() -> None:
    spec = "few-shot:smollm2+max_new_tokens=40"
    out = get_graph().invoke({"sentence": SENTENCE}, config={"configurable": {"chain": spec}})
    result = out["results"][spec]
    assert result["raw"] and result["triples"] and isinstance(result["tags"], list)
    specs = ["zero-shot:smollm2+max_new_tokens=24", spec]
    out = get_graph().invoke(
        {"sentence": SENTENCE, "chains": specs}, config={"configurable": {"max_repairs": 0}}
    )
    assert set(out["results"]) == set(specs)
    for result in out["results"].values():
        assert result["raw"] and "tags" in result and len(result["attempts"]) == 1


def test_the_run_context_chooses_the_chain() -> None:
    register_chat_model("from-context", FakeListChatModel(responses=[ANSWER]))
    out = build_graph().invoke({"sentence": SENTENCE}, context={"chain": "zero-shot:from-context"})
    assert list(out["results"]) == ["zero-shot:from-context"]
    assert out["results"]["zero-shot:from-context"]["triples"] == GOLD


def test_a_misspelt_configurable_key_is_an_error_naming_the_valid_keys() -> None:
    from triplesmith.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="'chian'.*valid keys are .*chain.*max_repairs"):
        build_graph().invoke({"sentence": SENTENCE}, config={"configurable": {"chian": "x"}})


@pytest.mark.parametrize(
    ("configurable", "words"),
    [
        ({"chain": [f"zero-shot:c{i}" for i in range(9)]}, "at most 8 chains"),
        (
            {"chain": "zero-shot:right", "max_repairs": 50},
            "max_repairs: Input should be less than or equal to 5",
        ),
        (
            {"chain": "zero-shot:right", "max_repairs": -1},
            "max_repairs: Input should be greater than or equal to 0",
        ),
    ],
)
def test_requests_are_capped_before_any_chain_runs(configurable: dict, words: str) -> None:
    from triplesmith.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=words):
        build_graph().invoke({"sentence": SENTENCE}, config={"configurable": configurable})


def test_paths_in_a_request_stay_under_the_serve_roots(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from triplesmith.errors import InvalidInputError

    monkeypatch.setenv("TRIPLESMITH_SERVE_ROOTS", str(tmp_path / "allowed"))
    for spec, what in [
        ("hf:smollm2+adapter=/etc", "adapter '/etc'"),
        ("few-shot:/usr/lib", "model '/usr/lib'"),
        ("few-shot:smollm2+shots=/etc/passwd", "shots '/etc/passwd'"),
    ]:
        with pytest.raises(InvalidInputError, match=f"{what} is outside the folders"):
            build_graph().invoke({"sentence": SENTENCE}, config={"configurable": {"chain": spec}})


@pytest.mark.slow
def test_a_chain_that_cannot_be_built_is_a_named_input_error(tmp_path) -> None:  # noqa: ANN001
    from triplesmith.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="not a PEFT adapter directory"):
        build_graph().invoke(
            {"sentence": SENTENCE},
            config={"configurable": {"chain": f"hf:smollm2+adapter={tmp_path}"}},
        )
