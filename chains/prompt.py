"""The extraction prompt, versioned: the system prompt, the user turn, few-shot examples, repair turns."""

import json
import random
from collections.abc import Sequence

from triplesmith.errors import ChainError
from triplesmith.schema import Example, Triple

PROMPT_ID = "kg-triples-v1"

SYSTEM_PROMPT = (
    "You are a model tasked with extracting knowledge graph triples from a sentence. "
    'Each triple has three fields: "s", the subject, the main entity the statement is about; '
    '"relation", the relationship between the subject and the object; and "object", the entity '
    "or concept the subject is related to. Given an input sentence, output the triples it states "
    'as a JSON list of objects with the keys "s", "relation" and "object", and nothing else.'
)

# The reference workflow's user turn (also the OpenAI fine-tuning export format).
USER_TEMPLATE = "Extract triplets from the following sentence:\n\n{sentence}"

REPAIR_TEMPLATE = (
    "Your answer could not be used: {error}. Answer again with only a JSON list of objects "
    'with the keys "s", "relation" and "object", taken from the sentence.'
)


def answer_text(triples: Sequence[Triple]) -> str:
    """The canonical assistant answer: compact JSON in the shared format."""
    return json.dumps([t.model_dump() for t in triples], ensure_ascii=False)


def user_text(sentence: str) -> str:
    return USER_TEMPLATE.format(sentence=sentence)


def build_messages(
    sentence: str,
    shots: Sequence[Example] = (),
    repair: dict | None = None,
    system: bool = True,
) -> list[dict[str, str]]:
    """Chat messages (role/content dicts) for one sentence, with few-shot pairs and a repair turn.

    `repair` is `{"output": bad raw output, "error": what the parser said}`.
    """
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if system else []
    for shot in shots:
        messages.append({"role": "user", "content": user_text(shot.sentence)})
        messages.append({"role": "assistant", "content": answer_text(shot.triples)})
    messages.append({"role": "user", "content": user_text(sentence)})
    if repair:
        messages.append({"role": "assistant", "content": repair["output"]})
        messages.append({"role": "user", "content": REPAIR_TEMPLATE.format(error=repair["error"])})
    return messages


def select_shots(
    pool: Sequence[Example], k: int, seed: int = 0, exclude_ids: Sequence[str] = ()
) -> list[Example]:
    """k few-shot examples chosen by a seeded draw from a training pool.

    Refuses a pool that contains any of `exclude_ids` (the test split's ids): few-shot
    examples must never come from the test split.
    """
    if k <= 0:
        return []
    overlap = {e.id for e in pool} & set(exclude_ids)
    if overlap:
        shown = ", ".join(sorted(overlap)[:5])
        raise ChainError(
            f"few-shot pool overlaps the test split ({len(overlap)} ids, e.g. {shown}); "
            "draw examples from the training split only"
        )
    usable = [e for e in pool if e.triples]
    if len(usable) < k:
        raise ChainError(f"few-shot needs {k} examples with triples, the pool has {len(usable)}")
    return random.Random(seed).sample(usable, k)
