"""Chain spec options are checked at parse time against one table (chains/spec.py `OPTIONS`):
type, valid range, and the chains that use each; a bad spec fails before any model loads."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triplesmith.chains.spec import OPTIONS, ChainSpec, describe_options, parse_spec
from triplesmith.errors import ChainError


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("few-shot:smollm2+batch_size=0", "batch_size must be an integer from 1 to 4096"),
        ("few-shot:smollm2+k=-1", "k must be an integer >= 0"),
        ("few-shot:smollm2+max_new_tokens=0", "max_new_tokens must be an integer from 1 to 4096"),
        (
            "hf:smollm2+sample_seed=1",
            "sample_seed seeds sampling, and this chain decodes greedily; add +temperature=T",
        ),
        (
            "hf:smollm2+temperature=0+sample_seed=1",
            "sample_seed seeds sampling, and this chain decodes greedily; add +temperature=T",
        ),
    ],
)
def test_out_of_range_and_unused_options_are_refused_with_the_valid_range(
    spec: str, says: str
) -> None:
    with pytest.raises(ChainError) as refused:
        parse_spec(spec)
    assert says in str(refused.value) and repr(spec) in str(refused.value)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("few-shot:smollm2+repetition_penalty=0", "a number > 0 and <= 10"),
        ("few-shot:smollm2+repetition_penalty=10.5", "a number > 0 and <= 10"),
        ("few-shot:smollm2+no_repeat_ngram_size=-2", "an integer >= 0"),
        ("few-shot:smollm2+seed=-1", "seed must be an integer >= 0"),
        ("few-shot:smollm2+k=2.5", "k must be an integer >= 0"),
        ("few-shot:openai:gpt-4o-mini+temperature=2.5", "a number from 0 to 2"),
        ("few-shot:openai:gpt-4o-mini+timeout=0", "timeout must be a number > 0"),
        ("few-shot:openai:gpt-4o-mini+timeout=inf", "timeout must be a number > 0"),
        ("few-shot:openai:gpt-4o-mini+base_url=ftp://x", "starting with http:// or https://"),
        ("few-shot:openai:gpt-4o-mini+structured=maybe", "structured must be true or false"),
        ("few-shot:smollm2+shots=", "shots must be a non-empty string"),
        ("few-shot:openai:gpt-4o-mini+batch_size=8", "batch_size (an integer from 1 to 4096)"),
        ("openai-ft:ft:gpt-4o-mini:org::x+constrained=true", "applies only to local chains"),
        ("hf:smollm2+timeout=5", "local chains make no requests"),
        ("few-shot:openai:gpt-4o-mini+sample_seed=1", "remote chains sample on the server"),
        ("hf:smollm2+temperature=2.5", "a number from 0 to 2"),
        ("zero-shot:smollm2+base_url=http://h/v1", "applies only to remote chains"),
        ("zero-shot:smollm2+structured=true", "applies only to remote chains"),
        ("few-shot:smollm2+adapter=x", "adapter (a non-empty string) applies only to hf chains"),
        ("hf:smollm2+k=2", "applies only to few-shot/zero-shot chains, not to hf chains"),
        ("zero-shot:smollm2+shots=sample:train", "applies only to few-shot chains"),
        ("hf:smollm2+similar=true", "applies only to few-shot chains"),
        ("zero-shot:smollm2+k=2", "zero-shot means k=0"),
        ("few-shot:smollm2+k=1+k=2", "option k is given twice"),
        ("few-shot:smollm2+colour=red", "unknown option 'colour'"),
    ],
)
def test_every_option_has_a_range_and_the_chains_that_use_it(spec: str, says: str) -> None:
    with pytest.raises(ChainError) as refused:
        parse_spec(spec)
    assert says in str(refused.value)


def test_a_bad_option_fails_before_the_model_is_looked_for(tmp_path: Path) -> None:
    from triplesmith.chains.registry import build_chain, get_chain

    missing = tmp_path / "no-such-model"  # had a model been loaded, this would fail first
    for make in (get_chain, build_chain):
        with pytest.raises(ChainError, match="batch_size must be an integer from 1 to 4096"):
            make(f"few-shot:{missing}+batch_size=0")


def test_the_cli_refuses_a_bad_spec_at_once_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "TRIPLESMITH_STORE": str(tmp_path / "s.sqlite")}
    done = subprocess.run(
        [sys.executable, "-m", "triplesmith.cli.app", "extract", "x", "--chain"]
        + ["few-shot:smollm2+k=-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "k must be an integer >= 0" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_valid_options_parse_to_their_types() -> None:
    spec = parse_spec(
        "few-shot:openai:gpt-4o-mini+k=2+seed=7+temperature=0.5+timeout=30"
        "+structured=false+base_url=https://example.test/v1+max_new_tokens=256"
    )
    assert spec.provider == "openai"
    assert spec.options == {
        "k": 2,
        "seed": 7,
        "temperature": 0.5,
        "timeout": 30.0,
        "structured": False,
        "base_url": "https://example.test/v1",
        "max_new_tokens": 256,
    }
    local = parse_spec("hf:smollm2+adapter=a/b+batch_size=4096+repetition_penalty=10")
    assert local.options == {"adapter": "a/b", "batch_size": 4096, "repetition_penalty": 10.0}
    assert parse_spec("zero-shot:smollm2+k=0").options == {"k": 0}
    sampled = parse_spec("hf:smollm2+temperature=0.7+sample_seed=3")
    assert sampled.options == {"temperature": 0.7, "sample_seed": 3}


def test_the_option_table_documents_itself() -> None:
    described = describe_options().splitlines()
    assert [line.split(":", 1)[0] for line in described] == [f"+{name}" for name in OPTIONS]
    assert "+temperature: a number from 0 to 2; every chain" in describe_options()
    assert "+constrained: true or false; local chains" in describe_options()


# --- round trips over the whole table ------------------------------------------------------

MODELS = {
    "few-shot": ["smollm2", "openai:gpt-4o-mini"],
    "zero-shot": ["smollm2", "openai:gpt-4o-mini"],
    "hf": ["smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"],
    "openai-ft": ["ft:gpt-4o-mini-2024-07-18:org::abc123"],
}
WORD = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789/._-:="), min_size=1, max_size=20
)


def valid_value(name: str) -> st.SearchStrategy:
    option = OPTIONS[name]
    if option.type is bool:
        return st.booleans()
    if option.type is str and option.choices:
        return st.sampled_from(option.choices)
    if option.type is str:
        return WORD.map(lambda w: f"http://{w}") if option.prefixes else WORD
    low = option.minimum if option.minimum is not None else 0
    high = option.maximum if option.maximum is not None else low + 10_000
    if option.type is int:
        return st.integers(int(low) + int(option.above), int(high))
    return st.floats(low, high, exclude_min=option.above, allow_nan=False)


@st.composite
def valid_specs(draw: st.DrawFn) -> tuple[str, str, dict]:
    kind = draw(st.sampled_from(sorted(MODELS)))
    model = draw(st.sampled_from(MODELS[kind]))
    provider = ChainSpec(kind=kind, model=model).provider
    usable = sorted(n for n, o in OPTIONS.items() if o.applies_to(kind, provider))
    names = draw(st.lists(st.sampled_from(usable), unique=True, max_size=5)) if usable else []
    options = {name: draw(valid_value(name)) for name in names}
    if kind == "zero-shot" and "k" in options:
        options["k"] = 0
    if "sample_seed" in options and not options.get("temperature"):
        options["temperature"] = 0.5  # a sampling seed needs a temperature > 0
    return kind, model, options


@given(valid_specs())
def test_valid_specs_parse_and_round_trip_through_str(drawn: tuple[str, str, dict]) -> None:
    kind, model, options = drawn
    text = f"{kind}:{model}" + "".join(
        f"+{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()
    )
    spec = parse_spec(text)
    assert (spec.kind, spec.model, spec.options) == (kind, model, options)
    assert all(type(spec.options[k]) is OPTIONS[k].type for k in options)
    assert parse_spec(str(spec)) == spec and str(parse_spec(str(spec))) == str(spec)


@given(
    st.sampled_from([n for n, o in OPTIONS.items() if o.type in (int, float)]),
    st.integers(1, 10**6),
)
def test_a_number_below_the_minimum_or_above_the_maximum_is_refused(name: str, by: int) -> None:
    option = OPTIONS[name]
    kind, model = next(
        (k, m)
        for k, models in MODELS.items()
        for m in models
        if option.applies_to(k, ChainSpec(kind=k, model=m).provider)
    )
    outside = [option.minimum - by] if option.minimum is not None else []
    if option.maximum is not None:
        outside.append(option.maximum + by)
    for value in outside:
        with pytest.raises(ChainError, match=re.escape(f"{name} must be {option.range_text()}")):
            parse_spec(f"{kind}:{model}+{name}={value}")
