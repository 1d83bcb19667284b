"""The onnxruntime-genai engine: a local model exported once to ONNX (fp32), greedy, for a CPU.

On first use the model (with its PEFT adapter merged in, when one is given) is exported by
onnxruntime-genai's model builder into the cache and reused afterwards. Unconstrained prompts
run as right-padded batches (onnxruntime-genai's own convention: left padding derails it);
constrained prompts run one generator each, because its llguidance integration stops a
multi-row generator once one row's grammar has finished. fp32 greedy answers are token for
token those of the transformers engine (chains/engines/hf.py), several times faster on a CPU.

Not applied here: the loop rules of chains/repeat_guard.py (`stop_repeats`, `close_loops`:
an answer that loops runs to the grammar's end or the budget) and `no_repeat_ngram_size`
(refused: use the transformers engine). Log-probs of constrained answers are the model's own,
not renormalised over the tokens the grammar allows (the transformers engine renormalises).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from triplesmith.chains.engines.base import (
    CANCELLED,
    Engine,
    FinishReason,
    Generation,
    GenerationOptions,
    Messages,
    adapter_dir,
    token_pieces,
)
from triplesmith.chains.engines.grammar import _COMPACT, RESERVE, TRIPLES_SCHEMA_TEXT
from triplesmith.chains.repeat_guard import open_brackets
from triplesmith.errors import ChainError, ModelError
from triplesmith.models import ModelRef, adapter_hash, cache_dir, model_hash, resolve

log = logging.getLogger(__name__)

CPU_BATCH = 16
PRECISION = "fp32"  # int4 is faster but changes the answers


def _og() -> Any:
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        raise ChainError(
            "the onnx engine needs onnxruntime-genai (pip install onnxruntime-genai onnx onnx-ir); "
            "or use the transformers engine with TRIPLESMITH_ENGINE=hf"
        ) from exc
    return og


def _local_dir(ref: ModelRef) -> Path:
    """The model's files on disk: a Hub id only from the local Hub cache (no download here)."""
    if ref.local:
        return Path(ref.path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref.path, local_files_only=True))
    except Exception as exc:
        raise ChainError(
            f"the onnx engine exports a local model, and {ref.path!r} is not in the local Hub "
            "cache; download it first (huggingface-cli download "
            f"{ref.path}) or give a local directory, or use TRIPLESMITH_ENGINE=hf"
        ) from exc


