"""Local engines side by side on the same CaRB test prompts, greedy, the same token cap.

Usage: python benchmarks/bench_engines.py [--carb-dir ../shared/datasets/carb] [--n 8]
       [--max-new-tokens 96] [--prompts zero-shot,few-shot[,fine-tuned]] [--adapter DIR]
       [--engines generate,hf,hf-free,hf-dynamic,onnx,onnx-free] [--profile] [--json OUT.json]
       [--repeat N]

Each engine runs in a process of its own (so peak RSS is that engine's alone):
- `generate`: plain transformers `model.generate`, one left-padded batch (the baseline);
- `hf`: triplesmith's transformers engine as chains use it (triple-list grammar, loop rules);
- `hf-free`: the same engine unconstrained (no grammar, no loop rules): the raw model;
- `hf-dynamic`: `hf` with transformers' dynamic KV cache (`hf` has a static one on a GPU, a
  preallocated one on a CPU: chains/engines/kv_cache.py);
- `hf-nocudnn`: `hf` with attention kept off cuDNN's kernel on the GPU (torch picks it on Hopper);
- `hf-nocompact` / `hf-compact`: `hf` with each chunk run as one `generate` call (finished rows
  stay in it) / with finished rows leaving the batch (the default on a CPU, off on a GPU);
- `hf-noshare` / `hf-share`: `hf` with every prompt run whole / with the prompts' shared beginning
  run once at one row (the default on a CPU, off on a GPU);
- `hf-nograph`: `hf` with every decode step run as it is, not replayed from a CUDA graph (the
  graph is the default on a GPU; chains/engines/cuda_graph.py);
- `hf-bf16` / `hf-fp32`: `hf` with `TRIPLESMITH_CPU_PRECISION=bf16` / `fp32` (a CPU's linear
  layers in bf16 or fp32; `hf` is `auto`: bf16 on a CPU with bf16 instructions,
  chains/engines/cpu_precision.py);
- `hf-noguess`: `hf` decoding one token a row per model call instead of checking tokens guessed
  from the prompt several at a time (the CPU's default: chains/engines/speculative.py);
- `onnx`: the onnxruntime-genai engine (chains/engines/onnx.py, fp32) as chains use it
  (triple-list grammar through its llguidance, one prompt per generator; no loop rules);
- `onnx-free`: the same engine unconstrained (right-padded batches): the raw model;
and, for each, the first sentence alone (warm: after a warm-up on the last sentence, so that an
engine keeping a prompt's shared beginning cannot reuse the very same prompt), then all N
sentences as one batch (the first
batch of the process: no warm-up at that width). Agreement is the share of sentences whose
parsed triples equal the `generate` baseline's. `fine-tuned` prompts are the zero-shot prompt on
the base plus `--adapter`. `--profile` then runs `hf` once more over the first prompt kind with
each logits processor timed (the GPU synchronised around each) and prints where a decode step's
time goes.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENGINES = (
    "generate",
    "hf",
    "hf-free",
    "hf-dynamic",
    "hf-nocudnn",
    "hf-nocompact",
    "hf-compact",
    "hf-noshare",
    "hf-share",
    "hf-nograph",
    "hf-bf16",
    "hf-fp32",
    "hf-noguess",
    "onnx",
    "onnx-free",
)


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def prompts_for(kind: str, sentences: list[str]) -> list[list[dict[str, str]]]:
    from triplesmith.chains.prompt import build_messages
    from triplesmith.chains.shots import ShotSelector
    from triplesmith.data.registry import load_dataset

    if kind == "few-shot":
        selector = ShotSelector(load_dataset("sample", split="train"), 3, seed=0)
        return [build_messages(s, selector.for_sentence(s)) for s in sentences]
    return [build_messages(s, []) for s in sentences]


def run_generate(model_name: str, adapter: str | None, prompts: list, cap: int) -> dict[str, Any]:
    """Plain `model.generate`: one left-padded batch, greedy, `cap` new tokens at most."""
    import torch

    from triplesmith.models import load

    model, tokenizer = load(model_name)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]

    def generate(batch: list[str]) -> tuple[list[str], int]:
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=cap, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        new = out[:, enc["input_ids"].shape[1] :]
        answers = tokenizer.batch_decode(new, skip_special_tokens=True)
        tokens = int((new != tokenizer.pad_token_id).sum())
        return answers, tokens

    generate(texts[-1:])  # warm-up, on another sentence than the timed one
    started = time.perf_counter()
    generate(texts[:1])
    one = time.perf_counter() - started
    started = time.perf_counter()
    answers, tokens = generate(texts)
    return {
        "one_s": one,
        "batch_s": time.perf_counter() - started,
        "tokens": tokens,
        "answers": answers,
    }


def run_engine(
    model_name: str, adapter: str | None, prompts: list, cap: int, variant: str
) -> dict[str, Any]:
    """A triplesmith engine (transformers for `hf*`, onnxruntime-genai for `onnx*`), as a chain
    calls it."""
    from triplesmith.chains.engines import GenerationOptions, HFEngine

    if variant.startswith("onnx"):
        from triplesmith.chains.engines.onnx import OnnxEngine

        engine = OnnxEngine(model_name, adapter=adapter)  # exported before the timings
    else:
        if variant in ("hf-bf16", "hf-fp32"):
            # this worker process only
            os.environ["TRIPLESMITH_CPU_PRECISION"] = variant.removeprefix("hf-")
        engine = HFEngine(model_name, adapter=adapter)
    if variant == "hf-dynamic":
        engine.gpu_cache = engine.cpu_cache = "dynamic"
    if variant == "hf-nocudnn":
        engine.cudnn_attention = False
    if variant == "hf-nocompact":
        engine.compact = False
    if variant == "hf-compact":
        engine.compact = True
    if variant == "hf-noshare":
        engine.share_prefix = False
    if variant == "hf-share":
        engine.share_prefix = True
    if variant == "hf-nograph":
        engine.cuda_graphs = False
    if variant == "hf-noguess":
        engine.speculative = False
    free = variant.endswith("-free")
    options = GenerationOptions(
        max_new_tokens=cap,
        constrained=not free,
        stop_repeats=not free,
        close_loops=not free,
        batch_size=len(prompts),
    )
    sizes = [20] * len(prompts)
    # Warm-up (and the grammar's compile), on another sentence than the timed one.
    engine.generate(prompts[-1:], sizes[-1:], options)
    started = time.perf_counter()
    engine.generate(prompts[:1], sizes[:1], options)
    one = time.perf_counter() - started
    started = time.perf_counter()
    results = engine.generate(prompts, sizes, options)
    batch = time.perf_counter() - started
    answers = [r.text if not isinstance(r, Exception) else "" for r in results]
    finish = [r.finish_reason if not isinstance(r, Exception) else "error" for r in results]
    tokens = sum(r.tokens_out for r in results if not isinstance(r, Exception))
    graphs = [(g.replays, g.failed) for g in getattr(engine, "graphs", [])]
    if graphs:
        print(
            f"{variant}: decode graphs of the batch (replays, failure): {graphs}", file=sys.stderr
        )
    return {
        "graphs": graphs,
        "one_s": one,
        "batch_s": batch,
        "tokens": tokens,
        "answers": answers,
        "finish": finish,
    }


def run_profile(model_name: str, adapter: str | None, prompts: list, cap: int) -> dict[str, Any]:
    """`hf` as chains use it over all prompts, with each logits processor timed (the GPU
    synchronised around each): where the time of a decode step goes. On a GPU, also the top
    operators of a short run by GPU time (torch.profiler)."""
    import torch

    from triplesmith.chains.engines import GenerationOptions, HFEngine

    cuda = torch.cuda.is_available()
    spent: dict[str, float] = {}
    marks: dict[str, Any] = {"steps": 0, "first": None, "last": None, "between": 0.0}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class Timed:
        def __init__(self, inner: Any, first: bool, last: bool) -> None:
            self.inner, self.first, self.last = inner, first, last
            self.name = type(inner).__name__

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            sync()
            now = time.perf_counter()
            if self.first:
                marks["steps"] += 1
                if marks["last"] is None:
                    marks["first"] = now  # tokenising and the prompts' forward pass end here
                else:
                    marks["between"] += now - marks["last"]  # the model's step and `generate`
            out = self.inner(input_ids, scores)
            sync()
            spent[self.name] = spent.get(self.name, 0.0) + time.perf_counter() - now
            if self.last:
                marks["last"] = time.perf_counter()
            return out

    class Profiled(HFEngine):
        def _processors(self, *args: Any) -> Any:
            processors, guard, chosen = super()._processors(*args)
            n = len(processors)
            timed = [Timed(x, i == 0, i == n - 1) for i, x in enumerate(processors)]
            return timed, guard, chosen

    engine = Profiled(model_name, adapter=adapter)
    options = GenerationOptions(max_new_tokens=cap, batch_size=len(prompts))
    sizes = [20] * len(prompts)
    engine.generate(prompts[:1], sizes[:1], options)  # warm-up
    spent.clear()
    marks.update(steps=0, first=None, last=None, between=0.0)
    started = time.perf_counter()
    results = engine.generate(prompts, sizes, options)
    total = time.perf_counter() - started
    steps = marks["steps"]
    breakdown = {
        "total_s": total,
        "steps": steps,
        "prefill_s": marks["first"] - started,
        "between_steps_s": marks["between"],
        "processors_s": spent,
        "after_s": started + total - marks["last"],
        "tokens": sum(r.tokens_out for r in results if not isinstance(r, Exception)),
    }
    if cuda:
        from torch.profiler import ProfilerActivity, profile

        short = GenerationOptions(max_new_tokens=8, batch_size=len(prompts))
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            engine.generate(prompts, sizes, short)
        averages = prof.key_averages()
        breakdown["top_ops"] = "\n".join(
            averages.table(sort_by=key, row_limit=10, max_name_column_width=50)
            for key in ("self_cpu_time_total", "self_cuda_time_total")
        )
    return breakdown


def print_profile(profile: dict[str, Any]) -> None:
    steps = max(profile["steps"], 1)
    print(
        f"\nprofile of hf: {profile['total_s']:.2f} s for {profile['tokens']} tokens, "
        f"{profile['steps']} decode steps"
    )
    print("| part | seconds | ms per step |")
    print("| --- | ---: | ---: |")
    rows = [
        ("tokenising + prompts' forward pass", profile["prefill_s"]),
        ("model step + generate's own work", profile["between_steps_s"]),
        *((f"processor {k}", v) for k, v in profile["processors_s"].items()),
        ("after generate (token texts, results)", profile["after_s"]),
    ]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / steps:.1f} |")
    if profile.get("top_ops"):
        print("\ntop operators by CPU, then GPU time, 8 new tokens for every prompt:")
        print(profile["top_ops"])


def worker(args: argparse.Namespace) -> None:
    from triplesmith.data.carb import read_carb_gold

    examples = read_carb_gold(args.carb_dir / "gold" / "test.tsv", "test")[: args.n]
    sentences = [e.sentence for e in examples]
    adapter = args.adapter if args.prompt_kind == "fine-tuned" else None
    prompts = prompts_for(args.prompt_kind, sentences)
    if args.worker == "generate":
        result = run_generate(args.model, adapter, prompts, args.max_new_tokens)
    elif args.worker == "profile":
        result = run_profile(args.model, adapter, prompts, args.max_new_tokens)
    else:
        result = run_engine(args.model, adapter, prompts, args.max_new_tokens, args.worker)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["machine"] = machine()
    print(json.dumps(result))


def triples_of(answer: str) -> list[tuple[str, str, str]]:
    from triplesmith.chains.parser import parse_triples

    return [t.as_tuple() for t in parse_triples(answer).triples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carb-dir", type=Path, default=Path("../shared/datasets/carb"))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--prompts", default="zero-shot,few-shot")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--engines", default="generate,hf,hf-free")
    parser.add_argument("--profile", action="store_true", help="then profile hf (see above)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every engine's worker this many times, in turns (generate, hf, generate, hf"
        "...), and report the medians: a shared machine's speed drifts between runs",
    )
    parser.add_argument("--worker", choices=(*ENGINES, "profile"), help=argparse.SUPPRESS)
    parser.add_argument("--prompt-kind", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    kinds = [k for k in args.prompts.split(",") if k]
    if "fine-tuned" in kinds and not args.adapter:
        parser.error("the fine-tuned prompts need --adapter DIR")
    engines = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engines {unknown}; use {', '.join(ENGINES)}")

    def run_worker(worker: str, kind: str) -> dict[str, Any] | None:
        command = [sys.executable, __file__, "--worker", worker, "--prompt-kind", kind]
        command += ["--carb-dir", str(args.carb_dir), "--model", args.model]
        command += ["--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens)]
        if args.adapter:
            command += ["--adapter", args.adapter]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{worker} / {kind} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
        return json.loads(done.stdout.strip().splitlines()[-1])

    print(f"{args.n} CaRB test sentences, greedy, at most {args.max_new_tokens} new tokens", end="")
    print(f"; medians of {args.repeat} runs in turns" if args.repeat > 1 else "")
    print(
        "| prompts | engine | one sentence | batch | sent/s | out tok/s | peak RSS | "
        "same triples as generate | ended by itself |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        baseline: list[str] | None = None
        runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
        for _ in range(max(1, args.repeat)):
            for engine in engines:
                done = run_worker(engine, kind)
                if done is not None:
                    runs[engine].append(done)
        for engine in engines:
            if not runs[engine]:
                continue
            result = dict(runs[engine][0])  # the first run's answers, the runs' medians
            result["one_s"] = statistics.median(run["one_s"] for run in runs[engine])
            result["batch_s"] = statistics.median(run["batch_s"] for run in runs[engine])
            result["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs[engine])
            if engine == "generate":
                baseline = result["answers"]
            same = None
            if baseline is not None:
                pairs = zip(result["answers"], baseline, strict=True)
                same = sum(triples_of(a) == triples_of(b) for a, b in pairs) / len(baseline)
            finish = result.get("finish") or []
            r = {
                "prompts": kind,
                "engine": engine,
                "one_s": result["one_s"],
                "batch_s": result["batch_s"],
                "batch_runs_s": [run["batch_s"] for run in runs[engine]],
                "one_runs_s": [run["one_s"] for run in runs[engine]],
                "sent_per_s": args.n / result["batch_s"],
                "tok_per_s": result["tokens"] / result["batch_s"],
                "peak_rss_mb": result["peak_rss_mb"],
                "agreement": same,
                "ended_by_itself": finish.count("stop") / len(finish) if finish else None,
                "machine": result["machine"],
                "answers": result["answers"],  # for comparing engines' answers afterwards
            }
            rows.append(r)
            agree = "–" if r["agreement"] is None else f"{r['agreement']:.0%}"
            ended = "–" if r["ended_by_itself"] is None else f"{r['ended_by_itself']:.0%}"
            print(
                f"| {r['prompts']} | {r['engine']} | {r['one_s']:.2f} s | {r['batch_s']:.2f} s | "
                f"{r['sent_per_s']:.2f} | {r['tok_per_s']:.0f} | "
                f"{r['peak_rss_mb'] / 1024:.2f} GB | {agree} | {ended} |",
                flush=True,
            )
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2))
    print(f"machine: {rows[0]['machine'] if rows else '?'}")
    by_kind: dict[str, dict[str, float]] = {}
    for r in rows:
        by_kind.setdefault(r["prompts"], {})[r["engine"]] = r["sent_per_s"]
    for kind, speeds in by_kind.items():
        if "generate" in speeds and "hf" in speeds:
            print(f"{kind}: hf / generate sentences/s = {speeds['hf'] / speeds['generate']:.2f}x")
    if args.profile:
        profile = run_worker("profile", kinds[0])
        if profile is not None:
            print_profile(profile)


if __name__ == "__main__":
    main()
