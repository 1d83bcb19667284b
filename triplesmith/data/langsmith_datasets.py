"""Reading and writing datasets in LangSmith through `langsmith.Client`.

One LangSmith dataset per name. Pushing content makes that dataset's latest version hold exactly
those examples (added, updated and deleted in place, so LangSmith keeps the older versions) and
tags that version with the content's `dataset_fingerprint`; content whose tag is already there
is not pushed again. Datasets that earlier versions of triplesmith named by content hash
(`triplesmith-LABEL-HASH8`) are left as they are.

An example is pushed as `inputs.sentence`, `outputs.triples` plus the example's benchmark
metadata (`Example.meta`: `carb_tuples`, `benchie_clusters`) beside the triples in `outputs`, so
that `(inputs, outputs, reference_outputs)` evaluators see it, and `metadata` holding the
triplesmith id and source. Examples pushed by earlier versions (meta in `metadata`) and
datasets made outside triplesmith are read as well: both parts become the example's meta.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triplesmith.data.fingerprint import dataset_fingerprint
from triplesmith.errors import DatasetError
from triplesmith.schema import Example, Triple

OWN_KEYS = ("triplesmith_id", "source")
"""The metadata keys triplesmith pushes, which are not part of `Example.meta`."""

LANGSMITH_KEYS = ("dataset_split",)
"""Metadata keys LangSmith itself keeps on examples (split membership), not ours to read."""


def langsmith_client(client: Any = None) -> Any:
    """The given client, or a new one; needs `LANGSMITH_API_KEY` when none is given."""
    if client is not None:
        return client
    if not os.environ.get("LANGSMITH_API_KEY"):
        raise DatasetError(
            "LangSmith datasets need LANGSMITH_API_KEY in the environment; "
            "without a key, use a JSONL path or the embedded 'sample' dataset"
        )
    from langsmith import Client

    return Client()


def parse_langsmith_name(text: str) -> tuple[str, str | None, str | None]:
    """`NAME[@VERSION_OR_TAG][:SPLIT]` as (name, as_of, split)."""
    rest, _, split = text.partition(":")
    name, _, as_of = rest.partition("@")
    if not name:
        raise DatasetError(f"langsmith:{text}: expected langsmith:NAME[@VERSION_OR_TAG][:SPLIT]")
    return name, as_of or None, split or None


def example_key(row: Any) -> str:
    """The id an example pulled from LangSmith has here: the triplesmith id it was pushed with,
    else LangSmith's own id (a dataset made outside triplesmith), so pushing it back finds it."""
    return str((row.metadata or {}).get("triplesmith_id") or row.id)


def example_fields(example: Example) -> dict[str, Any]:
    """The `inputs`, `outputs` and `metadata` an example is pushed with."""
    return {
        "inputs": {"sentence": example.sentence},
        "outputs": {**example.meta, "triples": [t.model_dump() for t in example.triples]},
        "metadata": {"triplesmith_id": example.id, "source": example.source},
    }


def example_meta(
    outputs: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None
) -> dict[str, Any]:
    """An example's benchmark metadata: metadata keys besides ours and LangSmith's (datasets
    pushed by earlier versions or made elsewhere), then outputs besides `triples`."""
    skipped = (*OWN_KEYS, *LANGSMITH_KEYS)
    meta = {k: v for k, v in (metadata or {}).items() if k not in skipped}
    meta.update({k: v for k, v in (outputs or {}).items() if k != "triples"})
    return meta


def example_from_fields(
    example_id: str,
    inputs: Mapping[str, Any] | None,
    outputs: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    source: str = "langsmith",
) -> Example:
    """Our `Example` from LangSmith's parts: `inputs.sentence`, `outputs.triples` (and the
    benchmark metadata beside them), `metadata`. Raises `DatasetError` naming the example."""
    inputs, outputs, metadata = inputs or {}, outputs or {}, metadata or {}
    sentence = inputs.get("sentence")
    if not isinstance(sentence, str) or not sentence.strip():
        raise DatasetError(f"LangSmith example {example_id}: inputs.sentence must be a sentence")
    triples = outputs.get("triples", [])
    if not isinstance(triples, list):
        raise DatasetError(
            f"LangSmith example {example_id}: outputs.triples must be a list of "
            f'{{"s", "relation", "object"}}, got {type(triples).__name__}'
        )
    try:
        gold = [Triple.model_validate(t) for t in triples]
    except ValueError as exc:
        raise DatasetError(
            f"LangSmith example {example_id}: outputs.triples holds a bad triple: {exc}"
        ) from None
    return Example(
        id=str(metadata.get("triplesmith_id", example_id)),
        sentence=sentence,
        triples=gold,
        source=str(metadata.get("source", source)),
        meta=example_meta(outputs, metadata),
    )


