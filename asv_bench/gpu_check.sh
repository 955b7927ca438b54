#!/usr/bin/env bash
# One prepared check of spectral_ops on a GPU machine without network, in at
# most 7 minutes of wall time: the CUDA and CuPy tests, then the headline asv
# benchmarks, everything worth keeping written to OUTDIR.
#
# Usage, from anywhere (the repository root is this script's parent folder):
#
#   bash asv_bench/gpu_check.sh OUTDIR            # on the GPU machine
#   bash asv_bench/gpu_check.sh OUTDIR --dry-run  # anywhere: GPU parts skip, < 1 min
#
# Steps (each timed; a failing step is recorded and the later ones still run):
#   1 install  the wheels carried in .whl/ go into $GPU_CHECK_SITE (/tmp/site)
#              with pip --no-index --no-deps (no network, no dependency
#              resolution); PYTHONPATH = repository root + that folder, so the
#              checkout is imported as it is (no pip install of it).
#   2 tests    all of tests/ on the GPU backends (test ids torch_cuda-<dtype>,
#              cupy-<dtype>, and the tests that move optimizers to CUDA):
#              pytest -k "$PYTEST_K", TF32 off (tests/conftest.py pins torch's;
#              CUPY_TF32=0, NVIDIA_TF32_OVERRIDE=0), under a time budget, junit
#              XML + a one-line summary. Dry run: collect only.
#   3 asv      the headline benchmarks only, named in asv_bench/gpu_summary.py
#              (HEADLINE), one `asv run --environment existing:$PY --machine
#              $MACHINE --set-commit-hash HEAD` per group, most important first,
#              a group skipped when the time left does not cover it; then the
#              summary of each headline number and ratio from the results JSON.
#              Dry run: the names and parameters are checked to exist (by
#              importing asv_bench/benchmarks; `asv check` too where asv is
#              importable).
#   4 pack     OUTDIR gets (flat, at most 8 files, each under 16 MiB):
#                summary.txt                  step times, test line, headline numbers
#                gpu_check.log                everything printed
#                gpu-info.txt                 nvidia-smi, library versions, devices
#                pytest-gpu.xml               junit XML of the tests
#                asv-results-MACHINE.tar.gz   results/MACHINE/ and results/benchmarks.json
#                                             (extract with: tar -xzf FILE -C asv_bench)
#              and the layout is verified.
#
# Exit status: 1 if the tests failed (or ran out of their time budget), else 2
# if another step failed, else 0. Bad usage: 64.
#
# The wheels (.whl/ at the repository root, git-ignored) are downloaded on a
# machine with network, for the GPU machine's Python (3.12), one command per
# NAME==VERSION (pure-python wheels come out the same way):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl NAME==VERSION
#
# for: array-api-compat==1.16.0 array-api-strict==2.6.1 optax==0.2.8
# absl-py==2.5.1 asv==0.6.6 asv-runner==0.3.2 json5==0.17.3 tabulate==0.10.0
# packaging==26.4 importlib-metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0
# pympler==1.1 pytest-xdist==3.8.0 execnet==2.1.2 (about 2 MiB together).
# The GPU machine provides numpy, scipy, torch (CUDA), cupy, jax (CUDA), pytest
# and hypothesis. Install line used on it (step 1):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#
# Set GPU_CHECK_COMMIT=<sha of the checkout> (git rev-parse HEAD where the files
# come from, with a clean tree): a stand-in commit of the working tree is made in
# a temporary repository (the checkout is not touched) and the results are
# refiled under that hash. Without it a carried .git gives the commit, and
# nothing checks that the .git matches the files (on one GPU machine it did
# not: a stale .git filed a later tree's results under an older commit).
#
# Environment (all optional):
#   PYTHON                interpreter (default python3)
#   MACHINE               asv machine name (default: from nvidia-smi / torch, e.g. h100, h200)
#   GPU_CHECK_BUDGET_S    wall budget of the whole script in seconds (default 400)
#   GPU_CHECK_PYTEST_S    time budget of the tests (default 170)
#   GPU_CHECK_WORKERS     pytest-xdist workers where pytest-xdist imports (default 8; 0: serial;
#                         on an H100/H200 with 16 cores: 4 workers 64 s, 8 workers 31 s)
#   GPU_CHECK_REPEAT      asv repeat attribute (default "(1,5,2.0)": 1 to 5 samples within 2 s)
#   GPU_CHECK_SITE        where the wheels go (default /tmp/site; a temporary folder in a dry run)
#   GPU_CHECK_COMMIT      the real commit hash of the files (preferred over a carried .git)
#   GPU_CHECK_GROUPS      comma-separated headline groups to run (default: all, in order), for a
#                         second short call that completes a group the first ran out of time for

