"""SFT throughput of `triplesmith train` on a Llama-2-7B-shaped model with random weights (issue 6).

Usage: python benchmarks/bench_train_gpu.py [--methods auto,lora,qlora,auto-plain]
           [--examples 1500] [--batch-size 12] [--max-seq-len 512] [--no-warmup] [--json FILE]
           [--num-processes N [--fsdp]]

Builds the model from a `LlamaConfig` (saved in bf16 with a locally trained BPE tokenizer, so
no Hub access is needed), writes ~200-token examples in the shared JSONL format, and trains each
method for one epoch through `triplesmith.training.sft.train`, the code path of
`triplesmith train`, with the speed levers it decides itself (`training.config.plan_training`):
varlen FlashAttention for packed batches, Liger's kernels, bf16 adapters.

A method is `NAME[-LEVER...][+d0][@BATCH]`. NAME is `lora`, `qlora`, `auto` (`--method`) or
`reference` (`--preset reference`). Each `-LEVER` forces one lever off: `-varlen` (sdpa
attention, so padded batches), `-kernels` (no Liger), `-bf16` (fp32 adapters), `-plain` (all
three: the CLI before the levers); `+d0` sets the LoRA dropout to 0 (default 0.05); `@BATCH`
overrides --batch-size. Triton compiles Liger's kernels on their first use in a process, so a
5-step warm-up run of the first method comes before the measured rows (--no-warmup skips it).
MFU counts 4N FLOP per trained token (forward 2N, input gradients 2N; LoRA's own weight
gradients are negligible), N = all parameters, whatever recomputation gradient checkpointing
adds, against the dense bf16 peak of all the GPUs used.

`--num-processes N` runs the same benchmark in N processes, one a GPU, started through
accelerate's launcher as `triplesmith train --num-processes N` starts them (DDP, or FSDP with
`--fsdp`); `--batch-size` is per GPU, so an epoch has 1/N of the steps. The main process builds
the model and the data and prints the rows; the peak memory is the largest of the GPUs'.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Dense bf16 tensor-core peaks (TFLOP/s) from NVIDIA's datasheets; the first match wins.
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
LLAMA2_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
)
# Seconds per epoch measured on the H100 with plain transformers + peft (issue 6).
REFERENCE_SECONDS = {
    "reference recipe (QLoRA r64 q,v, batch 4, checkpointing)": 153,
    "QLoRA all-linear, batch 16": 47,
    "bf16 LoRA, batch 32": 34,
    "physical limit": 8,
}
# What each `-LEVER` modifier sets on the TrainConfig to force that lever off.
LEVERS_OFF: dict[str, dict[str, Any]] = {
    "varlen": {"attention": "sdpa"},
    "kernels": {"kernels": False},
    "bf16": {"adapter_dtype": "float32"},
}
LEVERS_OFF["plain"] = {key: value for off in LEVERS_OFF.values() for key, value in off.items()}

# Word lists for the synthetic sentences ("|"-separated to keep them short here).
NAMES = (
    "Mira Okafor|The Westbrook council|Dr. Ansel Reyes|Copper|The river authority|Lena Strauss|"
    "Northwind Labs|The 1721 treaty|Professor Ito|The coastal railway"
).split("|")
VERBS = (
    "founded|signed|rebuilt|studied|funded|described|replaced|opened|criticised|acquired|"
    "mapped|exported"
).split("|")
THINGS = (
    "a small observatory|the eastern harbour|a new vaccine|the copper mines|three village schools|"
    "an early steam engine|the trade agreement|a botanical garden|the northern bridge|"
    "a public library|the city archive"
).split("|")
PLACES = (
    "Lisbon|the Rhine valley|Osaka|northern Chile|the old port district|Tasmania|Kraków|"
    "the Andes foothills"
).split("|")
CLAUSES = (
    "after a long dispute with the regional government|"
    "with money raised from local merchants and farmers|"
    "despite strong opposition from the neighbouring towns|"
    "during a period of rapid industrial growth|as part of a wider plan to modernise the region"
).split("|")


def synthesize(n: int, seed: int = 0) -> list[Any]:
    """`n` extraction examples (sentence + 2-4 triples), ~200 tokens each once formatted."""
    from triplesmith.schema import Example, Triple

    rng = random.Random(seed)
    examples = []
    for i in range(n):
        subject, verb, thing = rng.choice(NAMES), rng.choice(VERBS), rng.choice(THINGS)
        place, year, clause = rng.choice(PLACES), rng.randint(1700, 2020), rng.choice(CLAUSES)
        other = rng.choice([name for name in NAMES if name != subject])
        sentence = f"In {year}, {subject} {verb} {thing} in {place}"
        sentence += f" {clause}." if rng.random() < 0.5 else "."
        triples = [
            Triple(s=subject, relation=verb, object=thing),
            Triple(s=subject, relation=f"{verb} {thing} in", object=place),
        ]
        if rng.random() < 0.5:
            triples.append(Triple(s=subject, relation=f"{verb} {thing} in", object=str(year)))
        if rng.random() < 0.3:
            sentence = sentence[:-1] + f", and {other} later {rng.choice(VERBS)} it."
            triples.append(Triple(s=other, relation="later worked on", object=thing))
        examples.append(Example(id=f"synth-{i:05d}", sentence=sentence, triples=triples))
    return examples


def build_tokenizer(texts: list[str], vocab_size: int = 8000) -> Any:
    """A byte-level BPE trained on `texts`, with Llama-2's special tokens and BOS handling."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def build_base(model_dir: Path, examples: list[Any]) -> None:
    """Save a random-weight Llama-2-7B shape in bf16 plus a tokenizer into `model_dir` (once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from triplesmith.training.format import format_example

    if (model_dir / "config.json").is_file():
        return
    started = time.perf_counter()
    texts = [
        record["prompt"] + record["completion"]
        for record in (format_example(example, "llama2") for example in examples)
    ]
    build_tokenizer(texts).save_pretrained(model_dir)
    config = LlamaConfig(**LLAMA2_7B, bos_token_id=1, eos_token_id=2, dtype="bfloat16")
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(model_dir)
    del model
    torch.cuda.empty_cache()
    print(f"built {model_dir} in {time.perf_counter() - started:.0f} s", flush=True)


KERNEL_GROUPS = (
    ("attention", r"flash|fmha|attention"),  # before matmul: flash kernels name cutlass types
    ("matmul", r"gemm|cutlass|xmma|nvjet|cublas|sm90_"),
    ("pytorch reductions", r"at::native.*reduce"),
    ("pytorch elementwise/copies", r"at::native|memcpy|memset"),
    ("triton (liger) and other", r""),
)


@contextmanager
def profiled_steps(skip: int, active: int) -> Iterator[None]:
    """Profile training steps skip+1..skip+active and print where the GPU time goes per step."""
    import re

    import torch
    import trl
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, schedule

    cuda = torch.cuda.is_available()
    marks: list[float] = []

    def report(prof: Any) -> None:
        wall = (marks[-1] - marks[0]) / active if len(marks) >= 2 else float("nan")
        kernels = [
            (event.key, event.self_device_time_total / 1e3 / active)
            for event in prof.key_averages()
            if event.device_type == (DeviceType.CUDA if cuda else DeviceType.CPU)
            and event.self_device_time_total > 0
            and not event.key.startswith("ProfilerStep")  # the step annotation, not a kernel
        ]
        groups: dict[str, float] = {}
        for name, ms in kernels:
            group = next(g for g, pattern in KERNEL_GROUPS if re.search(pattern, name.lower()))
            groups[group] = groups.get(group, 0.0) + ms
        busy = sum(groups.values())
        print(
            f"\nprofile of {active} steps: {wall * 1e3:.0f} ms wall per step (profiler on), ",
            end="",
        )
        print(f"{busy:.0f} ms of kernels per step ({busy / (wall * 1e3):.0%} busy)")
        for group, ms in sorted(groups.items(), key=lambda item: -item[1]):
            print(f"  {group:<28}{ms:8.1f} ms/step")
        for name, ms in sorted(kernels, key=lambda item: -item[1])[:15]:
            print(f"  {ms:8.1f} ms/step  {name[:110]}")

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(
        activities=activities,
        schedule=schedule(wait=skip, warmup=1, active=active),
        on_trace_ready=report,
    )
    original = trl.SFTTrainer.training_step
    done = 0

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal done
        loss = original(self, *args, **kwargs)
        done += 1
        if done in (skip + 1, skip + 1 + active):  # the edges of the active window
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
        prof.step()
        return loss

    trl.SFTTrainer.training_step = training_step
    prof.start()
    try:
        yield
    finally:
        prof.stop()
        trl.SFTTrainer.training_step = original


def peak_tflops(name: str, override: float | None) -> float:
    if override:
        return override
    for key, value in PEAK_TFLOPS.items():
        if all(part in name for part in key.split()):
            return value
    sys.exit(f"no dense bf16 peak known for {name!r}: pass --peak-tflops")


def matmul_tflops() -> float:
    """The bf16 rate this GPU reaches on an 8192^3 matrix product (random data, median of 10)."""
    import torch

    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / sorted(times)[5] / 1e12


def parse_method(spec: str, batch_size: int) -> tuple[str, dict[str, Any], bool, int]:
    """`NAME[-LEVER...][+d0][@BATCH]` -> (name, levers forced off, dropout 0, batch size)."""
    name, _, batch = spec.partition("@")
    name, no_dropout = name.removesuffix("+d0"), name.endswith("+d0")
    name, *off = name.split("-")
    unknown = [lever for lever in off if lever not in LEVERS_OFF]
    if name not in ("lora", "qlora", "auto", "reference") or unknown:
        sys.exit(
            f"bad method {spec!r}: NAME is lora, qlora, auto or reference and -LEVER one of "
            f"{', '.join(LEVERS_OFF)}"
        )
    overrides = {key: value for lever in off for key, value in LEVERS_OFF[lever].items()}
    return name, overrides, no_dropout, int(batch) if batch else batch_size


def train_config(spec: str, args: argparse.Namespace, data: Path, max_steps: int | None) -> Any:
    """The TrainConfig `triplesmith train` would build for `spec` (one epoch, llama2 format)."""
    from triplesmith.training.config import TrainConfig

    name, overrides, no_dropout, batch_size = parse_method(spec, args.batch_size)
    config = TrainConfig.from_preset(
        "reference" if name == "reference" else "default",
        base=str(args.model_dir),
        dataset=str(data),
        out=args.work / spec.replace("@", "-b").replace("+", "-"),
        method=None if name == "reference" else name,
        format="llama2",
        epochs=1.0,
        batch_size=None if name == "reference" else batch_size,
        max_seq_len=args.max_seq_len,
        save_steps=10**6,
        logging_steps=10,
        max_steps=max_steps,
        distributed="fsdp" if args.fsdp else "ddp",
        **overrides,
    )
    if no_dropout:  # a copy: the preset's LoraSettings object is shared
        config = config.model_copy(update={"lora": config.lora.model_copy(update={"dropout": 0.0})})
    return config


def fresh(out: Path, state: Any) -> None:
    """Remove this script's own output from a rerun (the main process), before any trains."""
    if state.is_main_process:
        shutil.rmtree(out, ignore_errors=True)
    state.wait_for_everyone()


