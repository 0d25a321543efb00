"""GPUNet search space: Table 1 ranges, the 41-integer encoding, keys, sampling, exact enumeration.

``gpunet.SPACE`` leaves the stride-2 convs of the fused stages 2 and 3 unpadded (NVIDIA's code);
``gpunet.PADDED_SPACE`` (``gpunet-padded``) pads them.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiler.networks import network_keys
from profiler.spaces import gpunet
from profiler.spaces.staged import StagedSpace
from tables.key import BlockKey, chain_keys

# Hand-written in-space neighbours of the released networks (stage 4-7 widths clipped to Table 1).
GPUNET0_LIKE = [320, 32, 3, 0, 2, 32, 3, 5, 0, 0, 2, 64, 3, 5, 0, 0, 3, 192, 3, 5, 0, 1, 3]
GPUNET0_LIKE += [112, 3, 2, 0, 0, 0, 416, 3, 5, 1, 0, 2, 256, 3, 2, 0, 0, 0]
GPUNET1_LIKE = [288, 24, 3, 0, 1, 64, 3, 4, 0, 1, 2, 96, 3, 4, 0, 1, 2, 160, 3, 2, 1, 1, 1]
GPUNET1_LIKE += [224, 3, 5, 0, 0, 4, 416, 3, 4, 1, 0, 4, 256, 3, 2, 0, 0, 0]
# GPUNet-2 lies inside Table 1: this is its exact encoding.
GPUNET2 = [384, 32, 3, 0, 3, 32, 5, 6, 1, 1, 1, 112, 3, 3, 0, 1, 3, 144, 3, 6, 0, 1, 6]
GPUNET2 += [160, 5, 3, 0, 0, 4, 224, 3, 3, 1, 1, 8, 832, 5, 2, 0, 0, 7]


def encodings() -> st.SearchStrategy[list[int]]:
    return st.tuples(*(st.sampled_from(p.codes) for p in gpunet.SPACE.positions)).map(list)


def tail_size(enc: list[int], padded: bool) -> int:
    """The tail's feature size by hand: stem /2, fused stages 2-3 (h - k) // 2 + 1 unless padded, irb 4 and 6 /2."""

    def half(n: int) -> int:
        return -(-n // 2)

    h = enc[0] // 2
    for k in (enc[6], enc[12]):  # stage 2 and 3 kernels
        h = half(h) if padded else (h - k) // 2 + 1
    return half(half(h))


def test_encoding_has_41_positions_in_table_2_order() -> None:
    assert gpunet.ENCODING_LENGTH == 41
    labels = gpunet.POSITION_LABELS
    assert labels[:5] == ("resolution", "stage 0 filters", "stage 1 kernel", "stage 1 activation", "stage 1 layers")
    assert labels[5:11] == tuple(
        f"stage 2 {f}" for f in ("filters", "kernel", "expansion", "SE", "activation", "layers")
    )
    assert labels[40] == "stage 7 layers"


def test_position_values_follow_table_1() -> None:
    codes = {p.label: p.codes for p in gpunet.SPACE.positions}
    assert codes["resolution"] == tuple(range(224, 513, 32))
    assert codes["stage 0 filters"] == (24, 32)
    assert codes["stage 1 layers"] == (1, 2, 3, 4)
    assert codes["stage 5 layers"] == tuple(range(16))
    assert codes["stage 6 filters"] == tuple(range(128, 417, 32))
    assert codes["stage 7 filters"] == tuple(range(256, 833, 64))
    assert codes["stage 3 expansion"] == (2, 3, 4, 5, 6)
    assert codes["stage 4 activation"] == (0, 1)


@settings(max_examples=60, deadline=None)
@given(encodings())
def test_decode_then_encode_gives_back_the_encoding(enc: list[int]) -> None:
    arch = gpunet.decode(enc)
    assert gpunet.encode(arch) == tuple(enc)
    assert gpunet.encode(arch.as_dict()) == tuple(enc)


@settings(max_examples=40, deadline=None)
@given(encodings(), st.booleans())
def test_every_valid_encoding_gives_a_chained_network_ending_in_the_tail(enc: list[int], padded: bool) -> None:
    keys = (gpunet.PADDED_SPACE if padded else gpunet.SPACE).arch_keys(enc)
    chain_keys(keys)
    assert keys[0].input_shape == (3, enc[0], enc[0])
    assert keys[-1].block == "tail" and keys[-1].cout == 1280 and keys[-1].h == tail_size(enc, padded)
    assert padded or tail_size(enc, True) == enc[0] // 32
    n_layers = enc[4] + sum(enc[10 + 6 * i] for i in range(6))
    assert len(keys) == 1 + n_layers + 1
    unpadded = [k for k in keys if k.pad == "valid"]
    assert unpadded == ([] if padded else [k for k in keys if k.block == "fused_irb" and k.s == 2])


def test_gpunet2_encoding_reproduces_the_released_network() -> None:
    assert gpunet.arch_keys(GPUNET2) == network_keys("gpunet-2")


def test_gpunet0_like_encoding_gives_its_stages() -> None:
    keys = gpunet.arch_keys(GPUNET0_LIKE)
    assert [k.block for k in keys] == ["conv"] * 3 + ["fused_irb"] * 5 + ["irb"] * 5 + ["tail"]
    assert str(keys[0]) == "conv_i3x320x320_o32_k3_s2_e1_se0_swish"
    assert str(keys[1]) == "conv_i32x160x160_o32_k3_s1_e1_se0_relu"
    assert str(keys[3]) == "fused_irb_i32x160x160_o32_k3_s2_e5_se0_relu_pv"
    assert str(keys[4]) == "fused_irb_i32x79x79_o32_k3_s1_e5_se0_relu"
    assert str(keys[5]) == "fused_irb_i32x79x79_o64_k3_s2_e5_se0_relu_pv"
    assert str(keys[8]) == "irb_i64x39x39_o192_k3_s2_e5_se0_swish"
    # stage 5 is empty: stage 6 takes stage 4's 192 channels
    assert str(keys[11]) == "irb_i192x20x20_o416_k3_s2_e5_se1_relu"
    assert str(keys[12]) == "irb_i416x10x10_o416_k3_s1_e5_se1_relu"
    # stage 7 is empty: the tail takes stage 6's output
    assert str(keys[13]) == "tail_i416x10x10_o1280_k1_s1_e1_se0_relu"


def test_gpunet0_like_encoding_in_the_padded_space_pads_every_conv() -> None:
    keys = gpunet.PADDED_SPACE.arch_keys(GPUNET0_LIKE)
    assert str(keys[3]) == "fused_irb_i32x160x160_o32_k3_s2_e5_se0_relu"
    assert str(keys[5]) == "fused_irb_i32x80x80_o64_k3_s2_e5_se0_relu"
    assert str(keys[8]) == "irb_i64x40x40_o192_k3_s2_e5_se0_swish"
    assert str(keys[13]) == "tail_i416x10x10_o1280_k1_s1_e1_se0_relu"
    assert [k.replace(pad="same") for k in gpunet.arch_keys(GPUNET0_LIKE)][:4] == keys[:4]


def test_the_padded_space_is_the_same_space_with_pad_same() -> None:
    assert gpunet.PADDED_SPACE.name == "gpunet-padded" and gpunet.SPACE.name == "gpunet"
    assert gpunet.PADDED_SPACE.positions == gpunet.SPACE.positions
    assert [st.pad for st in gpunet.STAGES] == ["same"] * 2 + ["valid"] * 2 + ["same"] * 5
    assert {st.pad for st in gpunet.PADDED_STAGES} == {"same"}
    assert [dataclasses.replace(st, pad="same") for st in gpunet.STAGES] == list(gpunet.PADDED_STAGES)


def test_gpunet1_like_encoding_gives_its_stages() -> None:
    keys = gpunet.arch_keys(GPUNET1_LIKE)
    counts = {b: sum(k.block == b for k in keys) for b in ("conv", "fused_irb", "irb", "tail")}
    assert counts == {"conv": 2, "fused_irb": 4, "irb": 9, "tail": 1}
    assert [k.h for k in keys if k.s == 2] == [288, 144, 71, 35, 18]
    assert [k.h for k in gpunet.PADDED_SPACE.arch_keys(GPUNET1_LIKE) if k.s == 2] == [288, 144, 72, 36, 18]
    assert str(keys[7]) == "irb_i160x18x18_o224_k3_s1_e5_se0_relu"
    assert keys[-1].input_shape == (416, 9, 9)


def test_wrong_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="has 40 integers; expected 41"):
        gpunet.validate(GPUNET2[:40])


