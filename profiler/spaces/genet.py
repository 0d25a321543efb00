"""GENet: MasterNet super-blocks and the LLR-NAS perturbation space (GENet seed, sections 4.1, 4.2, 5).

A GENet is a stem conv, super-blocks of one basic type each, and a last 1x1
conv; every activation is ReLU. A super-block is (type, depth, width = output
channels, stride, kernel, ratio) with types ``C`` (a single conv), ``X`` (XX
block), ``B`` (BL bottleneck) and ``D`` (DW block). Its first block has the
stride and the channel change, the others are stride 1.

Block keys: the first ``C`` is ``conv`` 3x3 stride 2 ReLU; ``X``/``B``/``D`` expand
to ``depth`` keys of ``xx``/``bl``/``dw``; the last ``C`` (1x1 conv + global pool +
FC) is one ``tail`` key with ``cout`` = its width.

Perturbation space around a base network (light, normal or large), per the
seed: kernel {3, 5}; width in [0.5c, 2c] as the multiples of 8 in that range
plus c itself (so the base is always a member); depth in [d-2, d+2], at least 1;
BL ratio {0.25, 0.5}; DW ratio {3, 6, 9}; XX ratio 1; resolution {192, 224, 256}.
Choices of this module where the seed is silent: each position keeps its basic
type and stride (LLR-NAS treats kernel and ratio variants as block types, not
X/B/D swaps); the stem keeps kernel 3 and the last conv kernel 1, and only
their widths are perturbed.

Encoding (21 integers, values not indices; ratio in percent)::

    0        resolution (pixels)
    1        stem width (channels)
    2-4      super-block 1 (X): width, kernel, depth
    5-7      super-block 2 (X): width, kernel, depth
    8-11     super-block 3 (B): width, kernel, ratio x 100 (25 or 50), depth
    12-15    super-block 4 (D): width, kernel, ratio x 100 (300, 600, 900), depth
    16-19    super-block 5 (D): width, kernel, ratio x 100, depth
    20       last conv width (channels)

The layout is the same for all three bases; the allowed values depend on the
base, so :func:`validate`, :func:`decode` and :func:`sample` take ``base``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from profiler.spaces.architecture import Architecture
from profiler.spaces.staged import StagedArch, StagedSpace, StageSpec
from tables.key import BlockKey

#: A decoded GENet architecture (resolution plus stem, five super-blocks, last conv).
GENetArch = StagedArch

#: Super-block type letter -> block type of the key.
SUPERBLOCK_BLOCKS: dict[str, str] = {"X": "xx", "B": "bl", "D": "dw"}
#: Perturbed ratios per super-block type.
RATIO_CHOICES: dict[str, tuple[float, ...]] = {"X": (1.0,), "B": (0.25, 0.5), "D": (3.0, 6.0, 9.0)}
#: Perturbed kernels and resolutions (pixels).
KERNEL_CHOICES: tuple[int, ...] = (3, 5)
RESOLUTIONS: tuple[int, ...] = (192, 224, 256)


@dataclass(frozen=True)
class SuperBlock:
    """One MasterNet super-block: type C/X/B/D, depth, width (output channels), stride, kernel, ratio."""

    type: str
    depth: int
    width: int
    stride: int
    kernel: int
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.type not in ("C", *SUPERBLOCK_BLOCKS):
            raise ValueError(f"super-block type {self.type!r} is unknown; use C, X, B or D")
        for name in ("depth", "width", "kernel"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"super-block {name} {getattr(self, name)!r} must be a positive integer")
        if self.stride not in (1, 2):
            raise ValueError(f"super-block stride {self.stride!r} is invalid; use 1 or 2")


def _c(d: int, c: int, s: int, k: int) -> SuperBlock:
    return SuperBlock("C", d, c, s, k, 1.0)


#: GENet-light/normal/large (GENet seed, Table 2): stem, five super-blocks, last conv.
BASES: dict[str, tuple[SuperBlock, ...]] = {
    "light": (
        _c(1, 13, 2, 3),
        SuperBlock("X", 1, 48, 2, 3, 1.0),
        SuperBlock("X", 3, 48, 2, 3, 1.0),
        SuperBlock("B", 7, 384, 2, 3, 0.25),
        SuperBlock("D", 2, 560, 2, 3, 3.0),
        SuperBlock("D", 1, 256, 1, 3, 3.0),
        _c(1, 1920, 1, 1),
    ),
    "normal": (
        _c(1, 32, 2, 3),
        SuperBlock("X", 1, 128, 2, 3, 1.0),
        SuperBlock("X", 2, 192, 2, 3, 1.0),
        SuperBlock("B", 6, 640, 2, 3, 0.25),
        SuperBlock("D", 4, 640, 2, 3, 3.0),
        SuperBlock("D", 1, 640, 1, 3, 3.0),
        _c(1, 2560, 1, 1),
    ),
    "large": (
        _c(1, 32, 2, 3),
        SuperBlock("X", 1, 128, 2, 3, 1.0),
        SuperBlock("X", 2, 192, 2, 3, 1.0),
        SuperBlock("B", 6, 640, 2, 3, 0.25),
        SuperBlock("D", 5, 640, 2, 3, 3.0),
        SuperBlock("D", 4, 640, 1, 3, 3.0),
        _c(1, 2560, 1, 1),
    ),
}
#: Preferred input resolution of each base network (pixels).
BASE_RESOLUTIONS: dict[str, int] = {"light": 192, "normal": 192, "large": 256}


def superblock_keys(blocks: Sequence[SuperBlock], resolution: int, in_channels: int = 3) -> list[BlockKey]:
    """Ordered keys of a MasterNet: first ``C`` = conv stem, X/B/D = depth blocks, last ``C`` = tail.

    ``resolution`` is the input size in pixels. Raises ``ValueError`` when the
    list does not start and end with a ``C`` super-block.
    """
    blocks = list(blocks)
    if len(blocks) < 2 or blocks[0].type != "C" or blocks[-1].type != "C":
        raise ValueError("a MasterNet must start with a C stem and end with a C last conv")
    keys: list[BlockKey] = []
    c, h = in_channels, int(resolution)
    for i, sb in enumerate(blocks):
        if sb.type == "C" and i == len(blocks) - 1:
            keys.append(BlockKey("tail", c, h, h, sb.width, 1, 1, 1.0, False, "relu"))
            break
        if sb.type == "C":
            layers = [BlockKey("conv", c, h, h, sb.width, sb.kernel, sb.stride, 1.0, False, "relu")]
            layers += [BlockKey("conv", sb.width, *layers[0].out_hw, sb.width, sb.kernel, 1)] * (sb.depth - 1)
        else:
            block = SUPERBLOCK_BLOCKS[sb.type]
            first = BlockKey(block, c, h, h, sb.width, sb.kernel, sb.stride, sb.ratio, False, "relu")
            oh = first.out_hw[0]
            rest = BlockKey(block, sb.width, oh, oh, sb.width, sb.kernel, 1, sb.ratio, False, "relu")
            layers = [first] + [rest] * (sb.depth - 1)
        keys.extend(layers)
        c, h = sb.width, layers[0].out_hw[0]
    return keys


def width_choices(c: int) -> tuple[int, ...]:
    """Widths for a super-block of width ``c``: multiples of 8 in [0.5c, 2c], plus ``c``."""
    lo = math.ceil(c / 2 / 8) * 8
    return tuple(sorted({*range(max(lo, 8), 2 * c + 1, 8), c}))


def depth_choices(d: int) -> tuple[int, ...]:
    """Depths for a super-block of depth ``d``: [d-2, d+2], at least 1."""
    return tuple(range(max(1, d - 2), d + 3))


def _check_base(base: str) -> str:
    key = str(base).lower().removeprefix("genet-")
    if key not in BASES:
        raise ValueError(f"GENet base {base!r} is unknown; use one of {', '.join(BASES)}")
    return key


_SPACES: dict[str, StagedSpace] = {}


def space(base: str = "normal") -> StagedSpace:
    """The LLR-NAS perturbation space around GENet-``base`` (``light``, ``normal`` or ``large``)."""
    base = _check_base(base)
    if base not in _SPACES:
        blocks = BASES[base]
        stages = [
            StageSpec("conv", 2, (blocks[0].kernel,), (1,), ("relu",), width_choices(blocks[0].width), name="stem")
        ]
        for i, sb in enumerate(blocks[1:-1], start=1):
            encoded = ("filters", "kernel", "expansion", "layers") if len(RATIO_CHOICES[sb.type]) > 1 else None
            stages.append(
                StageSpec(
                    SUPERBLOCK_BLOCKS[sb.type],
                    sb.stride,
                    KERNEL_CHOICES,
                    depth_choices(sb.depth),
                    ("relu",),
                    width_choices(sb.width),
                    RATIO_CHOICES[sb.type],
                    (0,),
                    name=f"super-block {i} ({sb.type})",
                    encoded=encoded or ("filters", "kernel", "layers"),
                )
            )
        stages.append(StageSpec("tail", 1, (1,), (1,), ("relu",), width_choices(blocks[-1].width), name="last conv"))
        _SPACES[base] = StagedSpace(
            f"genet-{base}", RESOLUTIONS, tuple(stages), in_channels=3, expansion_scale=100, source="genet"
        )
    return _SPACES[base]


#: Length of a GENet encoding (21).
ENCODING_LENGTH: int = space("normal").length


def base_encoding(base: str = "normal") -> tuple[int, ...]:
    """The encoding of GENet-``base`` itself at its preferred resolution."""
    base = _check_base(base)
    blocks = BASES[base]
    stages = [
        {"filters": sb.width, "kernel": sb.kernel, "expansion": sb.ratio, "se": 0, "act": "relu", "layers": sb.depth}
        for sb in blocks
    ]
    return space(base).encode({"resolution": BASE_RESOLUTIONS[base], "stages": stages})


def validate(encoding: Sequence[int] | np.ndarray, base: str = "normal") -> tuple[int, ...]:
    """Check a 21-integer encoding against the perturbation ranges of ``base``; ``ValueError`` names the position."""
    return space(base).validate(encoding)


def decode(encoding: Sequence[int] | np.ndarray, base: str = "normal") -> GENetArch:
    """Encoding -> :data:`GENetArch` (validated against ``base``)."""
    return space(base).decode(encoding)


def encode(arch: GENetArch | Mapping[str, object], base: str = "normal") -> tuple[int, ...]:
    """:data:`GENetArch` or ``{"resolution": R, "stages": [7 stage dicts]}`` -> 21 integers."""
    return space(base).encode(arch)


def arch_keys(arch: GENetArch | Sequence[int] | np.ndarray, base: str = "normal") -> list[BlockKey]:
    """Ordered keys (stem conv, xx/bl/dw blocks, tail) of a decoded arch or an encoding."""
    return space(base).arch_keys(arch)


def architecture(encoding: Sequence[int] | np.ndarray, name: str | None = None, base: str = "normal") -> Architecture:
    """Encoding -> :class:`~profiler.spaces.Architecture` with source ``"genet"``."""
    return space(base).architecture(encoding, name)


def sample(n: int, seed: int = 0, base: str = "normal") -> np.ndarray:
    """``n`` encodings (n, 21) int64 of the space around ``base``, scrambled Sobol seeded by ``seed``."""
    return space(base).sample(n, seed)


def space_keys(base: str = "normal") -> frozenset[BlockKey]:
    """Every unique key of the perturbation space around ``base`` (exact, per super-block position)."""
    return space(base).space_keys()


def count_keys(base: str = "normal") -> int:
    """Number of unique keys of the perturbation space around ``base``."""
    return space(base).count_keys()


__all__ = [
    "BASES",
    "BASE_RESOLUTIONS",
    "ENCODING_LENGTH",
    "RESOLUTIONS",
    "GENetArch",
    "SuperBlock",
    "arch_keys",
    "architecture",
    "base_encoding",
    "count_keys",
    "decode",
    "depth_choices",
    "encode",
    "sample",
    "space",
    "space_keys",
    "superblock_keys",
    "validate",
    "width_choices",
]
