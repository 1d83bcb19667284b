"""Does batching survive `run_experiment`? The same local chain over the same sentences through
`langsmith.evaluate` and the graph, one example in flight (max_concurrency=1) against many.

Usage: python benchmarks/bench_experiment_batching.py [--n 8] [--chain zero-shot:smollm2]
       [--max-new-tokens 32] [--concurrency 8]
Each setting runs in a fresh temporary store (nothing is resumed). The last line is the
speed-up; concurrent examples share one batched generate, so it should be well above 1.
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from triplesmith.chains.registry import get_chain
from triplesmith.data.registry import load_dataset
from triplesmith.experiments.runner import run_experiment


def timed_run(spec: str, examples: list, concurrency: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = run_experiment(
            spec,
            examples,
            "triple-f1,format",
            store=Path(folder) / "bench.sqlite",
            max_concurrency=concurrency,
            upload=False,
        )
        elapsed = time.perf_counter() - start
    return elapsed, sum(r.tokens_out for r in result.rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--chain", default="zero-shot:smollm2")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    examples = load_dataset("sample:test")[: args.n]
    spec = f"{args.chain}+max_new_tokens={args.max_new_tokens}"
    get_chain(spec).invoke({"sentence": examples[0].sentence})  # load and warm up

    sequential, tokens_1 = timed_run(spec, examples, 1)
    concurrent, tokens_n = timed_run(spec, examples, args.concurrency)
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
    )
    print(f"chain: {spec}; sentences: {len(examples)}; new tokens: {tokens_1} / {tokens_n}")
    print(f"max_concurrency=1: {len(examples) / sequential:.3f} sentences/s ({sequential:.1f} s)")
    print(
        f"max_concurrency={args.concurrency}: {len(examples) / concurrent:.3f} sentences/s "
        f"({concurrent:.1f} s)"
    )
    print(f"speed-up: {sequential / concurrent:.2f}x")


if __name__ == "__main__":
    main()
