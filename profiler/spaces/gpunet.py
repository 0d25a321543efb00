"""GPUNet's search space (GPUNet seed, Table 1) and its 41-integer encoding (Table 2).

Stages (type, stride, kernel, layers, activation, expansion E, filters, SE)::

    0 conv       s2  k3 (fixed, see below)  1       swish (fixed)  -      {24, 32}            -
    1 conv       s1  {3, 5}                 1..4    {relu, swish}  -      = stage 0 filters   -
    2 fused_irb  s2  {3, 5}                 1..8    {relu, swish}  2..6   32..80 step 16      {0, 1}
    3 fused_irb  s2  {3, 5}                 1..8    {relu, swish}  2..6   48..112 step 16     {0, 1}
    4 irb        s2  {3, 5}                 1..10   {relu, swish}  2..6   96..192 step 16     {0, 1}
    5 irb        s1  {3, 5}                 0..15   {relu, swish}  2..6   112..224 step 16    {0, 1}
    6 irb        s2  {3, 5}                 1..15   {relu, swish}  2..6   128..416 step 32    {0, 1}
    7 irb        s1  {3, 5}                 0..15   {relu, swish}  2..6   256..832 step 64    {0, 1}
    8 tail: 1x1 conv to 1280, BN, ReLU, global average pool, FC to 1000 classes

Resolutions 224..512 in steps of 32 (pixels). Only a stage's first layer has the
stride and the channel change. Stages 5 and 7 may be empty; then the next stage
(or the tail) takes the output of the last non-empty stage.

Padding, as NVIDIA built GPUNet: the stride-2 kxk conv of the fused stages 2 and
3 is unpadded (key ``pad="valid"``, suffix ``_pv``): it maps h to (h - k) // 2 + 1
(160 -> 79 for k 3, 78 for k 5), so from stage 3 on the feature sizes depend on
the resolution and the kernels of stages 2 and 3 (GPUNet-0 at 320 px: 79, 39, 20,
10). Every other conv pads (k - 1) // 2. :data:`PADDED_SPACE` (``gpunet-padded``)
is the same space with every conv padded (160 -> 80 -> 40 -> 20 -> 10), the
convention of this project before the released feature sizes were matched.

Encoding (41 integers, values not indices; act 0 = relu, 1 = swish; SE 0/1)::

    0       resolution (pixels)
    1       stage 0 filters (channels)
    2-4     stage 1 kernel, act, layers
    5-10    stage 2 filters, kernel, E, SE, act, layers
    11-16   stage 3 ...     17-22 stage 4 ...    23-28 stage 5 ...
    29-34   stage 6 ...     35-40 stage 7 ...

What Table 1 fixes but Table 2 does not carry:
- stage 0's kernel and activation: the encoding has only its filters, so stage 0
  is the released GPUNets' ``head``: conv 3x3, stride 2, swish.
- stage 1's filters: it keeps stage 0's width (as in every released GPUNet),
  so stage 1 convs are ``f0 -> f0``, stride 1.
- an empty stage (layers 0) keeps its filters/kernel/E/SE/act integers in the
  encoding (they must still be in range) but contributes no blocks.

The released GPUNet-0/1/2 fall partly outside Table 1 (e.g. 704 filters in stage
6); they are reference networks (:mod:`profiler.networks`), not members of this space.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from profiler.spaces.architecture import Architecture
from profiler.spaces.staged import StagedArch, StagedSpace, StageSpec
from tables.key import BlockKey

#: A decoded GPUNet architecture: resolution plus one config per stage 0-8.
GPUNetArch = StagedArch

#: Output channels of the stage-8 tail's 1x1 conv.
TAIL_CHANNELS = 1280
#: Stage 0 kernel and activation (not in the encoding).
STEM_KERNEL, STEM_ACT = 3, "swish"

_ACTS = ("relu", "swish")
_E = (2, 3, 4, 5, 6)


def _range(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


#: Padding of the fused stages' stride-2 conv in :data:`SPACE`: unpadded, as in NVIDIA's released code.
FUSED_PAD = "valid"

#: Table 1 as data (stage 8 is the tail); stages 2 and 3 unpadded (:data:`FUSED_PAD`).
STAGES: tuple[StageSpec, ...] = (
    StageSpec("conv", 2, (STEM_KERNEL,), (1,), (STEM_ACT,), filters=(24, 32), name="stage 0"),
    StageSpec("conv", 1, (3, 5), _range(1, 4, 1), _ACTS, filters=None, name="stage 1"),
    StageSpec("fused_irb", 2, (3, 5), _range(1, 8, 1), _ACTS, _range(32, 80, 16), _E, (0, 1), "stage 2", pad=FUSED_PAD),
    StageSpec(
        "fused_irb", 2, (3, 5), _range(1, 8, 1), _ACTS, _range(48, 112, 16), _E, (0, 1), "stage 3", pad=FUSED_PAD
    ),
    StageSpec("irb", 2, (3, 5), _range(1, 10, 1), _ACTS, _range(96, 192, 16), _E, (0, 1), "stage 4"),
    StageSpec("irb", 1, (3, 5), _range(0, 15, 1), _ACTS, _range(112, 224, 16), _E, (0, 1), "stage 5"),
    StageSpec("irb", 2, (3, 5), _range(1, 15, 1), _ACTS, _range(128, 416, 32), _E, (0, 1), "stage 6"),
    StageSpec("irb", 1, (3, 5), _range(0, 15, 1), _ACTS, _range(256, 832, 64), _E, (0, 1), "stage 7"),
    StageSpec("tail", 1, (1,), (1,), ("relu",), filters=(TAIL_CHANNELS,), name="stage 8"),
)

#: Input resolutions (pixels).
RESOLUTIONS: tuple[int, ...] = _range(224, 512, 32)

#: The GPUNet space as NVIDIA built it (stages 2-3 unpadded); every function below delegates to it.
SPACE = StagedSpace("gpunet", RESOLUTIONS, STAGES, in_channels=3, expansion_scale=1, source="gpunet")

#: Table 1 with every conv padded (k - 1) // 2 (``pad="same"`` in stages 2 and 3 too).
PADDED_STAGES: tuple[StageSpec, ...] = tuple(dataclasses.replace(st, pad="same") for st in STAGES)

#: The padded variant of the GPUNet space (``resolve_space("gpunet-padded")``); same encoding as :data:`SPACE`.
PADDED_SPACE = StagedSpace(
    "gpunet-padded", RESOLUTIONS, PADDED_STAGES, in_channels=3, expansion_scale=1, source="gpunet"
)

#: Length of an encoding (41).
ENCODING_LENGTH: int = SPACE.length
#: Column labels, e.g. ``POSITION_LABELS[7] == "stage 2 expansion"``.
POSITION_LABELS: tuple[str, ...] = tuple(p.label for p in SPACE.positions)


def validate(encoding: Sequence[int] | np.ndarray) -> tuple[int, ...]:
    """Check a 41-integer encoding; returns it as a tuple.

    Raises ``ValueError`` for a wrong length, or naming the first bad position,
    e.g. ``position 7 (stage 2 expansion) is 7; allowed 2, 3, 4, 5 or 6``.
    """
    return SPACE.validate(encoding)


def decode(encoding: Sequence[int] | np.ndarray) -> GPUNetArch:
    """Encoding -> :data:`GPUNetArch` (resolution and per-stage values, stages 0-8)."""
    return SPACE.decode(encoding)


def encode(arch: GPUNetArch | Mapping[str, object]) -> tuple[int, ...]:
    """:data:`GPUNetArch` or ``{"resolution": R, "stages": [9 stage dicts]}`` -> 41 integers."""
    return SPACE.encode(arch)


def arch_keys(arch: GPUNetArch | Sequence[int] | np.ndarray) -> list[BlockKey]:
    """Ordered block keys (stage 0 conv ... stage 8 tail) of an encoding or a decoded arch."""
    return SPACE.arch_keys(arch)


def architecture(encoding: Sequence[int] | np.ndarray, name: str | None = None) -> Architecture:
    """Encoding -> :class:`~profiler.spaces.Architecture` with source ``"gpunet"``."""
    return SPACE.architecture(encoding, name)


def sample(n: int, seed: int = 0) -> np.ndarray:
    """``n`` valid encodings, (n, 41) int64, from a scrambled Sobol sequence seeded by ``seed``."""
    return SPACE.sample(n, seed)


def space_keys() -> frozenset[BlockKey]:
    """Every unique key of the whole GPUNet space (exact; enumerated per stage, cached)."""
    return SPACE.space_keys()


def count_keys() -> int:
    """Number of unique keys in the GPUNet space."""
    return SPACE.count_keys()


def stage_layer_keys(
    stage_index: int,
    resolution: int,
    cin: int,
    filters: int | None,
    kernel: int,
    e: float,
    se: bool | int,
    act: str | int,
    layers: int,
    *,
    kernels: Mapping[int, int] | Sequence[int] | None = None,
) -> tuple[BlockKey, BlockKey | None]:
    """Keys of stage ``stage_index``'s first layer and of its other layers (``None`` if ``layers == 1``).

    ``resolution`` is the network input in pixels; ``cin`` the stage's input
    channels; other arguments are values (``act`` a name or 0/1); ``kernels`` the
    kernels of the earlier stages (stages 2 and 3 set the feature size from stage
    3 on; left out: kernel 3). See :meth:`~profiler.spaces.staged.StagedSpace.stage_layer_keys`.
    """
    return SPACE.stage_layer_keys(stage_index, resolution, cin, filters, kernel, e, se, act, layers, kernels=kernels)


def stage_arrays(encodings: np.ndarray | Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Per-stage values of (N, 41) encodings as (N, 9) arrays; see :meth:`StagedSpace.stage_arrays`."""
    return SPACE.stage_arrays(encodings)


__all__ = [
    "ENCODING_LENGTH",
    "FUSED_PAD",
    "PADDED_SPACE",
    "PADDED_STAGES",
    "POSITION_LABELS",
    "RESOLUTIONS",
    "SPACE",
    "STAGES",
    "TAIL_CHANNELS",
    "GPUNetArch",
    "arch_keys",
    "architecture",
    "count_keys",
    "decode",
    "encode",
    "sample",
    "space_keys",
    "stage_arrays",
    "stage_layer_keys",
    "validate",
]
