"""`curate`: an experiment's failures as a new dataset, for correction and the next training round.

An example is selected when its score on `metric` is below `below`, or when it carries any of
`tags`. The curated examples keep their id, sentence and gold triples; `meta["curated"]` adds
what went wrong (experiment, chain, score, tags, the prediction and raw output) for a reviewer.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from triplesmith.data.jsonl import write_jsonl
from triplesmith.errors import ExperimentError
from triplesmith.experiments.langsmith_setup import langsmith_configured
from triplesmith.experiments.result import ExperimentResult
from triplesmith.experiments.store import ExperimentStore, StoredExample
from triplesmith.run_config import RunConfig
from triplesmith.schema import Example

RAW_CHARS = 2000


def _selected(
    row: StoredExample, metric: str | None, below: float | None, tags: Sequence[str]
) -> bool:
    if metric is not None and below is not None:
        score = row.score(metric)
        if score is not None and score < below:
            return True
    return bool(set(tags) & set(row.tags or []))


def _curated(row: StoredExample, chain: str, metric: str | None) -> Example:
    outputs = row.outputs
    note: dict[str, Any] = {
        "experiment": row.experiment,
        "chain": chain,
        "tags": row.tags or [],
        "prediction": outputs.get("triples", []),
        "raw": str(outputs.get("raw", ""))[:RAW_CHARS],
        "error": row.error,
    }
    if metric is not None:
        note[metric] = row.score(metric)
    return row.example.model_copy(update={"meta": {**row.example.meta, "curated": note}})


def _rows(
    experiment: str | ExperimentResult, store: str | Path | ExperimentStore | None
) -> tuple[str, str, list[StoredExample]]:
    if isinstance(experiment, ExperimentResult):
        return experiment.key, experiment.chain, experiment.rows
    opened = not isinstance(store, ExperimentStore)
    db = ExperimentStore(store) if opened else store  # type: ignore[arg-type]
    try:
        record = db.experiment(experiment)
        if record is None:
            known = ", ".join(r.key for r in db.experiments()[-10:]) or "none"
            raise ExperimentError(
                f"no experiment {experiment!r} in the store {db.path}; recent keys: {known}"
            )
        return record.key, record.chain, db.rows(record.key)
    finally:
        if opened:
            db.close()


def curate(
    experiment: str | ExperimentResult,
    config: RunConfig | None = None,
    *,
    metric: str | None = None,
    below: float | None = None,
    tags: Sequence[str] = (),
    out: str | Path | None = None,
    **options: Any,
) -> list[Example]:
    """The examples of `experiment` (a key in the store, or a result) that failed.

    metric, below: select examples whose `metric` score is below `below` (e.g. "triple_f1",
        0.5); an example without that score (an evaluator error) is not selected by it.
    tags: select examples with any of these triage tags (e.g. ["hallucination"]).
    out: write the selection as JSONL in the shared format.
    config / options: the `RunConfig` fields used here: `store` (where a key is looked up),
        `upload` (push the selection to the LangSmith dataset `<experiment key>-curated`;
        default when LANGSMITH_API_KEY is set) and `client`.
    """
    config = RunConfig.of(config, **options)
    store, upload = config.store, config.upload
    if (metric is None) != (below is None):
        raise ExperimentError("curate needs metric and below together, e.g. triple_f1 below 0.5")
    if metric is None and not tags:
        raise ExperimentError("curate needs a metric threshold (metric=, below=) or tags=")
    key, chain, rows = _rows(experiment, store)
    if metric is not None and rows and not any(row.score(metric) is not None for row in rows):
        if all(row.failed for row in rows):  # errors are not results: nothing was scored
            raise ExperimentError(
                f"experiment {key!r} has no answers to curate: all {len(rows)} of its examples "
                f"failed (the first: {rows[0].error}); fix that and run it again"
            )
        keys = sorted({f.key for row in rows for f in row.feedback})
        raise ExperimentError(
            f"experiment {key!r} has no {metric!r} scores; its feedback keys are {keys}"
        )
    curated = [_curated(row, chain, metric) for row in rows if _selected(row, metric, below, tags)]
    if out is not None:
        write_jsonl(Path(out), curated)
    if curated and (langsmith_configured() if upload is None else upload):
        from triplesmith.data.langsmith_datasets import push_dataset

        push_dataset(
            curated,
            f"{key}-curated",
            f"failures of experiment {key} ({chain}) for correction and retraining",
            config.client,
        )
    return curated
