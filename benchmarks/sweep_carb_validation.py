"""Choose the CaRB preset's training recipe and decoding on a validation split, never on test.

The CaRB study trains on the benchmark split's train part (CaRB dev + BenchIE) and tests on CaRB
test. This sweep carves a seeded validation set out of that train part, trains one adapter per
recipe on the rest, and scores the fine-tuned chain on the validation set with the study's
evaluators. The test split is built (to prove no validation sentence is in it) and never read
further. Finished adapters and examples are reused on a rerun (the store and `manifest.json`).

    python benchmarks/sweep_carb_validation.py --carb-dir DIR --benchie-dir DIR --out OUT \
        --recipes e8-b16-lr1e-3,e8-b16-lr1e-3-r32-nsplit --decodes greedy,free,conf-min

A recipe is `e{epochs}-b{batch}-lr{learning rate}` followed by any of, in this order:
`-full` (full fine-tuning: all weights train, no adapter; the model folder is evaluated as the hf
chain's model, `hf:OUT/models/RECIPE`, with the same engine and decodes; no LoRA suffix with it),
`-r{LoRA rank}`, `-a{LoRA alpha}` (default twice the rank; both default to TrainConfig's, r16 a32),
`-attn` (LoRA on the attention projections only, not all linear layers), `-ndrop` or `-nsplit`
(CaRB's n-ary tuples as training targets: the first object only, or one triple per extra
argument, instead of the extra arguments joined into the object; training/format.py) and
`-s{training seed}` (default 0; the data and the validation split stay fixed).

A decode is `greedy` (the default decoding: grammar-constrained JSON, ending an answer at its
first repeated triple and closing a string that loops on a phrase), `noguard` (greedy without
that guard), `noclose` (the guard without closing looping strings), `free` (no grammar),
`conf-relation`, `conf-min` or `conf-sum` (the same answers, with each triple's confidence for
CaRB's AUC from its relation's tokens, its least likely token, or its tokens' total log-prob
instead of their mean; chains/confidence.py), `rp{repetition penalty}` or
`nr{no-repeat n-gram size}`.

Each row reports, besides the scores, how the answers ended: `stop` the share that ended by
themselves (the model wrote its end-of-turn token), `repeat` the share a loop rule cut, `length`
the share the token budget cut. Prints one row per (recipe, decode) and writes `OUT/sweep.json`,
and `OUT/choice.json` with `OUT/choice-args`: the recipe with the best greedy validation CaRB F1
(ties: AUC; a recipe run with several seeds counts by its mean) as the `triplesmith study`
options that train it, so that `triplesmith study --preset carb $(cat OUT/choice-args)` applies it
(a `-full` recipe's options include `--method=full`, which `triplesmith study` does not take yet:
the study refuses them rather than train an adapter at full fine-tuning's learning rate).
`--max-steps` caps every recipe's training (a smoke test on CPU).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any

from triplesmith.data.jsonl import write_jsonl
from triplesmith.data.registry import split_examples
from triplesmith.data.split import check_no_leak, make_split

RECIPE = re.compile(
    r"^e(?P<epochs>[\d.]+)-b(?P<batch>\d+)-lr(?P<lr>[\d.]+(?:e-?\d+)?)(?P<full>-full)?"
    r"(?:-r(?P<r>\d+))?(?:-a(?P<alpha>\d+))?(?P<attn>-attn)?(?:-n(?P<nary>drop|split))?"
    r"(?:-s(?P<seed>\d+))?$"
)
RECIPE_HELP = (
    "e{epochs}-b{batch}-lr{lr}[-full][-r{rank}][-a{alpha}][-attn][-ndrop|-nsplit][-s{seed}]"
)
# A decode name's prefix and the chain option it sets; `greedy` sets none, `noguard` turns the
# repeat guard off, `noclose` only its closing of looping strings.
DECODE_OPTIONS = {"rp": "repetition_penalty", "nr": "no_repeat_ngram_size"}
NAMED_DECODES = {
    "greedy": "",
    "noguard": "+stop_repeats=false+close_loops=false",
    "noclose": "+close_loops=false",  # the repeat guard without closing looping strings
    "free": "+constrained=false",
    "conf-relation": "+confidence=relation",
    "conf-min": "+confidence=min",
    "conf-sum": "+confidence=sum",
}
FINISHES = ("stop", "repeat", "length")


def decode_suffix(decode: str) -> str:
    if decode in NAMED_DECODES:
        return NAMED_DECODES[decode]
    option = DECODE_OPTIONS.get(decode[:2])
    if option is None:
        raise SystemExit(
            f"unknown decode {decode!r}: use {', '.join(NAMED_DECODES)}, rpFLOAT or nrINT"
        )
    return f"+{option}={decode[2:]}"


def parse_recipe(recipe: str) -> dict[str, Any]:
    """A recipe's training settings: method, epochs, batch, lr, r, alpha, targets, nary, seed."""
    match = RECIPE.match(recipe)
    if not match:
        raise SystemExit(f"bad recipe {recipe!r}: use {RECIPE_HELP}")
    if match["full"] and (match["r"] or match["alpha"] or match["attn"]):
        raise SystemExit(f"bad recipe {recipe!r}: -full trains no adapter, so no -r, -a or -attn")
    r = int(match["r"]) if match["r"] else None
    return {
        "method": "full" if match["full"] else "auto",
        "epochs": float(match["epochs"]),
        "batch": int(match["batch"]),
        "lr": float(match["lr"]),
        "r": r,
        "alpha": int(match["alpha"]) if match["alpha"] else None,
        "targets": "attention" if match["attn"] else None,
        "nary": match["nary"] or "join",
        "seed": int(match["seed"] or 0),
    }


