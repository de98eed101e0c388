"""TPU chips' peak numbers, and topology names: libtpu's (`v5e:4x4`) and gcloud's (`v4-32`).

The ahead-of-time check (`aot.py`) compiles for a topology's devices without a TPU and compares
what XLA reports with these figures. Peaks are per chip, from the Cloud TPU system-architecture
pages (docs.cloud.google.com/tpu/docs/v4, /v5e, /v5p-training, /v6e), dense bf16:

  chip  bf16 TFLOP/s  HBM          HBM bandwidth  TensorCores a chip
  v4    275           32 GiB       1200 GB/s      2, one JAX device in megacore mode
  v5e   197           16 GiB       819 GB/s       1
  v5p   459           95 GB        2765 GB/s      2, one JAX device in megacore mode
  v6e   918           32 GB        1638 GB/s      1

v4 and v5p slices are named by TensorCores in gcloud (`v4-32` = 16 chips), v5e and v6e by
chips (`v5litepod-16` = 16 chips); libtpu's names give the chip grid (`v4:2x2x4`).
"""

from __future__ import annotations

import dataclasses
import re

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation's per-chip peak figures (one JAX device per chip, megacore on v4/v5p)."""

  name: str  # libtpu's generation prefix: "v4", "v5e", "v5p", "v6e"
  peak_flops: float  # dense bf16 FLOP/s
  hbm_bytes: int
  hbm_bandwidth: float  # bytes/s
  cores_per_chip: int  # TensorCores: gcloud's v4/v5p sizes count these
  gcloud_family: str  # the accelerator-type prefix: "v4", "v5litepod", "v5p", "v6e"
  grid_dims: int  # 3 for the 3D tori (v4, v5p), 2 for v5e / v6e
  source: str


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 275e12, 32 * GiB, 1200e9, 2, "v4", 3,
               "docs.cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("v5e", 197e12, 16 * GiB, 819e9, 1, "v5litepod", 2,
                "docs.cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("v5p", 459e12, 95 * 10**9, 2765e9, 2, "v5p", 3,
                "docs.cloud.google.com/tpu/docs/v5p-training"),
    "v6e": Chip("v6e", 918e12, 32 * 10**9, 1638e9, 1, "v6e", 2,
                "docs.cloud.google.com/tpu/docs/v6e"),
}
_BY_FAMILY = {c.gcloud_family: c for c in CHIPS.values()} | {"v5e": CHIPS["v5e"]}

# Chip grids of the usual slice sizes (the Cloud TPU pages' topology tables).
_GRIDS_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
             256: "16x16"}
_GRIDS_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
             256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}


@dataclasses.dataclass(frozen=True)
class Topology:
  """A slice to compile for: libtpu's topology name, its chip, and how to ask libtpu for it."""

  name: str  # libtpu's, e.g. "v5e:4x4"
  chip: Chip
  num_chips: int

  @property
  def options(self) -> dict[str, str]:
    """Extra `get_topology_desc` arguments: v4/v5p as one device a chip (megacore), as a
    TPU VM runs them; without it libtpu gives one device per TensorCore."""
    return {"chip_config_name": "megacore"} if self.chip.cores_per_chip > 1 else {}

  @property
  def accelerator(self) -> str:
    """gcloud's accelerator type of this slice, e.g. "v4-32"."""
    return f"{self.chip.gcloud_family}-{self.num_chips * self.chip.cores_per_chip}"


def parse(text: str) -> Topology:
  """A topology from libtpu's name ("v5e:4x4", "v4:2x2x4") or gcloud's type ("v4-32").

  Raises:
    ValueError: one line naming the known forms.
  """
  text = text.strip()
  known = ("known: v4:AxBxC, v5p:AxBxC, v5e:AxB, v6e:AxB, or gcloud types like v4-32, "
           "v5litepod-16, v5p-64, v6e-16")
  match = re.fullmatch(r"(v\w+?):(\d+(?:x\d+)+)", text)
  if match:
    gen, grid = match.groups()
    chip = CHIPS.get(gen)
    dims = [int(d) for d in grid.split("x")]
    if chip is None or len(dims) != chip.grid_dims or min(dims) < 1:
      raise ValueError(f"unknown TPU topology {text!r}; {known}")
    num = 1
    for d in dims:
      num *= d
    return Topology(text, chip, num)
  match = re.fullmatch(r"(v\w+?)-(\d+)", text)
  if match:
    family, size = match.group(1), int(match.group(2))
    chip = _BY_FAMILY.get(family)
    if chip is not None and size % chip.cores_per_chip == 0:
      chips = size // chip.cores_per_chip
      grid = (_GRIDS_3D if chip.grid_dims == 3 else _GRIDS_2D).get(chips)
      if grid is not None:
        return Topology(f"{chip.name}:{grid}", chip, chips)
  raise ValueError(f"unknown TPU topology {text!r}; {known}")
