#!/usr/bin/env bash
# Prepared in session 24 for the next session's first call (~9 min on a fresh H100): run4_verify.sh
# again after the WG1 P_FREE fix for rendezvous + TMA output (run4/hang_diagnosis.txt). Every CUDA
# GPU test (the new test_gpu_rendezvous_with_tma_output hung before the fix), then
# scripts/gpu_racecheck.sh, which now runs the cases without a sanitizer first.
exec bash "$(dirname "$0")/run4_verify.sh"
