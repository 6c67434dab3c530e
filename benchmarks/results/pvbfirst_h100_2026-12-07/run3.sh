#!/usr/bin/env bash
# Session 29, run 3: scripts/gpu_racecheck.sh again after run 2's racecheck reported 15 hazards
# (stats handoff, ld/st_shared_f32) in the +earlyq+pvbfirst case only: WG1's arrival on
# kBarPVBIssued was a bar.arrive -> bar.sync handoff in the racecheck build too, the pattern
# racecheck mis-models (scripts/racecheck_toy.cu). The racecheck build now syncs there when
# +pvbfirst is on (a predicated bar.sync / bar.arrive helper at the time, since folded into
# publish_barrier); the normal build's SASS is unchanged.
# memcheck now runs even when racecheck fails. Packed into $OUT/run3.tar.xz.
set -uo pipefail
OUT=${OUT:-/tmp/pvb3}; R=$OUT/run3; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
RACECHECK_KEEP_BUILD=1 MAX_JOBS=16 timeout 220 bash scripts/gpu_racecheck.sh "$R/sanitizers" 2>&1 | tee "$R/racecheck_summary.txt" | tail -9
(cd "$OUT" && tar cJf run3.tar.xz run3)