@contextmanager
def _file_lock(path: Path) -> Any:
    """An exclusive lock across processes (threads of one process also queue on it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def export_dir(source: Path, base_hash: str, adapter: str | None) -> Path:
    """The ONNX export of `source` (+ `adapter`) in the cache, built on first use.

    The builder writes into a temporary folder renamed into place, under a file lock, so
    concurrent processes build it once and never read a half-written export.
    """
    key = base_hash + (f"-{adapter_hash(adapter)}" if adapter else "") + f"-{PRECISION}"
    target = cache_dir() / "onnx" / key
    if (target / "genai_config.json").is_file():
        return target
    with _file_lock(target.parent / f".{key}.lock"):
        if (target / "genai_config.json").is_file():
            return target
        log.info("exporting %s to ONNX in %s (once; about ten seconds)", source, target)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        command = [sys.executable, "-m", "onnxruntime_genai.models.builder"]
        command += ["-i", str(source), "-o", str(staging / "model"), "-p", PRECISION]
        command += ["-e", "cpu", "-c", str(staging / "hf-cache")]
        if adapter:
            command += ["--extra_options", f"adapter_path={adapter}"]
        try:
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0 or not (staging / "model" / "genai_config.json").is_file():
                raise ChainError(
                    f"exporting {source} to ONNX failed: {done.stderr.strip()[-1500:]}"
                )
            if target.exists():
                shutil.rmtree(target)
            (staging / "model").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


class OnnxEngine(Engine):
    """A model exported to ONNX and run by onnxruntime-genai, greedy, on the CPU."""

    name = "onnxruntime-genai"

    def __init__(self, model: str = "smollm2", adapter: str | None = None) -> None:
        og = _og()
        super().__init__()
        self.model_name = model
        self.adapter = adapter
        try:
            ref = resolve(model)
        except ModelError as exc:
            raise ChainError(str(exc)) from exc
        source = _local_dir(ref)
        self.model_hash = model_hash(ref)
        if adapter is not None:
            adapter_dir(adapter)
            self.adapter_hash = adapter_hash(adapter)
        local_hash = (
            self.model_hash if ref.local else model_hash(ModelRef(model, str(source), True))
        )
        self.path = export_dir(source, local_hash, adapter)
        self.model = og.Model(str(self.path))
        self.tokenizer = og.Tokenizer(self.model)
        config = json.loads((self.path / "genai_config.json").read_text())["model"]
        self.context = int(config.get("context_length", 2048))
        eos = config.get("eos_token_id", 0)
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = int(config.get("pad_token_id", next(iter(self.eos_ids))))
        self.default_batch = CPU_BATCH
        closing = self.encode("]")
        self.close_id = closing[0] if len(closing) == 1 else None

    # --- prompts ---------------------------------------------------------------------------

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(text)]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    # --- generation ------------------------------------------------------------------------

    def prepare(self, messages: Messages) -> tuple[list[int], int]:
        ids = self.encode(self.render(messages))
        return ids, len(ids)

    def refuse(self, options: GenerationOptions) -> ChainError | None:
        if options.temperature is not None:
            return ChainError(
                "sampling (+temperature > 0) is not supported by the onnxruntime-genai engine; "
                "use the transformers engine (TRIPLESMITH_ENGINE=hf)"
            )
        if options.no_repeat_ngram_size:
            return ChainError(
                "no_repeat_ngram_size is not supported by the onnxruntime-genai engine; use the "
                "transformers engine (TRIPLESMITH_ENGINE=hf)"
            )
        return None

    def chunk_width(self, options: GenerationOptions) -> int:
        # Its grammar stops a multi-row generator once one row has finished: one at a time.
        return 1 if options.constrained else self.batch_size(options)

    def _params(self, rows: int, width: int, budget: int, options: GenerationOptions) -> Any:
        og = _og()
        params = og.GeneratorParams(self.model)
        search: dict[str, Any] = {
            "do_sample": False,
            "max_length": width + budget,
            "batch_size": rows,
        }
        if options.repetition_penalty is not None:
            search["repetition_penalty"] = float(options.repetition_penalty)
        params.set_search_options(**search)
        if options.constrained:
            schema = json.loads(options.json_schema or TRIPLES_SCHEMA_TEXT)
            # llguidance reads its separators from the schema: the canonical compact answer.
            schema = {**schema, "x-guidance": {**_COMPACT, **schema.get("x-guidance", {})}}
            params.set_guidance("json_schema", json.dumps(schema), enable_ff_tokens=False)
        return params

    def _generate_chunk(
        self, prompts: list[list[int]], budgets: list[int], options: GenerationOptions
    ) -> list[Generation]:
        import numpy as np

        og = _og()
        started = time.perf_counter()
        rows, width, budget = len(prompts), max(map(len, prompts)), max(budgets)
        generator = og.Generator(self.model, self._params(rows, width, budget, options))
        padded = [p + [self.pad_id] * (width - len(p)) for p in prompts]
        generator.append_tokens(np.array(padded, dtype=np.int32))
        ids: list[list[int]] = [[] for _ in range(rows)]
        logprobs: list[list[float]] = [[] for _ in range(rows)]
        finish: list[FinishReason | None] = [None] * rows
        # In the last RESERVE tokens of a constrained answer no new item starts (as the
        # transformers engine's grammar does): after an item's `}` the list is closed.
        reserve_from = budget - min(RESERVE, budget // 4)
        while not generator.is_done() and any(f is None for f in finish):
            if self.cancelled:
                raise ChainError(CANCELLED)
            logits = generator.get_logits()[:, -1, :]
            generator.generate_next_token()
            chosen = generator.get_next_tokens()
            top = logits.max(axis=-1, keepdims=True)
            norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
            scores = logits[np.arange(rows), chosen] - norm
            for row in range(rows):
                if finish[row] is not None:
                    continue
                token = int(chosen[row])
                if token in self.eos_ids:
                    finish[row] = "stop"
                    continue
                ids[row].append(token)
                logprobs[row].append(float(scores[row]))
                if len(ids[row]) >= budgets[row]:
                    finish[row] = "length"
            if options.constrained and finish[0] is None and len(ids[0]) >= reserve_from:
                if self._close_list(ids[0], logprobs[0]):
                    finish[0] = "stop"  # after `]` the grammar allows only the end
        elapsed = time.perf_counter() - started
        generations = []
        for row in range(rows):
            pieces = self._pieces(ids[row])
            generations.append(
                Generation(
                    text="".join(pieces),
                    token_ids=ids[row],
                    pieces=pieces,
                    logprobs=logprobs[row],
                    tokens_in=len(prompts[row]),
                    tokens_out=len(ids[row]),
                    latency_s=elapsed / rows,
                    finish_reason=finish[row] or "length",
                )
            )
        return generations

    def _close_list(self, ids: list[int], logprobs: list[float]) -> bool:
        """Write `]` (forced: log-prob 0) when the answer so far ends with a list item."""
        import numpy as np

        if self.close_id is None:
            return False
        text = self.tokenizer.decode(np.array(ids, dtype=np.int32))
        if not (text.endswith("}") and open_brackets(text) == "]"):
            return False
        ids.append(self.close_id)
        logprobs.append(0.0)
        return True

    def _pieces(self, ids: list[int]) -> list[str]:
        import numpy as np

        return token_pieces(lambda part: self.tokenizer.decode(np.array(part, dtype=np.int32)), ids)
