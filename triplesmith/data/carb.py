"""CaRB gold TSV: `sentence \t relation \t arg1 \t arg2 [\t arg3 ...]`, n-ary tuples kept."""

from pathlib import Path

from triplesmith.data.lines import read_lines
from triplesmith.errors import DatasetError
from triplesmith.schema import Example, Triple
from triplesmith.text import collapse_whitespace


def read_carb_gold(path: Path, split: str) -> list[Example]:
    """Examples grouped by sentence in order of first appearance, ids `carb-{split}-NNNN`.

    The triple view takes arg1 as subject and joins the remaining arguments into the object;
    the full tuples stay in `meta["carb_tuples"]` for the CaRB scorer. Tuples without a second
    argument (or with an empty relation or subject, which the gold has a few of) have no
    triple view and are counted in `meta["unary_tuples"]`.
    """
    path = Path(path)
    grouped: dict[str, Example] = {}
    for number, line in read_lines(path):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < 3:
            raise DatasetError(
                f"{path}:{number}: expected at least 3 tab-separated columns "
                f"(sentence, relation, arg1[, arg2 ...]), got {len(cells)}"
            )
        sentence = collapse_whitespace(cells[0])
        if not sentence:
            raise DatasetError(f"{path}:{number}: empty sentence in the first column")
        relation = collapse_whitespace(cells[1])
        args = [collapse_whitespace(cell) for cell in cells[2:]]
        while args and not args[-1]:
            args.pop()
        if not relation and not args:
            raise DatasetError(
                f"{path}:{number}: a CaRB tuple needs a relation or an argument, got only a sentence"
            )
        example = grouped.get(sentence)
        if example is None:
            example = Example(
                id=f"carb-{split}-{len(grouped) + 1:04d}",
                sentence=sentence,
                source=f"carb-{split}",
                meta={"carb_tuples": [], "unary_tuples": 0},
            )
            grouped[sentence] = example
        example.meta["carb_tuples"].append({"relation": relation, "args": args})
        objects = [arg for arg in args[1:] if arg]
        if relation and args and args[0] and objects:
            triple = Triple(s=args[0], relation=relation, object=" ".join(objects))
            if triple not in example.triples:
                example.triples.append(triple)
        else:
            example.meta["unary_tuples"] += 1
    return list(grouped.values())


def load_carb_dir(carb_dir: Path) -> dict[str, list[Example]]:
    """Both gold splits of a CaRB checkout: `{"dev": [...], "test": [...]}`."""
    carb_dir = Path(carb_dir)
    out = {}
    for split in ("dev", "test"):
        gold = carb_dir / "gold" / f"{split}.tsv"
        if not gold.is_file():
            raise DatasetError(
                f"{gold}: missing; --carb-dir must point at a CaRB checkout with gold/dev.tsv and "
                "gold/test.tsv (fetch one with: triplesmith data fetch carb --to DIR)"
            )
        out[split] = read_carb_gold(gold, split)
    return out