def run_method(
    spec: str, args: argparse.Namespace, data: Path, params: int, peak: float, state: Any
) -> dict:
    import torch

    from triplesmith.training.sft import train

    config = train_config(spec, args, data, 12 if args.profile else None)
    fresh(config.out, state)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    free = torch.cuda.mem_get_info()[0]
    profiling = profiled_steps(5, 5) if args.profile else contextlib.nullcontext()
    with profiling:
        manifest = train(config).manifest
    seconds = manifest.train_wall_s
    tokens_per_s = manifest.tokens_trained / seconds
    gpus = state.num_processes
    return {
        "method": spec,
        "gpus": gpus,
        "distributed": config.distributed if gpus > 1 else "-",
        "chosen": manifest.method,
        "batch": config.batch_size,
        "packing": manifest.packing,
        "checkpointing": manifest.gradient_checkpointing,
        "kernels": "liger" if manifest.kernels else "-",
        "attention": manifest.attention,
        "adapters": "bf16" if manifest.adapter_dtype == "bfloat16" else "fp32",
        "lora": f"r{config.lora.r} dropout {config.lora.dropout}",
        "epoch_s": round(seconds, 1),
        "steps": manifest.steps,
        "tokens": manifest.tokens_trained,
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(tokens_per_s * 4 * params / (peak * 1e12 * gpus), 4),
        "peak_gib": round(manifest.peak_memory_bytes / 2**30, 1),  # the largest GPU's
        "reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 1),  # the main GPU's
        "free_gib_before": round(free / 2**30, 1),
        "wall_s": manifest.wall_s,
        "loss_start": manifest.loss_start,
        "loss_end": manifest.loss_end,
        "method_reason": manifest.method_reason,
        "checkpointing_reason": manifest.gradient_checkpointing_reason,
        "attention_reason": manifest.attention_reason,
        "kernels_reason": manifest.kernels_reason,
        "adapter_dtype_reason": manifest.adapter_dtype_reason,
    }


