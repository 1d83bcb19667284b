"""Training in several processes through accelerate, run on the CPU (gloo) as CI has no GPUs.

Two processes with a batch of 1 each see, step by step, the same examples as one process with a
batch of 2 (accelerate hands each process its own batch from the one sampler), so the two runs
must log the same loss curve; only the main process writes the adapter, the manifest and the
run file.
"""

import json
import os
import subprocess
import sys

import pytest

from triplesmith.cli.train import launch_arguments
from triplesmith.data.registry import load_dataset
from triplesmith.training.manifest import AdapterManifest, read_manifest


def _run(command: list[str]) -> subprocess.CompletedProcess:
    # One thread a process: on a busy 2-core runner, two-thread matrix products in one process
    # were 6x slower than one-thread ones (206 s against 35 s for the single-process run here).
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def test_num_processes_relaunches_through_accelerates_own_launcher():
    from accelerate.commands.launch import launch_command_parser

    command = ["-v", "train", "--out", "adapters/run1", "--max-steps", "5"]
    program = ["-m", "triplesmith.cli.app", *command]
    args = launch_command_parser().parse_args(launch_arguments(4, program, 29533))
    assert args.multi_gpu and args.num_processes == 4 and args.main_process_port == 29533
    assert args.module and args.training_script == "triplesmith.cli.app"
    assert args.training_script_args == command


@pytest.mark.slow
def test_two_processes_write_one_adapter_with_the_loss_curve_of_one_process(tmp_path):
    shortest = sorted(load_dataset("sample:train"), key=lambda e: len(e.sentence))[:4]
    data = tmp_path / "four.jsonl"
    data.write_text("".join(example.model_dump_json() + "\n" for example in shortest))
    common = ["--base", "smollm2", "--dataset", str(data), "--max-steps", "3"]
    common += ["--max-seq-len", "256", "--json"]

    two = tmp_path / "two"
    # What a user types: `accelerate launch ... -m triplesmith.cli.app train ...` (accelerate's
    # `--cpu` flag starts one process only; its multi-process launcher runs CPU processes too).
    launched = _run(
        [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]
        + launch_arguments(
            2,
            ["-m", "triplesmith.cli.app", "train", *common, "--out", str(two), "--batch-size", "1"],
            29531,
        )
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    one = tmp_path / "one"
    alone = _run(
        [sys.executable, "-m", "triplesmith.cli.app", "train", *common]
        + ["--out", str(one), "--batch-size", "2"]
    )
    assert alone.returncode == 0, alone.stderr[-3000:]

    # One adapter, one manifest, one run file, and one process printed.
    printed = [line for line in launched.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1
    written = sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file())
    assert written.count("adapter_model.safetensors") == 1
    assert written.count("manifest.json") == 1
    assert written.count("checkpoints/triplesmith_run.json") == 1
    manifest = read_manifest(two)
    assert AdapterManifest.model_validate(json.loads(printed[0])) == manifest
    assert manifest.device == "2 x cpu" and manifest.hyperparameters["processes"] == 2

    # The same steps over the same examples, and the same loss curve.
    single = read_manifest(one)
    assert (manifest.steps, manifest.epochs) == (single.steps, single.epochs) == (3, 1.5)
    assert manifest.tokens_trained == single.tokens_trained
    assert [p.step for p in manifest.loss_curve] == [p.step for p in single.loss_curve]
    for ours, theirs in zip(manifest.loss_curve, single.loss_curve, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, rel=0.02)
    assert manifest.loss_end < manifest.loss_start

    # The process count sets the global batch: a resume in another count is refused by name.
    resumed = _run(
        [sys.executable, "-m", "triplesmith.cli.app", "train", *common]
        + ["--out", str(two), "--batch-size", "1", "--resume"]
    )
    assert resumed.returncode == 2
    assert "it ran in 2 processes, this run in 1" in resumed.stderr
