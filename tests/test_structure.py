"""Specification of tables.structure: every block type's structure written once, over any builder."""

from __future__ import annotations

import pytest

from tables import structure
from tables.cost import CostBuilder, key_layers
from tables.key import BLOCK_TYPES, parse_key
from tables.structure import STRUCTURES, BlockBuilder


class _Names(BlockBuilder[str]):
    """A builder whose tensors are the names of the primitive calls that made them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _call(self, op: str, path: str) -> str:
        self.calls.append(f"{op}:{path}")
        return self.calls[-1]

    def conv_bn(self, x, path, cin, cout, k, stride, groups):
        return self._call(f"conv_bn{k}x{k}/{groups}", path)

    def conv_bias(self, x, path, cin, cout):
        return self._call("conv_bias", path)

    def linear(self, x, path, cin, cout):
        return self._call(f"linear{cout}", path)

    def relu(self, x, path):
        return self._call("relu", path)

    def clip(self, x, lo, hi, path):
        return self._call(f"clip{lo:g},{hi:g}", path)

    def sigmoid(self, x, path):
        return self._call("sigmoid", path)

    def mul(self, a, b, path):
        return self._call("mul", path)

    def add(self, a, b, path):
        return self._call(f"add({a}+{b})", path)

    def global_mean(self, x, path):
        return self._call("mean", path)

    def flatten(self, x, path):
        return self._call("flatten", path)

    def max_pool(self, x, path, k, stride):
        return self._call(f"max_pool{k}/{stride}", path)


def _calls(text: str) -> list[str]:
    builder = _Names()
    structure.build(builder, parse_key(text), "x")
    return builder.calls


def test_every_block_type_has_a_structure() -> None:
    assert set(STRUCTURES) == set(BLOCK_TYPES)


def test_structure_and_cost_import_without_any_engine(fresh_imports) -> None:
    assert fresh_imports["tables.cost"] == []


def test_a_builder_must_implement_every_primitive() -> None:
    class Partial(BlockBuilder[str]):
        def relu(self, x, path):
            return x

    with pytest.raises(TypeError, match="abstract"):
        Partial()  # type: ignore[abstract]


def test_a_block_type_without_a_structure_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(STRUCTURES, "conv")
    with pytest.raises(ValueError, match="no structure for block type 'conv'"):
        structure.build(_Names(), parse_key("conv_i3x16x16_o16_k3_s2_e1_se0_relu"), "x")


def test_an_unknown_activation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        structure.activation(_Names(), "x", "gelu", "act")


def test_activations_are_relu_swish_as_sigmoid_times_x_and_relu6_as_clip() -> None:
    assert _calls("conv_i3x16x16_o16_k3_s2_e1_se0_relu") == ["conv_bn3x3/1:body", "relu:body.2"]
    assert _calls("conv_i3x16x16_o16_k3_s2_e1_se0_swish")[1:] == ["sigmoid:body.2", "mul:body.2"]
    assert _calls("conv_i3x16x16_o16_k3_s2_e1_se0_relu6")[1:] == ["clip0,6:body.2"]


def test_conv_pool_adds_a_3x3_stride_2_max_pool() -> None:
    assert _calls("conv_pool_i3x16x16_o16_k7_s2_e1_se0_relu") == [
        "conv_bn7x7/1:body",
        "relu:body.2",
        "max_pool3/2:pool",
    ]


def test_irb_with_expansion_1_has_no_1x1_expand() -> None:
    assert _calls("irb_i16x8x8_o16_k3_s1_e1_se0_relu") == [
        "conv_bn3x3/16:expand.0",
        "relu:expand.0.2",
        "conv_bn1x1/1:project",
        "add(conv_bn1x1/1:project+x):",
    ]


def test_irb_with_se_expands_then_squeezes_then_projects() -> None:
    assert _calls("irb_i16x8x8_o24_k3_s2_e4_se1_relu") == [
        "conv_bn1x1/1:expand.0",
        "relu:expand.0.2",
        "conv_bn3x3/64:expand.1",
        "relu:expand.1.2",
        "mean:se",
        "conv_bias:se.reduce",
        "relu:se.act",
        "conv_bias:se.expand",
        "sigmoid:se.gate",
        "mul:se",
        "conv_bn1x1/1:project",
    ]


def test_fused_irb_expands_with_one_kxk_conv() -> None:
    assert _calls("fused_irb_i16x8x8_o32_k5_s2_e4_se0_relu")[:2] == ["conv_bn5x5/1:expand", "relu:expand.2"]


@pytest.mark.parametrize(
    ("text", "shortcut"),
    [("xx_i16x8x8_o16_k3_s1_e1_se0_relu", "x"), ("xx_i16x8x8_o32_k3_s2_e1_se0_relu", "conv_bn1x1/1:shortcut")],
)
def test_residual_blocks_add_the_shortcut_then_activate(text: str, shortcut: str) -> None:
    calls = _calls(text)
    assert calls[-2:] == [f"add(conv_bn3x3/1:branch.1+{shortcut}):", "relu:act"]


def test_bl_and_dw_differ_only_in_the_groups_of_their_kxk_conv() -> None:
    bl = _calls("bl_i16x8x8_o32_k3_s2_e0.25_se0_relu")
    dw = _calls("dw_i16x8x8_o32_k3_s2_e0.25_se0_relu")
    assert [c for c in bl if c not in dw] == ["conv_bn3x3/1:branch.1"]
    assert [c for c in dw if c not in bl] == ["conv_bn3x3/8:branch.1"]


def test_classifiers_end_in_mean_flatten_and_a_linear_fc() -> None:
    assert _calls("tail_i16x4x4_o32_k1_s1_e1_se0_relu")[-3:] == ["mean:", "flatten:", "linear1000:fc"]
    assert _calls("pool_fc_i16x4x4_o10_k1_s1_e1_se0_relu") == ["mean:", "flatten:", "linear10:fc"]


def test_the_same_structure_drives_the_cost_builder() -> None:
    key = parse_key("irb_i16x8x8_o24_k3_s2_e4_se1_swish")
    builder = CostBuilder()
    assert structure.build(builder, key, key.input_shape) == key.output_shape
    assert len(builder.layers) == len(key_layers(key)) == len(_calls(str(key)))
