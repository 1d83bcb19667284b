"""The local-model chains with the real embedded SmolLM2 (slow: they generate)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from triplesmith.chains.registry import get_chain

pytestmark = pytest.mark.slow

SENTENCES = [
    "Barack Obama was born in Hawaii.",
    "Paris is the capital of France.",
    "The Nile flows through Egypt and Sudan.",
]


def test_extract_cli_returns_json_triples_from_the_embedded_model() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "triplesmith.cli.app",
            "extract",
            SENTENCES[0],
            "--json",
            "--chain",
            "few-shot:smollm2+max_new_tokens=40",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    extraction = json.loads(out.stdout)
    assert extraction["chain"] == "few-shot:smollm2+max_new_tokens=40"
    assert extraction["model"] == "smollm2" and extraction["prompt_id"] == "kg-triples-v1"
    assert extraction["raw"] and extraction["tokens_out"] > 0 and extraction["tokens_in"] > 0
    # The base model does answer in the few-shot JSON format for this sentence.
    assert extraction["triples"], extraction["raw"]
    assert all(t["s"] in extraction["raw"] for t in extraction["triples"])
    assert len(extraction["confidences"]) == len(extraction["triples"])


def test_hf_chain_loads_a_peft_adapter_and_batches(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from triplesmith.models import load

    model, _ = load("smollm2")
    config = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")

    chain = get_chain(f"hf:smollm2+adapter={tmp_path / 'adapter'}+max_new_tokens=12")
    out = chain.batch([{"sentence": s} for s in SENTENCES[:2]] + [{"sentence": ""}])
    assert [e.error is None for e in out] == [True, True, False]
    assert all(e.tokens_out > 0 and e.raw for e in out[:2])
    assert out[0].adapter_hash and len(out[0].adapter_hash) == 16
    assert chain.metadata()["adapter_hash"] == out[0].adapter_hash


def test_hf_chain_refuses_a_directory_that_is_not_an_adapter(tmp_path: Path) -> None:
    from triplesmith.errors import ChainError

    with pytest.raises(ChainError, match="not a PEFT adapter directory"):
        get_chain(f"hf:smollm2+adapter={tmp_path}")
