"""SFT throughput of `triplesmith train` on a Llama-2-7B-shaped model with random weights (issue 6).

Usage: python benchmarks/bench_train_gpu.py [--methods lora,qlora,auto] [--examples 1500]
           [--batch-size 12] [--max-seq-len 512] [--json results.json]

Builds the model from a `LlamaConfig` (saved in bf16 with a locally trained BPE tokenizer, so
no Hub access is needed), writes ~200-token examples in the shared JSONL format, and trains each
method for one epoch through `triplesmith.training.sft.train` (the code path of
`triplesmith train`). A method is `NAME[+d0][@BATCH]`; NAME is `lora`, `qlora` or `auto` with
the speed levers below, `auto-plain` (exactly `triplesmith train --method auto`, no levers) or
`reference` (the reference workflow's QLoRA recipe, `--preset reference`); `+d0` sets the LoRA
dropout to 0 (default 0.05), `@BATCH` overrides --batch-size. The first run in a process pays
Triton's kernel compilation (cached on disk for later processes): put a warm-up run first.

Levers the benchmark adds around `train()` (the CLI does not apply them): Liger's RMSNorm,
SwiGLU and RoPE kernels (its fused cross-entropy is left out: TRL already fuses the LM head),
and variable-length FlashAttention from PyTorch (`torch.nn.attention.varlen`) for the
padding-free packed batches, which transformers' `sdpa` otherwise runs as one long sequence
under a block-diagonal mask. MFU counts 4N FLOP per trained token (forward 2N, input gradients
2N; LoRA's own weight gradients are negligible), N = all parameters, whatever recomputation
gradient checkpointing adds, against the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import random
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
VARLEN = "triplesmith_varlen"

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


def varlen_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kw):
    """FlashAttention over the packed sequences of a padding-free batch (`cu_seq_lens_*` from TRL)."""
    import torch
    from torch.nn.attention.varlen import varlen_attn

    cu_q, cu_k = kw.get("cu_seq_lens_q"), kw.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None or query.shape[0] != 1 or not query.is_cuda:
        raise RuntimeError(
            f"{VARLEN} attention needs padding-free CUDA batches (packing=True); "
            "use attn_implementation='sdpa' for padded batches"
        )
    dtype = query.dtype if query.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    q, k, v = (t[0].transpose(0, 1).to(dtype).contiguous() for t in (query, key, value))
    out = varlen_attn(
        q,
        k,
        v,
        cu_q.to(torch.int32),
        cu_k.to(torch.int32),
        int(kw["max_length_q"]),
        int(kw["max_length_k"]),
        scale=scaling,
        **VARLEN_CAUSAL,
    )
    return out.unsqueeze(0).to(query.dtype), None  # (1, T, H, D), as transformers expects


def register_varlen() -> bool:
    """Register `varlen_attention` with transformers; False where this torch lacks varlen_attn."""
    global VARLEN_CAUSAL
    import inspect

    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    params = inspect.signature(varlen_attn).parameters
    VARLEN_CAUSAL = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    AttentionInterface.register(VARLEN, varlen_attention)
    AttentionMaskInterface.register(VARLEN, flash_attention_mask)
    return True


VARLEN_CAUSAL: dict[str, Any] = {}


@contextmanager
def liger_kernels(enabled: bool) -> Iterator[bool]:
    """Liger's Llama RMSNorm/SwiGLU/RoPE kernels for models built inside the block, then undone."""
    if not enabled:
        yield False
        return
    from transformers.models.llama import modeling_llama

    saved = {
        name: getattr(modeling_llama, name)
        for name in ("apply_rotary_pos_emb", "LlamaRMSNorm", "LlamaMLP")
    }
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
    except ImportError:
        print("liger-kernel is not installed: running without it", flush=True)
        yield False
        return
    apply_liger_kernel_to_llama(
        rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )
    try:
        yield True
    finally:
        for name, value in saved.items():
            setattr(modeling_llama, name, value)


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


