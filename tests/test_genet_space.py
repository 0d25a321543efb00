"""GENet: MasterNet super-blocks, perturbation ranges, encoding and sampling."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from profiler.networks import network_keys
from profiler.spaces import genet
from profiler.spaces.staged import StagedSpace
from tables.key import BlockKey, chain_keys


@pytest.mark.parametrize("base", ["light", "normal", "large"])
def test_base_encoding_decodes_to_the_reference_network(base: str) -> None:
    enc = genet.base_encoding(base)
    assert len(enc) == genet.ENCODING_LENGTH == 21
    assert genet.arch_keys(enc, base=base) == network_keys(f"genet-{base}")


def test_genet_normal_keys_follow_table_2() -> None:
    keys = genet.superblock_keys(genet.BASES["normal"], 192)
    assert [k.block for k in keys] == ["conv"] + ["xx"] * 3 + ["bl"] * 6 + ["dw"] * 5 + ["tail"]
    assert str(keys[0]) == "conv_i3x192x192_o32_k3_s2_e1_se0_relu"
    assert str(keys[1]) == "xx_i32x96x96_o128_k3_s2_e1_se0_relu"
    assert str(keys[4]) == "bl_i192x24x24_o640_k3_s2_e0.25_se0_relu"
    assert str(keys[10]) == "dw_i640x12x12_o640_k3_s2_e3_se0_relu"
    assert str(keys[-1]) == "tail_i640x6x6_o2560_k1_s1_e1_se0_relu"


def test_masternet_must_start_and_end_with_a_conv() -> None:
    blocks = genet.BASES["normal"][1:]
    with pytest.raises(ValueError, match="start with a C stem"):
        genet.superblock_keys(blocks, 192)


def test_table_6_net1_builds_a_chained_network() -> None:
    sb = genet.SuperBlock
    net1 = [sb("C", 1, 32, 2, 3), sb("X", 1, 64, 2, 5), sb("X", 4, 96, 2, 5), sb("B", 8, 512, 2, 5, 0.25)]
    net1 += [sb("D", 4, 320, 2, 5, 6.0), sb("D", 2, 320, 1, 5, 6.0), sb("C", 1, 1280, 1, 1)]
    keys = genet.superblock_keys(net1, 224)
    chain_keys(keys)
    assert len(keys) == 1 + 1 + 4 + 8 + 4 + 2 + 1 and keys[-1].h == 7


def test_width_choices_are_multiples_of_8_in_half_to_double_plus_the_base() -> None:
    w = genet.width_choices(640)
    assert w[0] == 320 and w[-1] == 1280 and all(c % 8 == 0 for c in w) and len(w) == 121
    assert genet.width_choices(13) == (8, 13, 16, 24)


def test_depth_choices_are_d_plus_minus_2_and_at_least_1() -> None:
    assert genet.depth_choices(1) == (1, 2, 3)
    assert genet.depth_choices(6) == (4, 5, 6, 7, 8)


@pytest.mark.parametrize("base", ["light", "large"])
def test_sampled_networks_stay_in_the_perturbation_ranges(base: str) -> None:
    blocks = genet.BASES[base]
    samples = genet.sample(128, seed=1, base=base)
    assert samples.shape == (128, 21) and samples.dtype == np.int64
    for enc in samples:
        arch = genet.decode(enc, base=base)
        assert arch.resolution in (192, 224, 256)
        for sb, cfg in zip(blocks, arch.stages):
            assert sb.width / 2 <= cfg.filters <= 2 * sb.width
            assert cfg.filters == sb.width or cfg.filters % 8 == 0
            assert max(1, sb.depth - 2) <= cfg.layers <= sb.depth + 2 or sb.type == "C"
            assert cfg.act == "relu" and not cfg.se
        keys = genet.arch_keys(enc, base=base)
        chain_keys(keys)
        assert {k.k for k in keys if k.block in ("xx", "bl", "dw")} <= {3, 5}
        assert {k.e for k in keys if k.block == "bl"} <= {0.25, 0.5}
        assert {k.e for k in keys if k.block == "dw"} <= {3.0, 6.0, 9.0}
        assert {k.e for k in keys if k.block == "xx"} == {1.0}
        assert keys[0].block == "conv" and keys[0].k == 3 and keys[0].s == 2 and keys[-1].block == "tail"


def test_sample_uses_every_ratio_and_resolution() -> None:
    samples = genet.sample(64, seed=0)
    labels = {p.label: p.index for p in genet.space().positions}
    assert set(samples[:, 0].tolist()) == {192, 224, 256}
    assert set(samples[:, labels["super-block 3 (B) expansion"]].tolist()) == {25, 50}
    assert set(samples[:, labels["super-block 4 (D) expansion"]].tolist()) == {300, 600, 900}


def test_validate_names_the_position_of_a_bad_ratio() -> None:
    enc = list(genet.base_encoding("normal"))
    enc[10] = 30
    with pytest.raises(ValueError, match=r"position 10 \(super-block 3 \(B\) expansion\) is 30; allowed 25 or 50"):
        genet.validate(enc)


def test_an_encoding_is_checked_against_its_base() -> None:
    light = genet.base_encoding("light")
    genet.validate(light, base="light")
    with pytest.raises(ValueError, match=r"position 1 \(stem filters\) is 13"):
        genet.validate(light, base="normal")


def test_unknown_base_is_rejected() -> None:
    with pytest.raises(ValueError, match="GENet base 'huge' is unknown; use one of light, normal, large"):
        genet.space("huge")


def test_encode_decode_round_trip() -> None:
    for enc in genet.sample(32, seed=2, base="light"):
        assert genet.encode(genet.decode(enc, base="light"), base="light") == tuple(int(v) for v in enc)


def test_space_keys_equal_the_brute_force_union_on_a_reduced_space() -> None:
    full = genet.space("light")
    r = dataclasses.replace
    s = full.stages
    stages = (
        r(s[0], filters=(8, 16)),
        r(s[1], filters=(24, 48), kernels=(3,), layers=(1, 2)),
        r(s[2], filters=(48,), kernels=(3, 5), layers=(1,)),
        r(s[3], filters=(192, 384), kernels=(3,), layers=(1, 2)),
        r(s[4], filters=(280,), kernels=(3,), expansions=(3.0, 6.0), layers=(2,)),
        r(s[5], filters=(128, 256), kernels=(3,), expansions=(3.0,), layers=(1,)),
        r(s[6], filters=(960, 1920)),
    )
    space = StagedSpace("genet-reduced", (192, 224), stages, expansion_scale=100, source="genet")
    brute: set[BlockKey] = set()
    for enc in itertools.product(*(p.codes for p in space.positions)):
        brute.update(space.arch_keys(enc))
    assert space.space_keys() == brute
