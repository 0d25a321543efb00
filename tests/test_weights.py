"""Shared weight facts of the torch blocks and the direct ONNX emitter: seed, init distributions, BN epsilon."""

from __future__ import annotations

import math

import numpy as np

from kernels_bench import weights
from tables.key import parse_key

KEY = parse_key("irb_i64x40x40_o128_k5_s2_e6_se1_swish")


def test_weight_seed_of_a_key_is_pinned() -> None:
    # the values every table built so far was measured with; changing them changes every weight
    assert weights.weight_seed(KEY) == 2011388458
    assert weights.weight_seed(KEY, 5) == 15283567263
    assert weights.weight_seed(KEY, 2**62) == 4611686021765994242


def test_weight_seed_depends_on_the_key_and_the_seed() -> None:
    other = KEY.replace(k=3)
    assert weights.weight_seed(KEY) != weights.weight_seed(other)
    assert weights.weight_seed(KEY, 0) != weights.weight_seed(KEY, 1)
    assert 0 <= weights.weight_seed(KEY, 10**30) < 2**63 - 1


def test_init_distributions_are_the_documented_ones() -> None:
    assert weights.BN_EPS == 1e-3
    assert weights.BIAS_STD == weights.BN_SHIFT_STD == weights.BN_MEAN_STD == 0.1
    assert weights.BN_SCALE_RANGE == (0.5, 1.5)
    assert weights.BN_VAR_RANGE == (0.5, 2.0)


def test_he_normal_std_is_sqrt_two_over_fan_in() -> None:
    for fan_in in (1, 3, 27, 669, 1446, 4992, 100352):
        assert math.isclose(weights.he_normal_std(fan_in), math.sqrt(2.0 / fan_in), rel_tol=1e-15)


def test_he_normal_std_in_float32_is_the_same_whichever_square_root() -> None:
    # the numpy emitter multiplies float32 draws by np.float32(std): ** 0.5 and math.sqrt agree there
    fan_ins = np.arange(1, 1 << 20)
    stds = np.array([weights.he_normal_std(int(f)) for f in fan_ins], dtype=np.float32)
    np.testing.assert_array_equal(stds, np.sqrt(2.0 / fan_ins).astype(np.float32))


def test_weights_import_without_torch_or_onnx(fresh_imports) -> None:
    assert fresh_imports["kernels_bench.weights"] == []