def run_method(spec: str, args: argparse.Namespace, data: Path, params: int, peak: float) -> dict:
    import torch

    from triplesmith.training.config import TrainConfig
    from triplesmith.training.sft import train

    name, _, batch = spec.partition("@")
    name, no_dropout = name.removesuffix("+d0"), name.endswith("+d0")
    batch_size = int(batch) if batch else args.batch_size
    levers = name in ("lora", "qlora", "auto")
    preset = "reference" if name == "reference" else "default"
    method = {"reference": None, "auto-plain": "auto"}.get(name, name)
    model_kwargs: dict[str, Any] = {"device_map": {"": 0}}
    if levers and args.varlen:
        model_kwargs["attn_implementation"] = VARLEN
    config = TrainConfig.from_preset(
        preset,
        base=str(args.model_dir),
        dataset=str(data),
        out=args.work / spec.replace("@", "-b"),
        method=method,
        format="llama2",
        epochs=1.0,
        batch_size=None if name == "reference" else batch_size,
        max_seq_len=args.max_seq_len,
        save_steps=10**6,
        logging_steps=10,
        model_kwargs=model_kwargs,
        max_steps=12 if args.profile else None,
    )
    if no_dropout:
        config.lora.dropout = 0.0
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    free = torch.cuda.mem_get_info()[0]
    profiling = profiled_steps(5, 5) if args.profile else contextlib.nullcontext()
    with liger_kernels(levers and args.liger) as liger, profiling:
        manifest = train(config).manifest
    seconds = manifest.train_wall_s
    tokens_per_s = manifest.tokens_trained / seconds
    return {
        "method": spec,
        "chosen": manifest.method,
        "batch": config.batch_size,
        "packing": manifest.packing,
        "checkpointing": manifest.gradient_checkpointing,
        "kernels": "liger" if liger else "-",
        "attention": model_kwargs.get("attn_implementation", "sdpa"),
        "lora": f"r{config.lora.r} dropout {config.lora.dropout}",
        "epoch_s": round(seconds, 1),
        "steps": manifest.steps,
        "tokens": manifest.tokens_trained,
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(tokens_per_s * 4 * params / (peak * 1e12), 4),
        "peak_gib": round(manifest.peak_memory_bytes / 2**30, 1),
        "reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 1),
        "free_gib_before": round(free / 2**30, 1),
        "wall_s": manifest.wall_s,
        "loss_start": manifest.loss_start,
        "loss_end": manifest.loss_end,
        "method_reason": manifest.method_reason,
        "checkpointing_reason": manifest.gradient_checkpointing_reason,
    }


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'method':<12}{'chosen':<7}{'batch':>6} {'pack':<5}{'ckpt':<5}{'kernels':<8}"
        f"{'attention':<19}{'epoch s':>8}{'tokens/s':>10}{'MFU':>7}{'peak GiB':>9}"
    )
    print(header)
    for row in rows:
        if "error" in row:
            print(f"{row['method']:<12}FAILED: {row['error']}")
            continue
        print(
            f"{row['method']:<12}{row['chosen']:<7}{row['batch']:>6} {str(row['packing'])[0]:<5}"
            f"{str(row['checkpointing'])[0]:<5}{row['kernels']:<8}{row['attention']:<19}"
            f"{row['epoch_s']:>8.1f}{row['tokens_per_s']:>10,}{row['mfu']:>7.1%}"
            f"{row['peak_gib']:>9.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="lora,qlora,auto")
    parser.add_argument("--examples", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/llama7b-random"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-train-gpu"))
    parser.add_argument("--no-liger", dest="liger", action="store_false")
    parser.add_argument("--no-varlen", dest="varlen", action="store_false")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument(
        "--profile", action="store_true", help="Run 12 steps and profile steps 7-11 instead."
    )
    parser.add_argument("--json", type=Path, default=None, help="Write the rows here as well.")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit(
            "bench_train_gpu.py needs a CUDA GPU (a 7B-shaped model is trained); none is visible "
            "here. Run it on a GPU machine."
        )
    import peft
    import transformers
    import trl

    from triplesmith.data.jsonl import write_jsonl
    from triplesmith.models import resolve
    from triplesmith.training import sft
    from triplesmith.training.config import shape_of
    from triplesmith.training.sft import check_causal_lm

    # The manifest hashes the base's 13.5 GB of weights on every run; once is enough here.
    sft.model_hash = functools.cache(sft.model_hash)
    device = torch.cuda.get_device_name()
    peak = peak_tflops(device, args.peak_tflops)
    print(
        f"device: {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"trl {trl.__version__}, peft {peft.__version__}; bf16 peak {peak:.0f} TFLOP/s, "
        f"8192^3 matmul here {matmul_tflops():.0f} TFLOP/s",
        flush=True,
    )
    if args.varlen and not register_varlen():
        print("torch.nn.attention.varlen is missing: packed batches use sdpa", flush=True)
        args.varlen = False

    examples = synthesize(args.examples)
    data = args.work / "synthetic.jsonl"
    write_jsonl(data, examples)
    build_base(args.model_dir, examples)
    params = shape_of(check_causal_lm(resolve(str(args.model_dir)))).params
    print(f"{len(examples)} examples, {params / 1e9:.2f} B parameters", flush=True)

    rows: list[dict] = []
    for spec in args.methods.split(","):
        started = time.perf_counter()
        try:
            row = run_method(spec, args, data, params, peak)
        except Exception as exc:  # one method failing (e.g. out of memory) must not stop the rest
            traceback.print_exc()
            row = {"method": spec, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        row["device"] = device
        rows.append(row)
        print(json.dumps(row), f"({time.perf_counter() - started:.0f} s with loading)", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))

    print(
        f"\n{device}, {len(examples)} examples, one epoch, 4N = {4 * params / 1e9:.1f} GFLOP/token"
    )
    print_table(rows)
    print(
        "reference (plain transformers + peft on the H100): "
        + "; ".join(f"{label} {seconds} s" for label, seconds in REFERENCE_SECONDS.items())
    )


if __name__ == "__main__":
    main()