def warm_up(spec: str, args: argparse.Namespace, data: Path, state: Any) -> None:
    """A few steps of `spec` so Triton compiles Liger's kernels before anything is timed."""
    from triplesmith.training.sft import train

    config = train_config(spec, args, data, 5)
    config = config.model_copy(update={"out": args.work / "warm-up"})
    fresh(config.out, state)
    started = time.perf_counter()
    train(config)
    if state.is_main_process:
        print(f"warm-up ({spec}, 5 steps): {time.perf_counter() - started:.0f} s", flush=True)


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'method':<18}{'gpus':>4} {'chosen':<7}{'batch':>6} {'pack':<5}{'ckpt':<5}{'kernels':<8}"
        f"{'attention':<19}{'adapters':<9}{'epoch s':>8}{'tokens/s':>10}{'MFU':>7}"
        f"{'peak GiB':>9}"
    )
    print(header)
    for row in rows:
        if "error" in row:
            print(f"{row['method']:<18}FAILED: {row['error']}")
            continue
        print(
            f"{row['method']:<18}{row['gpus']:>4} {row['chosen']:<7}{row['batch']:>6} "
            f"{str(row['packing'])[0]:<5}"
            f"{str(row['checkpointing'])[0]:<5}{row['kernels']:<8}{row['attention']:<19}"
            f"{row['adapters']:<9}{row['epoch_s']:>8.1f}{row['tokens_per_s']:>10,}"
            f"{row['mfu']:>7.1%}{row['peak_gib']:>9.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="auto,lora,qlora,auto-plain")
    parser.add_argument("--examples", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/llama7b-random"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-train-gpu"))
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="Skip the 5-step warm-up run."
    )
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument(
        "--profile", action="store_true", help="Run 12 steps and profile steps 7-11 instead."
    )
    parser.add_argument("--json", type=Path, default=None, help="Write the rows here as well.")
    parser.add_argument(
        "--num-processes",
        type=int,
        default=1,
        help="Train in N processes, one a GPU, through accelerate's launcher (DDP by default).",
    )
    parser.add_argument(
        "--fsdp", action="store_true", help="With --num-processes: shard the base (FSDP)."
    )
    args = parser.parse_args()
    specs = args.methods.split(",")
    for spec in specs:
        parse_method(spec, args.batch_size)  # exits on a bad spec before the slow setup

    import torch

    if not torch.cuda.is_available():
        sys.exit(
            "bench_train_gpu.py needs a CUDA GPU (a 7B-shaped model is trained); none is visible "
            "here. Run it on a GPU machine."
        )
    if args.num_processes > 1 and "LOCAL_RANK" not in os.environ:
        # This script again, once per GPU, as `triplesmith train --num-processes N` does it.
        from triplesmith.cli.train import launch

        sys.exit(launch(args.num_processes, [str(Path(__file__).resolve()), *sys.argv[1:]]))
    import peft
    import transformers
    import trl
    from accelerate import PartialState

    from triplesmith.data.jsonl import write_jsonl
    from triplesmith.models import resolve
    from triplesmith.training.base_model import check_causal_lm
    from triplesmith.training.config import shape_of

    state = PartialState()  # one process alone, or this GPU's under the launcher
    main = state.is_main_process
    device = torch.cuda.get_device_name()
    peak = peak_tflops(device, args.peak_tflops)
    data = args.work / "synthetic.jsonl"
    if main:
        print(
            f"device: {state.num_processes} x {device}; torch {torch.__version__}, "
            f"transformers {transformers.__version__}, trl {trl.__version__}, "
            f"peft {peft.__version__}; bf16 peak {peak:.0f} TFLOP/s, "
            f"8192^3 matmul here {matmul_tflops():.0f} TFLOP/s",
            flush=True,
        )
        examples = synthesize(args.examples)
        write_jsonl(data, examples)
        build_base(args.model_dir, examples)
    state.wait_for_everyone()
    params = shape_of(check_causal_lm(resolve(str(args.model_dir)))).params
    if main:
        print(f"{args.examples} examples, {params / 1e9:.2f} B parameters", flush=True)
    if args.warmup and not args.profile:
        warm_up(specs[0], args, data, state)

    rows: list[dict] = []
    for spec in specs:
        started = time.perf_counter()
        try:
            row = run_method(spec, args, data, params, peak, state)
        except Exception as exc:  # one method failing (e.g. out of memory) must not stop the rest
            traceback.print_exc()
            row = {"method": spec, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        row["device"] = device
        rows.append(row)
        if main:
            print(
                json.dumps(row), f"({time.perf_counter() - started:.0f} s with loading)", flush=True
            )
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2))
    if not main:
        return
    print(
        f"\n{state.num_processes} x {device}, {args.examples} examples, one epoch, "
        f"4N = {4 * params / 1e9:.1f} GFLOP/token"
    )
    print_table(rows)
    print(
        "reference (plain transformers + peft on the H100): "
        + "; ".join(f"{label} {seconds} s" for label, seconds in REFERENCE_SECONDS.items())
    )


if __name__ == "__main__":
    main()
