"""BenchIE fact-synset gold: `sent_id:N \t sentence`, clusters of `subj --> rel --> obj` triples.

The one reader of the format: datasets load it here, and the BenchIE scorer
(`evaluators/benchie.py`) reads gold files through it."""

import re
from pathlib import Path

from triplesmith.data.lines import read_lines
from triplesmith.errors import DatasetError
from triplesmith.schema import Example, Triple
from triplesmith.text import collapse_whitespace

_HEADER = re.compile(r"^sent_id:(\d+)\t(.*)$")
_CLUSTER = re.compile(r"^\d+\s*-->\s*Cluster\s*\d+\s*:?\s*$", re.IGNORECASE)
_BRACKETS = re.compile(r"[\[\]]")


def strip_optional_marks(text: str) -> str:
    """`[the] first Prime Minister` -> `the first Prime Minister` (optional tokens kept)."""
    return collapse_whitespace(_BRACKETS.sub("", text))


def read_benchie_gold(path: Path) -> list[Example]:
    """One example per sentence, ids `benchie-N`, clusters in `meta["benchie_clusters"]`.

    The triple view takes the first triple of each cluster with its optional tokens kept.
    """
    path = Path(path)
    examples: list[Example] = []
    current: Example | None = None
    cluster: list[list[str]] | None = None
    seen: set[int] = set()
    for number, line in read_lines(path):
        if not line.strip():
            continue
        header = _HEADER.match(line)
        if header:
            sentence = collapse_whitespace(header.group(2))
            if not sentence:
                raise DatasetError(
                    f"{path}:{number}: empty sentence after sent_id:{header.group(1)}"
                )
            if int(header.group(1)) in seen:
                raise DatasetError(
                    f"{path}:{number}: sent_id {header.group(1)} appears twice; ids must be unique"
                )
            seen.add(int(header.group(1)))
            current = Example(
                id=f"benchie-{header.group(1)}",
                sentence=sentence,
                source="benchie",
                meta={"benchie_sent_id": int(header.group(1)), "benchie_clusters": []},
            )
            examples.append(current)
            cluster = None
            continue
        if current is None:
            raise DatasetError(f"{path}:{number}: expected a `sent_id:N<TAB>sentence` header first")
        if _CLUSTER.match(line):
            cluster = []
            current.meta["benchie_clusters"].append(cluster)
            continue
        parts = [part.strip() for part in line.split("-->")]
        if cluster is None and len(parts) == 3:
            raise DatasetError(
                f"{path}:{number}: triple before any `N--> Cluster K:` header; start a cluster"
            )
        if cluster is None or len(parts) != 3 or not all(parts):
            raise DatasetError(
                f"{path}:{number}: expected `subject --> relation --> object` inside a cluster, "
                f"got {line[:80]!r}"
            )
        cluster.append(parts)
        if len(cluster) == 1:
            s, relation, obj = (strip_optional_marks(p) for p in parts)
            current.triples.append(Triple(s=s, relation=relation, object=obj))
    return examples
