#!/usr/bin/env bash
# The accelerator check in one command (bench/device_check.py; docs/performance.md):
#
#   bash bench/device_check.sh [--deps DIR] [--out DIR] [--smoke] [other bench/device_check.py flags]
#
# Runs from this source tree with no pip install and no network: jax (with the accelerator's plugin),
# flax, optax, orbax-checkpoint and chex must be importable; any other pure-Python package the code
# imports, and the VGG16 weights, come from DIR (built by bench/pack_device_deps.sh: DIR/site/ is put on
# PYTHONPATH, DIR/vgg16_relu3_3.npz is passed as --vgg_npz). Writes device_check.json to --out (default
# $OUT, else the current folder) and prints a table; under 8 minutes on one H100/H200 (the script skips
# the phases that would end past --budget_s, 400 s by default, and a hard timeout stops it at 470 s;
# the JSON is written after every phase).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --deps) DEPS="$2"; shift 2 ;;
    --deps=*) DEPS="${1#--deps=}"; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
PYPATH="$REPO"
if [ -n "$DEPS" ]; then
  DEPS="$(cd "$DEPS" && pwd)"
  [ -d "$DEPS/site" ] && PYPATH="$DEPS/site:$PYPATH"
  [ -f "$DEPS/vgg16_relu3_3.npz" ] && ARGS=(--vgg_npz "$DEPS/vgg16_relu3_3.npz" ${ARGS[@]+"${ARGS[@]}"})
fi
export PYTHONPATH="$PYPATH${PYTHONPATH:+:$PYTHONPATH}"
cd "$REPO"
exec timeout 470 "${PYTHON:-python3}" -m bench.device_check ${ARGS[@]+"${ARGS[@]}"}
