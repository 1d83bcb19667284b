"""`run_experiment`: one chain over one dataset through `langsmith.evaluate`, stored as it runs.

The target is the extraction graph (extract, parse, triage, repair) for a chain spec, or the
chain itself. Each example is written to the store by this function's thread as `evaluate`
streams its rows (`blocking=False`): one writer, one transaction per example, right after that
example's evaluators ran. An example whose model call failed is stored as failed, with its
error and no scores; errors are not results. A rerun with the same key sends the examples not
yet finished (never run, or failed) to `evaluate`, and a failed row is replaced by the new run.
Corpus-level feedback (CaRB AUC, BenchIE, micro F1) is computed from the store afterwards over
the finished examples, so it covers every answer however many runs it took.
"""

import logging
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langsmith import Client, evaluate, schemas
from pydantic import BaseModel

from triplesmith.chains.base import ExtractionChain
from triplesmith.errors import ExperimentError
from triplesmith.evaluators.base import Evaluator, Feedback, summarise_all
from triplesmith.evaluators.langsmith_adapter import outputs_from_run, row_evaluator
from triplesmith.experiments.inputs import (
    DEFAULT_EVALUATORS,
    dataset_fingerprint,
    experiment_key,
    experiment_metadata,
    resolve_chain,
    resolve_dataset,
    resolve_evaluators,
    slug,
)
from triplesmith.experiments.langsmith_setup import (
    experiment_client,
    langsmith_configured,
    no_tracing,
    untraced,
)
from triplesmith.experiments.store import ExperimentRecord, ExperimentStore, StoredExample
from triplesmith.schema import Example

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
_NAMESPACE = uuid.UUID("6f0f5a4e-2b1d-4c55-9a43-7d1c2e9b8a10")

Progress = Callable[[int, int], None]
"""Called with (examples finished, examples in the run): once at the start, then per example."""


class ExperimentResult(BaseModel):
    """An experiment's stored examples (dataset order) and corpus-level feedback.

    `rows` holds finished and failed examples; `skipped` examples were finished by an earlier
    run with the same key; `ran` were stored by this one (finished or failed); `failed` counts
    the stored examples whose model call failed (no scores; the next run retries them);
    `complete` is True when every selected example is stored and finished.
    """

    record: ExperimentRecord
    rows: list[StoredExample]
    summary: list[Feedback]
    skipped: int
    ran: int
    total: int
    store: Path
    langsmith_url: str | None = None

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def chain(self) -> str:
        return self.record.chain

    @property
    def failed(self) -> int:
        return sum(row.failed for row in self.rows)

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.total and not self.failed

    def scores(self, key: str) -> list[float | None]:
        """Per-example scores of one feedback key, in dataset order."""
        return [row.score(key) for row in self.rows]


def _graph() -> Any:
    try:
        from triplesmith.graph import get_graph
    except ImportError:
        return None
    return get_graph()


def _langsmith_examples(
    examples: Sequence[Example], dataset_id: uuid.UUID
) -> list[schemas.Example]:
    """Local LangSmith examples in the shape `push_dataset` writes (no server involved)."""
    return [
        schemas.Example(
            id=uuid.uuid5(_NAMESPACE, f"{dataset_id}:{e.id}"),
            dataset_id=dataset_id,
            inputs={"sentence": e.sentence},
            outputs={"triples": [t.model_dump() for t in e.triples]},
            metadata={"triplesmith_id": e.id, "source": e.source, **e.meta},
        )
        for e in examples
    ]


def _pushed_examples(
    client: Client, examples: Sequence[Example], name: str
) -> list[schemas.Example]:
    """Push the dataset to LangSmith (reusing what is there) and return its examples."""
    from triplesmith.data.langsmith_datasets import push_dataset

    dataset_id = push_dataset(list(examples), name, "triplesmith experiment dataset", client)
    by_id = {
        str((row.metadata or {}).get("triplesmith_id")): row
        for row in client.list_examples(dataset_id=dataset_id)
    }
    missing = [e.id for e in examples if e.id not in by_id]
    if missing:
        raise ExperimentError(f"LangSmith dataset {name!r} lacks examples {missing[:5]} after push")
    return [by_id[e.id] for e in examples]


