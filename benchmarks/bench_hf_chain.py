"""Throughput of the `hf` chain: 32 CaRB test sentences one at a time, then batched.

Usage: python benchmarks/bench_hf_chain.py [--carb-dir ../shared/datasets/carb] [--n 32]
       [--batch-size 16] [--max-new-tokens 64] [--chain hf:smollm2]
Prints sentences/s both ways; the last line is the speed-up (target: >= 3x on 2 CPU cores).
Greedy decoding, the same token budget both ways.
"""

import argparse
import platform
import time
from pathlib import Path

import torch

from triplesmith.chains.registry import get_chain
from triplesmith.data.carb import read_carb_gold


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--carb-dir", type=Path, default=Path("../shared/datasets/carb"))
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--chain", default="hf:smollm2")
    args = parser.parse_args()

    examples = read_carb_gold(args.carb_dir / "gold" / "test.tsv", "test")[: args.n]
    inputs = [{"sentence": e.sentence} for e in examples]
    spec = f"{args.chain}+max_new_tokens={args.max_new_tokens}+batch_size={args.batch_size}"
    chain = get_chain(spec)
    chain.invoke(inputs[0])  # load and warm up

    start = time.perf_counter()
    single = [chain.invoke(x) for x in inputs]
    one_at_a_time = time.perf_counter() - start
    start = time.perf_counter()
    batched = chain.batch(inputs)
    in_batches = time.perf_counter() - start

    tokens = sum(e.tokens_out for e in batched)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}"
    )
    print(f"chain: {spec}; sentences: {len(inputs)}; new tokens (batched run): {tokens}")
    print(f"one at a time: {len(inputs) / one_at_a_time:.3f} sentences/s ({one_at_a_time:.1f} s)")
    print(
        f"batched ({args.batch_size}): {len(inputs) / in_batches:.3f} sentences/s ({in_batches:.1f} s)"
    )
    errors = sum(e.error is not None for e in single + batched)
    print(f"errors: {errors}")
    print(f"speed-up: {one_at_a_time / in_batches:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
