"""Concurrent requests to `langgraph dev`: are they answered together or one after another?

Usage: python benchmarks/bench_server_concurrency.py [--requests 20] [--jobs 20]
           [--chain zero-shot:smollm2+max_new_tokens=32] [--carb-dir ../shared/datasets/carb]
Starts `langgraph dev` on loopback (offline, `--n-jobs-per-worker JOBS`), sends one warm-up
request, then REQUESTS different CaRB test sentences at once (`POST /runs/wait`), and prints
each request's latency, the first and the last, and last/first (issue 22's target: <= 3).
"""

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(port: int, jobs: int, log: Path) -> subprocess.Popen:
    exe = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or "langgraph"
    env = {**os.environ, "LANGSMITH_TRACING": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    env.pop("LANGSMITH_API_KEY", None)
    command = [exe, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n-jobs-per-worker", str(jobs)]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env
    )


def ask(url: str, sentence: str, chain: str) -> tuple[float, str | None]:
    body = {
        "assistant_id": "extractor",
        "input": {"sentence": sentence},
        "config": {"configurable": {"chain": chain}},
    }
    started = time.perf_counter()
    reply = httpx.post(f"{url}/runs/wait", json=body, timeout=1800)
    elapsed = time.perf_counter() - started
    if reply.status_code != 200:
        return elapsed, f"HTTP {reply.status_code}: {reply.text[:200]}"
    results = reply.json().get("results") or {}
    errors = [r.get("error") for r in results.values() if r.get("error")]
    return elapsed, errors[0] if errors else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--chain", default="zero-shot:smollm2+max_new_tokens=32")
    parser.add_argument("--carb-dir", type=Path, default=ROOT.parent / "shared/datasets/carb")
    args = parser.parse_args()

    from triplesmith.data.carb import read_carb_gold

    sentences = [e.sentence for e in read_carb_gold(args.carb_dir / "gold" / "test.tsv", "test")]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = start(port, args.jobs, log)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"langgraph dev did not start: {log.read_text()[-2000:]}")
            time.sleep(1)
        warm, error = ask(url, sentences[-1], args.chain)
        print(f"warm-up request: {warm:.1f} s{'' if error is None else ', error: ' + error}")
        started = time.perf_counter()
        with ThreadPoolExecutor(args.requests) as pool:
            answers = list(pool.map(lambda s: ask(url, s, args.chain), sentences[: args.requests]))
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = sorted(latency for latency, _ in answers)
    failed = [error for _, error in answers if error]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; chain {args.chain}; "
        f"--n-jobs-per-worker {args.jobs}"
    )
    print(
        f"{args.requests} concurrent requests: all answered in {wall:.1f} s; "
        f"errors: {len(failed)}{'' if not failed else ' (' + failed[0] + ')'}"
    )
    print("latencies (s): " + ", ".join(f"{x:.1f}" for x in latencies))
    print(
        f"first {latencies[0]:.1f} s, last {latencies[-1]:.1f} s, "
        f"last / first = {latencies[-1] / latencies[0]:.2f} (target <= 3)"
    )


if __name__ == "__main__":
    main()
