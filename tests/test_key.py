"""The block key: validation, canonical string form, hashing, derived shapes."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.key import (
    ACTIVATIONS,
    BLOCK_TYPES,
    NUM_CLASSES,
    SE_RATIO,
    BlockKey,
    BlockType,
    block_names,
    chain_keys,
    io_elements,
    make_divisible,
    parse_key,
)


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
    lambda block, cin, hw, cout, k, s, e, se, act, valid: BlockKey(
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
        pad="valid" if valid and BLOCK_TYPES[block].has_pad and s == 2 and hw >= k else "same",
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
    st.booleans(),
)


@given(_keys)
def test_any_valid_key_round_trips_through_its_string(key):
    assert parse_key(str(key)) == key
    assert str(parse_key(str(key))) == str(key)


def test_tables_imports_without_heavy_dependencies(fresh_imports):
    assert fresh_imports["tables.key"] == []


def test_io_elements_of_every_block_type_and_the_vectorized_twin_agree():
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
        BlockKey("fused_irb", 24, 56, 56, 48, 5, 2, e=4, pad="valid"),
    ]
    assert keys[0].io_elements == 3 * 224 * 224 + 32 * 112 * 112
    assert keys[1].io_elements == 3 * 224 * 224 + 64 * 56 * 56
    assert keys[3].io_elements == 64 * 57 * 57 + 256 * 29 * 29
    assert keys[7].io_elements == 320 * 49 + 1000
    assert keys[8].io_elements == 2048 * 49 + 1000
    assert keys[9].io_elements == 24 * 56 * 56 + 48 * 26 * 26
    fields = [(k.block, k.cin, k.h, k.w, k.cout, k.s) for k in keys]
    vec = io_elements(*zip(*fields), pad=[k.pad for k in keys], k=[k.k for k in keys])
    assert vec.tolist() == [k.io_elements for k in keys]
    assert vec.dtype == np.int64
    same = io_elements(*zip(*fields))  # no pad: every key "same"
    assert same.tolist() == [k.replace(pad="same").io_elements for k in keys]


#: The documented rules of every block type (REFERENCE.md): mid-channel rule, identity residual when
#: stride 1 and cin == cout, output kind, spatial rule, whether it applies its activation.
DOCUMENTED_RULES = {
    "conv": ("out", False, "map", "stride", True),
    "conv_pool": ("out", False, "map", "stride_pool", True),
    "xx": ("out_ratio", True, "map", "stride", True),
    "bl": ("out_ratio", True, "map", "stride", True),
    "dw": ("out_ratio", True, "map", "stride", True),
    "irb": ("expand8", True, "map", "stride", True),
    "fused_irb": ("expand8", True, "map", "stride", True),
    "tail": ("out", False, "classes", "global", True),
    "pool_fc": ("out", False, "cout", "global", False),
}


def test_every_block_type_row_carries_its_documented_rules():
    assert set(DOCUMENTED_RULES) == set(BLOCK_TYPES)
    for name, bt in BLOCK_TYPES.items():
        assert (bt.mid, bt.residual, bt.output, bt.spatial_out, bt.has_act) == DOCUMENTED_RULES[name], name


def _sample_key(name: str, cin: int, cout: int, s: int = 1) -> BlockKey:
    bt = BLOCK_TYPES[name]
    return BlockKey(
        name,
        cin,
        15,
        9,
        cout,
        k=bt.fixed_kernel or 3,
        s=bt.fixed_stride or s,
        e=4.5 if bt.has_ratio else 1.0,
        se=bt.has_se,
    )


@pytest.mark.parametrize("name", list(BLOCK_TYPES))
def test_key_shapes_and_widths_follow_the_rows_rules(name):
    bt = BLOCK_TYPES[name]
    key = _sample_key(name, 20, 12, s=2)
    expected_mid = {"expand8": make_divisible(20 * 4.5, 8), "out_ratio": round(12 * 4.5), "out": 12}[bt.mid]
    assert key.mid_channels == expected_mid
    expected_hw = {"stride": (-(-15 // key.s), -(-9 // key.s)), "stride_pool": (4, 3), "global": (1, 1)}
    assert key.out_hw == expected_hw[bt.spatial_out]
    expected_out = {"map": (12, *key.out_hw), "cout": (12,), "classes": (NUM_CLASSES,)}[bt.output]
    assert key.output_shape == expected_out
    assert key.io_elements == 20 * 15 * 9 + math.prod(expected_out)
    assert bt.classifier == (bt.output != "map")


@pytest.mark.parametrize("name", list(BLOCK_TYPES))
def test_identity_residual_only_for_residual_types_at_stride_one_with_equal_channels(name):
    bt = BLOCK_TYPES[name]
    assert _sample_key(name, 16, 16).has_residual == bt.residual
    assert not _sample_key(name, 16, 24).has_residual
    if bt.fixed_stride is None:
        assert not _sample_key(name, 16, 16, s=2).has_residual


def test_ratio_mid_channels_never_drop_below_one():
    assert BlockKey("dw", 8, 8, 8, 1, e=0.25).mid_channels == 1
    assert BlockKey("bl", 8, 8, 8, 1, e=0.25).mid_channels == 1


def test_se_width_is_a_quarter_of_input_channels_and_at_least_one():
    assert SE_RATIO == 0.25
    assert BlockKey("irb", 64, 8, 8, 64, e=6, se=True).se_channels == 16
    assert BlockKey("fused_irb", 30, 8, 8, 30, e=2, se=True).se_channels == 7
    assert BlockKey("irb", 3, 8, 8, 8, se=True).se_channels == 1


def test_se_error_names_the_types_that_take_se():
    with pytest.raises(ValueError, match=r"only irb, fused_irb take SE"):
        BlockKey("dw", 8, 8, 8, 8, se=True)


def test_block_names_select_types_by_their_data():
    assert block_names(has_se=True) == ("irb", "fused_irb")
    assert block_names(classifier=True) == ("tail", "pool_fc")
    assert block_names(spatial_out="stride_pool") == ("conv_pool",)
    assert block_names(mid="out_ratio", residual=True) == ("xx", "bl", "dw")
    assert block_names() == tuple(BLOCK_TYPES)


def test_block_names_rejects_an_unknown_field():
    with pytest.raises(ValueError, match="'colour' is not a BlockType field"):
        block_names(colour="red")


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"mid": "double"}, "mid"), ({"output": "logits"}, "output"), ({"spatial_out": "x"}, "spatial_out")],
)
def test_block_type_rejects_unknown_rules(changes, field):
    with pytest.raises(ValueError, match=rf"{field}=.* is unknown; allowed"):
        BlockType("odd", "a type with a bad rule", False, False, **changes)


def test_only_a_classifier_pools_globally():
    with pytest.raises(ValueError, match="classifier"):
        BlockType("head", "vector output without global pooling", False, False, output="cout")
    with pytest.raises(ValueError, match="classifier"):
        BlockType("gap", "global pooling with a map output", False, False, spatial_out="global")


def test_only_stride_types_repeat_in_a_stage():
    assert block_names(repeatable=False) == ("conv_pool", "tail", "pool_fc")


def test_out_size_gives_the_same_sizes_for_ints_and_arrays():
    sizes = np.arange(2, 40, dtype=np.int64)
    for bt in BLOCK_TYPES.values():
        for s in (1, 2):
            got = bt.out_size(sizes, s)
            assert got.dtype == np.int64
            assert got.tolist() == [bt.out_size(int(v), s) for v in sizes]
            assert isinstance(bt.out_size(7, s), int)


def test_min_size_is_the_stride_times_the_pooling():
    assert BLOCK_TYPES["conv"].min_size(2) == 2
    assert BLOCK_TYPES["conv_pool"].min_size(2) == 4
    assert BLOCK_TYPES["tail"].min_size(1) == 1


def test_a_new_block_type_is_one_data_row_for_the_key(monkeypatch):
    # a made-up classifier with a stride and a ratio-less vector output, and a residual type with an out ratio
    monkeypatch.setitem(
        BLOCK_TYPES,
        "gem_fc",
        BlockType(
            "gem_fc",
            "GeM pool -> FC",
            False,
            False,
            fixed_kernel=1,
            fixed_stride=1,
            spatial_out="global",
            output="cout",
            has_act=False,
        ),
    )
    monkeypatch.setitem(
        BLOCK_TYPES, "sep", BlockType("sep", "separable residual", True, False, mid="out_ratio", residual=True)
    )
    sep = BlockKey("sep", 16, 8, 8, 16, k=3, e=2)
    head = BlockKey("gem_fc", 16, 8, 8, 10, k=1)
    assert parse_key(str(sep)) == sep and parse_key(str(head)) == head
    assert (sep.mid_channels, sep.has_residual, sep.output_shape) == (32, True, (16, 8, 8))
    assert (head.out_hw, head.output_shape) == ((1, 1), (10,))
    chain_keys([sep, head])
    with pytest.raises(ValueError, match="classifier"):
        chain_keys([head, sep])
    vec = io_elements(["sep", "gem_fc"], [16, 16], [8, 8], [8, 8], [16, 10], [1, 1])
    assert vec.tolist() == [sep.io_elements, head.io_elements]