set -uo pipefail

usage() { echo "usage: $0 OUTDIR [--dry-run]" >&2; exit 64; }

OUT="" DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,/^$/p' "$0"; exit 0 ;;
        -*) usage ;;
        *) [ -z "$OUT" ] || usage; OUT=$arg ;;
    esac
done
[ -n "$OUT" ] || usage

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
mkdir -p "$OUT" || exit 64
OUT=$(cd "$OUT" && pwd)
if [ -n "$(ls -A "$OUT")" ]; then
    echo "$0: OUTDIR $OUT is not empty" >&2
    exit 64
fi

PY=$(command -v "${PYTHON:-python3}") || { echo "$0: no interpreter ${PYTHON:-python3}" >&2; exit 64; }
case "$PY" in /*) ;; *) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute, links kept
ALL_GROUPS=$("$PY" "$HERE/gpu_summary.py" groups) || { echo "$0: asv_bench/gpu_summary.py groups failed" >&2; exit 64; }
# GPU_CHECK_GROUPS: whitespace ignored, split on commas, empty items skipped; every name
# must be a group and at least one must be given (a set but empty selection is refused)
SELECTED=()
if [ -n "${GPU_CHECK_GROUPS+set}" ]; then
    IFS=, read -ra names <<< "${GPU_CHECK_GROUPS//[[:space:]]/}"
    for g in "${names[@]}"; do
        [ -n "$g" ] || continue
        if ! grep -qxF -- "$g" <<< "$ALL_GROUPS"; then
            echo "$0: GPU_CHECK_GROUPS names no headline group '$g'; the groups are: $(echo $ALL_GROUPS | tr ' ' ',')" >&2
            exit 64
        fi
        SELECTED+=("$g")
    done
    if [ ${#SELECTED[@]} -eq 0 ]; then
        echo "$0: GPU_CHECK_GROUPS is set but names no group; unset it to run all, or name some of: $(echo $ALL_GROUPS | tr ' ' ',')" >&2
        exit 64
    fi
fi
selected() {  # selected GROUP: whether GROUP runs
    [ ${#SELECTED[@]} -eq 0 ] && return 0
    local g
    for g in "${SELECTED[@]}"; do [ "$g" = "$1" ] && return 0; done
    return 1
}
BUDGET=${GPU_CHECK_BUDGET_S:-400}
PYTEST_BUDGET=${GPU_CHECK_PYTEST_S:-170}
WORKERS=${GPU_CHECK_WORKERS:-8}
REPEAT=${GPU_CHECK_REPEAT:-(1,5,2.0)}
RESERVE=20          # seconds kept for packing at the end
GROUP_MIN=25        # an asv group is started only with at least this much time left
BENCH_TIMEOUT=120   # asv timeout of one benchmark process

# The GPU selection of tests/: backend ids torch_cuda-<dtype> and cupy-<dtype>,
# the CUDA optimizer test (test_torch_optimizers_on_cuda_match_cpu), the CuPy
# fast-path tests; not this script's own test.
PYTEST_K="(cuda or cupy or gpu) and not gpu_check"

SUMMARIZER="$HERE/gpu_summary.py"
SUMMARY="$OUT/summary.txt"
LOG="$OUT/gpu_check.log"
INFO="$OUT/gpu-info.txt"
JUNIT="$OUT/pytest-gpu.xml"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

exec 3>&1 4>&2
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

now() { date +%s.%N; }
T_START=$(now)
elapsed() { awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%d", b - a }'; }
left() { echo $(( BUDGET - $(elapsed) )); }

STEP_LINES=()
FAILED_STEPS=()
TESTS_FAILED=0
step_begin() {
    STEP=$1
    STEP_T0=$(now)
    echo
    echo "== [$(elapsed) s] step $STEP: $2"
}
step_end() {  # step_end STATUS NOTE   (STATUS: ok, skipped or FAILED)
    local dt
    dt=$(awk -v a="$STEP_T0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    STEP_LINES+=("$(printf '  %-8s %-8s %7s s  %s' "$STEP" "$1" "$dt" "$2")")
    [ "$1" = FAILED ] && FAILED_STEPS+=("$STEP")
    echo "== [$(elapsed) s] step $STEP: $1 in $dt s${2:+ ($2)}"
}
join_notes() { local s; s=$(printf '%s; ' "$@"); echo "${s%; }"; }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

MODE="GPU run"
[ "$DRY" = 1 ] && MODE="dry run (GPU parts skip)"
echo "spectral_ops GPU check, $MODE: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "repository $REPO, interpreter $PY, OUTDIR $OUT, budget ${BUDGET} s (tests ${PYTEST_BUDGET} s)"

# --- 0: commit and machine -------------------------------------------------------
step_begin setup "commit, machine name"
# a checkout copied from another user is "dubious" to git: trust it for this run only
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0="$REPO"
ASV_CONF=()
COMMIT="" COMMIT_NOTE=""
# GPU_CHECK_COMMIT wins over a carried .git, which may be older than the files
# it was carried with (results filed under the wrong commit otherwise)
if [ -z "${GPU_CHECK_COMMIT:-}" ] && [ -e "$REPO/.git" ] &&
    COMMIT=$(git -C "$REPO" rev-parse --verify -q HEAD 2>/dev/null) && [ -n "$COMMIT" ]; then
    COMMIT_NOTE="git HEAD"
    if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        COMMIT_NOTE="git HEAD, working tree has uncommitted changes"
    fi
elif [ "$DRY" = 0 ] && command -v git >/dev/null; then
    # GPU_CHECK_COMMIT set, or no .git: a stand-in commit of the working tree in a temporary
    # bare repository, and an asv configuration pointing at it
    STANDIN="$TMP/standin.git"
    if git init -q --bare "$STANDIN" && git --git-dir="$STANDIN" symbolic-ref HEAD refs/heads/main &&
        GIT_DIR="$STANDIN" GIT_WORK_TREE="$REPO" git add -A &&
        GIT_DIR="$STANDIN" GIT_WORK_TREE="$REPO" git -c user.name=gpu_check \
            -c user.email=gpu_check@localhost commit -q -m "gpu_check stand-in" &&
        COMMIT=$(git --git-dir="$STANDIN" rev-parse HEAD); then
        COMMIT_NOTE="stand-in commit of the working tree"
        "$PY" - "$HERE/asv.conf.json" "$TMP/asv.conf.json" "$STANDIN" "$HERE" <<'EOF'
import json, re, sys
src, dst, repo, here = sys.argv[1:]
text = re.sub(r"^\s*//.*$", "", open(src).read(), flags=re.M)
conf = json.loads(text)
conf["repo"] = repo
for key in ("benchmark_dir", "env_dir", "results_dir", "html_dir"):
    conf[key] = f"{here}/{conf[key]}"
