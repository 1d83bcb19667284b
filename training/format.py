"""Instruction formatting for SFT: examples to a prompt/completion dataset, loss on the answer only.

Two formats: `chat` (the base model's chat template with the extraction system prompt, the
same messages the hf chain sends at inference) and `llama2` (`[INST] <<SYS>> ... [/INST]`, as
the reference workflow trained Llama-2). Either way the dataset has `prompt` and `completion`
columns, so TRL's `completion_only_loss` (on by default for such datasets) trains on the
assistant answer alone.

CaRB's gold tuples are n-ary (`meta["carb_tuples"]`); the triple view joins the extra
arguments into the object. `nary` chooses the training targets made from them: `join` (that
view), `drop` (the first object only) or `split` (one triple per extra argument). Triples of
examples without CaRB tuples, and those not from a tuple (BenchIE's), are kept as they are.

Examples longer than `max_seq_len` tokens are refused, not truncated: a cut-off answer is
broken JSON, and training on it teaches the model to stop mid-list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from triplesmith.chains.prompt import SYSTEM_PROMPT, answer_text, build_messages, user_text
from triplesmith.data.registry import load_dataset
from triplesmith.errors import TrainingError
from triplesmith.schema import Example, Triple

LLAMA2_PROMPT = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]"
Nary = Literal["join", "drop", "split"]


class TrainingData(BaseModel):
    """The examples a run trains on, and which split of which dataset they are."""

    dataset: str
    split: str | None
    examples: list[Example]


def load_training_examples(dataset: str) -> TrainingData:
    """The training examples of a dataset spec; never a test split by accident.

    `sample` means the sample's train split, and a folder from `triplesmith data prepare`
    means its `train.jsonl` (where `load_dataset` alone defaults to the test split).
    """
    name, _, suffix = dataset.partition(":")
    split: str | None
    if name == "sample":
        split = suffix or "train"
        examples = load_dataset("sample", split=split)
    elif Path(dataset).expanduser().is_dir():
        split = "train"
        examples = load_dataset(dataset, split=split)
    else:
        split = None
        examples = load_dataset(dataset)
    if not examples:
        raise TrainingError(
            f"dataset {dataset!r} has no examples; give a dataset with at least one sentence "
            "and its gold triples"
        )
    return TrainingData(dataset=dataset, split=split, examples=examples)


def llama2_prompt(sentence: str) -> str:
    return LLAMA2_PROMPT.format(system=SYSTEM_PROMPT, user=user_text(sentence))


def training_triples(example: Example, nary: Nary = "join") -> list[Triple]:
    """The example's triples with each CaRB tuple's joined view replaced as `nary` says."""
    tuples = example.meta.get("carb_tuples")
    if nary == "join" or not tuples:
        return list(example.triples)
    views: dict[Triple, list[Triple]] = {}
    for item in tuples:
        relation, args = item.get("relation", ""), [arg for arg in item.get("args", []) if arg]
        if not relation or len(args) < 2:
            continue  # no triple view (data/carb.py)
        subject, objects = args[0], args[1:]
        joined = Triple(s=subject, relation=relation, object=" ".join(objects))
        kept = objects[:1] if nary == "drop" else objects
        views.setdefault(joined, [Triple(s=subject, relation=relation, object=o) for o in kept])
    out: list[Triple] = []
    for triple in example.triples:
        for target in views.get(triple, [triple]):
            if target not in out:
                out.append(target)
    return out


def format_example(example: Example, fmt: str, nary: Nary = "join") -> dict[str, Any]:
    """One prompt/completion record: conversational for `chat`, plain text for `llama2`."""
    answer = answer_text(training_triples(example, nary))
    if fmt == "chat":
        return {
            "prompt": build_messages(example.sentence),
            "completion": [{"role": "assistant", "content": answer}],
        }
    if fmt == "llama2":
        # TRL appends the tokenizer's EOS to a plain-text completion.
        return {"prompt": llama2_prompt(example.sentence), "completion": " " + answer}
    raise TrainingError(f"unknown format {fmt!r}; use chat or llama2")


def build_dataset(examples: Sequence[Example], fmt: str, nary: Nary = "join") -> Any:
    """A `datasets.Dataset` with `prompt` and `completion` columns, in example order."""
    from datasets import Dataset

    return Dataset.from_list([format_example(example, fmt, nary) for example in examples])


def check_template(tokenizer: Any, fmt: str, base: str) -> None:
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        raise TrainingError(
            f"base model {base!r} has no chat template; train with --format llama2, or give a "
            "base whose tokenizer defines one"
        )


def token_lengths(
    examples: Sequence[Example], tokenizer: Any, fmt: str, nary: Nary = "join"
) -> list[int]:
    """Each example's prompt+completion length in tokens, tokenized the way TRL will."""
    lengths = []
    for example in examples:
        record = format_example(example, fmt, nary)
        if fmt == "chat":
            ids = tokenizer.apply_chat_template(
                record["prompt"] + record["completion"], tokenize=True, return_dict=True
            )["input_ids"]
        else:
            text = record["prompt"] + record["completion"] + (tokenizer.eos_token or "")
            ids = tokenizer(text)["input_ids"]
        lengths.append(len(ids))
    return lengths


def check_lengths(examples: Sequence[Example], lengths: Sequence[int], max_seq_len: int) -> None:
    """Refuse examples longer than `max_seq_len` tokens, naming them and the length needed."""
    over = [
        (n, example.id) for n, example in zip(lengths, examples, strict=True) if n > max_seq_len
    ]
    if not over:
        return
    longest, longest_id = max(over)
    shown = ", ".join(example_id for _, example_id in over[:5])
    raise TrainingError(
        f"{len(over)} of {len(examples)} examples are longer than --max-seq-len {max_seq_len} "
        f"tokens (e.g. {shown}; the longest, {longest_id}, has {longest}). Examples are refused, "
        "not truncated, since a cut-off answer is broken JSON: raise --max-seq-len to at least "
        f"{longest}, or remove those examples from the dataset"
    )
