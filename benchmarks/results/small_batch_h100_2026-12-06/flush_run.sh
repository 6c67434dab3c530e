#!/usr/bin/env bash
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
export PYTHONPATH=$PWD:$PWD/.ref/run
timeout 200 python3 .ref/run/flush_kind.py 2>&1 | tee $OUT/flush_kind.log
