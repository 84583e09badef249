"""The accelerator table: memory and peak FLOP/s per chip, with the vendor page each number comes from.

``launch.plan`` divides XLA's FLOP count by ``peak_bf16_flops`` (times an assumed fraction of peak) and
checks per-chip memory against ``hbm_bytes``; ``--batch_size=auto`` uses ``hbm_bytes`` on TPUs whose
runtime reports no memory limit (compile-only topology devices). Peaks are the vendors' *dense* peaks
per chip (NVIDIA's "sparse" figures are 2x these). ``hbm_bytes`` of a TPU is what libtpu's compiler lets
one program use (its RESOURCE_EXHAUSTED message names the "available HBM": v4 30.75 GiB, v5e 15.75 GiB,
v5p 95.74 GiB, v6e 31.25 GiB with libtpu 0.0.42.1), a little below the nominal HBM of the source page
(32 GiB, 16 GiB, 95 GiB, 32 GiB); a GPU's is its nominal memory (the job reads the runtime's
``bytes_limit`` there). GB = 1e9 bytes, GiB = 2**30 bytes. The TPU documentation gives no float32 peak: XLA:TPU runs float32 matmuls and
convolutions as bf16 MXU passes (one at DEFAULT precision), so the bf16 peak is the relevant one.
Per chip: v4 and v5p chips hold two TensorCores that JAX shows as one device ("megacore", what
``launch.plan`` compiles for); v5e and v6e chips one.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

GB = 10**9
GIB = 2**30
TFLOPS = 1e12


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  generation: str  # the topology prefix ('v5e' in 'v5e:2x2'); '' for GPUs
  device_kind: str  # jax's Device.device_kind (GPUs: matched as a prefix)
  hbm_bytes: int
  hbm_bytes_per_second: float
  peak_bf16_flops: float  # dense
  megacore: bool  # 2 TensorCores shown as one device (chip_config_name='megacore')
  source: str


CHIPS = (
  Chip(
    'TPU v4',
    'v4',
    'TPU v4',
    int(30.75 * GIB),
    1200 * GB,
    275 * TFLOPS,
    True,
    'https://cloud.google.com/tpu/docs/v4',
  ),
  Chip(
    'TPU v5e',
    'v5e',
    'TPU v5 lite',
    int(15.75 * GIB),
    819 * GB,
    197 * TFLOPS,
    False,
    'https://docs.cloud.google.com/tpu/docs/v5e',
  ),
  Chip(
    'TPU v5p',
    'v5p',
    'TPU v5',
    int(95.74 * GIB),
    2765 * GB,
    459 * TFLOPS,
    True,
    'https://cloud.google.com/tpu/docs/v5p',
  ),
  Chip(
    'TPU v6e',
    'v6e',
    'TPU v6 lite',
    int(31.25 * GIB),
    1638 * GB,
    918 * TFLOPS,
    False,
    'https://docs.cloud.google.com/tpu/docs/v6e',
  ),
  Chip(
    'NVIDIA H100 SXM 80GB',
    '',
    'NVIDIA H100',
    80 * GB,
    3350 * GB,
    989 * TFLOPS,
    False,
    'https://www.nvidia.com/en-us/data-center/h100/ (datasheet; dense bf16 = half the sparse 1979)',
  ),
  Chip(
    'NVIDIA H200 SXM 141GB',
    '',
    'NVIDIA H200',
    141 * GB,
    4800 * GB,
    989 * TFLOPS,
    False,
    'https://www.nvidia.com/en-us/data-center/h200/ (datasheet; dense bf16 = half the sparse 1979)',
  ),
)
TPU_GENERATIONS = tuple(c.generation for c in CHIPS if c.generation)


def by_device_kind(device_kind: str) -> Optional[Chip]:
  """The chip whose ``device_kind`` is ``device_kind`` (GPUs: its prefix, e.g. 'NVIDIA H100 80GB HBM3')."""
  for chip in CHIPS:
    if device_kind == chip.device_kind or (not chip.generation and device_kind.startswith(chip.device_kind)):
      return chip
  return None


def by_generation(generation: str) -> Optional[Chip]:
  """The TPU chip of a topology prefix ('v5e' of 'v5e:16x16'; 'v5litepod' is not a topology prefix)."""
  return next((c for c in CHIPS if c.generation and c.generation == generation), None)
