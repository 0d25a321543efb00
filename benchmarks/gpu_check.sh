#!/usr/bin/env bash
# One prepared GPU check of every GPU path of this project that runs on a bare lent NVIDIA machine
# (torch with CUDA, cuda-bindings, onnx, onnxruntime CPU; no TensorRT, no Ray, no package registry).
#
#   PYTHONPATH=. bash benchmarks/gpu_check.sh [OUTDIR] [OPTIONS]
#
# OUTDIR defaults to $OUT, else ./gpu_check_out. It receives report.md, results.json, clock_trace.csv and
# log.txt. Options: --budget-s S (default 330), --only a,b, --skip a,b, --limit NAME=S, --no-gpu,
# --self-test, --keep-tmp; see benchmarks/gpu_check.py. Without a CUDA GPU every section is reported as
# skipped (exit 0) within seconds. Exit: 0 all ok or skipped, 1 a section failed or timed out, 2 bad arguments.
# The interpreter is $PYTHON if set, else python3, else python.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    OUT_DIR="$1"
    shift
else
    OUT_DIR="${OUT:-./gpu_check_out}"
fi
if [ -z "$OUT_DIR" ]; then
    echo "gpu_check: error: the output folder is empty: give OUTDIR or set OUT" >&2
    exit 2
fi
case "$OUT_DIR" in
    /*) ;;
    *) OUT_DIR="$PWD/$OUT_DIR" ;;
esac

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if command -v python3 >/dev/null 2>&1; then
        PY=python3  # on the lent GPU machines python3 is the interpreter that holds torch with CUDA
    elif command -v python >/dev/null 2>&1; then
        PY=python
    else
        echo "gpu_check: error: no python or python3 on PATH (or set PYTHON)" >&2
        exit 2
    fi
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$ROOT" || exit 2
exec "$PY" "$ROOT/benchmarks/gpu_check.py" --out "$OUT_DIR" "$@"