@pytest.mark.parametrize(
    ("position", "value", "message"),
    [
        (0, 230, r"position 0 \(resolution\) is 230; allowed 224 to 512 in steps of 32"),
        (7, 7, r"position 7 \(stage 2 expansion\) is 7; allowed 2, 3, 4, 5 or 6"),
        (9, 2, r"position 9 \(stage 2 activation\) is 2; allowed 0 \(relu\), 1 \(swish\)"),
        (23, 240, r"position 23 \(stage 5 filters\) is 240"),
        (35, 3.0, r"position 35 \(stage 7 filters\) is 3.0"),
    ],
)
def test_validate_names_the_bad_position_and_its_allowed_values(position: int, value: object, message: str) -> None:
    enc = list(GPUNET2)
    enc[position] = value
    with pytest.raises(ValueError, match=message):
        gpunet.validate(enc)


def test_encode_accepts_names_and_booleans_and_rejects_missing_fields() -> None:
    d = gpunet.decode(GPUNET2).as_dict()
    d["stages"][2]["act"] = "swish"
    d["stages"][2]["se"] = True
    assert gpunet.encode(d) == tuple(GPUNET2)
    del d["stages"][3]["expansion"]
    with pytest.raises(ValueError, match="stage 3 expansion is missing"):
        gpunet.encode(d)


