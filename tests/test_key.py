"""The block key: validation, canonical string form, hashing, derived shapes."""

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.key import ACTIVATIONS, BLOCK_TYPES, BlockKey, chain_keys, make_divisible, parse_key


def test_canonical_string_names_every_field():
    key = BlockKey("irb", 64, 40, 40, 128, k=5, s=2, e=6, se=True, act="swish")
    assert str(key) == "irb_i64x40x40_o128_k5_s2_e6_se1_swish"


def test_string_parses_back_to_the_same_key():
    key = BlockKey("bl", 192, 24, 24, 640, k=3, s=2, e=0.25)
    assert parse_key(str(key)) == key
    assert BlockKey.parse(str(key)) == key


def test_block_names_with_underscores_parse():
    for block in ("fused_irb", "conv_pool", "pool_fc"):
        kw = {"k": 1} if block == "pool_fc" else {}
        key = BlockKey(block, 16, 32, 32, 24, **kw)
        assert parse_key(str(key)).block == block


def test_equal_keys_hash_equal_and_work_as_dict_keys():
    a = BlockKey("dw", 640, 14, 14, 640, e=3)
    b = parse_key(str(a))
    assert hash(a) == hash(b)
    assert {a: 1.5}[b] == 1.5


def test_ratio_is_canonical_whatever_its_spelling():
    assert BlockKey("dw", 8, 8, 8, 8, e=3) == BlockKey("dw", 8, 8, 8, 8, e=3.0)
    assert str(BlockKey("bl", 8, 8, 8, 8, e=0.5)).count("_e0.5_") == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"block": "resnet"}, "block"),
        ({"k": 4}, "k"),
        ({"s": 3}, "s"),
        ({"cin": 0}, "cin"),
        ({"cout": -8}, "cout"),
        ({"act": "gelu"}, "act"),
        ({"h": 1, "w": 1, "s": 2}, "h/w"),
        ({"block": "xx", "se": True}, "se"),
        ({"block": "conv", "e": 4}, "e"),
        ({"e": 0}, "e"),
        ({"block": "tail", "k": 3}, "k"),
    ],
)
def test_invalid_field_is_rejected_naming_the_field(changes, field):
    fields = {"block": "irb", "cin": 16, "h": 8, "w": 8, "cout": 16, "k": 3, "s": 1}
    fields.update(changes)
    with pytest.raises(ValueError, match=rf"field {field}="):
        BlockKey(**fields)


def test_error_lists_allowed_values():
    with pytest.raises(ValueError, match="relu, swish, relu6"):
        BlockKey("conv", 3, 8, 8, 8, act="tanh")


@pytest.mark.parametrize(
    "text", ["", "irb", "irb_i64x40_o128_k5_s2_e6_se1_swish", "irb_i64x40x40_o128_k5_s2_e6_se2_swish"]
)
def test_malformed_string_is_rejected(text):
    with pytest.raises(ValueError, match="block key"):
        parse_key(text)


def test_output_shapes_follow_stride_and_pooling():
    assert BlockKey("conv", 3, 224, 224, 32, s=2).out_hw == (112, 112)
    assert BlockKey("conv", 3, 7, 7, 32, s=2).out_hw == (4, 4)
    assert BlockKey("conv_pool", 3, 224, 224, 64, k=7, s=2).out_hw == (56, 56)
    assert BlockKey("tail", 704, 10, 10, 1280, k=1).output_shape == (1000,)
    assert BlockKey("pool_fc", 2048, 7, 7, 1000, k=1).output_shape == (1000,)


def test_mid_channels_per_block_type():
    assert BlockKey("irb", 64, 8, 8, 64, e=5).mid_channels == 320
    assert BlockKey("irb", 24, 8, 8, 24, e=6).mid_channels == 144
    assert BlockKey("bl", 192, 8, 8, 640, e=0.25).mid_channels == 160
    assert BlockKey("dw", 640, 8, 8, 640, e=3).mid_channels == 1920


