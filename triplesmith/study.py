"""The prompt-or-fine-tune study, end to end: prepare → train → evaluate → report → curate.

Every stage records a fingerprint of its inputs in `OUT/stages.json`; a rerun reuses a finished
stage whose fingerprint still matches (and says so), and the evaluation resumes per example
from the experiment store (`OUT/experiments.sqlite`), so an interrupted study loses at most
the sentences in flight.
"""

import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from rich.console import Console

from triplesmith.data.jsonl import write_jsonl
from triplesmith.data.registry import load_dataset
from triplesmith.data.split import make_split, write_split
from triplesmith.errors import ExperimentError, TriplesmithError
from triplesmith.run_config import RunConfig
from triplesmith.settings import get_settings
from triplesmith.verdict import verdict_lines

log = logging.getLogger(__name__)
Preset = Literal["demo", "carb"]
STUDY_EVALUATORS = ["triple-f1", "format", "carb"]


class StudyConfig(BaseModel):
    """What a study runs. The presets fill it; every field can be overridden. Training fields
    left None take `TrainConfig`'s defaults; `run` is the evaluation's `RunConfig`."""

    preset: Preset
    out: Path
    base: str = "smollm2"
    carb_dir: Path | None = None
    benchie_dir: Path | None = None
    # training (None: TrainConfig's default)
    method: Literal["auto", "lora", "qlora"] = "auto"
    epochs: float | None = Field(None, gt=0, le=1000)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1, le=4096)
    grad_accum: int | None = Field(None, ge=1, le=1024)  # micro-batches per optimizer step
    learning_rate: float | None = Field(None, gt=0, lt=1)
    max_seq_len: int | None = Field(None, ge=16, le=131072)
    group_by_length: bool | None = None  # batches of similar lengths: less padding
    # LoRA's shape (None: TrainConfig's; alpha defaults to twice a given rank) and CaRB's n-ary
    # tuples as targets (join, drop, split: training/format.py)
    lora_r: int | None = Field(None, ge=1, le=4096)
    lora_alpha: int | None = Field(None, ge=1, le=65536)
    lora_targets: str | None = Field(None, min_length=1)  # all-linear, attention, or names
    nary: Literal["join", "drop", "split"] = "join"
    # the chains
    k: int | None = Field(None, ge=0, le=64)  # few-shot examples; default: settings.few_shot_k
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    # training seeds: one adapter each (data and split fixed); the verdict uses their mean
    seeds: int = Field(1, ge=1, le=10)
    openai_model: str = "gpt-4o-mini"
    openai_ft_model: str | None = None
    # the evaluation: evaluators, concurrency, repairs, limit, judge
    run: RunConfig = Field(default_factory=RunConfig)
    curate_below: float = Field(0.5, ge=0, le=1)

    @classmethod
    def from_preset(cls, preset: Preset, out: Path, **overrides: Any) -> "StudyConfig":
        """The preset's configuration with `overrides` over it (None values ignored); a
        `RunConfig` field (`limit`, `max_concurrency`, `evaluators`, ...) goes to `run`."""
        presets: dict[str, dict[str, Any]] = {
            # Sized for 2 CPU cores: the 52-sentence sample train split, its 20 test sentences
            # all in one batch, and no repair round (it doubles the base chains' time there).
            "demo": {
                "epochs": 2.0,
                "learning_rate": 1e-3,  # the CaRB validation sweep's choice (see the carb preset)
                # 8 rows an optimizer step, as one row a forward pass: the same updates in a fifth
                # of the memory (benchmarks/bench_train_memory.py, 3 steps: 8x1 12.1 GB, 1x8
                # 2.5 GB, loss 0.900 -> 0.497 / 0.496); the demo's 14 steps took 3.8 min (3.9).
                "batch_size": 1,
                "grad_accum": 8,
                "max_seq_len": 384,
                "group_by_length": True,
                "run": {"evaluators": STUDY_EVALUATORS, "max_concurrency": 32, "max_repairs": 0},
            },
            # The benchmark split: train on CaRB dev + BenchIE (not CaRB test), test on CaRB test.
            "carb": {
                # Chosen on a validation split carved from train (benchmarks/RESULTS.md, CaRB
                # validation sweep): 2 epochs at 2e-4 gave CaRB F1 0.151, 8 at 1e-3 gave 0.457.
                "epochs": 8.0,
                "learning_rate": 1e-3,
                "batch_size": 16,
                "max_seq_len": 1024,  # the longest CaRB train example is 987 tokens
                "seeds": 3,  # one seed moves CaRB AUC by about 0.01: the verdict uses the mean
                "run": {"evaluators": [*STUDY_EVALUATORS, "benchie"], "max_concurrency": 64},
            },
        }
        given = {key: value for key, value in overrides.items() if value is not None}
        values = {**presets[preset], **{k: v for k, v in given.items() if k in cls.model_fields}}
        run_fields = {k: v for k, v in given.items() if k not in cls.model_fields}
        try:
            values["run"] = RunConfig.of(None, **{**values.get("run", {}), **run_fields})
            if values["run"].judge_model and "judge" not in values["run"].evaluators:
                values["run"] = values["run"].model_copy(
                    update={"evaluators": [*values["run"].evaluators, "judge"]}
                )
            from triplesmith.evaluators.registry import check_names

            check_names(values["run"].evaluators)
            return cls(preset=preset, out=out, **values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'study'}: {e['msg']}" for e in exc.errors()
            )
            raise ExperimentError(f"study settings refused before any work: {problems}") from None
        except TriplesmithError as exc:
            raise ExperimentError(f"study settings refused before any work: {exc}") from None


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class Stages:
    """`OUT/stages.json`: each finished stage with the fingerprint of its inputs."""

    def __init__(self, out: Path) -> None:
        self.path = out / "stages.json"
        self.done: dict[str, Any] = {}
        if self.path.exists():
            try:
                self.done = json.loads(self.path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ExperimentError(
                    f"{self.path} is not valid JSON ({exc}); fix it, or move it away and the "
                    "study redoes its stages (finished examples stay in the store)"
                ) from None
            if not isinstance(self.done, dict):
                raise ExperimentError(f"{self.path} must hold a JSON object; move it away")

    def finished(self, stage: str, fingerprint: str) -> bool:
        return self.done.get(stage, {}).get("fingerprint") == fingerprint

    def record(self, stage: str, fingerprint: str, **info: Any) -> None:
        self.done[stage] = {
            "fingerprint": fingerprint,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **info,
        }
        self._save()

    def log_run(
        self, started_at: str, wall_s: float, outcome: str, machine: str, command: str = ""
    ) -> None:
        """Add one run of the study (finished or interrupted) to the `runs` history."""
        runs = self.done.setdefault("runs", [])
        runs.append(
            {
                "started_at": started_at,
                "wall_s": round(wall_s, 1),
                "outcome": outcome,
                "machine": machine,
                **({"command": command} if command else {}),
            }
        )
        self._save()

    @property
    def runs(self) -> list[dict[str, Any]]:
        return list(self.done.get("runs", []))

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=2, default=str))
        os.replace(tmp, self.path)


