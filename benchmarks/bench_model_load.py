"""Load time of the embedded model: the first load converts the GGUF once, later loads read the cache.

Usage: python benchmarks/bench_model_load.py [--fresh]
`--fresh` converts again into a temporary cache (about a minute) to show the first-load cost.
The last line is the second (cached) load time; target < 5 s.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

CHILD = (
    "import time; t = time.perf_counter(); import torch, transformers; "
    "from triplesmith.models import load; i = time.perf_counter() - t; "
    "t = time.perf_counter(); load('smollm2'); print(i, time.perf_counter() - t)"
)


def timed_load(env: dict[str, str]) -> tuple[float, float]:
    """Load in a fresh interpreter: (seconds importing torch + transformers, seconds in load())."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    imports, load = out.stdout.strip().splitlines()[-1].split()
    return float(imports), float(load)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.fresh:
        env["TRIPLESMITH_CACHE_DIR"] = tempfile.mkdtemp(prefix="triplesmith-cache-")
    started = time.perf_counter()
    imports, first = timed_load(env)
    print(f"import torch + transformers: {imports:.1f} s")
    print(f"first load (converts the GGUF if the cache is empty): {first:.1f} s")
    imports, second = timed_load(env)
    print(f"import torch + transformers: {imports:.1f} s")
    print(f"wall time of both runs: {time.perf_counter() - started:.1f} s")
    print(f"second load (from the safetensors cache): {second:.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
