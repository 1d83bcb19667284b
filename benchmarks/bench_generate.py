"""Decode-step time of the embedded model against batch width: how wide should a batch be?

Usage: python benchmarks/bench_generate.py [--widths 1,64,256] [--steps 128] [--model smollm2]

Loads the model the way the `hf` chain does (`triplesmith.models.load`: bf16 on a GPU, fp32 on a
CPU), left-pads copies of one real CaRB-style prompt to each width and times a greedy `generate`
forced to exactly `--steps` new tokens (min = max), after one warm-up. Prints, per width, the
seconds per decode step and the generated tokens per second. If a step costs about the same at
every width, the step is launch-bound and the engine's batch should be as wide as the work in
flight (chains/engines/hf.py, GPU_BATCH).
"""

from __future__ import annotations

import argparse
import time

SENTENCE = (
    "The Nobel Prize in Physics 1921 was awarded to Albert Einstein for his services to "
    "theoretical physics, and especially for his discovery of the law of the photoelectric effect."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="1,64,256")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()

    import torch
    from transformers import GenerationConfig

    from triplesmith.chains.prompt import build_messages
    from triplesmith.models import load

    model, tokenizer = load(args.model)
    tokenizer.padding_side = "left"
    text = tokenizer.apply_chat_template(
        build_messages(SENTENCE), tokenize=False, add_generation_prompt=True
    )
    config = GenerationConfig(
        max_new_tokens=args.steps,
        min_new_tokens=args.steps,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    device = model.device
    print(f"model {args.model} on {device} ({model.dtype}), {args.steps} decode steps a row")
    if device.type == "cuda":
        print("gpu:", torch.cuda.get_device_name(device))

    def run(width: int) -> float:
        enc = tokenizer([text] * width, return_tensors="pt", add_special_tokens=False).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(**enc, generation_config=config)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    run(1)  # warm-up: kernels, allocator
    print(f"{'width':>6} {'s/step':>9} {'tokens/s':>10}")
    for width in (int(w) for w in args.widths.split(",")):
        seconds = run(width)
        print(f"{width:>6} {seconds / args.steps:>9.4f} {width * args.steps / seconds:>10.0f}")


if __name__ == "__main__":
    main()