def _feedback(result: Any) -> Feedback:
    """Our Feedback from one of `evaluate`'s EvaluationResults."""
    extra = getattr(result, "extra", None) or {}
    comment = getattr(result, "comment", None)
    score = getattr(result, "score", None)
    if extra.get("error") or score is None:
        return Feedback(key=result.key, error=comment or "no score")
    try:
        return Feedback(key=result.key, score=float(score), comment=comment)
    except (TypeError, ValueError) as exc:
        return Feedback(key=result.key, error=f"unusable score {score!r}: {exc}")


def _stored_row(
    key: str, row: Mapping[str, Any], examples: Mapping[str, Example], positions: Mapping[str, int]
) -> StoredExample:
    run, ls_example = row["run"], row["example"]
    example = examples[str((ls_example.metadata or {}).get("triplesmith_id"))]
    if run is None:
        outputs: dict[str, Any] = {"triples": [], "error": "the target recorded no run"}
    else:
        outputs = outputs_from_run(run)
    tags = outputs.get("tags")
    names = None
    if isinstance(tags, list):
        names = [str(t.get("name")) if isinstance(t, Mapping) else str(t) for t in tags]
    latency = None
    if run is not None and run.end_time is not None:
        latency = (run.end_time - run.start_time).total_seconds()
    error = (run.error if run is not None else None) or outputs.get("error")
    if error:  # a failed run: its error is kept with it, and it has no scores
        outputs["error"] = str(error)
    return StoredExample(
        experiment=key,
        example_id=example.id,
        position=positions.get(example.id),
        example=example,
        outputs=outputs,
        feedback=[] if error else [_feedback(r) for r in row["evaluation_results"]["results"]],
        tags=names,
        error=str(error) if error else None,
        latency_s=latency,
        tokens_in=int(outputs.get("tokens_in") or 0),
        tokens_out=int(outputs.get("tokens_out") or 0),
    )


def _target(
    chain: ExtractionChain,
    graph: Any,
    examples: Mapping[str, Example],
    offline: bool,
    stop: threading.Event,
    max_repairs: int | None = None,
) -> Callable[[dict, dict], dict]:
    spec = chain.spec
    configurable: dict[str, Any] = {"chain": spec}
    if max_repairs is not None:
        configurable["max_repairs"] = max_repairs

    def extract(inputs: dict, metadata: dict) -> dict:
        if stop.is_set():  # interrupted: return at once; the store never sees this row
            return {"triples": [], "error": "the run was interrupted before this example"}
        example = examples[str(metadata["triplesmith_id"])]
        with no_tracing(offline):
            if graph is None:
                return chain.invoke({"sentence": example.sentence}).to_output()
            state = graph.invoke(
                {
                    "sentence": example.sentence,
                    "gold": [t.model_dump() for t in example.triples],
                    "example_id": example.id,
                },
                config={"configurable": configurable},
            )
        results = state["results"]
        return results[spec] if spec in results else next(iter(results.values()))

    return extract


