"""What the model is trained on: the end-of-turn token in the loss, and CaRB's n-ary tuples as
training targets (`TrainConfig.nary`, training/format.py)."""

from pathlib import Path

import pytest

from triplesmith.schema import Example, Triple
from triplesmith.training.config import (
    ATTENTION_MODULES,
    LoraSettings,
    TrainConfig,
    lora_settings,
)
from triplesmith.training.format import format_example, training_triples

# A CaRB dev sentence merged with BenchIE (data/split.py): the triple view of each tuple joins
# the extra arguments, a unary tuple has none, and BenchIE's triple comes from no tuple.
MERGED = Example(
    id="carb-dev-0001",
    sentence="Ann gave Bob a book in Paris .",
    triples=[
        Triple(s="Ann", relation="gave", object="Bob a book in Paris"),
        Triple(s="Ann", relation="was in", object="Paris"),
        Triple(s="Ann", relation="gave a book to", object="Bob"),
    ],
    meta={
        "carb_tuples": [
            {"relation": "gave", "args": ["Ann", "Bob", "", "a book", "in Paris"]},
            {"relation": "was in", "args": ["Ann", "Paris"]},
            {"relation": "smiled", "args": ["Ann"]},
        ]
    },
)


def _objects(nary: str) -> list[str]:
    return [t.object for t in training_triples(MERGED, nary)]  # type: ignore[arg-type]


def test_join_keeps_the_triple_view():
    assert training_triples(MERGED, "join") == MERGED.triples


def test_drop_keeps_the_first_object_of_each_tuple():
    assert _objects("drop") == ["Bob", "Paris", "Bob"]


def test_split_makes_one_triple_per_extra_argument_and_keeps_other_triples():
    assert _objects("split") == ["Bob", "a book", "in Paris", "Paris", "Bob"]
    assert all(t.s == "Ann" for t in training_triples(MERGED, "split"))


def test_examples_without_carb_tuples_are_unchanged():
    plain = MERGED.model_copy(update={"meta": {}})
    assert training_triples(plain, "split") == plain.triples
    assert format_example(plain, "chat", "split") == format_example(plain, "chat")


def test_the_completion_carries_the_targets():
    completion = format_example(MERGED, "chat", "split")["completion"][0]["content"]
    assert '"object": "a book"' in completion and "Bob a book" not in completion


def test_the_choice_is_a_hyperparameter():
    config = TrainConfig(out=Path("x"), nary="drop")
    assert config.hyperparameters()["nary"] == "drop"
    assert TrainConfig(out=Path("x")).hyperparameters()["nary"] == "join"
    with pytest.raises(ValueError):
        TrainConfig(out=Path("x"), nary="both")  # type: ignore[arg-type]


def test_lora_settings_from_the_command_line():
    assert lora_settings(32) == LoraSettings(r=32, alpha=64)
    assert lora_settings(32, 16).alpha == 16
    assert lora_settings(targets="attention").target_modules == ATTENTION_MODULES
    assert lora_settings(targets="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]
    assert lora_settings(r=8, base=LoraSettings(dropout=0.1)).dropout == 0.1


def test_the_end_of_turn_token_is_in_the_loss(tmp_path):
    """What TRL's SFTTrainer (completion_only_loss, the settings `sft_config` gives it) trains on:
    the answer and its `<|im_end|>` count in the loss, though SmolLM2's padding token is that same
    token; padding and the prompt do not."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTTrainer

    from triplesmith.data.registry import load_dataset
    from triplesmith.models import resolve
    from triplesmith.training.config import Machine, plan_training, shape_of
    from triplesmith.training.format import build_dataset
    from triplesmith.training.sft import sft_config

    tokenizer = AutoTokenizer.from_pretrained(resolve("smollm2").path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    hf_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(hf_config)
    config = TrainConfig(out=tmp_path, max_seq_len=512, packing=False)
    machine = Machine(device="cpu", name="cpu", free_bytes=8 * 1024**3, bf16=False)
    plan = plan_training(config, shape_of(hf_config), machine)
    examples = sorted(load_dataset("sample:train"), key=lambda e: len(e.sentence))[:2]
    trainer = SFTTrainer(
        model=model,
        args=sft_config(config, plan, machine, tmp_path / "checkpoints"),
        train_dataset=build_dataset(examples, "chat"),
        processing_class=tokenizer,
    )
    rows = [trainer.train_dataset[i] for i in range(2)]
    batch = trainer.data_collator(rows)  # the shorter one is padded with <|im_end|>
    for example, labels, ids in zip(examples, batch["labels"], batch["input_ids"], strict=True):
        trained = [int(t) for t in labels if t != -100]
        text = tokenizer.decode(trained)
        answer = format_example(example, "chat")["completion"][0]["content"]
        assert text.startswith(answer) and text[len(answer) :].strip() == "<|im_end|>"
        assert trained.count(end) == 1  # the answer's own end, not the padding
        assert int((ids == end).sum()) >= 2  # the prompt's turns end with it too, unlearnt