json.dump(conf, open(dst, "w"), indent=1)
EOF
        ASV_CONF=(--config "$TMP/asv.conf.json")
    else
        COMMIT="" COMMIT_NOTE="no git repository and no stand-in"
    fi
else
    COMMIT_NOTE="no git repository"
fi
echo "commit: ${COMMIT:-none} ($COMMIT_NOTE)"

GPU_NAME=""
if command -v nvidia-smi >/dev/null 2>&1; then
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
fi
if [ -z "$GPU_NAME" ] && [ "$DRY" = 0 ]; then
    GPU_NAME=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null)
fi
if [ -z "${MACHINE:-}" ]; then
    case "${GPU_NAME^^}" in
        *GH200*) MACHINE=gh200 ;;
        *H200*) MACHINE=h200 ;;
        *H100*) MACHINE=h100 ;;
        "") MACHINE=$([ "$DRY" = 1 ] && echo dry-run || echo gpu) ;;
        *) MACHINE=$(echo "${GPU_NAME^^}" | grep -oE '\b[A-Z]{1,2}[0-9]{2,4}[A-Z]?\b' | head -n 1 | tr 'A-Z' 'a-z')
           MACHINE=${MACHINE:-gpu} ;;
    esac
fi
echo "device: ${GPU_NAME:-none}; asv machine name: $MACHINE"
step_end ok "machine $MACHINE, commit ${COMMIT:0:8}"