def run_experiment(
    chain: str | ExtractionChain,
    dataset: str | Path | Sequence[Example],
    evaluators: str | Sequence[str | Evaluator] = DEFAULT_EVALUATORS,
    *,
    key: str | None = None,
    name: str | None = None,
    max_concurrency: int = DEFAULT_CONCURRENCY,
    store: str | Path | ExperimentStore | None = None,
    metadata: Mapping[str, Any] | None = None,
    via_graph: bool = True,
    limit: int | None = None,
    judge_model: BaseChatModel | str | None = None,
    upload: bool | None = None,
    client: Client | None = None,
    langsmith_dataset: str | None = None,
    progress: Progress | None = None,
    max_repairs: int | None = None,
) -> ExperimentResult:
    """Run `chain` over `dataset` (the first `limit` examples) with `evaluators`.

    chain: a spec (`few-shot:smollm2`) or an ExtractionChain; the graph runs it when
        `via_graph` and it can (tags, repair), else the chain is called directly (no tags).
    dataset: a name or path for `load_dataset`, or a list of Example.
    key: the experiment's key in the store; by default the chain spec and a hash of the chain,
        prompt, dataset, evaluators and settings, so rerunning the same call resumes it.
    max_concurrency: examples in flight at once; local models batch these into one generate.
    max_repairs: re-asks after a format error in the graph (default: settings, 1); recorded in
        the metadata, so it is part of the experiment's key.
    store: the SQLite store (a path or an open store); default `~/.cache/triplesmith/`.
    upload: send the experiment to LangSmith; default when `LANGSMITH_API_KEY` is set.
        Without upload nothing touches the network.
    """
    if limit is not None and limit < 1:
        raise ExperimentError(f"limit must be at least 1, got {limit}")
    if max_concurrency < 0:
        raise ExperimentError(f"max_concurrency must be 0 or more, got {max_concurrency}")
    if max_repairs is not None and max_repairs < 0:
        raise ExperimentError(f"max_repairs must be 0 or more, got {max_repairs}")
    runnable, graph_can_run = resolve_chain(chain)
    examples, label = resolve_dataset(dataset)
    fingerprint = dataset_fingerprint(examples)
    selected = examples[:limit] if limit else examples
    scorers = resolve_evaluators(evaluators, judge_model)
    graph = _graph() if via_graph and graph_can_run else None
    extra = dict(metadata or {})
    if max_repairs is not None and graph is not None:
        extra["max_repairs"] = max_repairs
    meta = experiment_metadata(
        runnable, label, fingerprint, len(examples), scorers, graph is not None, extra
    )
    key = key or experiment_key(meta)
    opened = not isinstance(store, ExperimentStore)
    db = ExperimentStore(store) if opened else store  # type: ignore[arg-type]
    try:
        record = db.begin(
            ExperimentRecord(
                key=key,
                name=name or slug(runnable.spec),
                chain=runnable.spec,
                dataset=f"{label}@{fingerprint}",
                metadata=meta,
            )
        )
        done = db.finished_ids(key)
        todo = [e for e in selected if e.id not in done]
        skipped = len(selected) - len(todo)
        upload = langsmith_configured() if upload is None else upload
        if progress:
            progress(skipped, len(selected))
        if upload and skipped and todo and not record.langsmith_id:
            logger.warning(
                "experiment %s: %d examples were finished offline; the new LangSmith experiment "
                "holds only the %d run now (the local store holds all)",
                key,
                skipped,
                len(todo),
            )
        ran, url = 0, None
        ls_client = experiment_client(upload, client) if todo or upload else None
        if todo:
            ran, url = _evaluate(
                db,
                record,
                runnable,
                graph,
                scorers,
                todo,
                upload=upload,
                client=ls_client,
                dataset_name=langsmith_dataset or _dataset_name(label, fingerprint),
                max_concurrency=max_concurrency,
                max_repairs=max_repairs,
                positions={e.id: i for i, e in enumerate(examples)},
                progress=(lambda n: progress(skipped + n, len(selected))) if progress else None,
            )
            record = db.experiment(key) or record
        stored = {row.example_id: row for row in db.rows(key)}
        rows = [stored[e.id] for e in selected if e.id in stored]
        summary = _summarise(db, key, scorers, rows)
        _warn_failed(key, rows)
        result = ExperimentResult(
            record=record,
            rows=rows,
            summary=summary,
            skipped=skipped,
            ran=ran,
            total=len(selected),
            store=db.path,
            langsmith_url=url,
        )
        if upload and result.complete and record.langsmith_id and ran:
            _upload_summary(ls_client, record.langsmith_id, summary)
        return result
    finally:
        if opened:
            db.close()


