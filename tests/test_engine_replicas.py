"""Data-parallel generation: one engine per device, each batch split between them.

CI has no GPUs, so the replicas here are two copies of the embedded SmolLM2 on the CPU: the
same split, threads and merge as on several GPUs, only the device differs.
"""

import pytest

from triplesmith.chains.engines.base import CANCELLED, GenerationOptions
from triplesmith.chains.engines.replicas import ReplicaEngine, replicate, split
from triplesmith.chains.prompt import build_messages
from triplesmith.data.registry import load_dataset


def test_split_deals_every_prompt_once_with_like_lengths_per_share():
    lengths = [5, 40, 12, 33, 8, 21, 17]
    shares = split(lengths, 2)
    assert sorted(i for share in shares for i in share) == list(range(len(lengths)))
    assert [len(share) for share in shares] == [4, 3]
    assert shares[0][0] == 1 and shares[1][0] == 3  # the two longest go one each way
    # A lone prompt goes to whichever replica's turn it is.
    assert split([7], 3, start=2) == [[], [], [0]]


@pytest.mark.slow
def test_two_replicas_split_a_batch_and_answer_as_one_engine():
    from triplesmith.chains.engines import HFEngine, get_engine

    one = get_engine("smollm2")
    assert isinstance(one, HFEngine)  # on a CPU nothing is replicated
    replicas = iter([one, HFEngine("smollm2")])
    both = replicate(lambda: next(replicas), ["cpu", "cpu"])
    assert isinstance(both, ReplicaEngine) and both.replicas[0] is one

    sentences = [e.sentence for e in load_dataset("sample")][:5]
    prompts = [build_messages(sentence) for sentence in sentences]
    lengths = [one.count_tokens(sentence) for sentence in sentences]
    options = GenerationOptions(max_new_tokens=32)
    alone = one.generate(prompts, lengths, options)
    shared = both.generate(prompts, lengths, options)
    assert [g.text for g in shared] == [g.text for g in alone]
    assert [g.token_ids for g in shared] == [g.token_ids for g in alone]
    assert (both.model_hash, both.adapter_hash) == (one.model_hash, one.adapter_hash)

    # Interrupting the replica engine interrupts every replica.
    both.cancel()
    try:
        assert all(replica.cancelled for replica in both.replicas)
        assert [str(r) for r in both.generate(prompts[:2], lengths[:2], options)] == [
            CANCELLED,
            CANCELLED,
        ]
    finally:
        both.resume()
    assert not any(replica.cancelled for replica in both.replicas)
