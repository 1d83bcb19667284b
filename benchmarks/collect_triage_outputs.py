"""Collect real raw outputs of the embedded SmolLM2 for the triage fixtures (labelled by hand later).

Usage: python benchmarks/collect_triage_outputs.py OUT.jsonl [--dataset sample:test | --carb DIR]
       [--limit N] [--offset N] [--shots 0,3]
Writes one unlabelled row per (sentence, prompt): `expected_tags` is left empty on purpose, so the
labels come from reading each output, never from running the triage rules. Few-shot rows carry the
examples that were actually in the prompt (drawn from `sample:train`).
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from triplesmith.chains.prompt import build_messages, select_shots
from triplesmith.data.carb import read_carb_gold
from triplesmith.data.registry import load_dataset
from triplesmith.models import load


def generate(model, tokenizer, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    """Greedy continuation of the chat-templated messages, special tokens stripped."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dataset", default="sample:test", help="load_dataset name or path")
    parser.add_argument("--carb", type=Path, help="a CaRB checkout: use its gold/test.tsv instead")
    parser.add_argument("--limit", type=int, default=10, help="sentences to use")
    parser.add_argument("--offset", type=int, default=0, help="sentences to skip first")
    parser.add_argument("--shots", default="0,3", help="comma-separated shot counts")
    parser.add_argument("--max-new-tokens", type=int, default=150)
    args = parser.parse_args()

    model, tokenizer = load("smollm2")
    pool = load_dataset("sample:train")
    if args.carb:
        examples = read_carb_gold(args.carb / "gold" / "test.tsv", "test")
    else:
        examples = load_dataset(args.dataset)
    tests = examples[args.offset : args.offset + args.limit]
    rows, started = [], time.perf_counter()
    for n, example in enumerate(tests, start=args.offset):
        for k in (int(k) for k in args.shots.split(",")):
            shots = select_shots(pool, k, seed=n)
            messages = build_messages(example.sentence, shots=shots)
            raw = generate(model, tokenizer, messages, args.max_new_tokens)
            rows.append(
                {
                    "id": f"smollm2-{example.id}-{k}shot",
                    "sentence": example.sentence,
                    "raw_output": raw,
                    "gold": [t.model_dump() for t in example.triples],
                    "prompt_examples": [
                        {"sentence": s.sentence, "triples": [t.model_dump() for t in s.triples]}
                        for s in shots
                    ]
                    or None,
                    "expected_tags": [],
                    "provenance": "smollm2-real",
                }
            )
            print(f"--- {rows[-1]['id']}\n{raw}\n", flush=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    elapsed = time.perf_counter() - started
    print(f"{len(rows)} outputs in {elapsed:.1f}s on {platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main()
