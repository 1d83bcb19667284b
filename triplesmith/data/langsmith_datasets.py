"""Reading and writing datasets in LangSmith through `langsmith.Client`."""

import os
from typing import Any

from triplesmith.errors import DatasetError
from triplesmith.schema import Example, Triple


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


def read_langsmith_dataset(name: str, client: Any = None) -> list[Example]:
    """Examples of a LangSmith dataset whose inputs hold `sentence` and outputs `triples`;
    `name` may pin a version or tag and a split: `NAME@v2:test`, `NAME@prod`, `NAME:train`."""
    client = langsmith_client(client)
    dataset, as_of, split = parse_langsmith_name(name)
    options: dict[str, Any] = {}
    if as_of:
        options["as_of"] = as_of
    if split:
        options["splits"] = [split]
    examples = []
    for row in client.list_examples(dataset_name=dataset, **options):
        sentence = (row.inputs or {}).get("sentence")
        triples = (row.outputs or {}).get("triples", [])
        if not sentence:
            raise DatasetError(f"langsmith:{name}: example {row.id} has no inputs.sentence")
        examples.append(
            Example(
                id=example_key(row),
                sentence=sentence,
                triples=[Triple.model_validate(t) for t in triples],
                source=f"langsmith:{name}",
                meta={k: v for k, v in (row.metadata or {}).items() if k != "triplesmith_id"},
            )
        )
    return examples


def push_dataset(
    examples: list[Example], name: str, description: str = "", client: Any = None
) -> str:
    """Create (or extend) a LangSmith dataset with these examples; returns the dataset id.

    Examples are keyed by their triplesmith id in metadata (LangSmith's own id for examples
    made outside triplesmith), so pushing again, or pushing back a pulled dataset, adds only the
    examples not there yet.
    """
    client = langsmith_client(client)
    if client.has_dataset(dataset_name=name):
        dataset = client.read_dataset(dataset_name=name)
        present = {example_key(e) for e in client.list_examples(dataset_id=dataset.id)}
    else:
        dataset = client.create_dataset(dataset_name=name, description=description)
        present = set()
    fresh = [e for e in examples if e.id not in present]
    if fresh:
        client.create_examples(
            dataset_id=dataset.id,
            examples=[
                {
                    "inputs": {"sentence": e.sentence},
                    "outputs": {"triples": [t.model_dump() for t in e.triples]},
                    "metadata": {"triplesmith_id": e.id, "source": e.source, **e.meta},
                }
                for e in fresh
            ],
        )
    return str(dataset.id)
