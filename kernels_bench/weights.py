"""The random weights of the benchmark blocks: one seed formula and one set of init distributions.

Both block builders draw from here: the torch modules of :mod:`kernels_bench.blocks`
(with a ``torch.Generator``) and the direct ONNX emitter of
:mod:`kernels_bench.onnx_graphs` (with numpy). The generators differ, so the
draws differ, but the seed of a key, the distributions and the batch-norm
epsilon are the same; ``onnx_graphs.reference_state_dict`` hands the numpy draws
to the torch modules where a test needs both to hold the same weights.

Distributions (chosen so that BN folding at export time is really exercised):

- conv and linear weights: He-normal, N(0, :func:`he_normal_std` (fan_in));
- conv and linear biases: N(0, :data:`BIAS_STD`);
- BN scale (gamma) U(:data:`BN_SCALE_RANGE`), shift (beta) N(0, :data:`BN_SHIFT_STD`),
  running mean N(0, :data:`BN_MEAN_STD`), running variance U(:data:`BN_VAR_RANGE`).

Light module: zlib and :mod:`tables.key` only (no torch, no onnx).
"""

from __future__ import annotations

import zlib

from tables.key import BlockKey

#: Batch-norm epsilon of every block (GPUNet, EfficientNet use 1e-3); the ONNX emitter folds it into the convs.
BN_EPS = 1e-3

#: Standard deviation of conv and linear biases (normal, mean 0).
BIAS_STD = 0.1
#: BN scale (gamma) is uniform on this [low, high) range.
BN_SCALE_RANGE: tuple[float, float] = (0.5, 1.5)
#: Standard deviation of the BN shift (beta), normal with mean 0.
BN_SHIFT_STD = 0.1
#: Standard deviation of the BN running mean, normal with mean 0.
BN_MEAN_STD = 0.1
#: BN running variance is uniform on this [low, high) range.
BN_VAR_RANGE: tuple[float, float] = (0.5, 2.0)


def he_normal_std(fan_in: int) -> float:
    """Standard deviation sqrt(2 / fan_in) of a He-normal weight; ``fan_in`` = elements per output channel."""
    # ** 0.5, not math.sqrt: the two differ in the last bit for some fan-ins, and the torch blocks always used ** 0.5
    return (2.0 / fan_in) ** 0.5


def weight_seed(key: BlockKey, seed: int = 0) -> int:
    """The weight seed of one key: ``seed`` combined with a stable hash (CRC-32) of ``str(key)``.

    Returns an integer in [0, 2**63 - 1), the same in every process and on every machine.
    """
    return (int(seed) * 0x9E3779B1 + zlib.crc32(str(key).encode())) % (2**63 - 1)
