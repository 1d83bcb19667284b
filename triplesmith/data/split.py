"""Leak-free train/test splits by normalised sentence, and `data prepare`'s manifest."""

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from triplesmith.data.benchie import read_benchie_gold
from triplesmith.data.carb import load_carb_dir
from triplesmith.data.jsonl import write_jsonl
from triplesmith.errors import DatasetError
from triplesmith.schema import Example
from triplesmith.text import normalise_sentence

SplitRule = Literal["benchmark", "random"]


class SourceFile(BaseModel):
    path: str
    sha256: str


class SplitManifest(BaseModel):
    split: SplitRule
    rule: str
    seed: int | None
    test_size: int | None
    sources: list[SourceFile]
    counts: dict[str, int]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def has_gold(example: Example) -> bool:
    """Gold of any kind: triples, or CaRB tuples without a triple view (unary ones)."""
    return bool(example.triples or example.meta.get("carb_tuples"))


def merge_duplicates(examples: list[Example]) -> list[Example]:
    """One example per normalised sentence: triples unioned, meta merged (first source wins)."""
    merged: dict[str, Example] = {}
    for example in examples:
        key = normalise_sentence(example.sentence)
        kept = merged.get(key)
        if kept is None:
            merged[key] = example.model_copy(deep=True)
            continue
        for triple in example.triples:
            if triple not in kept.triples:
                kept.triples.append(triple)
        for name, value in example.meta.items():
            kept.meta.setdefault(name, value)
        kept.meta.setdefault("also_in", []).append(example.id)
    return list(merged.values())


def check_no_leak(train: list[Example], test: list[Example]) -> None:
    """Refuse a split in which a normalised test sentence also appears in train."""
    test_keys = {normalise_sentence(e.sentence): e.id for e in test}
    leaks = [
        (e.id, test_keys[k]) for e in train if (k := normalise_sentence(e.sentence)) in test_keys
    ]
    if leaks:
        shown = ", ".join(f"{a}={b}" for a, b in leaks[:5])
        raise DatasetError(
            f"refusing to write a leaking split: {len(leaks)} test sentences also appear in train "
            f"({shown}{', ...' if len(leaks) > 5 else ''})"
        )


def attach_benchie(examples: list[Example], benchie: list[Example]) -> None:
    """Give examples whose sentence BenchIE also annotates its fact clusters (for its scorer)."""
    by_key = {normalise_sentence(e.sentence): e for e in benchie}
    for example in examples:
        match = by_key.get(normalise_sentence(example.sentence))
        if match is not None:
            example.meta["benchie_clusters"] = match.meta["benchie_clusters"]
            example.meta["benchie_sent_id"] = match.meta["benchie_sent_id"]


def make_split(
    carb_dir: Path,
    benchie_dir: Path | None = None,
    split: SplitRule = "benchmark",
    test_size: int = 100,
    seed: int = 0,
) -> tuple[list[Example], list[Example], SplitManifest]:
    """Build train and test from CaRB (and BenchIE); only gold-bearing sentences are kept."""
    carb = load_carb_dir(carb_dir)
    sources = [Path(carb_dir) / "gold" / f"{name}.tsv" for name in ("dev", "test")]
    benchie: list[Example] = []
    if benchie_dir is not None:
        gold = Path(benchie_dir) / "gold_en.txt"
        benchie = [e for e in read_benchie_gold(gold) if has_gold(e)]
        sources.append(gold)
    dev = [e for e in carb["dev"] if has_gold(e)]
    test_carb = [e for e in carb["test"] if has_gold(e)]
    if split == "benchmark":
        test = merge_duplicates(test_carb)
        test_keys = {normalise_sentence(e.sentence) for e in test}
        extra = [e for e in benchie if normalise_sentence(e.sentence) not in test_keys]
        train = merge_duplicates(dev + extra)
        attach_benchie(test, benchie)
        attach_benchie(train, benchie)
        rule = (
            "test = CaRB test gold sentences; train = CaRB dev + BenchIE sentences not in CaRB test"
        )
        seed_used: int | None = None
        size: int | None = None
    elif split == "random":
        pool = merge_duplicates(dev + test_carb + benchie)
        attach_benchie(pool, benchie)
        if not 0 < test_size < len(pool):
            raise DatasetError(
                f"--test-size must be between 1 and {len(pool) - 1} for this pool, got {test_size}"
            )
        rng = random.Random(seed)
        chosen = set(rng.sample(range(len(pool)), test_size))
        test = [e for i, e in enumerate(pool) if i in chosen]
        train = [e for i, e in enumerate(pool) if i not in chosen]
        rule = (
            "pool CaRB dev+test (+BenchIE), dedupe by normalised sentence, test = N seeded random"
        )
        seed_used, size = seed, test_size
    else:
        raise DatasetError(f"unknown split rule {split!r}; use benchmark or random")
    check_no_leak(train, test)
    manifest = SplitManifest(
        split=split,
        rule=rule,
        seed=seed_used,
        test_size=size,
        sources=[SourceFile(path=str(p), sha256=file_sha256(p)) for p in sources],
        counts={
            "train_sentences": len(train),
            "train_triples": sum(len(e.triples) for e in train),
            "test_sentences": len(test),
            "test_triples": sum(len(e.triples) for e in test),
        },
    )
    return train, test, manifest


def write_split(
    out: Path, train: list[Example], test: list[Example], manifest: SplitManifest
) -> None:
    """Write train.jsonl, test.jsonl and manifest.json together, or nothing at all."""
    check_no_leak(train, test)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write_jsonl(staging / "train.jsonl", train)
        write_jsonl(staging / "test.jsonl", test)
        (staging / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
        out.mkdir(parents=True, exist_ok=True)
        for name in ("train.jsonl", "test.jsonl", "manifest.json"):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_manifest(out: Path) -> SplitManifest:
    return SplitManifest.model_validate(json.loads((Path(out) / "manifest.json").read_text()))