def test_sample_is_seeded_valid_and_covers_every_value() -> None:
    a = gpunet.sample(256, seed=3)
    assert a.shape == (256, 41) and a.dtype == np.int64
    assert np.array_equal(a, gpunet.sample(256, seed=3))
    assert not np.array_equal(a, gpunet.sample(256, seed=4))
    gpunet.SPACE.validate_many(a)
    for p in gpunet.SPACE.positions:
        assert set(a[:, p.index].tolist()) == set(p.codes), p.label


def test_sample_of_zero_is_empty_and_negative_is_an_error() -> None:
    assert gpunet.sample(0).shape == (0, 41)
    with pytest.raises(ValueError, match="sample size"):
        gpunet.sample(-1)


def test_stage_layer_keys_give_first_and_repeated_layer() -> None:
    first, rest = gpunet.stage_layer_keys(6, 320, 192, 416, 3, 5, 1, 0, 2)
    assert str(first) == "irb_i192x20x20_o416_k3_s2_e5_se1_relu"
    assert str(rest) == "irb_i416x10x10_o416_k3_s1_e5_se1_relu"
    assert gpunet.stage_layer_keys(6, 320, 192, 416, 3, 5, 1, "relu", 1)[1] is None
    tail, none = gpunet.stage_layer_keys(8, 320, 416, None, 1, 1, 0, 0, 1)
    assert str(tail) == "tail_i416x10x10_o1280_k1_s1_e1_se0_relu" and none is None
    conv1, _ = gpunet.stage_layer_keys(1, 224, 24, None, 5, 1, 0, 1, 3)
    assert str(conv1) == "conv_i24x112x112_o24_k5_s1_e1_se0_swish"


def test_stage_layer_keys_follow_the_kernels_of_the_unpadded_stages() -> None:
    assert gpunet.SPACE.kernel_sized_stages(2) == () and gpunet.SPACE.kernel_sized_stages(6) == (2, 3)
    assert gpunet.PADDED_SPACE.kernel_sized_stages(6) == ()
    # stage 2 at 320 px: 160 -> 79 (k 3) or 78 (k 5); stage 3: 79 -> 39, 78 -> 37 (k 5); stage 4 then /2
    first, rest = gpunet.stage_layer_keys(3, 320, 32, 64, 5, 4, 0, 1, 2, kernels={2: 5})
    assert str(first) == "fused_irb_i32x78x78_o64_k5_s2_e4_se0_swish_pv"
    assert str(rest) == "fused_irb_i64x37x37_o64_k5_s1_e4_se0_swish"
    first, rest = gpunet.stage_layer_keys(6, 320, 192, 416, 3, 5, 1, 0, 2, kernels={2: 5, 3: 5})
    assert (
        str(first) == "irb_i192x19x19_o416_k3_s2_e5_se1_relu" and str(rest) == "irb_i416x10x10_o416_k3_s1_e5_se1_relu"
    )
    assert gpunet.stage_layer_keys(6, 320, 192, 416, 3, 5, 1, 0, 2, kernels=[3, 3, 3, 3]) == (
        gpunet.stage_layer_keys(6, 320, 192, 416, 3, 5, 1, 0, 2)  # left out: each stage's smallest kernel
    )
    padded, _ = gpunet.PADDED_SPACE.stage_layer_keys(3, 320, 32, 64, 5, 4, 0, 1, 1, kernels={2: 5})
    assert str(padded) == "fused_irb_i32x80x80_o64_k5_s2_e4_se0_swish"


