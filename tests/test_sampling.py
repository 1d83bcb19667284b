"""Sampling in the transformers engine (`+temperature`, `+sample_seed`), with the real SmolLM2."""

import json
from pathlib import Path

import pytest

from triplesmith.chains.engines import GenerationOptions
from triplesmith.chains.prompt import build_messages
from triplesmith.data.carb import read_carb_gold
from triplesmith.errors import ChainError


def carb_test_sentences(carb_dir: Path) -> list[str]:
    return [e.sentence for e in read_carb_gold(carb_dir / "gold" / "test.tsv", "test")][:4]


@pytest.fixture(autouse=True)
def transformers_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLESMITH_ENGINE", "hf")


def test_sampling_is_part_of_the_decoding_key_only_when_set() -> None:
    greedy = GenerationOptions().decoding()
    assert "temperature" not in greedy and "seed" not in greedy  # earlier keys stay the same
    assert GenerationOptions(seed=3).decoding() == greedy
    sampled = GenerationOptions(temperature=0.7, seed=3).decoding()
    assert (sampled["temperature"], sampled["seed"]) == (0.7, 3)
    assert GenerationOptions(temperature=0.7, seed=4).decoding() != sampled
    with pytest.raises(ChainError, match="temperature must be a number > 0"):
        GenerationOptions(temperature=0.0)


@pytest.mark.slow
def test_a_seeded_sample_is_reproducible_differs_from_greedy_and_stays_a_triple_list(
    carb_dir: Path,
) -> None:
    from triplesmith.chains.engines import get_hf_engine

    engine = get_hf_engine("smollm2")
    prompts = [build_messages(s, []) for s in carb_test_sentences(carb_dir)]
    sizes = [20] * len(prompts)
    greedy = engine.generate(prompts, sizes, GenerationOptions(max_new_tokens=64))
    options = GenerationOptions(max_new_tokens=64, temperature=0.7, seed=7)
    sampled = engine.generate(prompts, sizes, options)
    again = engine.generate(prompts, sizes, options)
    assert not [r for r in [*greedy, *sampled, *again] if isinstance(r, Exception)]
    assert [r.token_ids for r in sampled] == [r.token_ids for r in again]
    assert [r.logprobs for r in sampled] == [r.logprobs for r in again]
    assert [r.token_ids for r in sampled] != [r.token_ids for r in greedy]
    ended = [r for r in sampled if r.finish_reason != "length"]
    assert ended
    for result in ended:
        items = json.loads(result.text)  # the grammar holds while sampling
        assert isinstance(items, list)
        assert all(list(item) == ["s", "relation", "object"] for item in items)
    for result in sampled:
        assert result.text.startswith('[{"s": "') or result.text == "[]", result.text
        assert len(result.logprobs) == result.tokens_out
        assert all(lp <= 0.0 for lp in result.logprobs)


@pytest.mark.slow
def test_sampled_log_probs_are_the_models_log_probs_of_the_sampled_tokens(
    carb_dir: Path,
) -> None:
    """Unconstrained and without loop rules, each recorded log-prob is the model's own (at
    temperature 1) of the token drawn, across the pauses where finished rows leave the batch:
    transformers' transition scores of a teacher-forced pass over the same sequences."""
    import torch

    from triplesmith.chains.engines import HFEngine

    engine = HFEngine("smollm2")
    # Four prompts answered in a word end early, so that the others go on without them.
    short = [
        [{"role": "user", "content": f"Answer with one word, yes or no: {question}"}]
        for question in ("Is Paris in France?", "Is ice cold?", "Is two even?", "Is fire wet?")
    ]
    prompts = short + [build_messages(s, []) for s in carb_test_sentences(carb_dir)]
    options = GenerationOptions(
        max_new_tokens=48,
        constrained=False,
        stop_repeats=False,
        close_loops=False,
        temperature=0.8,
        seed=1,
    )
    results = engine.generate(prompts, [20] * len(prompts), options)
    assert not [r for r in results if isinstance(r, Exception)]
    assert len(engine.widths) > 1, engine.widths  # rows left the batch on the way
    not_argmax = 0
    for messages, result in zip(prompts, results, strict=True):
        assert result.tokens_out > 0
        prompt = engine.tokenizer(engine.render(messages), add_special_tokens=False)["input_ids"]
        sequence = torch.tensor([prompt + result.token_ids])
        with torch.inference_mode():
            logits = engine.model(sequence).logits
        steps = tuple(logits[:, len(prompt) - 1 + i] for i in range(result.tokens_out))
        theirs = engine.model.compute_transition_scores(sequence, steps, normalize_logits=True)
        assert result.logprobs == pytest.approx(theirs[0].tolist(), abs=1e-3)
        best = torch.stack(steps, dim=1).log_softmax(dim=-1).amax(dim=-1)[0]
        not_argmax += int((best - theirs[0] > 1e-3).sum())
    assert not_argmax > 0  # tokens were drawn, not all argmax: a greedy record would differ
