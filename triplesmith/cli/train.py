"""`triplesmith train`: fine-tune a LoRA/QLoRA adapter on a dataset and write it with its manifest."""

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from triplesmith.errors import TriplesmithError

if TYPE_CHECKING:
    from triplesmith.training.manifest import AdapterManifest

console = Console()
err = Console(stderr=True)


class MethodChoice(StrEnum):
    auto = "auto"
    lora = "lora"
    qlora = "qlora"


class PresetChoice(StrEnum):
    default = "default"
    reference = "reference"


class FormatChoice(StrEnum):
    chat = "chat"
    llama2 = "llama2"


class AdapterDTypeChoice(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"


def train(
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
        help="lora, qlora (4-bit NF4 base), or auto: QLoRA only when the base would not fit "
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
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (default 2e-4)."),
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
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Fine-tune a LoRA/QLoRA adapter with TRL's SFTTrainer; write OUT with manifest.json."""
    try:
        from triplesmith.training.config import TrainConfig
        from triplesmith.training.sft import train as run_training

        config = TrainConfig.from_preset(
            preset.value,
            base=base,
            dataset=dataset,
            out=out,
            method=method.value if method else None,
            format=fmt.value,
            epochs=epochs,
            max_steps=max_steps,
            learning_rate=lr,
            batch_size=batch_size,
            max_seq_len=max_seq_len,
            save_steps=save_steps,
            kernels=kernels,
            attention=attention,
            adapter_dtype=adapter_dtype.value if adapter_dtype else None,
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
    manifest = result.manifest
    if as_json:
        print(json.dumps(manifest.model_dump(mode="json"), ensure_ascii=False))
        return
    table = Table(title=f"adapter {result.out}", show_header=False)
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
        ("peak memory", f"{manifest.peak_memory_bytes / 1024**3:.2f} GiB on {manifest.device}"),
        ("adapter hash", manifest.adapter_hash),
    ]
    if manifest.resumed_from:
        rows.insert(2, ("resumed from", manifest.resumed_from))
    for field, value in rows:
        table.add_row(field, value)
    console.print(table)


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
