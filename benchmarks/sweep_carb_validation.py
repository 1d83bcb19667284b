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
instead of their mean; chains/confidence.py), `rp{repetition penalty}`,
`nr{no-repeat n-gram size}`, or `vote{N}-t{temperature}`: N answers sampled at that temperature
(sample seeds 0 to N-1, the default decoding otherwise), of which a triple is kept when at least
half of them hold it (the fields compared as the scorers normalise them, `normalise_sentence`), with
its vote share as its confidence (ties: its mean log-prob over the samples); `vote3-t0.7` reuses
the first three samples of `vote5-t0.7` from the store. A vote prints two rows: the vote, and
`DECODE:each`, the samples' own figures averaged. In a vote row `format_error`, `repetition` and
how the answers ended are the samples' means, and `tokens out` the tokens all N wrote for a
sentence.

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
import math
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
VOTE = re.compile(r"^vote(?P<n>\d+)-t(?P<t>[\d.]+)$")
FINISHES = ("stop", "repeat", "length")


def vote_of(decode: str) -> tuple[int, float] | None:
    """A vote decode's (samples, temperature); None for any other decode."""
    match = VOTE.match(decode)
    if not match:
        return None
    n, temperature = int(match["n"]), float(match["t"])
    if n < 1 or not 0 < temperature <= 2:
        raise SystemExit(f"bad decode {decode!r}: voteN-tT needs N >= 1 and 0 < T <= 2")
    return n, temperature


def decode_suffix(decode: str) -> str:
    if decode in NAMED_DECODES:
        return NAMED_DECODES[decode]
    option = DECODE_OPTIONS.get(decode[:2])
    if option is None:
        raise SystemExit(
            f"unknown decode {decode!r}: use {', '.join(NAMED_DECODES)}, rpFLOAT, nrINT or voteN-tT"
        )
    return f"+{option}={decode[2:]}"


def decode_suffixes(decode: str) -> list[str]:
    """The chain options of a decode: one set, or one per sample of a vote."""
    vote = vote_of(decode)
    if vote is None:
        return [decode_suffix(decode)]
    n, temperature = vote
    return [f"+sample_seed={seed}+temperature={temperature:g}" for seed in range(n)]


