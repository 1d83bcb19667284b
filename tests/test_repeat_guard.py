"""The repeat guard: a greedy decode that starts repeating triples ends as strict JSON."""

import json

import pytest

from triplesmith.chains.repeat_guard import (
    LOOP_MIN_TOKENS,
    RepeatGuard,
    looping_span,
    open_brackets,
    repeats_a_triple,
    repeats_an_item,
)

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


def test_repeats_an_item_catches_a_repeated_object_that_is_not_a_triple() -> None:
    half = '{"s": "Company officials", "relation": "help"}'
    assert not repeats_a_triple(f"[{half}, {half}")  # not triples: the parser has no duplicate
    assert repeats_an_item(f"[{half}, {half}")
    assert repeats_an_item(f'[{half}, {B}, {{"S": "company  officials", "relation": "help"}}')
    assert not repeats_an_item(f"[{half}, {B}")
    assert not repeats_an_item(f"[{half}, {half}, ")  # only at the `}` that closes the repeat
    assert not repeats_an_item('[{"s": "a } {", "relation": "r"}, {"s": "a", "relation": "r"}')


@pytest.mark.slow
def test_a_loop_of_items_without_an_object_ends_too(tokenizer) -> None:  # noqa: ANN001
    half = '{"s": "Company officials", "relation": "help"}'
    text, steps = decode_with_guard(tokenizer, "", "[" + ", ".join([half] * 30), budget=400)
    assert json.loads(text) == [json.loads(half)] * 2
    assert steps < 60


@pytest.fixture(scope="module")
def tokenizer():  # noqa: ANN201
    from transformers import AutoTokenizer

    from triplesmith.models import convert_embedded

    return AutoTokenizer.from_pretrained(str(convert_embedded("smollm2")))


def decode_with_guard(  # noqa: ANN001
    tokenizer, prompt: str, script: str, budget: int = 200, then: str = "", **guard_options: bool
) -> tuple[str, int]:
    """Greedy decoding of a 'model' that wants to write `script`, through the guard; once the
    guard has written something else, the model wants to write `then` and stop.

    Returns the text after the prompt and how many tokens were generated before the end.
    """
    import torch

    eos = tokenizer.eos_token_id
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    wanted = [*tokenizer.encode(script, add_special_tokens=False), eos]
    after = [*tokenizer.encode(then, add_special_tokens=False), eos]
    guard = RepeatGuard(tokenizer, len(prompt_ids), eos, **guard_options)
    ids, diverged = list(prompt_ids), None
    vocab = len(tokenizer)
    for step in range(budget):
        if diverged is None and ids[len(prompt_ids) :] != wanted[:step]:
            diverged = step
        want = (
            wanted[min(step, len(wanted) - 1)]
            if diverged is None
            else after[min(step - diverged, len(after) - 1)]
        )
        scores = torch.full((1, vocab), -10.0)
        scores[0, want] = 5.0
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


@pytest.mark.parametrize(
    ("ids", "span"),
    [
        ([], 0),
        ([1, 2, 3, 4, 5, 6], 0),
        ([9, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6], 6),  # two copies of six tokens
        ([9, 1, 2, 3, 1, 2, 3], 0),  # two copies of three: not yet
        ([9, 1, 2, 3, 1, 2, 3, 1, 2, 3], 3),  # three copies of three
        ([7] * LOOP_MIN_TOKENS, 0),
        ([7] * (LOOP_MIN_TOKENS + 1), 1),
        ([1, 2, 3, 4, 5, 6, 8, 1, 2, 3, 4, 5, 6], 0),  # not back to back
    ],
)
def test_looping_span_finds_back_to_back_copies(ids: list[int], span: int) -> None:
    assert looping_span(ids) == span


def test_looping_span_ignores_spans_without_a_word() -> None:
    digits = [5, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0]  # like ,000,000,000
    assert looping_span(digits) == 4
    assert looping_span(digits, wordy={1, 2}) == 0
    assert looping_span([1, 2, 3] * 3, wordy={2}) == 3


PHRASE = " at the Hollywood Forever Cemetery"
BURIED = '[{"s": "He", "relation": "was buried", "object": "in the Abbey'


@pytest.mark.slow
def test_a_string_looping_on_a_phrase_is_closed_and_the_answer_goes_on(tokenizer) -> None:  # noqa: ANN001
    text, steps = decode_with_guard(tokenizer, "", BURIED + PHRASE * 40, budget=400, then="}]")
    items = json.loads(text)  # strict JSON: the guard closed the string, the model the list
    assert items[0]["relation"] == "was buried"
    obj = items[0]["object"]
    assert obj.startswith("in the Abbey" + PHRASE)
    assert 2 <= obj.count(PHRASE) <= 3  # the loop is cut after a few copies, not 40
    assert steps < 60


@pytest.mark.slow
def test_strings_are_left_alone_when_closing_loops_is_off_or_nothing_loops(tokenizer) -> None:  # noqa: ANN001
    looping = BURIED + PHRASE * 40
    text, steps = decode_with_guard(tokenizer, "", looping, budget=120, strings=False)
    assert text == tokenizer.decode(tokenizer.encode(looping)[:120]) and steps == 120
    for script in (
        '[{"s": "The deal", "relation": "is worth", "object": "$ 1,000,000,000,000"}]',
        '[{"s": "It", "relation": "was", "object": "very very very good"}]',
        "(Paris; is; a city at the city at the city at the city at the city)\n",
    ):
        text, _ = decode_with_guard(tokenizer, "", script)
        assert text == script
