"""`dataset_fingerprint`: the one hash of a list of examples, in adapter manifests and experiment
records alike, so an adapter and the experiments that used its data can be joined."""

import hashlib
import json
from collections.abc import Sequence

from triplesmith.schema import Example


def dataset_fingerprint(examples: Sequence[Example]) -> str:
    """A sha256 (16 hex digits) of the examples in order: ids, sentences, gold and meta."""
    digest = hashlib.sha256()
    for example in examples:
        record = example.model_dump(mode="json", include={"id", "sentence", "triples", "meta"})
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]