def vote_triples(samples: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """One sentence's voted answer from its sampled answers (outputs dicts with `triples` and
    `confidences`; `n` the samples asked for, answered or not): the triples at least half of
    the `n` samples hold (a sample counts once per triple; fields compared after
    `normalise_sentence`), in order of first appearance, written as first seen; each with its
    vote share as confidence, plus less than half a share's step from its mean log-prob
    confidence over the samples (exp of it), so that ties in votes rank by log-prob."""
    from triplesmith.schema import Triple
    from triplesmith.text import normalise_sentence

    votes: dict[tuple[str, ...], int] = {}
    first: dict[tuple[str, ...], Triple] = {}
    logprobs: dict[tuple[str, ...], list[float]] = {}
    for outputs in samples:
        triples = [Triple.model_validate(t) for t in outputs.get("triples") or []]
        confidences = outputs.get("confidences") or [None] * len(triples)
        held: set[tuple[str, ...]] = set()
        for triple, confidence in zip(triples, confidences, strict=True):
            key = tuple(normalise_sentence(field) for field in triple.as_tuple())
            if key in held:
                continue
            held.add(key)
            votes[key] = votes.get(key, 0) + 1
            first.setdefault(key, triple)
            if confidence is not None:
                logprobs.setdefault(key, []).append(float(confidence))
    kept = [key for key in votes if 2 * votes[key] >= n]
    confidences = []
    for key in kept:
        tie = math.exp(mean(logprobs[key])) if key in logprobs else 0.0
        confidences.append(votes[key] / n + tie * 0.5 / n)
    return {
        "triples": [first[key].model_dump() for key in kept],
        "confidences": confidences,
        "diagnostics": {"complete": True},
    }


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
    return chain_specs(recipe, out, decode)[0]


def chain_specs(recipe: str, out: Path, decode: str) -> list[str]:
    """The hf chains of a decode on a recipe's trained weights (one per sample of a vote)."""
    where = trained_dir(recipe, out)
    if parse_recipe(recipe)["method"] == "full":
        return [f"hf:{where}{suffix}" for suffix in decode_suffixes(decode)]
    return [f"hf:smollm2+adapter={where}{suffix}" for suffix in decode_suffixes(decode)]


def table_row(row: Any) -> dict[str, float]:
    """A chain's scores from `compare`'s table."""
    return {
        "triple_f1": float(row["triple_f1"]),
        "carb_f1": float(row["carb_f1"]),
        "carb_auc": float(row["carb_auc"]),
        "format_error": float(row["tag:format_error"]),
        "repetition": float(row["tag:repetition"]),
    }


def vote_rows(result: Any, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """The voted answers' scores (the scorers of `compare`, on the validation examples that at
    least one sample answered), and the samples' own scores averaged."""
    from triplesmith.evaluators.exact import CarbEvaluator
    from triplesmith.evaluators.triple_f1 import TripleF1Evaluator

    each = [table_row(result.table.iloc[i]) for i in range(len(result.experiments))]
    averaged = {key: mean(r[key] for r in each) for key in each[0]}
    answers: dict[str, list[dict[str, Any]]] = {}
    examples = {}
    for experiment in result.experiments:
        for row in experiment.rows:
            examples[row.example_id] = row.example
            if not row.failed:
                answers.setdefault(row.example_id, []).append(row.outputs)
    ids = [example_id for example_id in examples if example_id in answers]
    voted = [vote_triples(answers[i], n) for i in ids]
    gold = [examples[i] for i in ids]
    triple_f1 = TripleF1Evaluator()
    f1s = [
        f.score
        for outputs, example in zip(voted, gold, strict=True)
        for f in triple_f1.evaluate(outputs, example)
        if f.key == "triple_f1" and f.score is not None
    ]
    carb = {f.key: f.score for f in CarbEvaluator().summarise(voted, gold)}
    scores = {
        **averaged,
        "triple_f1": mean(f1s) if f1s else math.nan,
        "carb_f1": float(carb["carb_f1"] or 0.0),
        "carb_auc": float(carb["carb_auc"] or 0.0),
    }
    return scores, averaged


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
        decode_suffixes(decode)

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
            specs = chain_specs(recipe, args.out, decode)
            started = time.perf_counter()
            result = compare(
                specs,
                str(data / "test.jsonl"),
                "triple-f1,format,carb",
                max_concurrency=args.concurrency,
                store=args.out / "experiments.sqlite",
            )
            common = {
                "recipe": recipe,
                "steps": manifest.get("steps"),
                "loss_end": manifest.get("loss_end"),
            }
            ending = {
                **finish_shares(result),
                "tokens_out": float(result.table["tokens_out"].sum()),
                "eval_s": round(time.perf_counter() - started, 1),
            }
            vote = vote_of(decode)
            if vote is None:
                found = [{"decode": decode, **table_row(result.table.iloc[0])}]
            else:
                voted, each = vote_rows(result, vote[0])
                per_sample = float(result.table["tokens_out"].mean())
                found = [
                    {"decode": decode, **voted},
                    {"decode": f"{decode}:each", **each, "tokens_out": per_sample},
                ]
            for scores in found:
                rows.append({**common, **ending, **scores})
                print(json.dumps(rows[-1]), flush=True)
            (args.out / "sweep.json").write_text(json.dumps(rows, indent=2))
    choice = choose(rows, decodes)
    (args.out / "choice.json").write_text(json.dumps(choice, indent=2))
    (args.out / "choice-args").write_text(" ".join(choice["study_args"]) + "\n")
    wide = max(len(r["recipe"]) for r in rows) + 2
    decode_wide = max(14, max(len(r["decode"]) for r in rows) + 2)
    print(
        f"\n{'recipe':<{wide}}{'decode':<{decode_wide}}{'steps':>6}{'loss':>7}{'tripF1':>8}{'CaRB F1':>8}"
        f"{'AUC':>7}{'fmt err':>8}{'rep':>6}{'stop':>6}{'loop':>6}{'len':>6}{'tok out':>8}"
    )
    for r in rows:
        print(
            f"{r['recipe']:<{wide}}{r['decode']:<{decode_wide}}{r['steps'] or 0:>6}{r['loss_end'] or 0:>7.3f}"
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
