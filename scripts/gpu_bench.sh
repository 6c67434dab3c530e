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
if ls .gpu/flashinfer/flashinfer-site.tar.xz >/dev/null 2>&1; then
  t0=$SECONDS
  if tar -xJf .gpu/flashinfer/flashinfer-site.tar.xz -C "$SITE" &&
     $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
       .gpu/flashinfer/apache_tvm_ffi-*.whl >>"$LOG" 2>&1; then
    say "flashinfer unpacked into $SITE ($((SECONDS - t0)) s)"
  else
    say "flashinfer: unpacking failed (its providers will be skipped)"
  fi
else
  say "flashinfer: .gpu/flashinfer/flashinfer-site.tar.xz not carried (its providers will be skipped)"
fi
if [ -f .gpu/vllm-kernels.tar.xz ]; then
  if tar -xJf .gpu/vllm-kernels.tar.xz -C "$WORK"; then
    export FLASHMLA_BENCH_VLLM_KERNELS=$WORK/vllm-kernels
    say "vLLM kernels: $FLASHMLA_BENCH_VLLM_KERNELS ($(head -1 "$WORK/vllm-kernels/MANIFEST.txt" 2>/dev/null))"
  else
    say "vLLM kernels: unpacking failed (flash_mla / vllm-triton will be skipped unless vllm is installed)"
  fi
else
  say "vLLM kernels: .gpu/vllm-kernels.tar.xz not carried (flash_mla / vllm-triton use an installed vllm, if any)"
fi
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
