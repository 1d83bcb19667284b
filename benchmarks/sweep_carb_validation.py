"""Choose the CaRB preset's training recipe and decoding on a validation split, never on test.

The CaRB study trains on the benchmark split's train part (CaRB dev + BenchIE) and tests on CaRB
test. This sweep carves a seeded validation set out of that train part, trains one adapter per
recipe on the rest, and scores the fine-tuned chain on the validation set with the study's
evaluators. The test split is built (to prove no validation sentence is in it) and never read
further. Finished adapters and examples are reused on a rerun (the store and `manifest.json`).

    python benchmarks/sweep_carb_validation.py --carb-dir DIR --benchie-dir DIR --out OUT \
        --recipes e2-b16-lr2e-4,e6-b16-lr1e-3 --decodes greedy,rp1.1

A recipe is `e{epochs}-b{batch}-lr{learning rate}`; a decode is `greedy` (the default decoding,
which ends an answer at its first repeated triple and closes a string that loops on a phrase),
`noguard` (greedy without that guard), `noclose` (the guard without closing looping strings),
`rp{repetition penalty}` or `nr{no-repeat n-gram size}`. Prints one row per (recipe, decode) and writes
`OUT/sweep.json`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from triplesmith.data.jsonl import write_jsonl
from triplesmith.data.registry import split_examples
from triplesmith.data.split import check_no_leak, make_split

RECIPE = re.compile(r"^e(?P<epochs>[\d.]+)-b(?P<batch>\d+)-lr(?P<lr>[\d.e-]+)$")
# A decode name's prefix and the chain option it sets; `greedy` sets none, `noguard` turns the
# repeat guard off, `noclose` only its closing of looping strings.
DECODE_OPTIONS = {"rp": "repetition_penalty", "nr": "no_repeat_ngram_size"}


def decode_suffix(decode: str) -> str:
    if decode == "greedy":
        return ""
    if decode == "noguard":
        return "+stop_repeats=false+close_loops=false"
    if decode == "noclose":  # the repeat guard without closing looping strings
        return "+close_loops=false"
    option = DECODE_OPTIONS.get(decode[:2])
    if option is None:
        raise SystemExit(
            f"unknown decode {decode!r}: use greedy, noguard, noclose, rpFLOAT or nrINT"
        )
    return f"+{option}={decode[2:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--carb-dir", type=Path, required=True)
    parser.add_argument("--benchie-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--val-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", default="e2-b16-lr2e-4")
    parser.add_argument("--decodes", default="greedy")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args()

    from triplesmith.experiments.compare import compare
    from triplesmith.training.config import TrainConfig
    from triplesmith.training.sft import train

    train_all, test, _ = make_split(args.carb_dir, args.benchie_dir, "benchmark")
    fit, val = split_examples(train_all, args.val_size, args.seed)
    check_no_leak(val, test)
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_jsonl(data / "train.jsonl", fit)
    write_jsonl(data / "test.jsonl", val)  # the validation set, in the folder layout chains read
    print(f"fit {len(fit)} sentences, validation {len(val)} (seed {args.seed}); test untouched")

    rows = []
    for recipe in args.recipes.split(","):
        match = RECIPE.match(recipe)
        if not match:
            raise SystemExit(f"bad recipe {recipe!r}: use e{{epochs}}-b{{batch}}-lr{{lr}}")
        adapter = args.out / "adapters" / recipe
        manifest_path = adapter / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            print(f"{recipe}: reused the adapter")
        else:
            config = TrainConfig(
                dataset=str(data),
                out=adapter,
                epochs=float(match["epochs"]),
                batch_size=int(match["batch"]),
                learning_rate=float(match["lr"]),
                max_seq_len=args.max_seq_len,
            )
            manifest = train(config).manifest.model_dump(mode="json")
        for decode in args.decodes.split(","):
            spec = f"hf:smollm2+adapter={adapter}{decode_suffix(decode)}"
            started = time.perf_counter()
            result = compare(
                [spec],
                str(data / "test.jsonl"),
                "triple-f1,format,carb",
                max_concurrency=args.concurrency,
                store=args.out / "experiments.sqlite",
            )
            row = result.table.iloc[0]
            rows.append(
                {
                    "recipe": recipe,
                    "decode": decode,
                    "steps": manifest.get("steps"),
                    "loss_end": manifest.get("loss_end"),
                    "triple_f1": float(row["triple_f1"]),
                    "carb_f1": float(row["carb_f1"]),
                    "carb_auc": float(row["carb_auc"]),
                    "format_error": float(row["tag:format_error"]),
                    "repetition": float(row["tag:repetition"]),
                    "tokens_out": float(row["tokens_out"]),
                    "eval_s": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            (args.out / "sweep.json").write_text(json.dumps(rows, indent=2))
    print(
        f"\n{'recipe':<18}{'decode':<8}{'steps':>6}{'loss':>7}{'tripF1':>8}{'CaRB F1':>8}"
        f"{'AUC':>7}{'fmt err':>8}{'rep':>6}{'tok out':>8}"
    )
    for r in rows:
        print(
            f"{r['recipe']:<18}{r['decode']:<8}{r['steps'] or 0:>6}{r['loss_end'] or 0:>7.3f}"
            f"{r['triple_f1']:>8.3f}{r['carb_f1']:>8.3f}{r['carb_auc']:>7.3f}"
            f"{r['format_error']:>8.0%}{r['repetition']:>6.0%}{r['tokens_out']:>8.0f}"
        )


if __name__ == "__main__":
    main()
