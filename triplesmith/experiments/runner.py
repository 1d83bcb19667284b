"""`run_experiment`: one chain over one dataset through `langsmith.evaluate`, stored as it runs.

The target is the extraction graph (extract, parse, triage, repair; told not to score) for a
chain spec, or the chain itself; the run's evaluators score each answer once, in `evaluate`.
Each example is written to the store by this function's thread as `evaluate` streams its rows
(`blocking=False`): one writer, one transaction per example, its answer and its scores. An
example whose model call failed is stored as failed, with its error and no scores; errors are
not results. The experiment's key names how the answers were made, not how they are scored: a
rerun sends only the examples not yet answered (never run, or failed) to `evaluate`, and
scores stored answers that lack one of the run's evaluators without generating anything.
Corpus-level feedback (CaRB AUC, BenchIE, micro F1) is computed from the store afterwards over
the finished examples, so it covers every answer however many runs it took; with upload, the
same figures reach LangSmith through `evaluate`'s `summary_evaluators` (over this run's answers
and the stored ones) once the experiment is complete.

With upload, a dataset from a file or a list is pushed to the one LangSmith dataset
`triplesmith-LABEL` as a version tagged with its `dataset_fingerprint` (nothing is pushed when
that tag is there), and the experiment runs over that version; a dataset pulled from LangSmith
(`langsmith:NAME@TAG:SPLIT`) runs over the version it was pulled at and is never pushed.
"""

import contextlib
import io
import logging
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from langsmith import Client, evaluate, schemas

from triplesmith.chains.base import ExtractionChain
from triplesmith.data.fingerprint import dataset_fingerprint
from triplesmith.data.langsmith_datasets import (
    example_fields,
    example_key,
    pull_examples,
    push_dataset,
)
from triplesmith.errors import ExperimentError
from triplesmith.evaluators.base import Evaluator, Feedback, RunOutputs
from triplesmith.evaluators.langsmith_adapter import (
    EVALUATOR_KEY,
    langsmith_evaluators,
    outputs_from_run,
)
from triplesmith.experiments.inputs import (
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
from triplesmith.experiments.result import ExperimentResult
from triplesmith.experiments.scoring import score_missing, summarise_stored, upload_summary
from triplesmith.experiments.store import ExperimentRecord, ExperimentStore, StoredExample
from triplesmith.run_config import RunConfig
from triplesmith.schema import Example

logger = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("6f0f5a4e-2b1d-4c55-9a43-7d1c2e9b8a10")

Progress = Callable[[int, int], None]
"""Called with (examples finished, examples in the run): once at the start, then per example."""

__all__ = ["ExperimentResult", "Progress", "run_experiment"]


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
            **example_fields(e),
        )
        for e in examples
    ]


def _versioned_examples(
    client: Client, label: str, examples: Sequence[Example], todo: Sequence[Example]
) -> list[schemas.Example]:
    """The LangSmith examples `todo` runs over: a pulled dataset's, at the version and split it
    was pulled at; else those of `triplesmith-LABEL` at the version tagged with the content's
    fingerprint, pushed first when that version is not there yet."""
    if label.startswith("langsmith:"):
        name = label.split(":", 1)[1]
        rows = pull_examples(name, client)
    else:
        name = _dataset_name(label)
        pushed = push_dataset(examples, name, "triplesmith experiment dataset", client)
        rows = list(client.list_examples(dataset_id=pushed.dataset_id, as_of=pushed.tag))
        name = f"{name}@{pushed.tag}"
    by_id = {example_key(row): row for row in rows}
    missing = [e.id for e in todo if e.id not in by_id]
    if missing:
        raise ExperimentError(f"LangSmith dataset {name!r} lacks examples {missing[:5]}")
    return [by_id[e.id] for e in todo]


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
    key: str,
    row: Mapping[str, Any],
    examples: Mapping[str, Example],
    positions: Mapping[str, int],
    scorers: Sequence[Evaluator],
) -> tuple[StoredExample, dict[str, list[Feedback]]]:
    """One streamed row as a stored answer, and its scores by evaluator identity."""
    run, ls_example = row["run"], row["example"]
    example = examples[example_key(ls_example)]
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
    answer = StoredExample(
        experiment=key,
        example_id=example.id,
        position=positions.get(example.id),
        example=example,
        outputs=outputs,
        tags=names,
        error=str(error) if error else None,
        latency_s=latency,
        tokens_in=int(outputs.get("tokens_in") or 0),
        tokens_out=int(outputs.get("tokens_out") or 0),
        run_id=str(run.id) if run is not None and run.id else None,
    )
    if error:
        return answer, {}
    return answer, _by_evaluator(row["evaluation_results"]["results"], scorers)