# --- 1: the carried wheels -------------------------------------------------------
step_begin install "carried wheels from .whl/, no network"
if [ "$DRY" = 1 ]; then
    SITE=${GPU_CHECK_SITE:-$TMP/site}
else
    SITE=${GPU_CHECK_SITE:-/tmp/site}
fi
shopt -s nullglob
WHEELS=("$REPO"/.whl/*.whl)
shopt -u nullglob
if [ ${#WHEELS[@]} -eq 0 ]; then
    if [ "$DRY" = 1 ]; then
        step_end skipped "no .whl/ here (dry run); the GPU machine needs it"
    else
        echo "no wheels in $REPO/.whl: the header of this script says how to download them"
        step_end FAILED "no wheels in .whl/"
    fi
else
    mkdir -p "$SITE"
    echo "${#WHEELS[@]} wheels: $(cd "$REPO/.whl" && ls *.whl | tr '\n' ' ')"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${WHEELS[@]}"; then
        step_end ok "${#WHEELS[@]} wheels into $SITE"
    else
        # without a working pip: a wheel is a zip of what site-packages gets
        echo "pip install failed; unpacking the wheels directly"
        if "$PY" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
            "$SITE" "${WHEELS[@]}"; then
            step_end ok "${#WHEELS[@]} wheels unpacked into $SITE (pip failed)"
        else
            step_end FAILED "could not install the wheels"
        fi
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export ASV_PYTHONPATH="$PYTHONPATH"   # asv drops PYTHONPATH in its subprocesses otherwise
export PYTHONDONTWRITEBYTECODE=1

# --- machine information ---------------------------------------------------------
step_begin info "versions and devices -> gpu-info.txt"
{
    echo "recorded: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "mode: $MODE"
    echo "commit: ${COMMIT:-none} ($COMMIT_NOTE)"
    echo "asv machine: $MACHINE"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1
    else
        echo "nvidia-smi: not found"
    fi
    "$PY" - <<'EOF'
import importlib, os, platform
print("python", platform.python_version(), platform.machine(), "cpus", os.cpu_count())
for name in ("numpy", "scipy", "torch", "cupy", "jax", "jaxlib", "optax", "array_api_compat",
             "array_api_strict", "pytest", "hypothesis", "xdist", "asv", "asv_runner",
             "spectral_ops"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')}  ({os.path.dirname(mod.__file__ or '')})")
    except Exception as exc:
        print(f"{name} missing: {type(exc).__name__}: {exc}")
try:
    import torch
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"torch device: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
              f"capability {p.major}.{p.minor}, CUDA {torch.version.cuda}")
    else:
        print("torch device: no CUDA device visible")
except Exception as exc:
    print("torch device: error", exc)
try:
    import cupy
    n = cupy.cuda.runtime.getDeviceCount()
    print(f"cupy devices: {n}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
except Exception as exc:
    print("cupy devices: none:", type(exc).__name__, exc)
try:
    import jax
    print("jax devices:", jax.devices())
except Exception as exc:
    print("jax devices: none:", type(exc).__name__, exc)
EOF
} > "$INFO" 2>&1
cat "$INFO"
GPU_SEEN=0
grep -q "^torch device: .*SMs" "$INFO" && GPU_SEEN=1
if grep -q "^spectral_ops missing" "$INFO"; then
    step_end FAILED "spectral_ops does not import"
elif [ "$DRY" = 0 ] && [ "$GPU_SEEN" = 0 ]; then
    step_end FAILED "torch sees no CUDA device: the GPU tests and benchmarks will skip"
else
    step_end ok "$(grep -m1 '^torch device' "$INFO" || echo 'torch: -')"
fi

# --- 2: tests ----------------------------------------------------------------------
TEST_LINE=""
step_begin tests "pytest tests -k \"$PYTEST_K\""
PYTEST_ARGS=(tests -k "$PYTEST_K" -p no:cacheprovider -o junit_family=xunit2 --junitxml "$JUNIT")
if [ "$DRY" = 1 ]; then
    # GPU parts skip: collect the selection only (nothing runs)
    (cd "$REPO" && CUDA_VISIBLE_DEVICES="" "$PY" -m pytest "${PYTEST_ARGS[@]}" --collect-only -q) \
        > "$TMP/collect.txt" 2>&1
    rc=$?
    grep -E "::" "$TMP/collect.txt" | sed 's/\[.*//' | sort | uniq -c
    [ $rc -eq 0 ] || grep -vE "::" "$TMP/collect.txt" | tail -n 40  # collection errors
    tail -n 3 "$TMP/collect.txt"
    collected=$(grep -oE '^[0-9]+(/[0-9]+)? tests? collected' "$TMP/collect.txt" | head -n 1)
    TEST_LINE="dry run: ${collected:-nothing collected} (GPU selection, collect only)"
    if [ $rc -eq 0 ] && [ -n "$collected" ]; then
        step_end ok "$collected"
    else
        step_end FAILED "pytest --collect-only exited with $rc"
        TESTS_FAILED=1
    fi
else
    XDIST=() THREADS=()
    if [ "$WORKERS" -gt 0 ] && "$PY" -c "import xdist" 2>/dev/null; then
        XDIST=(-n "$WORKERS")
        # the host-side references (float64 SVDs) share the cores between the workers
        per=$(( $(nproc 2>/dev/null || echo 4) / WORKERS ))
        [ "$per" -lt 1 ] && per=1
        THREADS=(OMP_NUM_THREADS=$per OPENBLAS_NUM_THREADS=$per MKL_NUM_THREADS=$per)
    fi
    T=$(min "$PYTEST_BUDGET" $(( $(left) - RESERVE - 60 )))
    [ "$T" -lt 30 ] && T=30
    echo "time budget ${T} s, ${XDIST[*]:-serial}"
    # SIGINT at the budget: pytest stops, reports and writes the junit XML of what ran
    (cd "$REPO" && env "${THREADS[@]}" CUPY_TF32=0 NVIDIA_TF32_OVERRIDE=0 \
        XLA_PYTHON_CLIENT_PREALLOCATE=false \
        timeout -s INT -k 20 "$T" "$PY" -m pytest "${PYTEST_ARGS[@]}" "${XDIST[@]}" \
        -q -rfEX --durations=15)
    rc=$?
    if [ -s "$JUNIT" ]; then
        TEST_LINE=$("$PY" "$SUMMARIZER" junit "$JUNIT" 2>&1)
    else
        TEST_LINE="no junit XML written"
    fi
    case $rc in
        0) step_end ok "$TEST_LINE" ;;
        124|137) TESTS_FAILED=1; TEST_LINE="INCOMPLETE, stopped at the ${T} s budget: $TEST_LINE"
                 step_end FAILED "$TEST_LINE" ;;
        *) TESTS_FAILED=1; step_end FAILED "pytest exit $rc: $TEST_LINE" ;;
    esac
    if [ "$GPU_SEEN" = 0 ]; then
        TESTS_FAILED=1
        TEST_LINE="$TEST_LINE (no CUDA device visible: GPU tests skipped)"
    fi
