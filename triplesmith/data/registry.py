"""`load_dataset(name_or_path)`: the embedded sample, JSONL files, prepared split folders, LangSmith."""

import random
from importlib import resources
from pathlib import Path

from triplesmith.data.jsonl import read_jsonl
from triplesmith.data.langsmith_datasets import read_langsmith_dataset
from triplesmith.data.split import check_no_leak, merge_duplicates
from triplesmith.errors import DatasetError
from triplesmith.schema import Example

SAMPLE_TEST_SIZE = 20
SAMPLE_SEED = 0


def sample_path() -> Path:
    return Path(str(resources.files("triplesmith.data").joinpath("sample.jsonl")))


def split_examples(
    examples: list[Example], test_size: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded random split by normalised sentence (duplicates merged first), leak-checked."""
    pool = merge_duplicates(examples)
    if not 0 < test_size < len(pool):
        raise DatasetError(f"test size must be between 1 and {len(pool) - 1}, got {test_size}")
    chosen = set(random.Random(seed).sample(range(len(pool)), test_size))
    train = [e for i, e in enumerate(pool) if i not in chosen]
    test = [e for i, e in enumerate(pool) if i in chosen]
    check_no_leak(train, test)
    return train, test


def load_dataset(name: str | Path, split: str | None = None) -> list[Example]:
    """Load examples by name or path.

    - `sample`: the embedded sample (72 sentences); `sample:train` / `sample:test` its fixed
      seeded split (20 test sentences), or pass `split=`.
    - a `.jsonl` file in the shared format.
    - a folder written by `triplesmith data prepare` (`split` = "train" or "test", default test).
    - `langsmith:NAME[@VERSION_OR_TAG][:SPLIT]`: a LangSmith dataset, optionally as of a version
      or tag and one split (needs `LANGSMITH_API_KEY`).
    """
    text = str(name)
    if text.startswith("langsmith:"):
        return read_langsmith_dataset(text.split(":", 1)[1])
    base, _, suffix = text.partition(":")
    if base == "sample":
        split = split or suffix or None
        examples = read_jsonl(sample_path(), source="sample")
        if split is None:
            return examples
        train, test = split_examples(examples, SAMPLE_TEST_SIZE, SAMPLE_SEED)
        if split not in {"train", "test"}:
            raise DatasetError(f"unknown split {split!r} of the sample dataset; use train or test")
        return train if split == "train" else test
    path = Path(text).expanduser()
    if path.is_dir():
        chosen = split or "test"
        if chosen not in {"train", "test"}:
            raise DatasetError(f"unknown split {chosen!r}; a prepared folder has train and test")
        file = path / f"{chosen}.jsonl"
        if not file.is_file():
            raise DatasetError(
                f"{path} has no {chosen}.jsonl; write one with: triplesmith data prepare"
            )
        return read_jsonl(file)
    if path.suffix == ".jsonl" or path.is_file():
        return read_jsonl(path)
    raise DatasetError(
        f"unknown dataset {text!r}: give 'sample', a .jsonl file, a folder from "
        "'triplesmith data prepare', or langsmith:NAME"
    )


def dataset_stats(examples: list[Example]) -> dict[str, object]:
    """Sentences, triples, triples per sentence and the sources, for `data stats`."""
    triples = sum(len(e.triples) for e in examples)
    sources: dict[str, int] = {}
    for example in examples:
        sources[example.source] = sources.get(example.source, 0) + 1
    return {
        "sentences": len(examples),
        "triples": triples,
        "triples_per_sentence": round(triples / len(examples), 3) if examples else 0.0,
        "sources": sources,
    }