def study_args(settings: dict[str, Any]) -> list[str]:
    """The `triplesmith study` options that train a recipe (the seed is the study's own)."""
    args = [
        f"--epochs={settings['epochs']:g}",
        f"--batch-size={settings['batch']}",
        f"--learning-rate={settings['lr']:g}",
    ]
    if settings["method"] == "full":
        args.append("--method=full")
    if settings["r"] is not None:
        args.append(f"--lora-r={settings['r']}")
    if settings["alpha"] is not None:
        args.append(f"--lora-alpha={settings['alpha']}")
    if settings["targets"]:
        args.append(f"--lora-targets={settings['targets']}")
    if settings["nary"] != "join":
        args.append(f"--nary={settings['nary']}")
    return args


def finish_shares(result: Any) -> dict[str, float]:
    """The share of answered examples that ended by themselves, by a loop rule, by the budget."""
    reasons = Counter(
        row.outputs.get("finish_reason")
        for experiment in result.experiments
        for row in experiment.rows
        if not row.failed
    )
    total = sum(reasons.values()) or 1
    return {reason: reasons[reason] / total for reason in FINISHES}


def choose(rows: list[dict[str, Any]], decodes: list[str]) -> dict[str, Any]:
    """The recipe with the best validation CaRB F1 (ties: AUC) under the study's decoding
    (greedy; the first decode run when greedy was not), its seeds averaged."""
    decode = "greedy" if "greedy" in decodes else decodes[0]
    families: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["decode"] == decode:
            families.setdefault(re.sub(r"-s\d+$", "", row["recipe"]), []).append(row)
    scored = [
        (mean(r["carb_f1"] for r in group), mean(r["carb_auc"] for r in group), name, group)
        for name, group in families.items()
    ]
    f1, auc, name, group = max(scored, key=lambda item: (item[0], item[1]))
    settings = parse_recipe(group[0]["recipe"])
    return {
        "recipe": name,
        "decode": decode,
        "seeds": [parse_recipe(r["recipe"])["seed"] for r in group],
        "carb_f1": f1,
        "carb_auc": auc,
        "study_args": study_args(settings),
        "ranking": [
            {"recipe": n, "carb_f1": f, "carb_auc": a}
            for f, a, n, _ in sorted(scored, key=lambda item: (-item[0], -item[1]))
        ],
    }


def trained_dir(recipe: str, out: Path) -> Path:
    """Where a recipe's adapter (`OUT/adapters/RECIPE`) or full model (`OUT/models/RECIPE`) goes."""
    full = parse_recipe(recipe)["method"] == "full"
    return out / ("models" if full else "adapters") / recipe


