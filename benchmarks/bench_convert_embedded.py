"""Wall time of converting the embedded GGUF to its safetensors cache (issue 17).

Usage: python benchmarks/bench_convert_embedded.py [--runs 5] [--keep DIR] [--models FILE]
Each run is a fresh interpreter calling `convert_embedded(force=True)` into a new temporary
XDG_CACHE_HOME (TRIPLESMITH_CACHE_DIR unset), so nothing is reused between runs. Prints, per run,
the seconds spent importing triplesmith.models, in `convert_embedded`, the process's peak RSS and
the load average before and after; then the median and the machine. `--keep DIR` copies the last
run's converted folder there, to compare two versions' output file by file; `--models FILE` runs
another version's triplesmith/models.py (`git show REV:triplesmith/models.py > FILE`) for a before;
`--preimport` imports transformers' llama classes before the clock starts, since the load that
follows a conversion imports them anyway: what is left is the conversion's own cost.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import importlib.util, os, sys, time
if os.environ.get("BENCH_PREIMPORT"):  # what loading the model imports anyway, out of the timing
    from transformers import LlamaConfig, LlamaForCausalLM, TokenizersBackend
started = time.perf_counter()
if len(sys.argv) > 1:  # another version's models.py, loaded in place of this tree's
    spec = importlib.util.spec_from_file_location("triplesmith.models", sys.argv[1])
    sys.modules["triplesmith.models"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["triplesmith.models"])
from triplesmith.models import __file__ as module, convert_embedded
imported = time.perf_counter() - started
started = time.perf_counter()
path = convert_embedded("smollm2", force=True)
converted = time.perf_counter() - started
peak = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(imported, converted, int(peak) // 1024, module, path)
"""


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (the machine's 2 cores are shared)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def one_run(
    keep: Path | None, models: Path | None, preimport: bool
) -> tuple[float, float, int, str]:
    """Convert once in a fresh interpreter and cache: (import s, convert s, peak RSS MiB, the
    triplesmith/models.py that ran, so a PYTHONPATH pointing at another tree shows)."""
    with tempfile.TemporaryDirectory(prefix="convert-bench-") as root:
        env = {k: v for k, v in os.environ.items() if k != "TRIPLESMITH_CACHE_DIR"}
        env["XDG_CACHE_HOME"] = root
        if preimport:
            env["BENCH_PREIMPORT"] = "1"
        out = subprocess.run(
            [sys.executable, "-c", CHILD, *([str(models)] if models else [])],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        last = out.stdout.strip().splitlines()[-1]
        imported, converted, peak, module, path = last.split(maxsplit=4)
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(path, keep)
    return float(imported), float(converted), int(peak), module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None)
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--preimport", action="store_true")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    times = []
    for run in range(1, args.runs + 1):
        before = loadavg()
        imported, converted, peak, module = one_run(args.keep, args.models, args.preimport)
        times.append(converted)
        print(
            f"run {run}: import {imported:.1f} s, convert_embedded {converted:.1f} s, "
            f"peak RSS {peak} MiB, load {before} -> {loadavg()} ({module})"
        )
    print(f"median convert_embedded(force=True): {statistics.median(times):.1f} s over {args.runs}")


if __name__ == "__main__":
    main()