def _by_evaluator(
    results: Sequence[Any], scorers: Sequence[Evaluator]
) -> dict[str, list[Feedback]]:
    """`evaluate`'s results grouped by the identity of the evaluator that gave them (our row
    evaluators name it in each result's metadata; a result without, e.g. from an evaluator
    that crashed inside LangSmith, goes to the evaluator that owns its key)."""
    grouped: dict[str, list[Feedback]] = {e.identity: [] for e in scorers}
    for result in results:
        identity = (getattr(result, "metadata", None) or {}).get(EVALUATOR_KEY)
        if identity not in grouped:
            identity = next(
                (e.identity for e in scorers if result.key in (*e.keys, e.name)),
                scorers[0].identity,
            )
        grouped[identity].append(_feedback(result))
    return grouped


def _target(
    chain: ExtractionChain,
    graph: Any,
    examples: Mapping[str, Example],
    config: RunConfig,
    stop: threading.Event,
) -> Callable[[dict, dict], dict]:
    spec = chain.spec
    offline = not config.upload
    # The graph extracts, parses, triages and repairs; the run's evaluators score, once.
    context = {"chains": [spec], "max_repairs": config.max_repairs, "score": False}
    # A dataset made outside triplesmith has no triplesmith ids in its metadata: its examples
    # are found by sentence (the target sees inputs and metadata, not the example's id).
    by_sentence = {e.sentence: e for e in examples.values()}

    def extract(inputs: dict, metadata: dict) -> dict:
        if stop.is_set():  # interrupted: return at once; the store never sees this row
            return {"triples": [], "error": "the run was interrupted before this example"}
        known = (metadata or {}).get("triplesmith_id")
        example = examples[str(known)] if known is not None else by_sentence[inputs["sentence"]]
        with no_tracing(offline):
            if graph is None:
                return chain.invoke({"sentence": example.sentence}).to_output()
            state = graph.invoke(
                {
                    "sentence": example.sentence,
                    "gold": [t.model_dump() for t in example.triples],
                    "example_id": example.id,
                },
                context=context,
            )
        results = state["results"]
        return results[spec] if spec in results else next(iter(results.values()))

    return extract


def run_experiment(
    chain: str | ExtractionChain,
    dataset: str | Path | Sequence[Example],
    config: RunConfig | str | Sequence[Any] | None = None,
    *,
    key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ExperimentResult:
    """Run `chain` over `dataset` (the first `config.limit` examples), scored by the run's
    evaluators once per answer.

    chain: a spec (`few-shot:smollm2`) or an ExtractionChain; the graph runs it when
        `config.via_graph` and it can (tags, repair), else the chain is called directly (no tags).
    dataset: a name or path for `load_dataset`, or a list of Example.
    config: the run's `RunConfig` (or evaluator names as a shorthand); `options` are
        RunConfig fields over it (`store=`, `limit=`, `upload=`, ...).
    key: the experiment's key in the store; by default the chain spec and a hash of what makes
        the answers (chain, model, adapter, prompt, decoding, dataset, repairs, settings), never
        of the evaluators: a rerun resumes it, and an added evaluator scores the stored answers.
    metadata: recorded with the experiment (not part of the default key).
    """
    config = RunConfig.of(config, **options)
    examples, label = resolve_dataset(dataset)
    fingerprint = dataset_fingerprint(examples)
    selected = examples[: config.limit] if config.limit else examples
    runnable, graph_can_run = resolve_chain(chain, examples)
    scorers = resolve_evaluators(config.evaluators, config.judge_model)
    graph = _graph() if config.via_graph and graph_can_run else None
    extra = dict(metadata or {})
    if graph is not None:
        extra["max_repairs"] = config.max_repairs
    meta = experiment_metadata(
        runnable, label, fingerprint, len(examples), graph is not None, extra
    )
    key = key or experiment_key(meta)
    upload = langsmith_configured() if config.upload is None else config.upload
    config = config.model_copy(update={"upload": upload})
    store = config.store
    opened = not isinstance(store, ExperimentStore)
    db = ExperimentStore(store) if opened else store
    try:
        record = db.begin(
            ExperimentRecord(
                key=key,
                name=slug(runnable.spec),
                chain=runnable.spec,
                dataset=f"{label}@{fingerprint}",
                metadata=meta,
            )
        )
        done = db.finished_ids(key)
        todo = [e for e in selected if e.id not in done]
        skipped = len(selected) - len(todo)
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
        ls_client = experiment_client(upload, config.client) if todo or upload else None
        if todo:
            answered = done & {e.id for e in selected}  # by earlier runs
            earlier = [(r.outputs, r.example) for r in db.rows(key, []) if r.example_id in answered]
            ran, url = _evaluate(
                db,
                record,
                runnable,
                graph,
                scorers,
                todo,
                config=config.model_copy(update={"client": ls_client}),
                dataset=(label, examples),
                earlier=earlier,
                complete_at=len(selected),
                positions={e.id: i for i, e in enumerate(examples)},
                progress=(lambda n: progress(skipped + n, len(selected))) if progress else None,
            )
            record = db.experiment(key) or record
        rescored = score_missing(
            db, record, scorers, selected, config, ls_client if upload else None
        )
        identities = [e.identity for e in scorers]
        stored = {row.example_id: row for row in db.rows(key, identities)}
        rows = [stored[e.id] for e in selected if e.id in stored]
        summary = summarise_stored(db, key, scorers, rows)
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
            rescored=rescored,
        )
        if upload and result.complete and record.langsmith_id and rescored and not todo:
            # No `evaluate` ran (every answer was stored), so no summary evaluator did: the
            # figures over the rescored answers go to the experiment directly.
            upload_summary(ls_client, record.langsmith_id, summary)
        return result
    finally:
        if opened:
            db.close()


