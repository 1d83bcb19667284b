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


def read_langsmith_dataset(name: str, client: Any = None) -> list[Example]:
    """Examples of a LangSmith dataset whose inputs hold `sentence` and outputs `triples`."""
    client = langsmith_client(client)
    examples = []
    for row in client.list_examples(dataset_name=name):
        sentence = (row.inputs or {}).get("sentence")
        triples = (row.outputs or {}).get("triples", [])
        if not sentence:
            raise DatasetError(f"langsmith:{name}: example {row.id} has no inputs.sentence")
        examples.append(
            Example(
                id=str((row.metadata or {}).get("triplesmith_id", row.id)),
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

    Examples are keyed by their triplesmith id in metadata so re-pushing adds only new ones.
    """
    client = langsmith_client(client)
    if client.has_dataset(dataset_name=name):
        dataset = client.read_dataset(dataset_name=name)
        present = {
            (e.metadata or {}).get("triplesmith_id")
            for e in client.list_examples(dataset_id=dataset.id)
        }
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
