"""LoRA / QLoRA (or full) supervised fine-tuning with TRL's SFTTrainer, producing an adapter
directory (or, for `method="full"`, a model directory: safetensors, config and tokenizer).

`train(config)` is the one code path behind `triplesmith train` and the training benchmarks:
every bad input is refused before the model is loaded, the machine-dependent choices (the GPU
speed levers included) come from `training.config.plan_training`, checkpoints go to
`OUT/checkpoints` (so `resume=True` continues after an interruption), and the adapter (or the
fully fine-tuned model, which loads as a base model by its folder: `hf:OUT`) lands in `OUT` with
its `manifest.json`.

Under `accelerate launch` (or `triplesmith train --num-processes N`, which calls it) every
process runs this same function: each plans for its own device and they agree on the smallest
free memory, the Trainer shares the batches (DDP, or FSDP with `distributed="fsdp"`), and only
the main process writes the run file, the adapter and the manifest, which the others then read.
"""

from __future__ import annotations

import json
import logging
import resource
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import PrinterCallback, TrainerCallback

from triplesmith.chains.prompt import PROMPT_ID
from triplesmith.errors import ModelError, TrainingError
from triplesmith.memory import release_memory
from triplesmith.models import ModelRef, adapter_hash, model_hash, resolve
from triplesmith.training.base_model import (
    base_model_hash,
    check_bitsandbytes,
    check_causal_lm,
    load_base,
)
from triplesmith.training.config import (
    Machine,
    Plan,
    TrainConfig,
    plan_training,
    probe_machine,
    shape_of,
    world_size,
)
from triplesmith.training.format import (
    build_dataset,
    check_lengths,
    check_template,
    load_training_examples,
    token_lengths,
)
from triplesmith.training.kernels import liger_kernels
from triplesmith.training.manifest import (
    AdapterManifest,
    LossPoint,
    dataset_hash,
    loss_ends,
    name_base_portably,
    package_versions,
    read_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RUN_FILE = "triplesmith_run.json"
# Fields that must not change between an interrupted run and its --resume.
RESUME_FIXED = (
    "base",
    "method",
    "dataset",
    "format",
    "nary",
    "lora",
    "max_seq_len",
    "batch_size",
    "grad_accum",
    "adapter_dtype",
    "distributed",
)


class TrainResult(BaseModel):
    """Where the adapter was written, and its manifest."""

    out: Path
    manifest: AdapterManifest


class RichProgress(TrainerCallback):
    """A Rich progress bar over optimizer steps, showing the latest loss (on stderr)."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
        self.task: Any = None
        self.session_logs: list[dict[str, float]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, loss=""
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        self.session_logs.append(dict(logs))
        if "loss" in logs:
            self.progress.update(self.task, loss=f"loss {logs['loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)
        self.progress.stop()


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint (Trainer writes trainer_state.json last)."""
    if not checkpoints.is_dir():
        return None
    complete = []
    for folder in checkpoints.glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and (folder / "trainer_state.json").is_file():
            complete.append((int(step), folder))
    return max(complete)[1] if complete else None


def _check_out(config: TrainConfig, checkpoints: Path) -> Path | None:
    """The checkpoint to resume from, refusing to mix a new run into an old one's folder."""
    checkpoint = last_checkpoint(checkpoints)
    if config.resume:
        if checkpoint is None:
            raise TrainingError(
                f"--resume: {checkpoints} holds no complete checkpoint to continue from; "
                "run without --resume to start training"
            )
        saved = (
            json.loads((checkpoints / RUN_FILE).read_text())
            if (checkpoints / RUN_FILE).is_file()
            else {}
        )
        now = {**config.model_dump(mode="json"), "processes": world_size()}
        # The number of processes sets the global batch, so the steps and the schedule.
        fixed = (*RESUME_FIXED, "processes")
        changed = [key for key in fixed if saved.get(key, now[key]) != now[key]]
        if changed:
            processes = (
                f" (it ran in {saved['processes']} processes, this run in {now['processes']})"
                if "processes" in changed
                else ""
            )
            raise TrainingError(
                f"--resume: {', '.join(changed)} differ from the interrupted run in "
                f"{config.out}{processes}; resume with the same settings, or train into a new --out"
            )
        return checkpoint
    if checkpoint is not None:
        raise TrainingError(
            f"{config.out} holds checkpoints of an earlier run; pass --resume to continue it, "
            "or choose another --out"
        )
    for marker, what in (("adapter_config.json", "an adapter"), ("config.json", "a model")):
        if (config.out / marker).is_file():
            raise TrainingError(
                f"{config.out} already holds {what}; choose another --out or remove the folder"
            )
    return None


def cast_adapters(model: Any, dtype: str) -> None:
    """Cast the trainable LoRA weights to `dtype` before the optimizer is built.

    peft makes them fp32 whatever the base's dtype, and TRL then casts QLoRA's to bf16; the
    plan's `adapter_dtype` decides for both methods.
    """
    import torch

    target = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    for name, param in model.named_parameters():
        # DoRA's magnitude vector stays fp32: its updates can be below bf16's resolution.
        if param.requires_grad and "lora_magnitude_vector" not in name:
            param.data = param.data.to(target)


def sharded(config: TrainConfig, machine: Machine) -> bool:
    """Whether FSDP shards the base over the processes (asked for, and more than one)."""
    return config.distributed == "fsdp" and machine.processes > 1


def sft_config(config: TrainConfig, plan: Plan, machine: Machine, checkpoints: Path) -> Any:
    """TRL's SFTConfig for this run (its full-fine-tuning defaults overridden where LoRA differs).

    Under several processes the batch size is per process, so the global batch is
    `batch_size * grad_accum * processes`.
    """
    from trl import SFTConfig

    names = {field.name for field in fields(SFTConfig)}
    # transformers 5.2x renamed gradient checkpointing; the old name warns.
    checkpointing = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    distributed: dict[str, Any] = {}
    if sharded(config, machine):
        # FSDP2 wraps each decoder layer (the model's `_no_split_modules`) and recomputes
        # activations itself when the plan checkpoints; the full adapter is gathered to save it.
        distributed["fsdp"] = True
        distributed["fsdp_config"] = {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "activation_checkpointing": plan.gradient_checkpointing,
            "state_dict_type": "FULL_STATE_DICT",
        }
    elif machine.processes > 1:
        # Every LoRA weight gets a gradient at every step: no search for unused parameters.
        distributed["ddp_find_unused_parameters"] = False
    return SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optim,
        seed=config.seed,
        bf16=plan.dtype == "bfloat16",
        fp16=False,
        **{checkpointing: plan.gradient_checkpointing and not sharded(config, machine)},
        max_length=config.max_seq_len,
        packing=plan.packing,
        packing_strategy="bfd",
        completion_only_loss=True,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=machine.device == "cuda",
        # On CPU, processes started by `accelerate launch` talk through gloo (accelerate's
        # MULTI_CPU); alone, nothing changes.
        use_cpu=machine.device == "cpu",
        **distributed,
    )


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Hide the libraries' own progress bars and deprecation chatter unless logging is verbose.

    The Rich bar is the progress display; the warnings name library internals a user cannot
    act on (TRL and peft still call the deprecated `gradient_checkpointing` names).
    """
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    hf_bars, ds_bars = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", category=FutureWarning, module=r"(transformers|trl|peft)"
            )
            yield
    finally:
        if hf_bars:
            hf_logging.enable_progress_bar()
        if ds_bars:
            datasets.enable_progress_bars()


def _reset_peak_memory(machine: Machine) -> None:
    if machine.device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def _join_processes(machine: Machine) -> tuple[Any, Machine]:
    """accelerate's process state, and the machine every process plans for.

    Each process probed its own device; they plan with the least free memory among them so that
    they all make the same decisions (a different plan per process would not train together).
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState(cpu=machine.device == "cpu")
    if machine.processes == 1:
        return state, machine
    free = min(gather_object([machine.free_bytes]))
    return state, replace(machine, free_bytes=int(free))