def _dataset_name(label: str, fingerprint: str) -> str:
    if label.startswith("langsmith:"):
        return label.split(":", 1)[1]
    return f"triplesmith-{slug(Path(label).name if '/' in label else label)}-{fingerprint[:8]}"


def _summarise(
    db: ExperimentStore, key: str, scorers: Sequence[Evaluator], rows: Sequence[StoredExample]
) -> list[Feedback]:
    """Corpus-level feedback over the finished rows (failed ones have no answer to count)."""
    finished = [r for r in rows if not r.failed]
    summary = summarise_all(scorers, [r.outputs for r in finished], [r.example for r in finished])
    db.save_summary(key, summary, len(finished))
    return summary


def _warn_failed(key: str, rows: Sequence[StoredExample]) -> None:
    failed = [r for r in rows if r.failed]
    if failed:
        logger.warning(
            "experiment %s: %d of %d examples failed and are not scored (first: %s: %s); "
            "run the same experiment again to retry them",
            key,
            len(failed),
            len(rows),
            failed[0].example_id,
            failed[0].error,
        )


def _upload_summary(client: Client, experiment_id: str, summary: Sequence[Feedback]) -> None:
    for feedback in summary:
        if feedback.score is not None:
            client.create_feedback(
                key=feedback.key,
                score=feedback.score,
                comment=feedback.comment,
                project_id=experiment_id,
            )


def _evaluate(
    db: ExperimentStore,
    record: ExperimentRecord,
    chain: ExtractionChain,
    graph: Any,
    scorers: Sequence[Evaluator],
    todo: Sequence[Example],
    *,
    upload: bool,
    client: Client,
    dataset_name: str,
    max_concurrency: int,
    max_repairs: int | None,
    positions: Mapping[str, int],
    progress: Callable[[int], None] | None,
) -> tuple[int, str | None]:
    """Run `evaluate` over `todo`, storing each row as it streams; (rows stored, URL)."""
    offline = not upload
    if upload:
        data = _pushed_examples(client, todo, dataset_name)
    else:
        data = _langsmith_examples(todo, uuid.uuid5(_NAMESPACE, record.dataset))
    by_id = {e.id: e for e in todo}
    stop = threading.Event()
    chain.resume()  # a previous run in this process may have been interrupted
    options: dict[str, Any] = {}
    if upload and record.langsmith_id:
        options["experiment"] = record.langsmith_id  # resume into the same LangSmith experiment
    elif upload:
        options["experiment_prefix"] = record.name
    stored = 0
    url = None
    # Ctrl-C can land while `evaluate` is still starting its workers, not only while rows
    # stream: either way the workers must be told to stop, or the process waits for them.
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*'upload_runs' parameter is in beta")
            results = evaluate(
                _target(chain, graph, by_id, offline, stop, max_repairs),
                data=data,
                evaluators=[untraced(row_evaluator(e), offline) for e in scorers],
                metadata={**record.metadata, "experiment_key": record.key},
                max_concurrency=max_concurrency,
                client=client,
                upload_results=upload,
                blocking=False,
                **options,
            )
        if upload:
            try:
                url = results.url
            except Exception:  # the URL needs the server's tenant info; the run goes on without
                url = None
            if not record.langsmith_id:
                db.set_langsmith_id(record.key, str(results.experiment_id))
        for row in results:
            if db.add(_stored_row(record.key, row, by_id, positions)):
                stored += 1
                if progress:
                    progress(stored)
    except BaseException:
        stop.set()  # queued examples return at once, none of them stored
        chain.cancel()  # and the batch in flight stops at its next decode step
        raise
    if upload:
        client.flush()
    return stored, url
