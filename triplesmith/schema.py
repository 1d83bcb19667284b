"""The shared data model: a triple, an example, and their JSON form."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from triplesmith.text import collapse_whitespace


class Triple(BaseModel):
    """A (subject, relation, object) triple in the shared JSON format `{"s", "relation", "object"}`."""

    model_config = ConfigDict(frozen=True)

    s: str
    relation: str
    object: str

    @field_validator("s", "relation", "object", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        value = collapse_whitespace(value)
        if not value:
            raise ValueError("must be a non-empty string")
        return value

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.s, self.relation, self.object)


class Example(BaseModel):
    """A sentence with its gold triples.

    `meta` carries what a benchmark-exact scorer needs beyond the triple view:
    `carb_tuples` (a list of `{"relation": str, "args": [str, ...]}`, n-ary kept) for CaRB and
    `benchie_clusters` (a list of clusters, each a list of `[s, relation, object]` strings with
    optional tokens in `[brackets]`) for BenchIE.
    """

    id: str
    sentence: str
    triples: list[Triple] = Field(default_factory=list)
    source: str = "jsonl"
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sentence", mode="before")
    @classmethod
    def _sentence(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        value = collapse_whitespace(value)
        if not value:
            raise ValueError("must be a non-empty sentence")
        return value
