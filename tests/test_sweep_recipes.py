"""benchmarks/sweep_carb_validation.py: recipe names, decodes and the choice it writes."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).parents[1] / "benchmarks" / "sweep_carb_validation.py"
_SPEC = importlib.util.spec_from_file_location("sweep_carb_validation", _PATH)
sweep = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sweep)


def test_old_recipe_names_stay_valid():
    assert sweep.parse_recipe("e2-b16-lr2e-4") == {
        "method": "auto", "epochs": 2.0, "batch": 16, "lr": 2e-4, "r": None, "alpha": None, "targets": None,
        "nary": "join", "seed": 0,
    }  # fmt: skip


def test_the_levers_in_a_recipe_name_become_study_options():
    settings = sweep.parse_recipe("e8-b16-lr1e-3-r32-a16-attn-nsplit-s2")
    assert (settings["r"], settings["alpha"], settings["targets"]) == (32, 16, "attention")
    assert (settings["nary"], settings["seed"]) == ("split", 2)
    assert sweep.study_args(settings) == [
        "--epochs=8", "--batch-size=16", "--learning-rate=0.001", "--lora-r=32",
        "--lora-alpha=16", "--lora-targets=attention", "--nary=split",
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="bad recipe"):
        sweep.parse_recipe("e8-b16-lr1e-3-nboth")


def test_a_full_recipe_trains_all_weights_and_is_evaluated_as_the_chains_model(tmp_path):
    settings = sweep.parse_recipe("e8-b16-lr5e-5-full-nsplit-s1")
    assert (settings["method"], settings["lr"], settings["nary"], settings["seed"]) == (
        "full", 5e-5, "split", 1,
    )  # fmt: skip
    # The study cannot train a full model yet: its options say so rather than train LoRA.
    assert "--method=full" in sweep.study_args(settings)
    assert sweep.chain_spec("e8-b16-lr1e-4-full", tmp_path, "conf-min") == (
        f"hf:{tmp_path}/models/e8-b16-lr1e-4-full+confidence=min"
    )
    assert sweep.chain_spec("e8-b16-lr1e-3", tmp_path, "greedy") == (
        f"hf:smollm2+adapter={tmp_path}/adapters/e8-b16-lr1e-3"
    )
    with pytest.raises(SystemExit, match="no -r, -a or -attn"):
        sweep.parse_recipe("e8-b16-lr5e-5-full-r32")


def test_decodes():
    assert sweep.decode_suffix("free") == "+constrained=false"
    assert sweep.decode_suffix("conf-min") == "+confidence=min"
    assert sweep.decode_suffix("rp1.1") == "+repetition_penalty=1.1"
    with pytest.raises(SystemExit, match="unknown decode"):
        sweep.decode_suffix("beam4")


def test_the_choice_is_the_best_greedy_recipe_its_seeds_averaged():
    def row(recipe, decode, f1, auc):
        return {"recipe": recipe, "decode": decode, "carb_f1": f1, "carb_auc": auc}

    rows = [
        row("e8-b16-lr1e-3", "greedy", 0.50, 0.30),
        row("e8-b16-lr1e-3", "free", 0.60, 0.30),  # not the study's decoding
        row("e8-b16-lr1e-3-nsplit", "greedy", 0.54, 0.30),
        row("e8-b16-lr1e-3-nsplit-s1", "greedy", 0.44, 0.30),  # mean 0.49
        row("e6-b16-lr1e-3", "greedy", 0.50, 0.32),  # ties on F1, better AUC
    ]
    choice = sweep.choose(rows, ["greedy", "free"])
    assert choice["recipe"] == "e6-b16-lr1e-3"
    assert choice["study_args"] == ["--epochs=6", "--batch-size=16", "--learning-rate=0.001"]
    assert [r["recipe"] for r in choice["ranking"]][-1] == "e8-b16-lr1e-3-nsplit"
    assert choice["ranking"][-1]["carb_f1"] == pytest.approx(0.49)