fi
echo "tests: $TEST_LINE"
[ -s "$JUNIT" ] || echo '<?xml version="1.0" encoding="utf-8"?><testsuites/>' > "$JUNIT"

# --- 3: asv ------------------------------------------------------------------------
HEADLINE_TEXT=""
step_begin asv "headline benchmarks (asv_bench/gpu_summary.py HEADLINE)"
if [ "$DRY" = 1 ]; then
    status=ok notes=()
    "$PY" "$SUMMARIZER" check > "$TMP/check.txt" 2>&1 || status=FAILED
    cat "$TMP/check.txt"
    notes+=("$(tail -n 1 "$TMP/check.txt")")
    for g in $ALL_GROUPS; do
        if ! selected "$g"; then
            echo "-- group $g: not selected (GPU_CHECK_GROUPS=$(IFS=,; echo "${SELECTED[*]}"))"
            continue
        fi
        echo "-- group $g:"
        "$PY" "$SUMMARIZER" regexes "$g" | sed 's/^/   -b /'
    done
    if "$PY" -c "import asv" 2>/dev/null; then
        if (cd "$HERE" && "$PY" -m asv check "${ASV_CONF[@]}" --environment "existing:$PY") \
            > "$TMP/asvcheck.txt" 2>&1; then
            notes+=("asv check passed")
        else
            status=FAILED
            notes+=("asv check failed")
        fi
        tail -n 5 "$TMP/asvcheck.txt"
    else
        notes+=("asv is not installed: names checked by importing the benchmark modules only")
    fi
    notes_line=$(join_notes "${notes[@]}")
    echo "$notes_line"
    HEADLINE_TEXT="dry run: no benchmarks ran; $notes_line"
    step_end "$status" "$notes_line"