@pytest.mark.parametrize("space", [gpunet.SPACE, gpunet.PADDED_SPACE], ids=lambda sp: sp.name)
def test_stage_arrays_rebuild_the_same_keys_as_arch_keys(space: StagedSpace) -> None:
    enc = gpunet.sample(32, seed=11)
    arr = space.stage_arrays(enc)
    assert arr["cin"].shape == (32, 9)
    for row in range(32):
        keys: list[BlockKey] = []
        for s in range(9):
            n = int(arr["layers"][row, s])
            if n == 0:
                continue
            first, rest = space.stage_layer_keys(
                s,
                int(arr["resolution"][row]),
                int(arr["cin"][row, s]),
                int(arr["cout"][row, s]),
                int(arr["kernel"][row, s]),
                float(arr["expansion"][row, s]),
                int(arr["se"][row, s]),
                int(arr["act"][row, s]),
                n,
                kernels=arr["kernel"][row],
            )
            assert first.h == arr["h"][row, s]
            keys += [first] + [rest] * (n - 1)  # type: ignore[list-item]
        assert keys == space.arch_keys(enc[row])


def _reduced_gpunet(fused_kernels: tuple[int, ...] = (3,)) -> StagedSpace:
    r = dataclasses.replace
    s = gpunet.STAGES
    k = fused_kernels
    stages = (
        s[0],
        r(s[1], kernels=(3,), acts=("relu",), layers=(2,)),
        r(s[2], filters=(32, 48), kernels=k, expansions=(2,), se=(0,), acts=("relu",), layers=(1, 2)),
        r(s[3], filters=(48, 64), kernels=k, expansions=(2,), se=(0,), acts=("relu",), layers=(1, 2)),
        r(s[4], filters=(96, 112), kernels=(3,), expansions=(2,), se=(0,), acts=("relu",), layers=(1,)),
        r(s[5], filters=(112, 128), kernels=(3,), expansions=(2,), se=(0,), acts=("relu",), layers=(0, 1, 2)),
        r(s[6], filters=(128, 160), kernels=(3,), expansions=(2,), se=(0,), acts=("relu",), layers=(1,)),
        r(s[7], filters=(256,), kernels=(3,), expansions=(2,), se=(0,), acts=("relu",), layers=(0, 2)),
        s[8],
    )
    return StagedSpace("gpunet-reduced", (224,), stages, source="gpunet")


@pytest.mark.parametrize(("fused_kernels", "factor"), [((3,), 1), ((3, 5), 4)])
def test_space_keys_equal_the_brute_force_union_on_a_reduced_space(fused_kernels, factor) -> None:
    space = _reduced_gpunet(fused_kernels)  # with two kernels, stage 3 on sees several feature sizes
    brute: set[BlockKey] = set()
    n_archs = 0
    for enc in itertools.product(*(p.codes for p in space.positions)):
        brute.update(space.arch_keys(enc))
        n_archs += 1
    assert n_archs == 2 * 4 * 4 * 2 * 6 * 2 * 2 * factor
    assert space.space_keys() == brute
    assert space.count_keys() == len(brute) <= space.key_count_bound()[0]
    # stage 4's input at 224 px: 112 -> 55 (k 3) / 54 (k 5) in stage 2 -> 27 / 26 / 25 in stage 3
    assert {k.h for k in brute if k.block == "irb" and k.s == 2 and k.cin in (48, 64)} == (
        {27} if factor == 1 else {25, 26, 27}
    )


@pytest.mark.slow
def test_full_space_keys_contain_every_sampled_network() -> None:
    keys = gpunet.space_keys()
    assert gpunet.count_keys() == len(keys) > 100_000
    for enc in gpunet.sample(64, seed=5):
        assert set(gpunet.arch_keys(enc)) <= keys
