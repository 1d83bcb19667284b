"""Data-parallel generation: one engine per device, each batch split between them.

CI has no GPUs, so the replicas here are two worker processes with the embedded SmolLM2 on the
CPU: the same processes, split and merge as on several GPUs, only the device differs.
"""

import pytest

from triplesmith.chains.engines import engine_gpus
from triplesmith.chains.engines.base import CANCELLED, GenerationOptions
from triplesmith.chains.engines.replicas import ReplicaEngine, split
from triplesmith.chains.prompt import build_messages
from triplesmith.data.registry import load_dataset
from triplesmith.errors import ChainError


def test_split_deals_every_prompt_once_with_like_lengths_per_share():
    lengths = [5, 40, 12, 33, 8, 21, 17]
    shares = split(lengths, 2)
    assert sorted(i for share in shares for i in share) == list(range(len(lengths)))
    assert [len(share) for share in shares] == [4, 3]
    assert shares[0][0] == 1 and shares[1][0] == 3  # the two longest go one each way
    # A lone prompt goes to whichever replica's turn it is.
    assert split([7], 3, start=2) == [[], [], [0]]


def test_a_gpu_count_that_is_not_a_number_is_named(monkeypatch):
    monkeypatch.setenv("TRIPLESMITH_GPUS", "two")
    with pytest.raises(ChainError, match="TRIPLESMITH_GPUS='two'"):
        engine_gpus()


@pytest.mark.slow
def test_two_replicas_split_a_batch_and_answer_as_one_engine():
    from triplesmith.chains.engines import HFEngine, get_engine, get_hf_engine

    one = get_engine("smollm2")
    assert isinstance(one, HFEngine) and one is get_hf_engine("smollm2")  # a CPU: one engine
    both = ReplicaEngine("smollm2", None, ["cpu", "cpu"])  # two worker processes
    try:
        assert (both.model_hash, both.adapter_hash) == (one.model_hash, one.adapter_hash)
        sentences = [e.sentence for e in load_dataset("sample")][:5]
        prompts = [build_messages(sentence) for sentence in sentences]
        lengths = [both.count_tokens(sentence) for sentence in sentences]
        assert lengths == [one.count_tokens(sentence) for sentence in sentences]
        options = GenerationOptions(max_new_tokens=32)
        alone = one.generate(prompts, lengths, options)
        shared = both.generate(prompts, lengths, options)
        assert [g.text for g in shared] == [g.text for g in alone]
        assert [g.token_ids for g in shared] == [g.token_ids for g in alone]
        # A single call joins the coalescing queue and goes to one replica.
        assert both.submit(prompts[0], lengths[0], options).result().text == alone[0].text

        # An interrupted engine refuses work until resumed, then its replicas answer again.
        both.cancel()
        assert [str(r) for r in both.generate(prompts[:2], lengths[:2], options)] == [
            CANCELLED,
            CANCELLED,
        ]
        both.resume()
        again = both.generate(prompts[:2], lengths[:2], options)
        assert [g.text for g in again] == [g.text for g in alone[:2]]
    finally:
        both.close()
    assert not any(worker.process.is_alive() for worker in both.workers)