elif ! "$PY" -c "import asv" 2>/dev/null; then
    HEADLINE_TEXT="asv does not import: no benchmarks ran"
    step_end FAILED "asv does not import"
elif [ -z "$COMMIT" ]; then
    HEADLINE_TEXT="no commit to file results under: no benchmarks ran"
    step_end FAILED "no commit"
else
    cd "$HERE" || exit 1
    # the machine record (~/.asv-machine.json): this host's defaults under the
    # fixed name (`asv machine --machine NAME --yes` would record the name only)
    "$PY" - "$MACHINE" "$GPU_NAME" <<'EOF'
import sys
from asv.machine import Machine, MachineCollection
name, gpu = sys.argv[1:3]
info = Machine.get_defaults()
info["machine"] = name
if gpu:
    info["cpu"] = f"{info['cpu']} + {gpu}"
MachineCollection.save(name, info)
print("asv machine:", info)
EOF
    group_notes=() asv_failed=0
    for g in $ALL_GROUPS; do
        if ! selected "$g"; then
            echo "-- group $g: not selected (GPU_CHECK_GROUPS=$(IFS=,; echo "${SELECTED[*]}"))"
            continue
        fi
        rem=$(( $(left) - RESERVE ))
        if [ "$rem" -lt "$GROUP_MIN" ]; then
            echo "-- group $g: skipped, ${rem} s left"
            group_notes+=("$g SKIPPED (out of time)")
            asv_failed=1
            continue
        fi
        bench=()
        while read -r rx; do bench+=(-b "$rx"); done < <("$PY" "$SUMMARIZER" regexes "$g")
        g0=$(now)
        echo "-- [$(elapsed) s] group $g (at most ${rem} s)"
        CUPY_TF32=0 NVIDIA_TF32_OVERRIDE=0 timeout -s INT -k 15 "$rem" \
            "$PY" -m asv run "${ASV_CONF[@]}" --environment "existing:$PY" --machine "$MACHINE" \
            --set-commit-hash "$COMMIT" --show-stderr --record-samples \
            -a rounds=1 -a "repeat=$REPEAT" -a warmup_time=0 -a "timeout=$BENCH_TIMEOUT" \
            "${bench[@]}"
        rc=$?
        dt=$(awk -v a="$g0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
        case $rc in
            0) group_notes+=("$g ok ${dt} s") ;;
            124|137) group_notes+=("$g STOPPED at ${dt} s (time ran out, its results are lost)")
                     asv_failed=1 ;;
            *) group_notes+=("$g asv exit $rc (a benchmark failed) ${dt} s"); asv_failed=1 ;;
        esac
        echo "-- group ${group_notes[-1]}"
    done
    if [ -n "${GPU_CHECK_COMMIT:-}" ] && [ -n "${STANDIN:-}" ]; then
        "$PY" "$SUMMARIZER" refile results "$MACHINE" "$COMMIT" "$GPU_CHECK_COMMIT" &&
            COMMIT=$GPU_CHECK_COMMIT COMMIT_NOTE="$COMMIT_NOTE; results refiled under GPU_CHECK_COMMIT"
    fi
    if [ -f results/benchmarks.json ]; then
        "$PY" "$SUMMARIZER" check --benchmarks-json results/benchmarks.json || asv_failed=1
    fi
    HEADLINE_TEXT=$("$PY" "$SUMMARIZER" summary results "$MACHINE" --commit "$COMMIT" 2>&1)
    echo "$HEADLINE_TEXT"
    cd "$REPO" || exit 1
    if [ "$asv_failed" = 0 ]; then
        step_end ok "$(join_notes "${group_notes[@]}")"
    else
        step_end FAILED "$(join_notes "${group_notes[@]}")"
    fi
