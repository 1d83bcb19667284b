"""One tiny SmolLM2 adapter trained with the project's training code, shared by the test modules
of a session (tests/test_adapter_portability.py, tests/test_export.py): training is the slow part.

It is trained with `TRIPLESMITH_CACHE_DIR` set to a cache folder of its own (`cache`), whose
converted SmolLM2 is a link to the real converted copy, so a test can move that cache away and
show that nothing in the adapter pointed into it.
"""

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from triplesmith.data.registry import load_dataset
from triplesmith.models import convert_embedded
from triplesmith.training.config import TrainConfig
from triplesmith.training.sft import train


@dataclass(frozen=True)
class TrainedAdapter:
    adapter: Path
    cache: Path  # the TRIPLESMITH_CACHE_DIR it was trained under


@functools.cache
def trained_adapter(root: Path) -> TrainedAdapter:
    """Train once per session under `root`: one optimizer step at a high learning rate on the
    shortest sample sentence, enough for the adapter to change the logits."""
    cache = root / "cache-at-training"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "smollm2").symlink_to(convert_embedded("smollm2"), target_is_directory=True)
    shortest = sorted(load_dataset("sample:train"), key=lambda e: len(e.sentence))[:1]
    data = root / "one.jsonl"
    data.write_text("".join(e.model_dump_json() + "\n" for e in shortest))
    config = TrainConfig(
        base="smollm2",
        dataset=str(data),
        out=root / "adapter",
        max_steps=1,
        batch_size=1,
        max_seq_len=256,
        learning_rate=5e-3,
        warmup_ratio=0.0,  # one step: a warmup would make its learning rate 0
    )
    before = os.environ.get("TRIPLESMITH_CACHE_DIR")
    os.environ["TRIPLESMITH_CACHE_DIR"] = str(cache)
    try:
        train(config)
    finally:
        if before is None:
            del os.environ["TRIPLESMITH_CACHE_DIR"]
        else:
            os.environ["TRIPLESMITH_CACHE_DIR"] = before
    return TrainedAdapter(adapter=config.out, cache=cache)