def _peak_memory(machine: Machine) -> int:
    """Peak GPU memory allocated during this run, or the process's peak resident memory on CPU."""
    if machine.device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def train(config: TrainConfig, console: Console | None = None) -> TrainResult:
    """Train a LoRA/QLoRA adapter (or, with `method="full"`, all the base's weights) on
    `config.dataset` into `config.out` and write its manifest.

    Raises `TrainingError` (before any training step) for an empty dataset, examples longer
    than `max_seq_len`, a base that is not a causal LM, QLoRA where bitsandbytes cannot run,
    `resume` without a checkpoint, or an `out` folder holding another run.
    """
    with _quiet_libraries():
        try:
            return _train(config, console)
        finally:
            # The trainer, its model and optimizer are garbage now, some of it in reference
            # cycles: the process that goes on to evaluate gets it back (1.5 GB in the demo).
            release_memory()


def _train(config: TrainConfig, console: Console | None) -> TrainResult:
    started = time.perf_counter()
    checkpoints = config.out / CHECKPOINTS
    # 1. Every refusal comes before the model is loaded.
    data = load_training_examples(config.dataset)
    resume_from = _check_out(config, checkpoints)
    try:
        ref = resolve(config.base)
    except ModelError as exc:
        raise TrainingError(f"base model: {exc}") from exc
    hf_config = check_causal_lm(ref)
    state, machine = _join_processes(probe_machine())
    main = state.is_main_process
    if sharded(config, machine) and machine.device != "cuda":
        # accelerate shards only on accelerators; its CPU processes would silently copy (DDP).
        raise TrainingError(
            "FSDP (--fsdp) shards the base over GPUs, and this run has none; train with DDP "
            "(--ddp, the default) on CPU processes"
        )
    plan = plan_training(config, shape_of(hf_config), machine)
    if plan.method == "qlora":
        check_bitsandbytes(machine.device)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot load the tokenizer of base model {ref.name!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    check_template(tokenizer, config.format, config.base)
    lengths = token_lengths(data.examples, tokenizer, config.format, config.nary)
    check_lengths(data.examples, lengths, config.max_seq_len)
    log.info("plan: %s", plan)

    # 2. Train.
    from peft import LoraConfig
    from trl import SFTTrainer

    _reset_peak_memory(machine)
    if main:
        config.out.mkdir(parents=True, exist_ok=True)
        checkpoints.mkdir(exist_ok=True)
        if resume_from is None:
            run = {**config.model_dump(mode="json"), "processes": machine.processes}
            (checkpoints / RUN_FILE).write_text(json.dumps(run, indent=2))
    args = sft_config(config, plan, machine, checkpoints)
    if machine.device == "cuda" and machine.processes == 1:
        # One process trains on one GPU. With several visible, transformers would spread each
        # batch over all of them with nn.DataParallel, which TRL refuses (it counts them when it
        # first sets the device; `Trainer` sets 1 the same way for a model split by device_map).
        # Several GPUs train through `--num-processes N`.
        _ = args.device
        args._n_gpu = 1
    model = load_base(
        ref,
        plan,
        machine,
        config.model_kwargs,
        config.double_quant,
        sharded=sharded(config, machine),
    )
    full = plan.method == "full"
    lora = (
        None
        if full
        else LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    )
    # One progress bar, the main process's (the Trainer calls every process's callbacks).
    progress = RichProgress(console)
    with liger_kernels(model, plan.kernels):
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=build_dataset(data.examples, config.format, config.nary),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[progress] if main else [],
        )
        if not full:  # a full fine-tune keeps its fp32 master weights
            cast_adapters(trainer.model, plan.adapter_dtype)
        # With tqdm off, Trainer prints every log dict to stdout; the Rich bar replaces both.
        trainer.remove_callback(PrinterCallback)
        try:
            resume = str(resume_from) if resume_from else None
            output = trainer.train(resume_from_checkpoint=resume)
        finally:
            progress.progress.stop()
    # Every process takes part (FSDP gathers); main writes. A full fine-tune is written as a
    # model folder (model.safetensors, config, generation config, tokenizer).
    if full:  # Trainer turned the KV cache off for training; the saved model generates with it
        model.config.use_cache = True
    trainer.save_model(str(config.out))
    peak = max(_gather(state, _peak_memory(machine)))
    if not main:
        state.wait_for_everyone()  # until the main process has written the manifest
        return TrainResult(out=config.out, manifest=read_manifest(config.out))

    # 3. The manifest (the main process).
    if full:  # the weights' hash, the one the hf chain records for a model folder
        weights_hash = model_hash(ModelRef(name=str(config.out), path=str(config.out), local=True))
    else:
        name_base_portably(config.out)  # the embedded base by its Hub id, before adapter_hash
        weights_hash = adapter_hash(config.out)
    curve = [
        LossPoint(
            step=int(entry["step"]),
            loss=float(entry["loss"]),
            learning_rate=entry.get("learning_rate"),
            epoch=entry.get("epoch"),
        )
        for entry in trainer.state.log_history
        if "loss" in entry and "step" in entry
    ]
    loss_start, loss_end, loss_window = loss_ends(curve)
    tokens = int(max((entry.get("num_tokens", 0) for entry in progress.session_logs), default=0))
    runtime = float(output.metrics.get("train_runtime", 0.0))
    manifest = AdapterManifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        base_model=config.base,
        base_model_path=ref.path,
        base_model_hash=base_model_hash(ref),
        dataset=data.dataset,
        dataset_split=data.split,
        dataset_hash=dataset_hash(data.examples),
        examples=len(data.examples),
        max_example_tokens=max(lengths),
        format=config.format,
        prompt_id=PROMPT_ID,
        preset=config.preset,
        method=plan.method,
        method_reason=plan.method_reason,
        dtype=plan.dtype,
        dtype_reason=plan.dtype_reason,
        gradient_checkpointing=plan.gradient_checkpointing,
        gradient_checkpointing_reason=plan.gradient_checkpointing_reason,
        packing=plan.packing,
        packing_reason=plan.packing_reason,
        attention=plan.attention,
        attention_reason=plan.attention_reason,
        kernels=plan.kernels,
        kernels_reason=plan.kernels_reason,
        adapter_dtype=plan.adapter_dtype,
        adapter_dtype_reason=plan.adapter_dtype_reason,
        hyperparameters={**config.hyperparameters(), "processes": machine.processes},
        steps=int(trainer.state.global_step),
        epochs=float(trainer.state.epoch or 0.0),
        loss_curve=curve,
        loss_start=loss_start,
        loss_end=loss_end,
        loss_window=loss_window,
        tokens_trained=tokens,
        tokens_per_s=round(tokens / runtime, 2) if runtime > 0 else 0.0,
        train_wall_s=round(runtime, 2),
        wall_s=round(time.perf_counter() - started, 2),
        peak_memory_bytes=peak,
        device=machine.name if machine.processes == 1 else f"{machine.processes} x {machine.name}",
        resumed_from=resume_from.name if resume_from else None,
        adapter_hash=weights_hash,
        packages=package_versions(),
    )
    write_manifest(config.out, manifest)
    if machine.processes > 1:
        state.wait_for_everyone()
    return TrainResult(out=config.out, manifest=manifest)


def _gather(state: Any, value: int) -> list[int]:
    """`value` from every process (this one's alone when it trains alone)."""
    if state.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return list(gather_object([value]))
