"""benchmarks/sweep_carb_validation.py: sampled answers voted into one (decode `voteN-tT`)."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).parents[1] / "benchmarks" / "sweep_carb_validation.py"
_SPEC = importlib.util.spec_from_file_location("sweep_carb_validation", _PATH)
sweep = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sweep)


def answer(*triples: tuple[str, str, str, float]) -> dict:
    return {
        "triples": [{"s": s, "relation": r, "object": o} for s, r, o, _ in triples],
        "confidences": [c for *_, c in triples],
    }


def test_a_triple_is_kept_when_half_the_samples_hold_it_and_ranked_by_its_votes():
    paris = ("Paris", "is the capital of", "France", -0.1)
    samples = [
        answer(paris, ("Paris", "is in", "Europe", -0.5)),
        answer(("paris", "is the capital of", "France.", -0.3), ("Paris", "is in", "Europe", -0.5)),
        answer(("PARIS ", "is  the capital of", "France", -0.2)),
        answer(("France", "has", "Paris", -0.01)),
        answer(("Paris", "is a", "city", -0.2)),
    ]
    voted = sweep.vote_triples(samples, 5)
    # Paris/capital in 3 of 5 (case, spacing and punctuation aside): kept as first written;
    # Paris/in/Europe in 2 of 5 and the others in 1: below half.
    assert voted["triples"] == [{"s": "Paris", "relation": "is the capital of", "object": "France"}]
    assert 0.6 < voted["confidences"][0] < 0.7
    assert voted["diagnostics"] == {"complete": True}
    # Half of an even number of samples is enough; a failed sample still counts in n.
    even = sweep.vote_triples(samples[:2], 4)
    assert [t["relation"] for t in even["triples"]] == ["is the capital of", "is in"]


def test_votes_order_first_and_log_probs_break_ties_within_a_vote_share():
    sure = ("A", "r", "B", -0.01)
    unsure = ("C", "r", "D", -3.0)
    likely = ("E", "r", "F", -0.05)
    samples = [answer(sure, unsure, likely), answer(unsure, likely), answer(sure, unsure)]
    voted = sweep.vote_triples(samples, 3)
    confidence = {t["s"]: c for t, c in zip(voted["triples"], voted["confidences"], strict=True)}
    assert confidence["C"] > confidence["A"] > confidence["E"]  # 3 votes above 2 votes
    assert confidence["A"] > confidence["E"]  # two votes each: the likelier wins
    assert confidence["A"] < 2 / 3 + 0.5 / 3 < confidence["C"]  # a tie-break never jumps a share


def test_a_sample_votes_once_for_a_triple_it_repeats():
    samples = [answer(("A", "r", "B", -0.1), ("a", "r", "b", -0.1)), answer(), answer()]
    assert sweep.vote_triples(samples, 3)["triples"] == []


def test_vote_decodes_name_one_sampled_chain_per_seed(tmp_path):
    assert sweep.decode_suffixes("vote3-t0.7") == [
        "+sample_seed=0+temperature=0.7",
        "+sample_seed=1+temperature=0.7",
        "+sample_seed=2+temperature=0.7",
    ]
    assert sweep.decode_suffixes("greedy") == [""]
    specs = sweep.chain_specs("e8-b16-lr1e-3", tmp_path, "vote2-t1")
    assert specs == [
        f"hf:smollm2+adapter={tmp_path}/adapters/e8-b16-lr1e-3+sample_seed={k}+temperature=1"
        for k in range(2)
    ]
    for bad in ("vote0-t0.7", "vote5-t0", "vote5-t3"):
        with pytest.raises(SystemExit, match="voteN-tT needs"):
            sweep.decode_suffixes(bad)
