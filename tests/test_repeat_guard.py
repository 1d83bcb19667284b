"""The repeat guard: a greedy decode that starts repeating triples ends as strict JSON."""

import json

import pytest

from triplesmith.chains.repeat_guard import RepeatGuard, open_brackets, repeats_a_triple

A = '{"s": "Paris", "relation": "is the capital of", "object": "France"}'
B = '{"s": "Paris", "relation": "is", "object": "a city"}'
A_SHOUTED = '{"s": "PARIS", "relation": "is  the capital of", "object": "France"}'


@pytest.mark.parametrize(
    ("text", "closing"),
    [
        ("", ""),
        ("[", "]"),
        (f"[{A}, ", "]"),
        (f"[{A}, {{", "}]"),
        (f'{{"triples": [{A}', "]}"),
        ('[{"s": "a ] } [ {", "relation": "r\\" ]", ', "}]"),  # brackets in strings do not count
        (f"[{A}]", ""),
        ("Here you go: (a; b; c)", ""),
    ],
)
def test_open_brackets_lists_what_is_left_to_close(text: str, closing: str) -> None:
    assert open_brackets(text) == closing


def test_repeats_a_triple_uses_the_parsers_duplicate_rule() -> None:
    assert not repeats_a_triple(f"[{A}, {B}")
    assert repeats_a_triple(f"[{A}, {B}, {A}")
    assert repeats_a_triple(f"[{A}, {A_SHOUTED}")  # case and whitespace are ignored
    assert repeats_a_triple(f'{{"triples": [{A}, {A}')
    # Only JSON answers are guarded: a line-format answer that repeats is left alone.
    assert not repeats_a_triple("(Paris; is; a city)\n(Paris; is; a city)")
    assert not repeats_a_triple("")


@pytest.fixture(scope="module")
def tokenizer():  # noqa: ANN201
    from transformers import AutoTokenizer

    from triplesmith.models import convert_embedded

    return AutoTokenizer.from_pretrained(str(convert_embedded("smollm2")))


def decode_with_guard(tokenizer, prompt: str, script: str, budget: int = 200) -> tuple[str, int]:  # noqa: ANN001
    """Greedy decoding of a 'model' that always wants to write `script` next, through the guard.

    Returns the text after the prompt and how many tokens were generated before the end.
    """
    import torch

    eos = tokenizer.eos_token_id
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    wanted = [*tokenizer.encode(script, add_special_tokens=False), eos]
    guard = RepeatGuard(tokenizer, len(prompt_ids), eos)
    ids = list(prompt_ids)
    vocab = len(tokenizer)
    for step in range(budget):
        scores = torch.full((1, vocab), -10.0)
        scores[0, wanted[min(step, len(wanted) - 1)]] = 5.0
        scores = guard(torch.tensor([ids]), scores)
        token = int(scores.argmax(dim=-1))
        if token == eos:
            return tokenizer.decode(ids[len(prompt_ids) :]), step
        ids.append(token)
    return tokenizer.decode(ids[len(prompt_ids) :]), budget


@pytest.mark.slow
def test_a_looping_answer_ends_at_its_first_repeat_as_strict_json(tokenizer) -> None:  # noqa: ANN001
    loop = f"[{A}, {B}, {A}, " + ", ".join([A] * 20)
    text, steps = decode_with_guard(tokenizer, "<|im_start|>assistant\n", loop, budget=400)
    assert text == f"[{A}, {B}, {A}]"
    assert [item["object"] for item in json.loads(text)] == ["France", "a city", "France"]
    assert steps < 100


@pytest.mark.slow
def test_a_wrapped_answer_gets_both_brackets_closed(tokenizer) -> None:  # noqa: ANN001
    loop = '{"triples": [' + ", ".join([B] * 10)
    text, _ = decode_with_guard(tokenizer, "", loop)
    assert json.loads(text) == {"triples": [json.loads(B), json.loads(B)]}


@pytest.mark.slow
def test_answers_without_repeats_and_other_formats_decode_unchanged(tokenizer) -> None:  # noqa: ANN001
    for script in (f"[{A}, {B}]", "(Paris; is; a city)\n(Paris; is; a city)\n"):
        text, _ = decode_with_guard(tokenizer, "", script)
        assert text == script