fi

# --- 4: pack and verify OUTDIR ---------------------------------------------------------
step_begin pack "OUTDIR: asv results tarball, summary, layout check"
STAGE="$TMP/stage"
mkdir -p "$STAGE/results"
[ -d "$HERE/results/$MACHINE" ] && cp -r "$HERE/results/$MACHINE" "$STAGE/results/"
[ -f "$HERE/results/benchmarks.json" ] && cp "$HERE/results/benchmarks.json" "$STAGE/results/"
mkdir -p "$STAGE/results/$MACHINE"
cp "$INFO" "$STAGE/results/$MACHINE/gpu-info.txt"
tar -czf "$OUT/asv-results-$MACHINE.tar.gz" -C "$STAGE" results
echo "asv-results-$MACHINE.tar.gz:"
tar -tzf "$OUT/asv-results-$MACHINE.tar.gz" | sed 's/^/  /'
step_end ok "asv-results-$MACHINE.tar.gz"

write_summary() {  # write_summary LAYOUT_LINE
    {
        echo "spectral_ops GPU check, $MODE"
        echo "commit ${COMMIT:-none} ($COMMIT_NOTE); machine $MACHINE; device ${GPU_NAME:-none}"
        echo "total $(elapsed) s of the ${BUDGET} s budget"
        echo "tests: $TEST_LINE"
        echo "steps (wall time):"
        printf '%s\n' "${STEP_LINES[@]}"
        echo "failed steps: ${FAILED_STEPS[*]:-none}"
        echo "asv headline:"
        echo "$HEADLINE_TEXT"
        echo "$1"
    } > "$SUMMARY"
}
write_summary "outdir: (being checked)"

# the layout rules: at most 8 files, each under 16 MiB, at most two folders deep
layout_problems=$(cd "$OUT" && {
    n=$(find . -mindepth 1 -not -type d | wc -l)
    [ "$n" -le 8 ] || echo "$n files (at most 8)"
    find . -mindepth 1 -not -type d -not -type f | sed 's/^/not a plain file: /'
    find . -type f -size +16383k | sed 's/^/16 MiB or more: /'
    find . -mindepth 4 | sed 's/^/deeper than two folders: /'
})
n_files=$(find "$OUT" -mindepth 1 -type f | wc -l)
if [ -z "$layout_problems" ]; then
    LAYOUT="outdir: ok, $n_files files: $(cd "$OUT" && ls | tr '\n' ' ')"
else
    LAYOUT="outdir: PROBLEMS: $(echo "$layout_problems" | tr '\n' ';')"
    FAILED_STEPS+=(outdir)
fi
echo "$LAYOUT"
write_summary "$LAYOUT"

echo
echo "== summary ($SUMMARY)"
cat "$SUMMARY"

status=0
if [ "$TESTS_FAILED" = 1 ]; then
    status=1
elif [ ${#FAILED_STEPS[@]} -gt 0 ]; then
    status=2
fi
echo "== [$(elapsed) s] done, exit status $status"
exec 1>&3 2>&4 3>&- 4>&-
wait "$TEE_PID" 2>/dev/null
exit $status
