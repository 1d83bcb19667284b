"""Grammar-constrained decoding: whatever a model wants to write, the answer is a triple list.

A scripted 'model' (scores that prefer the next token of a script, then closing tokens) is
decoded greedily through the real llguidance grammar with the real SmolLM2 tokenizer, so these
tests need no model weights.
"""

import json

import pytest

from triplesmith.chains.engines.grammar import (
    MAX_FIELD_CHARS,
    TRIPLES_SCHEMA,
    GrammarProcessor,
    grammar_for,
)
from triplesmith.chains.parser import parse_triples
from triplesmith.errors import ChainError

CANONICAL = '[{"s": "Paris", "relation": "is the capital of", "object": "France"}]'


@pytest.fixture(scope="module")
def tokenizer():  # noqa: ANN201
    from transformers import AutoTokenizer

    from triplesmith.models import convert_embedded

    return AutoTokenizer.from_pretrained(str(convert_embedded("smollm2")))


def decode(  # noqa: ANN201
    tokenizer,  # noqa: ANN001
    scripts: list[str],
    schema: str | None = None,
    budget: int = 160,
    reserve: bool = False,
    ahead: bool = False,
):
    """Greedy decoding of one row per script through the grammar. Each row's 'model' wants the
    next token of its script while it is on script; once the grammar has made it write something
    else, it prefers closing: end-of-sequence, then `"`, `}`, `]`, then a letter. With `ahead`,
    each step's choices go to the grammar as soon as they are made (as the engine does on a
    GPU). Returns each row's text and whether it ended by itself."""
    import torch

    vocab = len(tokenizer)
    eos = tokenizer.eos_token_id
    grammar = grammar_for(tokenizer, vocab, schema)
    processor = GrammarProcessor(grammar, len(scripts), 1, budget if reserve else None)
    wanted = [tokenizer.encode(s, add_special_tokens=False) + [eos] for s in scripts]
    closing = [eos] + [
        tokenizer.encode(c, add_special_tokens=False)[0] for c in ('"', "}", "]", "a")
    ]
    ids = [[eos] for _ in scripts]  # a one-token prompt
    done = [False] * len(scripts)
    for _ in range(budget):
        scores = torch.full((len(scripts), vocab), -20.0)
        for row, want in enumerate(wanted):
            answer = ids[row][1:]
            on_script = answer == want[: len(answer)]
            if on_script and len(answer) < len(want):
                scores[row, want[len(answer)]] = 10.0
            for rank, token in enumerate(closing):
                scores[row, token] = max(float(scores[row, token]), 5.0 - rank)
        scores = processor(torch.tensor(ids), scores)
        chosen = scores.argmax(dim=-1).tolist()
        if ahead:
            processor.advance(chosen)
        for row, token in enumerate(chosen):
            if not done[row]:
                if token == eos:
                    done[row] = True
                ids[row].append(token)
            else:
                ids[row].append(eos)  # padding after the end, as `generate` writes
        if all(done):
            break
    texts = [tokenizer.decode([t for t in row[1:] if t != eos]) for row in ids]
    return texts, done


def assert_triple_list(text: str) -> list[dict]:
    value = json.loads(text)
    assert isinstance(value, list)
    for item in value:
        assert set(item) == {"s", "relation", "object"}
        assert all(isinstance(v, str) and len(v) <= MAX_FIELD_CHARS for v in item.values())
        assert all(v.strip() and not v[0].isspace() for v in item.values())  # never empty
    return value


def test_a_canonical_answer_is_left_exactly_as_the_model_wrote_it(tokenizer) -> None:  # noqa: ANN001
    [text], [ended] = decode(tokenizer, [CANONICAL])
    assert ended and text == CANONICAL
    assert parse_triples(text).diagnostics.complete


@pytest.mark.parametrize(
    "script",
    [
        "Sure! Here are the triples: " + CANONICAL,
        '[{"s":"Paris","relation":"capital"}]',  # compact, and no object
        '{"triples": ' + CANONICAL + "}",
        "```json\n" + CANONICAL + "\n```",
        "Paris is the capital of France.",
        '[{"s": "Paris", "relation": "is", "object": "a city", "note": "extra"}]',
        '[{"s": "Paris", "relation": "", "object": " France "}]',  # empty and padded fields
    ],
)
def test_whatever_the_model_wants_the_answer_is_a_triple_list(tokenizer, script: str) -> None:  # noqa: ANN001
    [text], [ended] = decode(tokenizer, [script])
    assert ended, text
    assert_triple_list(text)
    assert parse_triples(text).diagnostics.strategy == "json"


def test_a_field_may_end_in_whitespace_but_never_starts_with_it(tokenizer) -> None:  # noqa: ANN001
    """The one difference from TRIPLES_SCHEMA's pattern (which is slow to enforce): a trailing
    space is kept as written (the parser collapses it), a leading one is never written."""
    script = '[{"s": "Paris ", "relation": "is", "object": "France"}]'
    [text], [ended] = decode(tokenizer, [script])
    assert ended and text == script
    assert parse_triples(text).triples[0].s == "Paris"
    [text], [ended] = decode(tokenizer, [script.replace('"Paris "', '" Paris"')])
    assert ended and '" ' not in text
    assert_triple_list(text)


def test_choices_handed_over_ahead_give_the_same_answers(tokenizer) -> None:  # noqa: ANN001
    scripts = [
        CANONICAL,
        "No triples here.",
        '[{"s":"Paris","relation":"capital"}]',
        '[{"s": "Paris", "relation": "", "object": " France "}]',
    ]
    assert decode(tokenizer, scripts, ahead=True) == decode(tokenizer, scripts)
    assert decode(tokenizer, scripts, budget=40, reserve=True, ahead=True) == decode(
        tokenizer, scripts, budget=40, reserve=True
    )


