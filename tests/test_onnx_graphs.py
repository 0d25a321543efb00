"""Direct ONNX emitter: same function and same nodes as the TorchScript export of the torch blocks, no torch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402

from kernels_bench import blocks, weights  # noqa: E402
from kernels_bench.export import _export_fp32  # noqa: E402
from kernels_bench.onnx_graphs import (  # noqa: E402
    BN_EPS,
    block_graph,
    key_seed,
    reference_state_dict,
)
from tables.key import BLOCK_TYPES, BlockKey, parse_key  # noqa: E402
from tables.structure import STRUCTURES  # noqa: E402

#: Three or more keys per block type: SE on/off, irb with e == 1, stride 1/2,
#: identity and projection shortcuts, every activation, fused_irb with pad valid (``_pv``).
KEYS = [
    parse_key(text)
    for text in (
        "conv_i3x16x16_o16_k3_s2_e1_se0_swish",
        "conv_i16x8x8_o16_k5_s1_e1_se0_relu",
        "conv_i8x9x9_o8_k3_s1_e1_se0_relu6",
        "conv_pool_i3x16x16_o16_k7_s2_e1_se0_relu",
        "conv_pool_i8x8x8_o8_k3_s1_e1_se0_swish",
        "conv_pool_i4x15x15_o8_k3_s2_e1_se0_relu6",
        "xx_i16x8x8_o16_k3_s1_e1_se0_relu",
        "xx_i16x8x8_o32_k3_s2_e1_se0_relu6",
        "xx_i8x8x8_o16_k5_s1_e0.5_se0_swish",
        "bl_i32x8x8_o32_k3_s1_e0.25_se0_relu",
        "bl_i16x8x8_o32_k3_s2_e0.25_se0_swish",
        "bl_i16x8x8_o16_k5_s1_e0.5_se0_relu6",
        "dw_i16x8x8_o16_k3_s1_e3_se0_relu",
        "dw_i16x8x8_o24_k5_s2_e3_se0_relu6",
        "dw_i8x8x8_o8_k3_s1_e6_se0_swish",
        "irb_i16x8x8_o16_k3_s1_e1_se0_relu6",
        "irb_i16x8x8_o24_k3_s2_e1_se1_swish",
        "irb_i16x8x8_o16_k3_s1_e4_se1_swish",
        "irb_i16x8x8_o24_k5_s2_e6_se0_relu",
        "irb_i16x8x8_o16_k5_s1_e6_se1_relu6",
        "fused_irb_i16x8x8_o16_k3_s1_e2_se0_relu",
        "fused_irb_i16x8x8_o32_k5_s2_e4_se1_swish",
        "fused_irb_i8x8x8_o16_k3_s1_e3_se1_relu6",
        "fused_irb_i16x8x8_o16_k3_s1_e1_se1_relu",
        "fused_irb_i16x9x9_o24_k3_s2_e4_se0_relu_pv",
        "fused_irb_i8x8x8_o16_k5_s2_e2_se1_swish_pv",
        "fused_irb_i8x10x10_o8_k3_s2_e3_se1_relu6_pv",
        "tail_i16x4x4_o32_k1_s1_e1_se0_relu",
        "tail_i8x1x1_o16_k1_s1_e1_se0_swish",
        "tail_i8x3x5_o8_k1_s1_e1_se0_relu6",
        "pool_fc_i16x4x4_o10_k1_s1_e1_se0_relu",
        "pool_fc_i32x1x1_o1000_k1_s1_e1_se0_relu",
        "pool_fc_i8x7x7_o5_k1_s1_e1_se0_relu",
    )
]
#: Keys whose graphs contain a ReduceMean (its axes move from attribute to input at opset 18).
REDUCE_KEYS = [k for k in KEYS if k.se or BLOCK_TYPES[k.block].classifier]
NETWORK = [
    parse_key("conv_i3x16x16_o16_k3_s2_e1_se0_swish"),
    parse_key("irb_i16x8x8_o16_k3_s1_e1_se1_swish"),
    parse_key("irb_i16x8x8_o24_k3_s2_e4_se1_swish"),
    parse_key("xx_i24x4x4_o24_k3_s1_e1_se0_relu"),
    parse_key("tail_i24x4x4_o32_k1_s1_e1_se0_relu6"),
]
BATCH = 2


def _reference(keys: BlockKey | list[BlockKey]) -> torch.nn.Module:
    """The torch reference module loaded (strictly) with the emitter's raw parameters."""
    module = blocks.build_network(keys) if isinstance(keys, list) else blocks.build_block(keys)
    module.load_state_dict({n: torch.from_numpy(v) for n, v in reference_state_dict(keys).items()}, strict=True)
    return module


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _input(keys: BlockKey | list[BlockKey]) -> np.ndarray:
    first = keys[0] if isinstance(keys, list) else keys
    return np.random.default_rng(3).standard_normal((BATCH, *first.input_shape)).astype(np.float32)


