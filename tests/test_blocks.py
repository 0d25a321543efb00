"""Torch block modules: one per block type, shapes and structure as the key says."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from kernels_bench import weights  # noqa: E402
from kernels_bench.blocks import BLOCK_BUILDERS, BN_EPS, SqueezeExcite, block_seed, build_block, build_network  # noqa: E402
from tables.key import BLOCK_TYPES, NUM_CLASSES, BlockKey, parse_key  # noqa: E402

#: Three or more keys per block type: SE on/off, e == 1 irb, stride 1/2, identity and
#: projection shortcuts, every activation, fused_irb with pad valid (``_pv``).
KEYS: dict[str, list[str]] = {
    "conv": [
        "conv_i3x16x16_o16_k3_s2_e1_se0_swish",
        "conv_i16x8x8_o16_k5_s1_e1_se0_relu",
        "conv_i8x9x9_o8_k3_s1_e1_se0_relu6",
    ],
    "conv_pool": [
        "conv_pool_i3x16x16_o16_k7_s2_e1_se0_relu",
        "conv_pool_i8x8x8_o8_k3_s1_e1_se0_swish",
        "conv_pool_i4x15x15_o8_k3_s2_e1_se0_relu6",
    ],
    "xx": [
        "xx_i16x8x8_o16_k3_s1_e1_se0_relu",
        "xx_i16x8x8_o32_k3_s2_e1_se0_relu",
        "xx_i8x8x8_o16_k5_s1_e0.5_se0_swish",
    ],
    "bl": [
        "bl_i32x8x8_o32_k3_s1_e0.25_se0_relu",
        "bl_i16x8x8_o32_k3_s2_e0.25_se0_relu",
        "bl_i16x8x8_o16_k5_s1_e0.5_se0_relu6",
    ],
    "dw": ["dw_i16x8x8_o16_k3_s1_e3_se0_relu", "dw_i16x8x8_o24_k5_s2_e3_se0_relu", "dw_i8x8x8_o8_k3_s1_e6_se0_swish"],
    "irb": [
        "irb_i16x8x8_o16_k3_s1_e1_se0_relu6",
        "irb_i16x8x8_o16_k3_s1_e4_se1_swish",
        "irb_i16x8x8_o24_k5_s2_e6_se0_relu",
        "irb_i16x8x8_o8_k3_s1_e1_se1_swish",
    ],
    "fused_irb": [
        "fused_irb_i16x8x8_o16_k3_s1_e2_se0_relu",
        "fused_irb_i16x8x8_o32_k5_s2_e4_se1_swish",
        "fused_irb_i8x8x8_o16_k3_s1_e3_se1_relu6",
        "fused_irb_i16x9x9_o24_k3_s2_e4_se0_relu_pv",
        "fused_irb_i8x8x8_o16_k5_s2_e2_se1_swish_pv",
    ],
    "tail": [
        "tail_i16x4x4_o32_k1_s1_e1_se0_relu",
        "tail_i8x1x1_o16_k1_s1_e1_se0_swish",
        "tail_i8x3x5_o8_k1_s1_e1_se0_relu6",
    ],
    "pool_fc": [
        "pool_fc_i16x4x4_o10_k1_s1_e1_se0_relu",
        "pool_fc_i32x1x1_o1000_k1_s1_e1_se0_relu",
        "pool_fc_i8x7x7_o5_k1_s1_e1_se0_relu",
    ],
}
ALL_KEYS = [parse_key(text) for texts in KEYS.values() for text in texts]


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_every_block_type_has_a_builder_and_test_keys() -> None:
    assert set(BLOCK_BUILDERS) == set(BLOCK_TYPES)
    assert set(KEYS) == set(BLOCK_TYPES)


@pytest.mark.parametrize("key", ALL_KEYS, ids=str)
def test_block_output_shape_matches_key(key: BlockKey) -> None:
    module = build_block(key)
    with torch.no_grad():
        y = module(torch.randn(2, *key.input_shape))
    assert tuple(y.shape) == (2, *key.output_shape)


def test_block_is_in_eval_mode() -> None:
    module = build_block(parse_key(KEYS["irb"][1]))
    assert not any(m.training for m in module.modules())


def test_same_key_and_seed_give_same_weights() -> None:
    key = parse_key(KEYS["bl"][0])
    a, b = build_block(key, seed=3).state_dict(), build_block(key, seed=3).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_different_seeds_give_different_weights() -> None:
    key = parse_key(KEYS["bl"][0])
    a, b = build_block(key, seed=0).state_dict(), build_block(key, seed=1).state_dict()
    assert not torch.equal(a["branch.0.0.weight"], b["branch.0.0.weight"])


def test_batch_norm_statistics_are_not_trivial() -> None:
    bns = [m for m in build_block(parse_key(KEYS["xx"][1])).modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    for bn in bns:
        assert bn.eps == pytest.approx(1e-3)
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))


@pytest.mark.parametrize(
    ("act", "cls"), [("relu", nn.ReLU), ("swish", nn.SiLU), ("relu6", nn.ReLU6)], ids=["relu", "swish", "relu6"]
)
def test_activation_follows_key(act: str, cls: type) -> None:
    module = build_block(BlockKey("conv", 8, 8, 8, 8, act=act))
    assert any(isinstance(m, cls) for m in module.modules())


def test_irb_with_expansion_one_has_no_expand_conv() -> None:
    key = parse_key("irb_i16x8x8_o16_k3_s1_e1_se0_relu6")
    convs = _convs(build_block(key))
    assert [(c.in_channels, c.out_channels, c.groups) for c in convs] == [(16, 16, 16), (16, 16, 1)]


def test_irb_expands_then_depthwise_then_projects() -> None:
    key = parse_key("irb_i16x8x8_o24_k5_s2_e6_se0_relu")
    convs = _convs(build_block(key))
    assert [(c.in_channels, c.out_channels, c.groups, c.kernel_size, c.stride) for c in convs] == [
        (16, 96, 1, (1, 1), (1, 1)),
        (96, 96, 96, (5, 5), (2, 2)),
        (96, 24, 1, (1, 1), (1, 1)),
    ]


@pytest.mark.parametrize(("text", "padding"), [(t, 0) for t in KEYS["fused_irb"] if t.endswith("_pv")])
def test_fused_irb_with_pad_valid_leaves_its_strided_conv_unpadded(text: str, padding: int) -> None:
    key = parse_key(text)
    expand, *others = _convs(build_block(key))
    assert (expand.kernel_size, expand.stride, expand.padding) == ((key.k, key.k), (2, 2), (padding, padding))
    assert all(c.kernel_size == (1, 1) for c in others)
    assert key.out_hw == ((key.h - key.k) // 2 + 1,) * 2


def test_fused_irb_with_pad_same_pads_its_strided_conv() -> None:
    expand = _convs(build_block(parse_key("fused_irb_i16x8x8_o32_k5_s2_e4_se1_swish")))[0]
    assert expand.padding == (2, 2)


def test_se_squeezes_to_a_quarter_of_input_channels() -> None:
    key = parse_key("fused_irb_i16x8x8_o32_k5_s2_e4_se1_swish")
    (se,) = [m for m in build_block(key).modules() if isinstance(m, SqueezeExcite)]
    assert (se.reduce.in_channels, se.reduce.out_channels, se.expand.out_channels) == (key.mid_channels, 4, 64)
    assert se.reduce.bias is not None and se.expand.bias is not None


@pytest.mark.parametrize("text", [t for texts in KEYS.values() for t in texts if "_se1_" in t])
def test_se_width_is_the_keys_se_channels(text: str) -> None:
    key = parse_key(text)
    (se,) = [m for m in build_block(key).modules() if isinstance(m, SqueezeExcite)]
    assert se.reduce.out_channels == key.se_channels


def test_weight_seed_and_batch_norm_epsilon_are_the_shared_ones() -> None:
    assert block_seed is weights.weight_seed
    assert BN_EPS == weights.BN_EPS


def test_se_absent_when_key_says_off() -> None:
    module = build_block(parse_key("irb_i16x8x8_o24_k5_s2_e6_se0_relu"))
    assert not any(isinstance(m, SqueezeExcite) for m in module.modules())


def test_residual_block_uses_identity_shortcut_when_shapes_match() -> None:
    module = build_block(parse_key("xx_i16x8x8_o16_k3_s1_e1_se0_relu"))
    assert isinstance(module.shortcut, nn.Identity)


def test_residual_block_projects_shortcut_when_stride_or_width_changes() -> None:
    module = build_block(parse_key("bl_i16x8x8_o32_k3_s2_e0.25_se0_relu"))
    conv = module.shortcut[0]
    assert (conv.kernel_size, conv.stride, conv.in_channels, conv.out_channels) == ((1, 1), (2, 2), 16, 32)


def test_inverted_residual_adds_input_only_with_residual() -> None:
    assert build_block(parse_key("irb_i16x8x8_o16_k3_s1_e4_se1_swish")).residual
    assert not build_block(parse_key("irb_i16x8x8_o24_k5_s2_e6_se0_relu")).residual


def test_bottleneck_mid_width_is_a_quarter_of_output() -> None:
    convs = _convs(build_block(parse_key("bl_i32x8x8_o32_k3_s1_e0.25_se0_relu")))
    assert [c.out_channels for c in convs] == [8, 8, 32]


def test_all_convs_are_bias_free_outside_se() -> None:
    for key in ALL_KEYS:
        module = build_block(key)
        se_convs = {id(c) for m in module.modules() if isinstance(m, SqueezeExcite) for c in (m.reduce, m.expand)}
        assert all(c.bias is None for c in _convs(module) if id(c) not in se_convs), str(key)


def test_tail_classifies_to_num_classes() -> None:
    module = build_block(parse_key("tail_i16x4x4_o32_k1_s1_e1_se0_relu"))
    assert (module.fc.in_features, module.fc.out_features) == (32, NUM_CLASSES)


def test_build_network_chains_blocks() -> None:
    keys = [
        parse_key("conv_i3x16x16_o16_k3_s2_e1_se0_swish"),
        parse_key("irb_i16x8x8_o24_k3_s2_e4_se1_swish"),
        parse_key("tail_i24x4x4_o32_k1_s1_e1_se0_relu"),
    ]
    net = build_network(keys)
    with torch.no_grad():
        y = net(torch.randn(1, 3, 16, 16))
    assert tuple(y.shape) == (1, NUM_CLASSES)
    assert len(net) == 3


def test_build_network_rejects_broken_chain() -> None:
    keys = [parse_key("conv_i3x16x16_o16_k3_s2_e1_se0_swish"), parse_key("irb_i24x8x8_o24_k3_s1_e4_se0_swish")]
    with pytest.raises(ValueError, match="do not chain at position 1"):
        build_network(keys)


def test_build_network_rejects_empty_list() -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_network([])


def test_build_block_rejects_a_string() -> None:
    with pytest.raises(ValueError, match="parse_key"):
        build_block("conv_i3x16x16_o16_k3_s2_e1_se0_swish")  # type: ignore[arg-type]
