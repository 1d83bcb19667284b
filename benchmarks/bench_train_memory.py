"""Peak memory of LoRA training on the CPU against the micro-batch shape, each in its own process.

Usage: python benchmarks/bench_train_memory.py [--steps 3] [--max-seq-len 384]
           [--shapes 8x1,2x4,1x8,8x1+ckpt]
A shape is BATCHxACCUM (rows per forward pass x micro-batches per optimizer step; the same
effective batch gives the same updates), `+ckpt` forces gradient checkpointing. Prints, per
shape, the peak resident memory of the process, the wall time of the steps and the first and
last loss, on the demo's data (the sample's train split) and sequence length.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(shape: str, steps: int, max_seq_len: int) -> None:
    from triplesmith.training.config import TrainConfig
    from triplesmith.training.sft import train

    sizes, _, flags = shape.partition("+")
    batch, accum = (int(x) for x in sizes.split("x"))
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig.from_preset(
            "default",
            base="smollm2",
            dataset="sample",
            out=Path(out) / "adapter",
            method="lora",
            max_steps=steps,
            batch_size=batch,
            grad_accum=accum,
            learning_rate=1e-3,
            max_seq_len=max_seq_len,
            group_by_length=True,
            gradient_checkpointing=True if flags == "ckpt" else None,
        )
        started = time.perf_counter()
        manifest = train(config).manifest
        wall = time.perf_counter() - started
    print(
        json.dumps(
            {
                "shape": shape,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                "wall_s": wall,
                "loss_start": manifest.loss_start,
                "loss_end": manifest.loss_end,
                "checkpointing": manifest.gradient_checkpointing,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-seq-len", type=int, default=384)
    parser.add_argument("--shapes", default="8x1,2x4,1x8,8x1+ckpt")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.max_seq_len)
        return
    print(
        f"machine: {platform.machine()}, {platform.python_version()}; {args.steps} steps, "
        f"max_seq_len {args.max_seq_len}, LoRA on smollm2, sample:train"
    )
    print("| shape (batch x accum) | checkpointing | peak RSS | wall | loss first -> last |")
    print("| --- | --- | ---: | ---: | --- |")
    for shape in args.shapes.split(","):
        command = [sys.executable, __file__, "--worker", shape, "--steps", str(args.steps)]
        command += ["--max-seq-len", str(args.max_seq_len)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {shape} | failed: {done.stderr.strip().splitlines()[-1]} | | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"| {shape} | {r['checkpointing']} | {r['peak_rss_gb']:.2f} GB | {r['wall_s']:.0f} s | "
            f"{r['loss_start']:.3f} -> {r['loss_end']:.3f} |"
        )


if __name__ == "__main__":
    main()