def _structure(model: onnx.ModelProto) -> list[tuple[str, tuple]]:
    """Op types in order with their non-tensor attributes."""
    out = []
    for node in model.graph.node:
        attrs = tuple(
            sorted(
                (a.name, str(helper.get_attribute_value(a)))
                for a in node.attribute
                if a.type != onnx.AttributeProto.TENSOR
            )
        )
        out.append((node.op_type, attrs))
    return out


def _constant_values(model: onnx.ModelProto) -> list[tuple[str, list]]:
    return [
        (str(numpy_helper.to_array(n.attribute[0].t).dtype), numpy_helper.to_array(n.attribute[0].t).tolist())
        for n in model.graph.node
        if n.op_type == "Constant"
    ]


def test_every_block_type_has_a_structure_and_a_torch_builder() -> None:
    assert set(STRUCTURES) == set(BLOCK_TYPES)
    assert set(STRUCTURES) == set(blocks.BLOCK_BUILDERS)


def test_every_block_type_is_covered_three_times() -> None:
    counts = Counter(k.block for k in KEYS)
    assert set(counts) == set(BLOCK_TYPES) and min(counts.values()) >= 3
    assert {k.act for k in KEYS} == {"relu", "swish", "relu6"}
    irb = [k for k in KEYS if k.block == "irb"]
    assert {k.se for k in irb} == {True, False} and any(k.e == 1 for k in irb)
    assert {k.s for k in KEYS if BLOCK_TYPES[k.block].residual} == {1, 2}
    assert {k.has_residual for k in KEYS} == {True, False}
    assert {k.pad for k in KEYS if k.block == "fused_irb" and k.s == 2} == {"same", "valid"}


