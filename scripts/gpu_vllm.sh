#!/usr/bin/env bash
# The vLLM step of a GPU-host run (issues 6 and 7): DeepSeek-V2-Lite (real architecture, dummy
# weights) in vLLM 0.26.0 with ours, TRITON_MLA and vLLM's FLASHMLA, CUDA graphs on.
#   1. unpack the offline vLLM bundle (.gpu/vllm-site.tar.xz, carried; see
#      ../shared/tools/vllm-gpu-host/README.md) and install our wheel beside it, so vLLM's engine
#      process finds the vllm.general_plugins entry point;
#   2. build flashmla._C in place if an earlier stage did not;
#   3. GPU tests of the backend (builder + forward_mqa on the CUDA kernel, CUDA-graph capture with
#      padded rows) against the installed vLLM;
#   4. scripts/vllm_e2e.py: ours once, untimed, with the verification switch on, then the three
#      backends in fresh processes; decode ms/step is a decode-only step with the whole batch (the
#      difference of a 1+L and a 1+L+N token generate(), N=128; flashmla/deploy.py,
#      MEASUREMENT_METHOD); table/CSV/JSON/plot.
# Output (<= 6 files, for hosts that return few): $OUT/vllm/{vllm_e2e.md,.csv,.json,.png,vllm_logs.tar.gz}
# Time on an H100 (2026-11-23 run, old method: ~8 min in all): GPU tests ~45 s, 4 vLLM processes of
# ~55 s start-up each; the timed generation is now ~25 s per backend (it was ~12 s), the untimed
# check pass a little shorter than before. E2E_ARGS passes options to vllm_e2e.py, e.g.
# E2E_ARGS="--repetitions 2" or "--decode-steps 256"; every step below prints its elapsed time.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-benchmarks/results/vllm-run-$(date +%Y%m%d-%H%M)}
mkdir -p "$OUT/vllm"
RES=$(cd "$OUT/vllm" && pwd)
WORK=${VLLM_WORK:-/tmp/flashmla-vllm}
SITE=$WORK/site
LOGS=$WORK/logs
PY=${PYTHON:-python3}
rm -rf "$LOGS"; mkdir -p "$SITE" "$LOGS"
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
say() { echo "[+${SECONDS}s] $*" | tee -a "$LOGS/gpu_vllm.txt"; }
finish() {
  ( cd "$WORK" && tar -czf "$RES/vllm_logs.tar.gz" logs ) 2>/dev/null
  [ -f "$RES/vllm_e2e.md" ] && { echo; echo "=== vLLM end to end (ms per decode-only step, medians)"; cat "$RES/vllm_e2e.md"; }
  say "=== gpu_vllm.sh: $1"
  exit "$2"
}

say "=== gpu_vllm.sh $(date -u '+%Y-%m-%d %H:%M UTC')"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader 2>&1 | tee -a "$LOGS/gpu_vllm.txt"

# 1. vLLM bundle + our wheel -------------------------------------------------------------------
BUNDLE=${VLLM_BUNDLE:-.gpu/vllm-site.tar.xz}
[ -f "$BUNDLE" ] || { say "no vLLM bundle at $BUNDLE: build it with ../shared/tools/vllm-gpu-host/make_bundle.sh and carry .gpu/vllm-site.tar.xz"; finish "FAILED (no bundle)" 2; }
t0=$SECONDS
if [ ! -f "$SITE/vllm/__init__.py" ]; then
  xz -dc "$BUNDLE" | tar -xf - -C "$SITE" || finish "FAILED (unpacking $BUNDLE)" 2
fi
say "vLLM bundle unpacked into $SITE ($((SECONDS - t0)) s)"
rm -rf "$WORK/dist" "$SITE"/flashmla "$SITE"/flashmla-*.dist-info
if ! FLASHMLA_BUILD_CUDA=0 $PY -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$WORK/dist" . >"$LOGS/wheel.txt" 2>&1 ||
   ! $PY -m pip install -q --no-deps --no-index --no-compile --target "$SITE" "$WORK"/dist/flashmla-*.whl >>"$LOGS/wheel.txt" 2>&1; then
  tail -20 "$LOGS/wheel.txt"; finish "FAILED (building/installing the flashmla wheel)" 2
fi
# The repository copy first (it holds flashmla._C once built); the wheel's copy carries the entry point.
rm -rf "$SITE/flashmla"
export PYTHONPATH=$REPO:$SITE
$PY - <<'PYEOF' 2>&1 | tee -a "$LOGS/gpu_vllm.txt" || finish "FAILED (vLLM bundle / plugin entry point)" 2
# Cheap checks (no vLLM import: that takes ~20 s and every later step does it anyway).
import importlib.metadata as md, torch, flashmla
eps = [e.value for e in md.entry_points(group="vllm.general_plugins") if e.name == "flashmla"]
print("torch", torch.__version__, "| vllm", md.version("vllm"), "| entry point", eps, "| flashmla from", flashmla.__file__)
assert eps == ["flashmla.vllm_backend:register"], "the flashmla entry point is not installed"
PYEOF

[ "${GPU_VLLM_DRY:-0}" = 1 ] && finish "dry run: bundle + wheel + entry point ok" 0

# 2. our CUDA kernel ------------------------------------------------------------------------------
bash scripts/gpu_build_if_needed.sh "$LOGS/cuda_build.txt" 2>&1 | tee -a "$LOGS/gpu_vllm.txt" ||
  say "CUDA build failed: ours falls back to the Triton kernel"
$PY -c "import torch, flashmla; print('flashmla backends on cuda:', flashmla.backend_status(torch.device('cuda')))" 2>&1 | tee -a "$LOGS/gpu_vllm.txt"

# 3. GPU tests of the backend pieces --------------------------------------------------------------
say "GPU tests of the backend"
timeout 240 $PY -m pytest -q -rs -m gpu -p no:cacheprovider tests/test_vllm_backend.py 2>&1 | tee "$LOGS/pytest_gpu.txt" | tail -15
tests_rc=${PIPESTATUS[0]}

# 4. end to end -----------------------------------------------------------------------------------
say "end to end: scripts/vllm_e2e.py ${E2E_ARGS:-}"
timeout ${E2E_TIMEOUT:-420} $PY scripts/vllm_e2e.py --out "$WORK/logs" ${E2E_ARGS:-} 2>&1 | tee "$LOGS/e2e.txt"
e2e_rc=${PIPESTATUS[0]}
say "end to end finished (rc=$e2e_rc)"
for f in vllm_e2e.md vllm_e2e.csv vllm_e2e.json vllm_e2e.png; do [ -f "$LOGS/$f" ] && cp "$LOGS/$f" "$RES/"; done
[ "$tests_rc" = 0 ] || say "GPU tests of the backend FAILED (rc=$tests_rc)"
[ "$e2e_rc" = 0 ] || finish "FAILED (end to end rc=$e2e_rc; per-process logs in vllm_logs.tar.gz)" 1
[ "$tests_rc" = 0 ] || finish "FAILED (GPU tests)" 1
finish "ok" 0
