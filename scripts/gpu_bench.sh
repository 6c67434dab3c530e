#!/usr/bin/env bash
# The benchmark step of a GPU-host run: install the carried competitor packages, run
# `python -m flashmla.bench` (every provider side by side, supervised), and leave the CSV,
# markdown, plots and log under $OUT. Prints a short table last.
#
# Usage (repo root, on the GPU host; flashmla._C built beforehand, e.g. by scripts/gpu_cuda.sh,
# else the flashmla-cuda provider is listed as skipped):
#   scripts/gpu_bench.sh                  # full run: table + sweep + small + long (about 4-5 min)
#   scripts/gpu_bench.sh --quick          # 10 shapes (about 2 min, most of it JIT/compiles)
#   scripts/gpu_bench.sh --suites sweep --providers flashmla-cuda,flashinfer-fa3
# Any arguments go to `python -m flashmla.bench`.
#
# Carried (ignored) paths it uses when present, each optional (a missing one = skipped providers):
#   .gpu/flashinfer/flashinfer-site.tar.xz + .gpu/flashinfer/apache_tvm_ffi-*.whl   -> flashinfer-fa3/fa2
#   .gpu/vllm-kernels.tar.xz   (vLLM 0.26.0's _flashmla_C + triton_decode_attention.py) -> flash_mla, vllm-triton
#   .gpu/flashmla-head/        (scripts/build_flashmla_head.sh: FlashMLA 9241ae3's dense decode) -> flashmla-head
# Environment:
#   OUT            output folder (default benchmarks/results/run-<date>)
#   BENCH_TIMEOUT  seconds for the benchmark itself (default 360, the budget); on expiry the rows measured
#                  so far are still reported
#   BENCH_PACK=1   put everything into $OUT/bench_results.tar.gz + bench.md + bench_log.txt
#                  (3 files; for hosts that return few files). Default 0: plain files in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-benchmarks/results/run-$(date +%Y%m%d-%H%M)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
WORK=${BENCH_WORK:-/tmp/flashmla-bench}
SITE=$WORK/site
RESULTS=$WORK/results
LOG=$WORK/bench_log.txt
rm -rf "$RESULTS" && mkdir -p "$SITE" "$RESULTS"
export PYTHONUNBUFFERED=1
export FLASHMLA_BENCH_CACHE=$WORK/cache
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }

say "=== gpu_bench.sh $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader 2>&1 | tee -a "$LOG"

# --- competitors (no internet on the host: only what was carried) -------------------------------
BENCH_WORK=$WORK bash scripts/gpu_payloads.sh 2>&1 | tee -a "$LOG"
[ -d "$WORK/vllm-kernels" ] && export FLASHMLA_BENCH_VLLM_KERNELS=$WORK/vllm-kernels
# Our checkout first (flashmla._C built in place), then the carried packages, then what was set before.
export PYTHONPATH=$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import flashmla; print('flashmla', flashmla.__version__, flashmla.backend_status('cuda'))" 2>&1 | tee -a "$LOG"

# --- the benchmark --------------------------------------------------------------------------------
say "=== python -m flashmla.bench --out $RESULTS $*"
timeout -s TERM -k 30 "${BENCH_TIMEOUT:-360}" \
  $PY -m flashmla.bench --out "$RESULTS" --table none "$@" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 124 ] || [ ! -f "$RESULTS/bench.csv" ]; then
  say "benchmark stopped (exit $rc); writing the report from the rows recorded so far"
  $PY -m flashmla.bench --out "$RESULTS" --report-only --table none "$@" 2>&1 | tee -a "$LOG"
fi

# --- results ----------------------------------------------------------------------------------------
cp "$LOG" "$RESULTS/bench_log.txt"
rm -rf "$RESULTS/state"
if [ "${BENCH_PACK:-0}" = 1 ]; then
  tar -czf "$OUT/bench_results.tar.gz" -C "$RESULTS" . && cp "$RESULTS/bench.md" "$RESULTS/bench_log.txt" "$OUT/" 2>/dev/null
else
  cp "$RESULTS"/* "$OUT/" 2>/dev/null
fi
echo
echo "=== results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
grep -E "^- (GPU|ceilings|torch|timing)" "$RESULTS/bench.md" 2>/dev/null
grep -E "^- flashmla-(cuda|triton):" "$RESULTS/bench.md" 2>/dev/null
echo
if [ -f "$RESULTS/bench.csv" ]; then
  $PY -c "import sys; from flashmla.bench import report; report.print_csv_table(sys.argv[1])" "$RESULTS/bench.csv"
fi
echo "gpu_bench.sh: benchmark exit code $rc"
exit "$rc"
