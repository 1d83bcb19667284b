"""`triplesmith extract` with the default local chain on real CaRB test sentences (slow: it
generates): grammar-constrained answers are valid JSON every time, and the raw model is still
one option away."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from triplesmith.chains.parser import parse_triples
from triplesmith.data.carb import read_carb_gold
from triplesmith.evaluators.triage import triage

pytestmark = pytest.mark.slow


def extract(chain: str, sentences: list[str], tmp_path: Path, name: str) -> list[dict]:
    source = tmp_path / f"{name}.jsonl"
    source.write_text("".join(json.dumps({"sentence": s}) + "\n" for s in sentences))
    out = tmp_path / f"{name}.out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "triplesmith.cli.app", "extract", "--input", str(source)]
        + ["--output", str(out), "--chain", chain],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_the_default_chain_answers_20_carb_sentences_in_valid_json(
    carb_dir: Path, tmp_path: Path
) -> None:
    sentences = [e.sentence for e in read_carb_gold(carb_dir / "gold" / "test.tsv", "test")][:20]
    rows = extract("few-shot:smollm2", sentences, tmp_path, "constrained")
    assert [r["sentence"] for r in rows] == sentences
    for row in rows:
        assert row["error"] is None
        items = json.loads(row["raw"])  # strict JSON, nothing around it
        assert isinstance(items, list)
        assert all(set(item) == {"s", "relation", "object"} for item in items)
        parsed = parse_triples(row["raw"])
        tags = triage(row["sentence"], row["raw"], parsed.triples, diagnostics=parsed.diagnostics)
        assert "format_error" not in [t.name for t in tags], row["raw"]
    assert sum(bool(r["triples"]) for r in rows) >= 10  # mostly non-empty answers


def test_constrained_false_still_runs_the_raw_model(carb_dir: Path, tmp_path: Path) -> None:
    sentences = [e.sentence for e in read_carb_gold(carb_dir / "gold" / "test.tsv", "test")][:2]
    rows = extract(
        "few-shot:smollm2+constrained=false+max_new_tokens=48", sentences, tmp_path, "free"
    )
    assert len(rows) == 2 and all(r["error"] is None and r["raw"] for r in rows)
    assert all(r["tokens_out"] <= 48 for r in rows)
