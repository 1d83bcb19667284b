"""`triplesmith train`: fine-tune a LoRA/QLoRA adapter on a dataset and write it with its manifest.

With `--num-processes N` (alias `--gpus N`) the command starts itself again in N processes
through accelerate's launcher (`accelerate launch -m triplesmith.cli.app train ...`, one process
a GPU); under a launcher already (`LOCAL_RANK` is set) it trains as one of those processes.
"""

import json
import os
import socket
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from triplesmith.errors import TrainingError, TriplesmithError

if TYPE_CHECKING:
    from triplesmith.training.manifest import AdapterManifest

console = Console()
err = Console(stderr=True)
MODULE = "triplesmith.cli.app"  # what each launched process runs: `python -m MODULE train ...`


class MethodChoice(StrEnum):
    auto = "auto"
    lora = "lora"
    qlora = "qlora"
    full = "full"


class PresetChoice(StrEnum):
    default = "default"
    reference = "reference"


class FormatChoice(StrEnum):
    chat = "chat"
    llama2 = "llama2"


class NaryChoice(StrEnum):
    join = "join"
    drop = "drop"
    split = "split"


class AdapterDTypeChoice(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"


def train(
    ctx: typer.Context,
    base: str = typer.Option(
        "smollm2", "--base", help="Base model: smollm2, a local model directory, or a Hub id."
    ),
    dataset: str = typer.Option(
        "sample",
        "--dataset",
        help="sample (its train split), a .jsonl file, a prepared folder (its train.jsonl), "
        "or langsmith:NAME.",
    ),
    out: Path = typer.Option(..., "--out", help="Adapter directory to write (e.g. adapters/run1)."),
    method: MethodChoice | None = typer.Option(
        None,
        "--method",
        help="lora, qlora (4-bit NF4 base), full (every weight; OUT is then a model folder, "
        "used as hf:OUT), or auto: QLoRA only when the base would not fit, never full "
        "(default auto; the reference preset uses qlora).",
    ),
    preset: PresetChoice = typer.Option(
        PresetChoice.default,
        "--preset",
        help="default (LoRA r16 on all linear layers) or reference (the Llama-2 Colab QLoRA recipe).",
    ),
    epochs: float | None = typer.Option(None, "--epochs", help="Epochs (default 3)."),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="Stop after this many optimizer steps (overrides --epochs)."
    ),
    lr: float | None = typer.Option(
        None, "--lr", help="Learning rate (default 2e-4; 1e-4 with --method full)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Per-step batch (default 4)."),
    max_seq_len: int | None = typer.Option(
        None,
        "--max-seq-len",
        help="Longest example in tokens (default 512); longer examples are refused, not truncated.",
    ),
    save_steps: int | None = typer.Option(
        None, "--save-steps", help="Checkpoint every N steps into OUT/checkpoints (default 50)."
    ),
    fmt: FormatChoice = typer.Option(
        FormatChoice.chat,
        "--format",
        help="chat (the base's chat template) or llama2 ([INST] <<SYS>> tokens).",
    ),
    nary: NaryChoice = typer.Option(
        NaryChoice.join,
        "--nary",
        help="CaRB's n-ary tuples as targets: join (extra arguments joined into the object), "
        "drop (the first object only) or split (one triple per extra argument).",
    ),
    lora_r: int | None = typer.Option(None, "--lora-r", min=1, help="LoRA rank (default 16)."),
    lora_alpha: int | None = typer.Option(
        None, "--lora-alpha", min=1, help="LoRA alpha (default: twice the rank)."
    ),
    lora_targets: str | None = typer.Option(
        None,
        "--lora-targets",
        help="all-linear (default), attention (q/k/v/o projections) or module names, "
        "comma-separated.",
    ),
    kernels: bool | None = typer.Option(
        None,
        "--kernels/--no-kernels",
        help="Liger's Triton kernels (RMSNorm, SwiGLU, RoPE); default: on with CUDA when "
        "liger-kernel is installed and supports the model.",
    ),
    attention: str | None = typer.Option(
        None,
        "--attention",
        help="Attention implementation: sdpa, eager, triplesmith_varlen (FlashAttention for "
        "packed batches), flash_attention_2, ...; default: triplesmith_varlen on a CUDA GPU "
        "that has FlashAttention, else sdpa.",
    ),
    adapter_dtype: AdapterDTypeChoice | None = typer.Option(
        None,
        "--adapter-dtype",
        help="dtype of the LoRA weights; default: the base's (bf16 on GPU, fp32 on CPU).",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the last checkpoint in OUT/checkpoints."
    ),
    num_processes: int = typer.Option(
        1,
        "--num-processes",
        "--gpus",
        min=1,
        help="Train in N processes, one a GPU, started through `accelerate launch` (DDP: "
        "--batch-size is per process); on a machine without GPUs, N CPU processes (gloo).",
    ),
    fsdp: bool = typer.Option(
        False,
        "--fsdp/--ddp",
        help="With several processes: shard the base's weights over them (FSDP) instead of a "
        "copy on each (DDP, the default), for a base that does not fit one GPU.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Fine-tune a LoRA/QLoRA adapter (or, with --method full, every weight) with TRL's
    SFTTrainer; write OUT with manifest.json."""
    try:
        from triplesmith.training.config import PRESETS, TrainConfig, lora_settings
        from triplesmith.training.machine import world_size
        from triplesmith.training.sft import train as run_training

        if "LOCAL_RANK" not in os.environ and num_processes > 1:
            raise typer.Exit(launch(num_processes, ["-m", MODULE, *_command_line(ctx)]))
        if "LOCAL_RANK" in os.environ and num_processes > 1 and num_processes != world_size():
            raise TrainingError(
                f"--num-processes {num_processes} under a launcher that started {world_size()} "
                "processes; give the number to one of them only"
            )

        config = TrainConfig.from_preset(
            preset.value,
            base=base,
            dataset=dataset,
            out=out,
            method=method.value if method else None,
            format=fmt.value,
            nary=nary.value,
            lora=None
            if lora_r is None and lora_alpha is None and lora_targets is None
            else lora_settings(lora_r, lora_alpha, lora_targets, PRESETS[preset.value].get("lora")),
            epochs=epochs,
            max_steps=max_steps,
            learning_rate=lr,
            batch_size=batch_size,
            max_seq_len=max_seq_len,
            save_steps=save_steps,
            kernels=kernels,
            attention=attention,
            adapter_dtype=adapter_dtype.value if adapter_dtype else None,
            distributed="fsdp" if fsdp else "ddp",
            resume=resume,
        )
        result = run_training(config, console=err)
    except TriplesmithError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'options'}: {error['msg']}"
            for error in exc.errors()
        )
        err.print(f"[bold red]error:[/] {problems}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print(
            f"interrupted; checkpoints are in {out / 'checkpoints'}: rerun the same command "
            "with --resume to continue from the last one"
        )
        raise typer.Exit(130) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return  # the main process prints
    manifest = result.manifest
    if as_json:
        print(json.dumps(manifest.model_dump(mode="json"), ensure_ascii=False))
        return
    full = manifest.method == "full"
    title = f"model {result.out} (as a chain: hf:{result.out})" if full else f"adapter {result.out}"
    table = Table(title=title, show_header=False)
    each = " per process" if manifest.hyperparameters.get("processes", 1) > 1 else ""
    table.add_column("field")
    table.add_column("value")
    loss = (
        f"{manifest.loss_start:.4f} → {manifest.loss_end:.4f}"
        if manifest.loss_start is not None and manifest.loss_end is not None
        else "not logged"
    )
    rows = [
        ("method", f"{manifest.method} ({manifest.method_reason})"),
        ("levers", _levers(manifest)),
        ("steps", f"{manifest.steps} ({manifest.epochs:.2f} epochs)"),
        ("loss", loss),
        ("tokens/s", f"{manifest.tokens_per_s:.1f}"),
        ("wall", f"{manifest.wall_s:.1f} s (training {manifest.train_wall_s:.1f} s)"),
        (
            "peak memory",
            f"{manifest.peak_memory_bytes / 1024**3:.2f} GiB{each} on {manifest.device}",
        ),
        ("model hash" if full else "adapter hash", manifest.adapter_hash),
    ]
    if manifest.resumed_from:
        rows.insert(2, ("resumed from", manifest.resumed_from))
    for field, value in rows:
        table.add_row(field, value)
    console.print(table)


def launch_arguments(processes: int, program: list[str], port: int) -> list[str]:
    """`accelerate launch`'s arguments to run `program` (`-m MODULE ARGS...` or `SCRIPT ARGS...`)
    in `processes` processes.

    accelerate's multi-process launcher (torch elastic) starts them, on GPUs or, without any,
    on the CPU (the training sets `use_cpu`, so accelerate joins them with gloo). Mixed precision
    is the training plan's (bf16 on GPUs), not the launcher's.
    """
    return [
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *program,
    ]


def launch(processes: int, program: list[str]) -> int:
    """Run `program` (see `launch_arguments`) in `processes` processes through accelerate's
    launcher; the exit status of the first that failed, else 0."""
    import torch
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    gpus = torch.cuda.device_count()
    if 0 < gpus < processes:
        raise TrainingError(
            f"--num-processes {processes}: only {gpus} GPU(s) visible here (CUDA_VISIBLE_DEVICES); "
            f"use --num-processes {gpus} or fewer"
        )
    with socket.socket() as probe:  # a free port, so that two runs on one host do not meet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = launch_command_parser().parse_args(launch_arguments(processes, program, port))
    try:
        launch_command(args)
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        return next((code for code in codes if code > 0), 1)
    return 0


def _command_line(ctx: typer.Context) -> list[str]:
    """This `triplesmith train` invocation's arguments, less --num-processes: what each launched
    process runs."""
    words = ["-v"] * int((ctx.parent.params if ctx.parent else {}).get("verbose") or 0)
    words.append(ctx.info_name or "train")
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        if name == "num_processes" or getattr(source, "name", None) != "COMMANDLINE":
            continue
        value = ctx.params[name]
        if getattr(param, "is_flag", False):
            words += [param.opts[0]] if value else list(getattr(param, "secondary_opts", []))[:1]
        else:
            words += [param.opts[0], str(getattr(value, "value", value))]
    return words


def _levers(manifest: "AdapterManifest") -> str:
    """The speed decisions in one line (their reasons are in manifest.json)."""
    return (
        f"attention {manifest.attention}, packing {'on' if manifest.packing else 'off'}, "
        f"kernels {'liger' if manifest.kernels else 'off'}, adapters {manifest.adapter_dtype}, "
        f"checkpointing {'on' if manifest.gradient_checkpointing else 'off'}"
    )


def register(app: typer.Typer) -> None:
    """Add the top-level `train` command."""
    app.command("train")(train)
