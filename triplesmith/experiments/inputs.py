"""What an experiment runs on, and what identifies it: the chain, the dataset, the evaluators,
the metadata recorded with the run, and the default key derived from them."""

import hashlib
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from triplesmith.chains.base import ExtractionChain
from triplesmith.chains.registry import get_chain
from triplesmith.data.registry import load_dataset
from triplesmith.errors import ExperimentError
from triplesmith.evaluators.base import Evaluator
from triplesmith.evaluators.registry import get_evaluators
from triplesmith.experiments.store import public_metadata
from triplesmith.schema import Example
from triplesmith.settings import get_settings

# Settings that only change how answers are scored, not how they are made: not in the key.
_SCORING_SETTINGS = ("judge_model", "triple_match_threshold")


def git_commit() -> str | None:
    """The commit of the checkout triplesmith runs from, if it is one."""
    try:
        result = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "experiment"


def resolve_dataset(dataset: str | Path | Sequence[Example]) -> tuple[list[Example], str]:
    """The examples and a label for them (the name or path, or `examples` for a list)."""
    if isinstance(dataset, str | Path):
        examples, label = load_dataset(dataset), str(dataset)
    else:
        examples, label = list(dataset), "examples"
        if not all(isinstance(e, Example) for e in examples):
            raise ExperimentError("dataset must be a name, a path, or a list of Example")
    if not examples:
        raise ExperimentError(f"dataset {label!r} has no examples")
    seen: set[str] = set()
    for example in examples:
        if example.id in seen:
            raise ExperimentError(
                f"dataset {label!r}: example id {example.id!r} appears twice; ids key the store"
            )
        seen.add(example.id)
    return examples, label


def resolve_evaluators(
    evaluators: str | Sequence[str | Evaluator], judge_model: BaseChatModel | str | None = None
) -> list[Evaluator]:
    """Evaluator objects from names (`"triple-f1,format"`) and/or objects, in order."""
    if isinstance(evaluators, str):
        return get_evaluators(evaluators, judge_model=judge_model)
    resolved: list[Evaluator] = []
    for item in evaluators:
        if isinstance(item, Evaluator):
            resolved.append(item)
        else:
            resolved.extend(get_evaluators(item, judge_model=judge_model))
    if not resolved:
        raise ExperimentError("no evaluators given; name some, e.g. 'triple-f1,format'")
    return resolved


def resolve_chain(
    chain: str | ExtractionChain, examples: Sequence[Example] = ()
) -> tuple[ExtractionChain, bool]:
    """The chain, and whether the graph can run it: the graph builds its chains from spec
    strings, so a spec runs through the graph and a chain object is called directly. A spec's
    few-shot pool may not hold any of `examples` (the ones evaluated): a leak is refused here,
    before any model call."""
    if isinstance(chain, str):
        return get_chain(chain, exclude_ids=[e.id for e in examples]), True
    if not isinstance(chain, ExtractionChain):
        raise ExperimentError(
            f"chain must be a spec string or an ExtractionChain, got {type(chain).__name__}"
        )
    return chain, False


def experiment_metadata(
    chain: ExtractionChain,
    label: str,
    fingerprint: str,
    size: int,
    via_graph: bool,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The experiment's metadata (no secrets): chain, model, adapter hash, prompt id, dataset
    and its hash, git commit, the public settings that make answers, plus `extra`."""
    import triplesmith

    return public_metadata(
        {
            **chain.metadata(),
            "provider": provider_of(chain),
            "dataset": label,
            "dataset_hash": fingerprint,
            "dataset_size": size,
            "via_graph": via_graph,
            "git_commit": git_commit(),
            "triplesmith_version": triplesmith.__version__,
            "settings": {
                k: v for k, v in get_settings().public_dict().items() if k not in _SCORING_SETTINGS
            },
            **(extra or {}),
        }
    )


def provider_of(chain: ExtractionChain) -> str:
    """`local` (a transformers model here), `openai`, or `chat` (another chat model)."""
    from triplesmith.chains.local import LocalChain
    from triplesmith.chains.spec import parse_spec

    if isinstance(chain, LocalChain):
        return "local"
    try:
        return "openai" if parse_spec(chain.spec).provider == "openai" else "chat"
    except Exception:  # a hand-made chain with a free-form spec
        return "chat"


def experiment_key(metadata: Mapping[str, Any]) -> str:
    """The default key: the chain spec plus a hash of what makes the answers (never of what
    scores them: stored answers are scored again, not regenerated, for a new evaluator)."""
    decisive = {
        k: metadata.get(k)
        for k in ("chain", "model", "adapter_hash", "prompt_id", "dataset_hash", "via_graph")
    }
    decisive["settings"] = metadata.get("settings")
    for optional in ("max_repairs", "decoding", "cpu_precision"):  # when present
        if metadata.get(optional) is not None:
            decisive[optional] = metadata[optional]
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode())
    return f"{slug(str(metadata.get('chain')))}-{digest.hexdigest()[:12]}"
