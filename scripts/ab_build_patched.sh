#!/usr/bin/env bash
# A patched copy of this tree, built beside it, for scripts/ab_cuda.py's "build/NAME" variants (GPU
# host): copies setup.py, pyproject.toml, flashmla, csrc, tests and scripts to /tmp/NAME, applies
# PATCH there and builds flashmla._C; the tree's own build runs alongside (both with MAX_JOBS=8).
#   scripts/ab_build_patched.sh NAME PATCH LOG_DIR
# Prints one line per build (rc, serialisation notes, spilling kernels); exits 1 if the patch does
# not apply or a build fails.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { echo "usage: $0 NAME PATCH LOG_DIR"; exit 2; }
name=$1 patch=$(realpath "$2") logs=$3
mkdir -p "$logs"
rm -rf "/tmp/$name" && mkdir -p "/tmp/$name" && cp -r setup.py pyproject.toml flashmla csrc tests scripts "/tmp/$name/"
rm -f "/tmp/$name"/flashmla/_C*.so
(cd "/tmp/$name" && git apply "$patch") || { echo "$patch does not apply"; exit 1; }
build() {  # $1: dir, $2: log
  (cd "$1" && FLASHMLA_BUILD_CUDA=1 MAX_JOBS=8 python3 setup.py build_ext --inplace --force >"$2" 2>&1
   rc=$?
   echo "build $1 rc=$rc $(grep -c 'instructions are serialized' "$2") serialised, $(grep -cE '[1-9][0-9]* bytes spill' "$2") spilling"
   exit $rc)
}
build "$PWD" "$logs/build_tree.log" & tree=$!
build "/tmp/$name" "$logs/build_$name.log" & patched=$!
wait $tree && wait $patched
