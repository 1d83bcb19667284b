"""Bad input and broken surroundings at the command line: a one-line error, never a traceback.

Usage: python benchmarks/probe_cli_errors.py [--only NAME]
Runs each probe (issue 22's list: bad options, unwritable or wrong output paths, a corrupted
store or stages.json, bad settings, an unreachable endpoint) as a real `triplesmith` command in
a scratch folder, and prints a table: the exit status, whether a Python traceback was printed,
the last line of stderr, and whether the probe held (non-zero exit, no traceback; for the
input-safety probes also the input file unchanged). Probes that would load a model use options
that are refused before it loads, or a chain on a closed loopback port.
"""

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Probe:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    setup: str = ""  # a named setup step, run in the scratch folder first


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT = closed_port()
SENTENCES = '{"sentence": "Paris is the capital of France."}\n'

PROBES = [
    Probe("extract: --output is --input", ["extract", "-i", "in.jsonl", "-o", "in.jsonl"]),
    Probe(
        "extract: --batch-size -1",
        ["extract", "-i", "in.jsonl", "-o", "o.jsonl", "--batch-size", "-1"],
    ),
    Probe(
        "extract: --output is a directory", ["extract", "-i", "in.jsonl", "-o", "adir"], setup="dir"
    ),
    Probe(
        "extract: --output under a file",
        ["extract", "-i", "in.jsonl", "-o", "afile/o.jsonl"],
        setup="file",
    ),
    Probe(
        "extract: --output on a full disk (/dev/full)",
        ["extract", "-i", "in.jsonl", "-o", "/dev/full", "--chain"]
        + [f"zero-shot:openai:m+base_url=http://127.0.0.1:{PORT}/v1"],
        env={"TRIPLESMITH_MAX_RETRIES": "0"},
    ),
    Probe(
        "extract: --output not UTF-8",
        ["extract", "-i", "in.jsonl", "-o", "bin.jsonl"],
        setup="binary",
    ),
    Probe("extract: missing --input", ["extract", "-i", "nope.jsonl", "-o", "o.jsonl"]),
    Probe("extract: +batch_size=0", ["extract", "x", "--chain", "few-shot:smollm2+batch_size=0"]),
    Probe("extract: +k=-1", ["extract", "x", "--chain", "few-shot:smollm2+k=-1"]),
    Probe(
        "extract: +max_new_tokens=0",
        ["extract", "x", "--chain", "few-shot:smollm2+max_new_tokens=0"],
    ),
    Probe(
        "extract: +temperature on a local chain",
        ["extract", "x", "--chain", "few-shot:smollm2+temperature=0.7"],
    ),
    Probe(
        "extract: +timeout on a local chain",
        ["extract", "x", "--chain", "few-shot:smollm2+timeout=5"],
    ),
    Probe(
        "extract: +repetition_penalty=0",
        ["extract", "x", "--chain", "few-shot:smollm2+repetition_penalty=0"],
    ),
    Probe("extract: unknown kind", ["extract", "x", "--chain", "five-shot:smollm2"]),
    Probe(
        "extract: unknown model",
        ["extract", "x", "--chain", "few-shot:no/such-model-here"],
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Probe(
        "extract: adapter folder is not an adapter",
        ["extract", "x", "--chain", "hf:smollm2+adapter=adir"],
        setup="dir",
    ),
    Probe(
        "extract: unreachable endpoint",
        [
            "extract",
            "x",
            "--chain",
            f"zero-shot:openai:gpt-4o-mini+base_url=http://127.0.0.1:{PORT}/v1+timeout=2",
        ],
        env={"TRIPLESMITH_MAX_RETRIES": "0"},
    ),
    Probe(
        "extract: bad TRIPLESMITH_MAX_RETRIES",
        ["extract", "x", "--chain", f"zero-shot:openai:m+base_url=http://127.0.0.1:{PORT}/v1"],
        env={"TRIPLESMITH_MAX_RETRIES": "many"},
    ),
    Probe(
        "extract: bad TRIPLESMITH_ENGINE",
        ["extract", "x", "--chain", "zero-shot:smollm2+max_new_tokens=4"],
        env={"TRIPLESMITH_ENGINE": "vllm"},
    ),
    Probe(
        "compare: typo in the second chain",
        [
            "compare",
            "--chains",
            "zero-shot:smollm2,few-shot:smollm2+kk=3",
            "--dataset",
            "sample:test",
        ],
    ),
    Probe(
        "compare: unknown evaluator",
        [
            "compare",
            "--chains",
            "zero-shot:smollm2",
            "--dataset",
            "sample:test",
            "--evaluators",
            "tripel-f1",
        ],
    ),
    Probe(
        "compare: unknown dataset",
        ["compare", "--chains", "zero-shot:smollm2", "--dataset", "nope:test"],
    ),
    Probe(
        "compare: --out is a file",
        [
            "compare",
            "--chains",
            f"zero-shot:openai:m+base_url=http://127.0.0.1:{PORT}/v1",
            "--dataset",
            "sample:test",
            "--out",
            "afile",
        ],
        setup="file",
        env={"TRIPLESMITH_MAX_RETRIES": "0"},
    ),
    Probe(
        "compare: corrupted store",
        [
            "compare",
            "--chains",
            f"zero-shot:openai:m+base_url=http://127.0.0.1:{PORT}/v1",
            "--dataset",
            "sample:test",
            "--store",
            "bad.sqlite",
        ],
        setup="badstore",
        env={"TRIPLESMITH_MAX_RETRIES": "0"},
    ),
    Probe(
        "compare: --concurrency -1",
        [
            "compare",
            "--chains",
            "zero-shot:smollm2",
            "--dataset",
            "sample:test",
            "--concurrency",
            "-1",
        ],
    ),
    Probe(
        "compare: LangSmith unreachable with a key set",
        ["compare", "--chains", f"zero-shot:openai:m+base_url=http://127.0.0.1:{PORT}/v1"]
        + ["--dataset", "sample:test", "--out", "o"],
        env={"LANGSMITH_API_KEY": "lsv2_probe", "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{PORT}"},
    ),
    Probe(
        "study: LangSmith unreachable with a key set",
        ["study", "--preset", "demo", "--out", "s", "--limit", "1", "--max-steps", "1"],
        env={"LANGSMITH_API_KEY": "lsv2_probe", "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{PORT}"},
    ),
    Probe("study: --limit 0", ["study", "--preset", "demo", "--out", "s", "--limit", "0"]),
    Probe("study: --epochs -1", ["study", "--preset", "demo", "--out", "s", "--epochs", "-1"]),
    Probe(
        "study: evaluator typo",
        ["study", "--preset", "demo", "--out", "s", "--evaluators", "carbb"],
    ),
    Probe(
        "study: --concurrency -1",
        ["study", "--preset", "demo", "--out", "s", "--concurrency", "-1"],
    ),
    Probe(
        "study: corrupted stages.json",
        ["study", "--preset", "demo", "--out", "s", "--limit", "1", "--max-steps", "1"],
        setup="badstages",
    ),
    Probe("study: unknown preset", ["study", "--preset", "huge", "--out", "s"]),
    Probe("train: unknown dataset", ["train", "--dataset", "nope", "--out", "a"]),
    Probe("train: --epochs -1", ["train", "--dataset", "sample", "--out", "a", "--epochs", "-1"]),
    Probe(
        "score carb: missing gold", ["score", "carb", "--gold", "nope.tsv", "--pred", "in.jsonl"]
    ),
    Probe("serve: bad --adapter", ["serve", "--adapter", "nameonly"]),
    Probe("data stats: missing folder", ["data", "stats", "nope"]),
]


def prepare(folder: Path, setup: str) -> None:
    (folder / "in.jsonl").write_text(SENTENCES)
    if setup == "dir":
        (folder / "adir").mkdir()
    elif setup == "binary":
        (folder / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    elif setup == "file":
        (folder / "afile").write_text("not a folder")
    elif setup == "badstore":
        path = folder / "bad.sqlite"
        with sqlite3.connect(path) as db:
            db.execute("create table t (x)")
            db.executemany("insert into t values (?)", [("x" * 500,)] * 200)
        data = bytearray(path.read_bytes())
        data[4096:8192] = os.urandom(4096)  # corrupted past the header
        path.write_bytes(bytes(data))
    elif setup == "badstages":
        (folder / "s").mkdir()
        (folder / "s" / "stages.json").write_text("{ not json")


def run(probe: Probe) -> tuple[int, bool, str, bool]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        prepare(folder, probe.setup)
        before = (folder / "in.jsonl").read_bytes()
        env = {**os.environ, "LANGSMITH_TRACING": "false", **probe.env}
        env.pop("OPENAI_API_KEY", None)
        done = subprocess.run(
            [sys.executable, "-m", "triplesmith.cli.app", *probe.args],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        intact = (folder / "in.jsonl").read_bytes() == before
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    traceback = "Traceback (most recent call last)" in done.stderr
    return done.returncode, traceback, (lines[-1] if lines else "")[:110], intact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="run the probes whose name has this text")
    args = parser.parse_args()
    probes = [p for p in PROBES if args.only is None or args.only in p.name]
    print("| probe | exit | traceback | held | last line of stderr |")
    print("| --- | ---: | --- | --- | --- |")
    held_count = 0
    for probe in probes:
        code, traceback, last, intact = run(probe)
        held = code != 0 and not traceback and intact
        held_count += held
        last = last.replace("|", "/")
        print(
            f"| {probe.name} | {code} | {'yes' if traceback else 'no'} | "
            f"{'yes' if held else '**no**'} | {last} |",
            flush=True,
        )
    print(f"{held_count} of {len(probes)} probes held")


if __name__ == "__main__":
    main()
