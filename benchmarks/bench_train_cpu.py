"""SFT throughput on the CPU through the same code path as `triplesmith train`.

Usage: python benchmarks/bench_train_cpu.py [--base smollm2] [--steps 5] [--batch-size 2]
           [--methods lora,qlora] [--packing auto,off]
Prints, for each method and packing setting, the tokens/s, the train time, the loss at the
first and last step, the peak resident memory and the machine. Shared CPUs make these figures
noisy: compare settings within one run. Peak memory is the process's peak so far (it only grows
from one setting to the next).
"""

import argparse
import os
import platform
import tempfile
from pathlib import Path

from triplesmith.training.config import TrainConfig
from triplesmith.training.sft import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="smollm2")
    parser.add_argument("--dataset", default="sample")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--methods", default="lora,qlora")
    parser.add_argument("--packing", default="auto,off", help="auto, on, off (comma-separated)")
    args = parser.parse_args()

    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    packing_values = {"auto": None, "on": True, "off": False}
    for method in args.methods.split(","):
        for packing in args.packing.split(","):
            with tempfile.TemporaryDirectory(prefix="bench-train-") as folder:
                config = TrainConfig(
                    base=args.base,
                    dataset=args.dataset,
                    out=Path(folder) / "adapter",
                    method=method,
                    max_steps=args.steps,
                    batch_size=args.batch_size,
                    max_seq_len=args.max_seq_len,
                    packing=packing_values[packing],
                    save_steps=10_000,
                )
                m = train(config).manifest
            print(
                f"{method:5s} packing={packing:4s} ({'on' if m.packing else 'off'}): "
                f"{m.tokens_per_s:7.1f} tokens/s, {m.tokens_trained} tokens in "
                f"{m.train_wall_s:.1f} s, loss {m.loss_start:.3f} -> {m.loss_end:.3f}, "
                f"peak RSS {m.peak_memory_bytes / 1024**3:.2f} GiB, wall {m.wall_s:.1f} s"
            )


if __name__ == "__main__":
    main()
