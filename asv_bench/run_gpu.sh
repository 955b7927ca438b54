#!/usr/bin/env bash
# Offline run of the asv suite on a GPU machine (no network there).
#
# Usage (from anywhere; the repository must be a git checkout):
#
#   asv_bench/run_gpu.sh WHEEL_DIR [extra `asv run` arguments, e.g. -b bench_gpu]
#
# WHEEL_DIR holds wheels carried to the machine: asv, array-api-compat (and
# setuptools>=69 if the machine has an older one, for the editable install) and
# whichever of their dependencies the machine lacks (README.md says how to
# download them on a machine with network). The machine's own Python must
# already have numpy, scipy, torch (CUDA build) and, optionally, cupy.
#
# Environment variables:
#   PYTHON   interpreter to use (default: python3)
#   MACHINE  asv machine name the results are filed under (default: h100)
#   BASE     optional commit to compare against: it is benchmarked too (the
#            library from a temporary worktree of BASE, the benchmarks of this
#            checkout) and the run fails if any benchmark got slower than
#            FACTOR (default 1.1) times its BASE value.
#
# Steps: install the carried wheels and this checkout (editable, no network),
# record the machine info under $MACHINE, run the suite against the existing
# interpreter with the commit hash set, write HTML with `asv publish`.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 WHEEL_DIR [asv run arguments...]" >&2
    exit 2
fi
WHEELS=$(cd "$1" && pwd)
shift

PYTHON=${PYTHON:-python3}
PY=$(command -v "$PYTHON")
MACHINE=${MACHINE:-h100}
FACTOR=${FACTOR:-1.1}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

# git may refuse a checkout owned by another user ("dubious ownership")
if ! git -C "$REPO" rev-parse HEAD >/dev/null 2>&1; then
    git config --global --add safe.directory "$REPO"
fi
HEAD_SHA=$(git -C "$REPO" rev-parse HEAD)

echo "== installing carried wheels from $WHEELS (no network)"
"$PY" -m pip install --no-index --find-links "$WHEELS" asv array-api-compat "setuptools>=69"

install_library() {  # editable install of a source tree, no network, no dependencies
    "$PY" -m pip install --no-index --no-deps --no-build-isolation -e "$1"
}
install_library "$REPO"

cd "$HERE"
echo "== machine info: $MACHINE"
"$PY" -m asv machine --machine "$MACHINE" --yes
mkdir -p "results/$MACHINE"
{
    echo "recorded: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "scipy", "torch", "cupy", "array_api_compat", "asv", "spectral_ops"):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as exc:
        print(name, "missing:", type(exc).__name__)
try:
    import torch
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("torch device:", p.name, f"{p.total_memory / 2**30:.1f} GiB", p.multi_processor_count, "SMs",
              "cuda", torch.version.cuda)
except Exception as exc:
    print("torch device: none", exc)
EOF
} | tee "results/$MACHINE/gpu-info.txt"

run_suite() {  # $1: commit hash to file the results under; rest: asv run arguments
    local sha=$1
    shift
    "$PY" -m asv run --environment "existing:$PY" --machine "$MACHINE" \
        --set-commit-hash "$sha" --show-stderr --record-samples "$@"
}

status=0
if [ -n "${BASE:-}" ]; then
    BASE_SHA=$(git -C "$REPO" rev-parse "$BASE")
    WORKTREE=$(mktemp -d)/base
    git -C "$REPO" worktree add --detach "$WORKTREE" "$BASE_SHA"
    trap 'git -C "$REPO" worktree remove --force "$WORKTREE" || true; install_library "$REPO" || true' EXIT
    echo "== benchmarking BASE $BASE_SHA"
    install_library "$WORKTREE"
    run_suite "$BASE_SHA" "$@"
    install_library "$REPO"
fi

echo "== benchmarking HEAD $HEAD_SHA"
run_suite "$HEAD_SHA" "$@"

if [ -n "${BASE:-}" ]; then
    echo "== comparing BASE $BASE_SHA -> HEAD $HEAD_SHA (factor $FACTOR)"
    "$PY" -m asv compare --machine "$MACHINE" --factor "$FACTOR" --split "$BASE_SHA" "$HEAD_SHA" \
        | tee "results/$MACHINE/compare.txt"
    # asv compare marks a benchmark that got worse by more than FACTOR with '+'
    # and one that newly fails with '!' (first column of its table)
    if grep -Eq '^\|[[:space:]]*[+!][[:space:]]*\|' "results/$MACHINE/compare.txt"; then
        echo "PERFORMANCE DECREASED: see the rows marked '+' or '!' above" >&2
        status=1
    fi
fi

echo "== writing HTML"
"$PY" -m asv publish
echo "results: $HERE/results/$MACHINE   HTML: $HERE/html (open index.html, or: $PY -m asv preview)"
exit $status