@pytest.mark.parametrize("key", [k for k in KEYS if k.block == "fused_irb" and k.s == 2], ids=str)
def test_the_strided_fused_conv_is_padded_by_the_keys_pad(key: BlockKey) -> None:
    conv = next(n for n in block_graph(key, BATCH, opset=17).graph.node if n.op_type == "Conv")
    pads = next(helper.get_attribute_value(a) for a in conv.attribute if a.name == "pads")
    assert list(pads) == [0 if key.pad == "valid" else (key.k - 1) // 2] * 4


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_graph_computes_the_torch_module_with_the_same_weights(key: BlockKey) -> None:
    x = _input(key)
    with torch.no_grad():
        ref = _reference(key)(torch.from_numpy(x)).numpy()
    got = _run(block_graph(key, BATCH, opset=17), x)
    assert got.shape == ref.shape == (BATCH, *key.output_shape)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_graph_has_the_nodes_of_the_torch_export(key: BlockKey) -> None:
    direct = block_graph(key, BATCH, opset=17)
    traced = _export_fp32([key], BATCH, 17, 0)
    direct_ops = [n.op_type for n in direct.graph.node]
    traced_ops = [n.op_type for n in traced.graph.node]
    assert Counter(direct_ops) == Counter(traced_ops)
    assert _structure(direct) == _structure(traced)
    assert _constant_values(direct) == _constant_values(traced)
    assert sorted(tuple(i.dims) for i in direct.graph.initializer) == sorted(
        tuple(i.dims) for i in traced.graph.initializer
    )


@pytest.mark.parametrize("opset", [18, 20])
@pytest.mark.parametrize("key", REDUCE_KEYS, ids=str)
def test_reduce_mean_follows_the_opset_like_the_torch_export(key: BlockKey, opset: int) -> None:
    direct = block_graph(key, BATCH, opset=opset)
    traced = _export_fp32([key], BATCH, opset, 0)
    assert _structure(direct) == _structure(traced)
    assert _constant_values(direct) == _constant_values(traced)
    assert (direct.ir_version, direct.opset_import[0].version) == (traced.ir_version, opset)
    np.testing.assert_allclose(_run(direct, _input(key)), _run(block_graph(key, BATCH, opset=17), _input(key)))


def test_chain_is_the_torch_network_with_the_same_weights() -> None:
    model = block_graph(NETWORK, BATCH, opset=17)
    x = _input(NETWORK)
    with torch.no_grad():
        ref = _reference(NETWORK)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(model, x), ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    assert _structure(model) == _structure(_export_fp32(NETWORK, BATCH, 17, 0))


def test_chain_reuses_each_keys_own_weights() -> None:
    chained = reference_state_dict(NETWORK)
    for i, key in enumerate(NETWORK):
        for name, value in reference_state_dict(key).items():
            np.testing.assert_array_equal(chained[f"{i}.{name}"], value)


def test_graph_is_valid_with_static_named_io() -> None:
    model = block_graph(NETWORK, BATCH, opset=17)
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "output")
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [BATCH, 3, 16, 16]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [BATCH, 1000]
    assert model.ir_version == helper.find_min_ir_version_for([model.opset_import[0]]) == 8
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)


def test_weights_are_seeded() -> None:
    key = KEYS[0]
    same = block_graph(key, BATCH, opset=17).SerializeToString()
    assert same == block_graph(key, BATCH, opset=17).SerializeToString()
    a, b = reference_state_dict(key, seed=0), reference_state_dict(key, seed=1)
    assert not np.array_equal(a["body.0.weight"], b["body.0.weight"])


def test_batch_norm_statistics_are_far_from_identity() -> None:
    params = reference_state_dict(parse_key("irb_i16x8x8_o16_k3_s1_e4_se1_swish"))
    var, gamma = params["project.1.running_var"], params["project.1.weight"]
    assert var.min() >= 0.5 and var.max() <= 2.0 and np.ptp(var) > 0.5
    assert gamma.min() >= 0.5 and gamma.max() <= 1.5 and np.abs(params["project.1.running_mean"]).max() > 0


@pytest.mark.parametrize("key", KEYS[:6], ids=str)
def test_key_seed_is_the_torch_blocks_seed(key: BlockKey) -> None:
    assert key_seed(key, 0) == blocks.block_seed(key, 0) and key_seed(key, 5) == blocks.block_seed(key, 5)


def test_constants_are_those_of_the_torch_blocks() -> None:
    assert BN_EPS == blocks.BN_EPS == weights.BN_EPS
    assert key_seed is blocks.block_seed is weights.weight_seed


@pytest.mark.parametrize("key", [k for k in KEYS if k.se], ids=str)
def test_se_width_is_the_keys_se_channels(key: BlockKey) -> None:
    params = reference_state_dict(key)
    assert params["se.reduce.weight"].shape == (key.se_channels, params["project.0.weight"].shape[1], 1, 1)


def test_keys_that_do_not_chain_are_refused() -> None:
    with pytest.raises(ValueError, match="do not chain"):
        block_graph([NETWORK[0], NETWORK[3]], BATCH, opset=17)


def test_empty_key_list_is_refused() -> None:
    with pytest.raises(ValueError, match="one or more BlockKey"):
        reference_state_dict([])


def test_direct_export_never_imports_torch(fresh_imports) -> None:
    assert "torch" not in fresh_imports["direct export"], "torch was imported"
    assert len(list(Path(fresh_imports["cache"]).glob("*.onnx"))) == 4