def chain_spec(recipe: str, out: Path, decode: str) -> str:
    """The hf chain on a recipe's trained weights: the base with the adapter, or the full model."""
    where = trained_dir(recipe, out)
    if parse_recipe(recipe)["method"] == "full":
        return f"hf:{where}{decode_suffix(decode)}"
    return f"hf:smollm2+adapter={where}{decode_suffix(decode)}"


def train_recipe(recipe: str, data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train the recipe's adapter (or full model) into `out`, or reuse the one already there;
    its manifest."""
    from triplesmith.training.config import TrainConfig, lora_settings

    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        print(f"{recipe}: reused the adapter")
        return json.loads(manifest_path.read_text())
    from triplesmith.training.sft import train

    settings = parse_recipe(recipe)
    lora = (settings["r"], settings["alpha"], settings["targets"])
    config = TrainConfig(
        dataset=str(data),
        out=out,
        method=settings["method"],
        epochs=settings["epochs"],
        max_steps=args.max_steps,
        batch_size=settings["batch"],
        learning_rate=settings["lr"],
        max_seq_len=args.max_seq_len,
        lora=lora_settings(*lora),
        nary=settings["nary"],
        seed=settings["seed"],
    )
    return train(config).manifest.model_dump(mode="json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--carb-dir", type=Path, required=True)
    parser.add_argument("--benchie-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--val-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    parser.add_argument("--recipes", default="e8-b16-lr1e-3")
    parser.add_argument("--decodes", default="greedy")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--max-steps", type=int, help="cap training steps (a smoke test)")
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args()
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    decodes = [d.strip() for d in args.decodes.split(",") if d.strip()]
    for recipe in recipes:  # refused before anything runs
        parse_recipe(recipe)
    for decode in decodes:
        decode_suffix(decode)

    from triplesmith.experiments.compare import compare

    train_all, test, _ = make_split(args.carb_dir, args.benchie_dir, "benchmark")
    fit, val = split_examples(train_all, args.val_size, args.seed)
    check_no_leak(val, test)
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_jsonl(data / "train.jsonl", fit)
    write_jsonl(data / "test.jsonl", val)  # the validation set, in the folder layout chains read
    print(f"fit {len(fit)} sentences, validation {len(val)} (seed {args.seed}); test untouched")

    rows = []
    for recipe in recipes:
        manifest = train_recipe(recipe, data, trained_dir(recipe, args.out), args)
        for decode in decodes:
            spec = chain_spec(recipe, args.out, decode)
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
                    **finish_shares(result),
                    "tokens_out": float(row["tokens_out"]),
                    "eval_s": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            (args.out / "sweep.json").write_text(json.dumps(rows, indent=2))
    choice = choose(rows, decodes)
    (args.out / "choice.json").write_text(json.dumps(choice, indent=2))
    (args.out / "choice-args").write_text(" ".join(choice["study_args"]) + "\n")
    wide = max(len(r["recipe"]) for r in rows) + 2
    print(
        f"\n{'recipe':<{wide}}{'decode':<14}{'steps':>6}{'loss':>7}{'tripF1':>8}{'CaRB F1':>8}"
        f"{'AUC':>7}{'fmt err':>8}{'rep':>6}{'stop':>6}{'loop':>6}{'len':>6}{'tok out':>8}"
    )
    for r in rows:
        print(
            f"{r['recipe']:<{wide}}{r['decode']:<14}{r['steps'] or 0:>6}{r['loss_end'] or 0:>7.3f}"
            f"{r['triple_f1']:>8.3f}{r['carb_f1']:>8.3f}{r['carb_auc']:>7.3f}"
            f"{r['format_error']:>8.0%}{r['repetition']:>6.0%}{r['stop']:>6.0%}"
            f"{r['repeat']:>6.0%}{r['length']:>6.0%}{r['tokens_out']:>8.0f}"
        )
    print(
        f"\nchoice: {choice['recipe']} (greedy validation CaRB F1 {choice['carb_f1']:.3f}, "
        f"AUC {choice['carb_auc']:.3f}): triplesmith study --preset carb "
        f"{' '.join(choice['study_args'])}"
    )


if __name__ == "__main__":
    main()