def test_rows_of_a_batch_follow_their_own_grammar_state(tokenizer) -> None:  # noqa: ANN001
    scripts = [CANONICAL, "No triples here.", CANONICAL.replace("France", "la France")]
    texts, ended = decode(tokenizer, scripts)
    assert all(ended)
    assert texts[0] == CANONICAL and texts[2] == scripts[2]
    assert assert_triple_list(texts[1]) is not None


def test_a_served_schema_replaces_the_triple_list(tokenizer) -> None:  # noqa: ANN001
    schema = json.dumps(
        {
            "type": "object",
            "properties": {"triples": TRIPLES_SCHEMA},
            "required": ["triples"],
            "additionalProperties": False,
        }
    )
    [text], [ended] = decode(tokenizer, [CANONICAL], schema=schema)
    assert ended
    value = json.loads(text)
    assert set(value) == {"triples"} and isinstance(value["triples"], list)


def test_an_invalid_schema_is_a_chain_error_naming_it(tokenizer) -> None:  # noqa: ANN001
    with pytest.raises(ChainError, match="JSON schema"):
        grammar_for(tokenizer, len(tokenizer), '{"type": "array", "items": ')


def test_near_the_end_of_the_budget_no_new_item_starts(tokenizer) -> None:  # noqa: ANN001
    items = [
        f'{{"s": "Item {i}", "relation": "is number", "object": "{i} of many"}}' for i in range(40)
    ]
    script = "[" + ", ".join(items) + "]"
    [cut], [ended] = decode(tokenizer, [script], budget=120)
    assert not ended  # without the reserve the budget cuts the list off
    [text], [ended] = decode(tokenizer, [script], budget=120, reserve=True)
    assert ended
    value = assert_triple_list(text)
    assert 2 <= len(value) < 40 and script.startswith(text[:-1])
    assert len(tokenizer.encode(text, add_special_tokens=False)) <= 120


def test_an_item_begun_before_the_reserve_is_finished_within_the_budget(tokenizer) -> None:  # noqa: ANN001
    """Items whose fields run long (a sentence copied into each): the one open when the budget
    nears its end is closed as briefly as the grammar allows, so the answer still ends."""
    field = "the relay team from Jamaica set a world record at the Olympic Games in London " * 2
    item = f'{{"s": "{field}", "relation": "{field}", "object": "{field}"}}'
    script = "[" + ", ".join([item] * 6) + "]"
    for budget in (100, 140, 200):
        [text], [ended] = decode(tokenizer, [script], budget=budget, reserve=True)
        assert ended, budget
        assert len(assert_triple_list(text)) >= 1
        assert len(tokenizer.encode(text, add_special_tokens=False)) <= budget


def test_the_tokens_the_grammar_forces_are_given_without_moving_its_state(tokenizer) -> None:  # noqa: ANN001
    """`forced_after`: after `{"` the grammar forces `s":`, after a field's closing `",` the
    next key; never inside a field; each token still goes to the matcher as decoding writes it,
    and the matcher's masks are those of a matcher never asked."""
    grammar = grammar_for(tokenizer, len(tokenizer))
    processor = GrammarProcessor(grammar, 1, 0)
    witness = grammar.matcher()
    ids = tokenizer.encode(CANONICAL, add_special_tokens=False)
    forced = []
    for token in ids:
        forced.append(
            (tokenizer.decode([token]), tokenizer.decode(processor.forced_after(0, token)))
        )
        assert processor.matchers[0].compute_bitmask() == witness.compute_bitmask()
        assert processor.matchers[0].consume_token(token) and witness.consume_token(token)
    assert forced[:3] == [("[", ""), ('{"', 's":'), ("s", '":')]
    assert ('",', ' "relation":') in forced and ('",', ' "object":') in forced
    assert ("Paris", "") in forced and ("]", "") in forced
    processor.live[0] = False  # a row released from its grammar is guessed nothing
    assert processor.forced_after(0, ids[0]) == []


@pytest.mark.parametrize("budget", [None, 24])
def test_scores_on_a_gpu_are_masked_as_on_a_cpu(tokenizer, budget: int | None) -> None:  # noqa: ANN001
    """The mask is unpacked by numpy for CPU scores and by torch on the GPU: the same scores
    come out masked the same at every step (with the budget's reserve too)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    grammar = grammar_for(tokenizer, len(tokenizer))
    scripts = [CANONICAL, '[{"s": "A", "relation": "b", "object": "c"}]']
    eos = tokenizer.eos_token_id
    ids = [tokenizer.encode(s, add_special_tokens=False) + [eos] for s in scripts]
    on_cpu, on_gpu = (GrammarProcessor(grammar, len(ids), 1, budget) for _ in range(2))
    written = torch.full((len(ids), 1), eos)
    generator = torch.Generator().manual_seed(0)
    for step in range(max(map(len, ids))):
        scores = torch.randn(len(ids), len(tokenizer), generator=generator)
        cpu = on_cpu(written, scores.clone())
        gpu = on_gpu(written.cuda(), scores.clone().cuda()).cpu()
        assert torch.equal(cpu, gpu), step
        nexts = [row[step] if step < len(row) else eos for row in ids]
        written = torch.cat([written, torch.tensor(nexts)[:, None]], dim=1)