def pull_examples(name: str, client: Any = None) -> list[Any]:
    """The LangSmith examples of `NAME[@VERSION_OR_TAG][:SPLIT]`, as LangSmith gives them."""
    client = langsmith_client(client)
    dataset, as_of, split = parse_langsmith_name(name)
    options: dict[str, Any] = {}
    if as_of:
        options["as_of"] = as_of
    if split:
        options["splits"] = [split]
    return list(client.list_examples(dataset_name=dataset, **options))


def read_langsmith_dataset(name: str, client: Any = None) -> list[Example]:
    """Examples of a LangSmith dataset whose inputs hold `sentence` and outputs `triples`;
    `name` may pin a version or tag and a split: `NAME@v2:test`, `NAME@prod`, `NAME:train`."""
    examples = []
    for row in pull_examples(name, client):
        try:
            example = example_from_fields(example_key(row), row.inputs, row.outputs, row.metadata)
        except DatasetError as exc:
            raise DatasetError(f"langsmith:{name}: {exc}") from None
        examples.append(example.model_copy(update={"source": f"langsmith:{name}"}))
    return examples


@dataclass(frozen=True)
class PushedDataset:
    """Where `push_dataset` left the content: the dataset and the version tag that holds it;
    `changed` counts the examples added, updated or deleted (0: nothing was pushed)."""

    dataset_id: str
    tag: str
    changed: int


def push_dataset(
    examples: Sequence[Example], name: str, description: str = "", client: Any = None
) -> PushedDataset:
    """Make the LangSmith dataset `name` hold exactly `examples`, as a version tagged with their
    `dataset_fingerprint`; content already tagged there is not pushed again.

    Examples are matched by their triplesmith id in metadata (LangSmith's own id for examples
    made outside triplesmith): new ones are created, changed ones updated in place, ones no
    longer in the content deleted. Each change makes a new version of the one dataset; the
    versions before it, and their tags, stay readable (`langsmith:NAME@TAG`).
    """
    from langsmith.utils import LangSmithNotFoundError

    client = langsmith_client(client)
    tag = dataset_fingerprint(examples)
    if client.has_dataset(dataset_name=name):
        dataset = client.read_dataset(dataset_name=name)
        try:
            client.read_dataset_version(dataset_id=dataset.id, tag=tag)
            return PushedDataset(str(dataset.id), tag, 0)  # this content is a version already
        except LangSmithNotFoundError:
            pass
        present = {example_key(row): row for row in client.list_examples(dataset_id=dataset.id)}
    else:
        dataset = client.create_dataset(dataset_name=name, description=description)
        present = {}
    wanted = {e.id: example_fields(e) for e in examples}
    fresh = [
        {"inputs": f["inputs"], "reference_outputs": f["outputs"], "metadata": f["metadata"]}
        for key, f in wanted.items()
        if key not in present
    ]
    changed = [
        {"id": present[key].id, **fields}
        for key, fields in wanted.items()
        if key in present and not _same(present[key], fields)
    ]
    gone = [row.id for key, row in present.items() if key not in wanted]
    if fresh:
        client.create_examples(dataset_id=dataset.id, examples=fresh)
    if changed:
        client.update_examples(dataset_id=dataset.id, updates=changed)
    if gone:
        client.delete_examples(gone)
    latest = client.read_dataset_version(dataset_id=dataset.id, tag="latest")
    client.update_dataset_tag(dataset_id=dataset.id, as_of=latest.as_of, tag=tag)
    return PushedDataset(str(dataset.id), tag, len(fresh) + len(changed) + len(gone))


def _same(row: Any, fields: Mapping[str, Any]) -> bool:
    metadata = {k: v for k, v in (row.metadata or {}).items() if k not in LANGSMITH_KEYS}
    return (
        (row.inputs or {}) == fields["inputs"]
        and (row.outputs or {}) == fields["outputs"]
        and metadata == fields["metadata"]
    )
