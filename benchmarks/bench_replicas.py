"""Data-parallel generation on several GPUs (chains/engines/replicas.py): one engine against one
replica per GPU (a worker process each), on the same prompts (issue 21).

Usage: python benchmarks/bench_replicas.py [--n 634] [--max-new-tokens 64] [--json FILE]

Needs two GPUs or more. The model is SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads, 3
key-value heads) with random weights, saved in bf16 with a BPE tokenizer trained on the
synthetic sentences of bench_train_gpu.py and a plain chat template, so no Hub access and no
embedded GGUF is needed; the prompts are the chains' zero-shot prompt over N synthetic
sentences (N = 634, CaRB's test split, by default). Each engine generates them as one batch,
once unconstrained (random weights rarely stop early, so every answer runs to
--max-new-tokens: the same work for both) and once with the chains' defaults (triple-list
grammar and loop rules; random weights mostly close the list at once, so this row times
little more than the overheads). Each timing follows a warm-up batch of the same prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `python -P` leaves this folder out
from bench_train_gpu import build_tokenizer, synthesize  # noqa: E402

SMOLLM2_135M = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def build_small(model_dir: Path, sentences: list[str]) -> None:
    """A random-weight SmolLM2-135M shape in bf16 with a tokenizer and a chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (model_dir / "config.json").is_file():
        return
    tokenizer = build_tokenizer(sentences, vocab_size=4000)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(model_dir)
    config = LlamaConfig(
        **SMOLLM2_135M,
        vocab_size=len(tokenizer),
        bos_token_id=1,
        eos_token_id=2,
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(model_dir)


def timed(engine: Any, prompts: list, lengths: list[int], options: Any) -> dict[str, Any]:
    """Seconds for the whole batch (after a warm-up batch), and the tokens generated."""
    import torch

    engine.generate(prompts, lengths, options)  # warm-up: kernels, grammar, caches
    torch.cuda.synchronize()
    started = time.perf_counter()
    results = engine.generate(prompts, lengths, options)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    failed = [r for r in results if isinstance(r, Exception)]
    tokens = sum(r.tokens_out for r in results if not isinstance(r, Exception))
    return {
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(prompts) / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        "failed": len(failed),
        "first_error": str(failed[0])[:200] if failed else None,
        "texts": [None if isinstance(r, Exception) else r.text for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=634)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/smollm2-shape-random"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    if torch.cuda.device_count() < 2:
        sys.exit("bench_replicas.py needs two GPUs or more; run it on a multi-GPU machine")
    from triplesmith.chains.engines import GenerationOptions, HFEngine, ReplicaEngine
    from triplesmith.chains.engines.replicas import visible_gpus
    from triplesmith.chains.prompt import build_messages

    sentences = [example.sentence for example in synthesize(args.n, seed=1)]
    build_small(args.model_dir, sentences)
    devices = visible_gpus()
    print(f"{len(devices)} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    started = time.perf_counter()
    alone = HFEngine(str(args.model_dir))  # in this process, on cuda:0
    print(f"one engine loaded in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    replicas = ReplicaEngine(str(args.model_dir), None, devices)  # a worker process per GPU
    print(f"{len(devices)} replicas started in {time.perf_counter() - started:.1f} s", flush=True)
    prompts = [build_messages(sentence) for sentence in sentences]
    lengths = [alone.count_tokens(sentence) for sentence in sentences]
    rows = []
    for label, options in (
        (
            "unconstrained",
            GenerationOptions(
                args.max_new_tokens, stop_repeats=False, close_loops=False, constrained=False
            ),
        ),
        ("chains' defaults (grammar, loop rules)", GenerationOptions(args.max_new_tokens)),
    ):
        one = timed(alone, prompts, lengths, options)
        many = timed(replicas, prompts, lengths, options)
        same = sum(a == b for a, b in zip(one.pop("texts"), many.pop("texts"), strict=True))
        row = {
            "decoding": label,
            "prompts": len(prompts),
            "one_gpu": one,
            f"{len(devices)}_gpus": many,
            "speedup": round(one["seconds"] / many["seconds"], 2),
            "same_answers": f"{same}/{len(prompts)}",
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    replicas.close()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
