#!/usr/bin/env bash
# One call on a Hopper GPU host: build the sm90a kernel, run the GPU tests, the benchmark with
# every provider side by side, the vLLM end-to-end run and the notebook series; print a short
# table last. Logs and results go under $OUT (default out/gpu-<date>).
#
#   scripts/gpu_check.sh                       # every stage
#   scripts/gpu_check.sh cuda triton bench     # some stages, in this order
#
# Stages (each is a script of its own that also runs alone):
#   cuda       scripts/gpu_cuda.sh: build flashmla._C, smoke, tests/test_cuda.py, compute-sanitizer
#   triton     GPU tests of the Triton kernel (tests/test_triton.py -m gpu)
#   tests      every other GPU-marked test (bench providers, vLLM plugin pieces)
#   bench      scripts/gpu_bench.sh: all providers, CSV + plots (needs .gpu/flashinfer, .gpu/vllm-kernels.tar.xz)
#   vllm       scripts/gpu_vllm.sh: DeepSeek-V2-Lite (dummy weights) in vLLM 0.26.0 with ours,
#              TRITON_MLA and FLASHMLA (needs .gpu/vllm-site.tar.xz)
#   payloads   unpack the carried competitors (.gpu/flashinfer, .gpu/vllm-kernels.tar.xz) into
#              /tmp/flashmla-bench without benchmarking (for the notebooks stage's 03_benchmark)
#   notebooks  the notebook series outside SMOKE mode (python scripts/run_notebooks.py --no-smoke)
# Longer than one 10-minute device call: scripts/gpu_job.sh runs stages as a background job.
# The carry limit of the test host (64 MiB) does not fit the vLLM bundle and FlashInfer together:
# run `bench` and `vllm` in separate calls. Stages after a failed build still run and report.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-out/gpu-$(date +%Y%m%d-%H%M)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(cuda triton tests bench vllm notebooks)
declare -A result seconds

run_stage() {
  local name=$1; shift
  local t0=$SECONDS
  echo; echo "######## $name ($(date +%T))"
  "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  result[$name]=$rc; seconds[$name]=$((SECONDS - t0))
}

for stage in "${stages[@]}"; do
  case $stage in
    cuda)      run_stage cuda env SKIP_BENCH=${SKIP_BENCH:-1} CUDA_PACK=${CUDA_PACK:-1} bash scripts/gpu_cuda.sh ;;
    triton)    run_stage triton timeout 300 $PY -m pytest -q -rs -m gpu -p no:cacheprovider tests/test_triton.py ;;
    tests)     run_stage tests timeout 300 $PY -m pytest -q -rs -m gpu -p no:cacheprovider tests \
                 --ignore=tests/test_cuda.py --ignore=tests/test_triton.py ;;
    bench)     run_stage bench env BENCH_PACK=1 bash scripts/gpu_bench.sh ${BENCH_ARGS:-} ;;
    vllm)      run_stage vllm bash scripts/gpu_vllm.sh ;;
    payloads)  run_stage payloads bash scripts/gpu_payloads.sh ;;
    notebooks) # 04/05 need vLLM (carry .gpu/vllm-site.tar.xz; it does not fit beside FlashInfer): split calls,
               # NB_ONLY="00 01 02 03", then GPU_VLLM_DRY=1 NB_ONLY="02 04 05" with stages `vllm notebooks`
               [ -d .gpu/nbwheels ] && $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/nbwheels \
                 .gpu/nbwheels/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/nbwheels  # papermill & co., offline
               [ -f /tmp/flashmla-vllm/site/vllm/__init__.py ] && export PYTHONPATH=$PYTHONPATH:/tmp/flashmla-vllm/site  # from `vllm`
               [ -d /tmp/flashmla-bench/vllm-kernels ] && export FLASHMLA_BENCH_VLLM_KERNELS=/tmp/flashmla-bench/vllm-kernels
               nb_env=()
               if [ -d /tmp/flashmla-bench/site ]; then  # from `payloads`: FlashInfer for 03_benchmark only.
                 # The carried FlashInfer is trimmed to its MLA sources; vLLM would pick it for DeepSeek's
                 # rope and fail to JIT rope.cu, so 04/05 run without it (as scripts/gpu_vllm.sh does).
                 without_fi=$PYTHONPATH
                 export PYTHONPATH=$PYTHONPATH:/tmp/flashmla-bench/site
                 for nb in 04 05; do
                   case " ${NB_ONLY:-04 05} " in *" $nb"*) nb_env+=(--env "$nb" "PYTHONPATH=$without_fi") ;; esac
                 done
               fi
               run_stage notebooks timeout ${NB_TIMEOUT:-570} $PY scripts/run_notebooks.py --no-smoke ${NB_ONLY:+--only $NB_ONLY} \
                 "${nb_env[@]}" ${NB_ARGS:-} --out "$OUT/notebooks" --archive "$OUT/notebooks.tar.gz" ;;
    *) echo "unknown stage $stage"; result[$stage]=2; seconds[$stage]=0 ;;
  esac
done

echo; echo "######## summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
printf "%-10s %-6s %s\n" stage result seconds
for stage in "${stages[@]}"; do
  rc=${result[$stage]}
  printf "%-10s %-6s %s\n" "$stage" "$([ "$rc" = 0 ] && echo ok || echo "FAIL($rc)")" "${seconds[$stage]}"
done
for stage in "${stages[@]}"; do [ "${result[$stage]}" = 0 ] || exit 1; done