def _dataset_name(label: str) -> str:
    """The one LangSmith dataset a file or list is pushed to; its content is versioned (tags)."""
    return f"triplesmith-{slug(Path(label).name if '/' in label else label)}"


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


def _evaluate(
    db: ExperimentStore,
    record: ExperimentRecord,
    chain: ExtractionChain,
    graph: Any,
    scorers: Sequence[Evaluator],
    todo: Sequence[Example],
    *,
    config: RunConfig,
    dataset: tuple[str, Sequence[Example]],
    earlier: Sequence[tuple[RunOutputs, Example]],
    complete_at: int,
    positions: Mapping[str, int],
    progress: Callable[[int], None] | None,
) -> tuple[int, str | None]:
    """Run `evaluate` over `todo`, storing each row as it streams; (rows stored, URL). With
    upload, summary evaluators give LangSmith the corpus figures over `earlier` answers and this
    run's, once `complete_at` answers are there."""
    upload, client = bool(config.upload), config.client
    offline = not upload
    if upload:
        data = _versioned_examples(client, *dataset, todo)
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
    rows, summaries = langsmith_evaluators(
        scorers, data, earlier=earlier, complete_at=complete_at, known=todo
    )
    if upload:  # offline, the store's summary is the only one
        options["summary_evaluators"] = [untraced(s, offline) for s in summaries]
    stored = 0
    url = None
    # Ctrl-C can land while `evaluate` is still starting its workers, not only while rows
    # stream: either way the workers must be told to stop, or the process waits for them.
    try:
        # `evaluate` prints "Starting evaluation of experiment: NAME" (or its URL) to stdout;
        # callers draw their own progress, so it goes to the log instead.
        banner = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(banner):
            warnings.filterwarnings("ignore", message=".*'upload_runs' parameter is in beta")
            results = evaluate(
                _target(chain, graph, by_id, config, stop),
                data=data,
                evaluators=[untraced(row, offline) for row in rows],
                metadata={
                    **record.metadata,
                    "experiment_key": record.key,
                    "evaluators": [e.name for e in scorers],
                },
                max_concurrency=config.max_concurrency,
                client=client,
                upload_results=upload,
                blocking=False,
                **options,
            )
        if banner.getvalue().strip():
            logger.info("%s", banner.getvalue().strip())
        if upload:
            try:
                url = results.url
            except Exception:  # the URL needs the server's tenant info; the run goes on without
                url = None
            if not record.langsmith_id:
                db.set_langsmith_id(record.key, str(results.experiment_id))
        for row in results:
            if db.add(*_stored_row(record.key, row, by_id, positions, scorers)):
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