def test_residual_only_with_stride_one_and_equal_channels():
    assert BlockKey("irb", 32, 8, 8, 32).has_residual
    assert not BlockKey("irb", 32, 8, 8, 32, s=2).has_residual
    assert not BlockKey("xx", 32, 8, 8, 64).has_residual
    assert not BlockKey("conv", 32, 8, 8, 32).has_residual


def test_make_divisible_never_drops_below_ninety_percent():
    assert make_divisible(36, 8) == 40
    assert make_divisible(10, 8) == 16  # 8 would be below 90% of 10
    assert make_divisible(4, 8) == 8


def test_chain_keys_names_the_break():
    a = BlockKey("conv", 3, 32, 32, 16, s=2)
    b = BlockKey("irb", 16, 16, 16, 24, s=2)
    chain_keys([a, b])
    with pytest.raises(ValueError, match="position 1"):
        chain_keys([a, BlockKey("irb", 16, 32, 32, 24)])


def test_nothing_follows_a_classifier():
    t = BlockKey("tail", 16, 4, 4, 64, k=1)
    with pytest.raises(ValueError, match="classifier"):
        chain_keys([t, BlockKey("conv", 1000, 4, 4, 8)])


_keys = st.builds(
    lambda block, cin, hw, cout, k, s, e, se, act: BlockKey(
        block,
        cin,
        hw,
        hw,
        cout,
        k=1 if BLOCK_TYPES[block].fixed_kernel else k,
        s=1 if BLOCK_TYPES[block].fixed_stride else s,
        e=e if BLOCK_TYPES[block].has_ratio else 1.0,
        se=se and BLOCK_TYPES[block].has_se,
        act=act,
    ),
    st.sampled_from(sorted(BLOCK_TYPES)),
    st.integers(1, 2048),
    st.integers(4, 512),
    st.integers(1, 2048),
    st.sampled_from([1, 3, 5, 7]),
    st.sampled_from([1, 2]),
    st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 9.0]),
    st.booleans(),
    st.sampled_from(ACTIVATIONS),
)


@given(_keys)
def test_any_valid_key_round_trips_through_its_string(key):
    assert parse_key(str(key)) == key
    assert str(parse_key(str(key))) == str(key)


def test_tables_imports_without_heavy_dependencies():
    code = (
        "import sys, tables, tables.key\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_io_elements_of_every_block_type_and_the_vectorized_twin_agree():
    import numpy as np

    from tables.key import io_elements

    keys = [
        BlockKey("conv", 3, 224, 224, 32, 3, 2),
        BlockKey("conv_pool", 3, 224, 224, 64, 7, 2),
        BlockKey("xx", 64, 56, 56, 64, 3, 1),
        BlockKey("bl", 64, 57, 57, 256, 3, 2, e=0.25),
        BlockKey("dw", 96, 28, 28, 96, 5, 1, e=2),
        BlockKey("irb", 32, 15, 15, 64, 5, 2, e=6, se=True, act="swish"),
        BlockKey("fused_irb", 24, 56, 56, 48, 3, 2, e=4),
        BlockKey("tail", 320, 7, 7, 1280, 1, 1),
        BlockKey("pool_fc", 2048, 7, 7, 1000, 1, 1),
    ]
    assert keys[0].io_elements == 3 * 224 * 224 + 32 * 112 * 112
    assert keys[1].io_elements == 3 * 224 * 224 + 64 * 56 * 56
    assert keys[3].io_elements == 64 * 57 * 57 + 256 * 29 * 29
    assert keys[7].io_elements == 320 * 49 + 1000
    assert keys[8].io_elements == 2048 * 49 + 1000
    vec = io_elements(*zip(*[(k.block, k.cin, k.h, k.w, k.cout, k.s) for k in keys]))
    assert vec.tolist() == [k.io_elements for k in keys]
    assert vec.dtype == np.int64