class StudyResult(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    out: Path
    report: Path
    curated: Path
    comparison: Any
    roles: dict[str, str] = {}  # role (few-shot, fine-tuned, ...) -> its label in the comparison
    reused: list[str]
    wall_s: float


def _prepare(config: StudyConfig, data_dir: Path) -> dict[str, int]:
    """Write the leak-free split the study trains and tests on, with its manifest."""
    if config.preset == "demo":
        train, test = load_dataset("sample:train"), load_dataset("sample:test")
        data_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(data_dir / "train.jsonl", train)
        write_jsonl(data_dir / "test.jsonl", test)
        manifest = {
            "rule": "the embedded sample's fixed split",
            "counts": {"train_sentences": len(train), "test_sentences": len(test)},
        }
        (data_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return manifest["counts"]
    if config.carb_dir is None:
        raise ExperimentError(
            "the carb preset needs --carb-dir (a CaRB checkout with gold/dev.tsv and gold/test.tsv)"
        )
    train, test, split_manifest = make_split(config.carb_dir, config.benchie_dir, "benchmark")
    write_split(data_dir, train, test, split_manifest)
    return dict(split_manifest.counts)


def adapter_dirs(config: StudyConfig) -> dict[int, Path]:
    """Each training seed's adapter folder: `OUT/adapter` for seed 0, `OUT/adapter-seedN`."""
    return {
        seed: config.out / ("adapter" if seed == 0 else f"adapter-seed{seed}")
        for seed in range(config.seeds)
    }


def _train_stage(seed: int) -> str:
    return "train" if seed == 0 else f"train-seed{seed}"


def _train(
    config: StudyConfig,
    data_dir: Path,
    adapter_dir: Path,
    stages: Stages,
    console: Console,
    seed: int = 0,
) -> bool:
    """Train the adapter with this training seed (the data and split stay fixed), or reuse the
    one whose inputs match. Returns True when reused."""
    from triplesmith.training.config import TrainConfig, lora_settings
    from triplesmith.training.sft import train

    lora = (config.lora_r, config.lora_alpha, config.lora_targets)
    train_config = TrainConfig.from_preset(
        "default",
        base=config.base,
        dataset=str(data_dir),
        out=adapter_dir,
        method=config.method,
        epochs=config.epochs,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        learning_rate=config.learning_rate,
        max_seq_len=config.max_seq_len,
        group_by_length=config.group_by_length,
        lora=lora_settings(*lora) if any(value is not None for value in lora) else None,
        nary=config.nary,
        seed=seed,
    )
    stage = _train_stage(seed)
    fingerprint = _digest(
        config.base, train_config.hyperparameters(), _file_digest(data_dir / "train.jsonl")
    )
    if stages.finished(stage, fingerprint) and (adapter_dir / "manifest.json").is_file():
        console.print(f"[green]train:[/] reused the adapter in {adapter_dir} (its inputs match)")
        return True
    checkpoints = adapter_dir / "checkpoints"
    resume = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    if resume:
        console.print(f"[yellow]train:[/] resuming from the last checkpoint in {checkpoints}")
    elif adapter_dir.exists():
        import shutil

        shutil.rmtree(adapter_dir)  # stale: trained from other inputs
    result = train(train_config.model_copy(update={"resume": resume}), console=console)
    manifest = result.manifest
    stages.record(
        stage,
        fingerprint,
        seed=seed,
        method=manifest.method,
        method_reason=manifest.method_reason,
        steps=manifest.steps,
        loss_start=manifest.loss_start,
        loss_end=manifest.loss_end,
        train_wall_s=manifest.train_wall_s,
    )
    return False


# The study's roles: the baseline of its question is the few-shot base, the answer the fine-tuned.
BASELINE, FINE_TUNED = "few-shot", "fine-tuned"


def fine_tuned_role(seed: int) -> str:
    return FINE_TUNED if seed == 0 else f"{FINE_TUNED} seed {seed}"


def study_chains(config: StudyConfig, data_dir: Path) -> dict[str, str]:
    """The chains compared, by role: the zero-shot base, the few-shot base (the baseline), the
    fine-tuned model (one per training seed); OpenAI few-shot and fine-tuned chains with a key."""
    budget = f"+max_new_tokens={config.max_new_tokens}" if config.max_new_tokens else ""
    k = config.k if config.k is not None else get_settings().few_shot_k
    shots = f"+k={k}+shots={data_dir / 'train.jsonl'}"
    chains = {
        "zero-shot": f"zero-shot:{config.base}{budget}",
        BASELINE: f"few-shot:{config.base}{shots}{budget}",
    }
    for seed, adapter_dir in adapter_dirs(config).items():
        chains[fine_tuned_role(seed)] = f"hf:{config.base}+adapter={adapter_dir}{budget}"
    if get_settings().openai_api_key is not None:
        chains["openai few-shot"] = f"few-shot:openai:{config.openai_model}{shots}"
        if config.openai_ft_model:
            chains["openai fine-tuned"] = f"openai-ft:{config.openai_ft_model}"
    return chains


def run_study(
    config: StudyConfig, console: Console | None = None, command: str = ""
) -> StudyResult:
    """Run (or resume) the whole study into `config.out`; every run, finished or not, is added
    to the `runs` history in `OUT/stages.json` (the report gives the total wall time)."""
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    started = time.perf_counter()
    # Every chain spec the study will run parses (ranges, options) before any stage starts.
    from triplesmith.chains.spec import parse_spec

    for spec in study_chains(config, config.out / "data").values():
        parse_spec(spec)
    from triplesmith.experiments.langsmith_setup import (
        check_reachable,
        experiment_client,
        langsmith_configured,
    )

    if langsmith_configured():  # the evaluation uploads: find out now, not after training
        check_reachable(experiment_client(True))
    config.out.mkdir(parents=True, exist_ok=True)
    Stages(config.out)  # a corrupted stages.json is refused before any stage runs
    outcome = "interrupted"
    try:
        result = _run_study(config, console or Console(stderr=True), command, started)
        outcome = "finished"
        return result
    except Exception as exc:
        outcome = f"failed: {type(exc).__name__}"
        raise
    finally:
        try:
            Stages(config.out).log_run(
                started_at, time.perf_counter() - started, outcome, machine(), command
            )
        except (TriplesmithError, OSError) as exc:  # never hide the run's own error
            log.warning("could not add this run to %s: %s", config.out / "stages.json", exc)


def _run_study(config: StudyConfig, console: Console, command: str, started: float) -> StudyResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from triplesmith.experiments.compare import compare

    out = config.out
    stages = Stages(out)
    data_dir, report_dir = out / "data", out / "report"
    reused: list[str] = []

    # 1. data
    inputs = [config.preset, str(config.carb_dir), str(config.benchie_dir)]
    fingerprint = _digest(*inputs)
    if stages.finished("prepare", fingerprint) and (data_dir / "test.jsonl").is_file():
        console.print(f"[green]prepare:[/] reused the split in {data_dir}")
        reused.append("prepare")
    else:
        counts = _prepare(config, data_dir)
        stages.record("prepare", fingerprint, **counts)
        console.print(f"[bold]prepare:[/] wrote the split to {data_dir}: {counts}")

    # 2. adapter
    for seed, adapter_dir in adapter_dirs(config).items():
        which = f" (training seed {seed} of {config.seeds})" if config.seeds > 1 else ""
        console.print(f"[bold]train:[/] fine-tuning the adapter on the train split{which}")
        if _train(config, data_dir, adapter_dir, stages, console, seed):
            reused.append(_train_stage(seed))

    # 3. evaluation, resumable per example
    chains = study_chains(config, data_dir)
    store = out / "experiments.sqlite"
    console.print(
        f"[bold]evaluate:[/] {len(chains)} chains on {data_dir / 'test.jsonl'} (store: {store})"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, Any] = {}
        role_of = {spec: role for role, spec in chains.items()}

        def progress(chain: str, done: int, total: int) -> None:
            if chain not in tasks:
                tasks[chain] = bar.add_task(role_of.get(chain, chain[:60]), total=total)
            bar.update(tasks[chain], completed=done, total=total)

        comparison = compare(
            list(chains.values()),
            str(data_dir / "test.jsonl"),
            config.run,
            progress=progress,
            store=store,
            baseline=chains[BASELINE],  # the study asks whether fine-tuning beats prompting
        )
    experiments = dict(zip(chains, comparison.experiments, strict=True))  # role -> experiment
    for role, experiment in experiments.items():
        if experiment.skipped:
            console.print(
                f"[green]evaluate:[/] {role}: {experiment.skipped} answers reused from the store"
                + (f", {experiment.rescored} scored again" if experiment.rescored else "")
            )
    labels = dict(zip(chains, comparison.chains, strict=True))  # role -> the comparison's label
    run_lines = _run_lines(config, command, time.perf_counter() - started, stages)
    comparison, curated_path, curated = _report(
        config, comparison, experiments, labels, run_lines, report_dir, store
    )
    console.print(
        f"[bold]curate:[/] {curated} examples of the fine-tuned chain below triple F1 "
        f"{config.curate_below} -> {curated_path}"
    )
    return StudyResult(
        out=out,
        report=report_dir / "report.md",
        curated=curated_path,
        comparison=comparison,
        roles=labels,
        reused=reused,
        wall_s=time.perf_counter() - started,
    )


def _report(
    config: StudyConfig,
    comparison: Any,
    experiments: dict[str, Any],
    labels: dict[str, str],
    run_lines: list[str],
    report_dir: Path,
    store: Path,
) -> tuple[Any, Path, int]:
    """Step 4: the report (the verdict on the fine-tuned chain, or on its seeds' mean, first),
    every chain's answers in CaRB's tabbed format, and the curated set. `experiments` and
    `labels` are by role. Returns the comparison (with the seeds' mean), the curated set's path
    and its size."""
    from triplesmith.experiments.curate import curate
    from triplesmith.experiments.predictions import write_carb_predictions
    from triplesmith.experiments.report import write_report

    answer = FINE_TUNED  # the role the verdict judges: the fine-tuned chain, or its seeds' mean
    if config.seeds > 1:
        comparison, answer = _with_mean_of_seeds(comparison, config.seeds, labels)
    verdict = verdict_lines(
        comparison,
        few_shot=labels[BASELINE],
        fine_tuned=labels[answer],
        whole_carb_test=config.preset == "carb" and config.run.limit is None,
    )
    # The report is rendered once, the study's answer opening report.md and report.html alike.
    opening = [f"# Study: {config.preset}", "", *verdict, "## This run", "", *run_lines]
    write_report(comparison, report_dir, verdict="\n".join(opening))
    # Every chain's answers in CaRB's tabbed format: re-scorable with CaRB's own scorer.
    for role, experiment in experiments.items():
        write_carb_predictions(
            experiment, report_dir / "predictions" / f"{role.replace(' ', '-')}.tsv"
        )
    curated_path = report_dir / "curated.jsonl"
    curated = curate(
        experiments[FINE_TUNED],
        metric="triple_f1",
        below=config.curate_below,
        out=curated_path,
        store=store,
    )
    return comparison, curated_path, len(curated)


def rerender_report(config: StudyConfig, command: str = "", report_dir: Path | None = None) -> Path:
    """A finished study's report rendered again from its store: nothing is trained, generated
    or scored again (each chain's experiment is found in `OUT/experiments.sqlite` by the spec
    the study gave it, so `config.out` must be the folder the study ran in, as it named it).
    For a report after a change to the report's code; the "This run" lines describe the
    study's last recorded run (command, machine, wall time), with a line saying it was
    re-rendered with `command`. Returns report.md's path."""
    from triplesmith.experiments.compare import build_comparison
    from triplesmith.experiments.scoring import rescore
    from triplesmith.experiments.store import ExperimentStore

    out = config.out
    stages = Stages(out)
    store = out / "experiments.sqlite"
    if not store.is_file() or not stages.runs:
        raise ExperimentError(
            f"{out} holds no finished study to render (no store or no recorded run)"
        )
    from triplesmith.chains.spec import parse_spec

    # Specs compared in their canonical form (options sorted), as the store records them.
    chains = {
        role: str(parse_spec(spec)) for role, spec in study_chains(config, out / "data").items()
    }
    with ExperimentStore(store) as db:
        keys = {record.chain: record.key for record in db.experiments()}
    missing = [role for role, spec in chains.items() if spec not in keys]
    if missing:
        raise ExperimentError(
            f"the store {store} has no experiment for {', '.join(missing)}: give the study's "
            "own options (preset, --seeds, --k, --max-new-tokens) and its folder as it named it"
        )
    run = config.run.model_copy(update={"store": store, "upload": False})
    experiments = {role: rescore(keys[spec], run) for role, spec in chains.items()}
    roles = list(chains)
    comparison = build_comparison(
        list(experiments.values()),
        str(out / "data" / "test.jsonl"),
        None,
        roles.index(BASELINE),
    )
    labels = dict(zip(roles, comparison.chains, strict=True))
    *earlier, last = stages.runs
    run_lines = _run_lines(
        config,
        last.get("command", ""),
        float(last.get("wall_s", 0.0)),
        stages,
        last.get("machine"),
        earlier,
    )
    if not last.get("command"):  # studies before the runs recorded their command
        run_lines[0] = "- command: not recorded in stages.json"
    again = f" with `{command}`" if command else ""
    run_lines.append(
        f"- this report: rendered again from the study's store on {time.strftime('%Y-%m-%d')}"
        f"{again} (nothing trained, generated or scored again)"
    )
    report_dir = report_dir or out / "report"
    _report(config, comparison, experiments, labels, run_lines, report_dir, store)
    return report_dir / "report.md"


def _with_mean_of_seeds(comparison: Any, seeds: int, labels: dict[str, str]) -> tuple[Any, str]:
    """The comparison with one more chain, the fine-tuned seeds' mean (per example and corpus,
    with the spread across seeds in `_sd` columns); `labels` gains its role. Returns the new
    comparison and that role."""
    from triplesmith.experiments.compare import build_comparison
    from triplesmith.experiments.seeds import add_spread, mean_of_seeds

    roles = [fine_tuned_role(seed) for seed in range(seeds)]
    by_label = dict(zip(comparison.chains, comparison.experiments, strict=True))
    role = f"{FINE_TUNED} (mean of {seeds} seeds)"
    mean = mean_of_seeds([by_label[labels[r]] for r in roles], role)
    baseline = comparison.chains.index(comparison.baseline)
    extended = build_comparison([*comparison.experiments, mean], comparison.dataset, None, baseline)
    labels[role] = extended.chains[-1]
    add_spread(extended, labels[role], [labels[r] for r in roles])
    return extended, role


def machine() -> str:
    """The accelerator (or CPU) this process computes on, and the OS."""
    import torch

    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    )
    return f"{device}, {platform.system()} {platform.release()}"


def _wall_lines(wall: float, runs: list[dict[str, Any]]) -> list[str]:
    """The wall time of this run and, when it resumed or repeated earlier runs, of them all."""
    line = f"- wall time until the report: {wall / 60:.1f} min"
    if not runs:
        return [line]
    total = wall + sum(float(run.get("wall_s", 0.0)) for run in runs)
    lines = [
        f"{line} in this run; {len(runs) + 1} runs of this study since {runs[0]['started_at']} "
        f"(earlier ones interrupted and resumed, or reruns), {total / 60:.1f} min in all"
    ]
    for run in runs:
        lines.append(
            f"  - {run['started_at']}: {float(run.get('wall_s', 0.0)) / 60:.1f} min, "
            f"{run.get('outcome', '?')}, on {run.get('machine', 'an unrecorded machine')}"
        )
    return lines


def _rounded(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)


def _run_lines(
    config: StudyConfig,
    command: str,
    wall: float,
    stages: Stages,
    machine_name: str | None = None,
    earlier_runs: list[dict[str, Any]] | None = None,
) -> list[str]:
    """The facts of this run: command, machine, wall time (all runs), evaluation, adapters.
    `machine_name` and `earlier_runs` describe a recorded run instead of this process's."""
    lines = [
        f"- command: `{command or 'triplesmith study --preset ' + config.preset}`",
        f"- machine of this run: {machine_name or machine()}",
        *_wall_lines(wall, stages.runs if earlier_runs is None else earlier_runs),
        f"- evaluation: {config.run.max_concurrency} sentences in flight, repairs after a "
        f"format error: {config.run.max_repairs}",
    ]
    for seed in range(config.seeds):
        train = stages.done.get(_train_stage(seed), {})
        which = f"adapter (training seed {seed})" if config.seeds > 1 else "adapter"
        lines.append(
            f"- {which}: method {train.get('method')} ({train.get('method_reason')}), "
            f"{train.get('steps')} steps, loss {_rounded(train.get('loss_start'))} → "
            f"{_rounded(train.get('loss_end'))}, {_rounded(train.get('train_wall_s'), 1)} s"
        )
    return lines
