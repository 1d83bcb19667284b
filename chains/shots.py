"""Few-shot example selection: a seeded draw from a training pool, or the most similar sentences."""

from collections.abc import Sequence

from rapidfuzz import fuzz, process

from triplesmith.chains.prompt import select_shots
from triplesmith.errors import ChainError
from triplesmith.schema import Example


class ShotSelector:
    """Chooses k examples for a sentence. The pool must not contain any test id (checked once).

    `similar=False` (default): one seeded draw, the same k examples for every sentence.
    `similar=True`: the k pool sentences most similar to the input (rapidfuzz token-set ratio),
    never the input sentence itself.
    """

    def __init__(
        self,
        pool: Sequence[Example],
        k: int,
        seed: int = 0,
        exclude_ids: Sequence[str] = (),
        similar: bool = False,
    ) -> None:
        self.k = k
        self.similar = similar
        self.fixed = select_shots(pool, k, seed=seed, exclude_ids=exclude_ids)
        self.pool = [e for e in pool if e.triples]
        if similar and len(self.pool) <= k:
            raise ChainError(f"similar few-shot needs more than {k} pool examples with triples")

    def for_sentence(self, sentence: str) -> list[Example]:
        if not self.similar or self.k == 0:
            return self.fixed
        choices = {i: e.sentence for i, e in enumerate(self.pool) if e.sentence != sentence}
        best = process.extract(sentence, choices, scorer=fuzz.token_set_ratio, limit=self.k)
        return [self.pool[i] for _, _, i in best]
