"""Specification of tables.cost: the key's counts are those of its emitted ONNX graph, under a stated model."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from tables.cost import COST_FIELDS, ELEMENT_BYTES, costs, key_cost, key_layers
from tables.key import BLOCK_TYPES, NUM_CLASSES, BlockKey, parse_key

BATCH = 2

CONV = parse_key("conv_i3x16x16_o16_k3_s2_e1_se0_relu")


def _graph_keys() -> list[BlockKey]:
    """Every reference-network key, two GPUNet samples and one of each GENet space (first-seen order)."""
    from profiler.enumeration import keys_for_networks, keys_for_sample, unique_keys

    samples = [keys_for_sample("gpunet", 2, 0)] + [keys_for_sample(s, 1, 0) for s in ("genet", "genet-light")]
    return unique_keys([keys_for_networks("all"), *samples, keys_for_sample("genet-large", 1, 0)])


@dataclass(frozen=True)
class GraphCounts:
    """What the emitted graph (batch :data:`BATCH`, opset 17) holds, read with onnx alone."""

    params: int
    macs: int
    ops: tuple[str, ...]


def _graph_counts(key: BlockKey) -> GraphCounts:
    onnx = pytest.importorskip("onnx")
    from kernels_bench.onnx_graphs import block_graph

    model = onnx.shape_inference.infer_shapes(block_graph(key, BATCH, opset=17), strict_mode=True)
    floats = {i.name: tuple(i.dims) for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    shapes = {
        v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
        for v in (*model.graph.value_info, *model.graph.output, *model.graph.input)
    }
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            _, cin_per_group, kh, kw = floats[node.input[1]]
            macs += math.prod(shapes[node.output[0]]) * cin_per_group * kh * kw
        elif node.op_type == "Gemm":
            rows = shapes[node.input[0]][0]
            cout, cin = floats[node.input[1]]  # transB=1: (out, in)
            macs += rows * cin * cout
    return GraphCounts(
        params=sum(math.prod(dims) for dims in floats.values()),
        macs=macs,
        ops=tuple(n.op_type for n in model.graph.node if n.op_type != "Constant"),
    )


@pytest.fixture(scope="module")
def graph_counts() -> dict[BlockKey, GraphCounts]:
    pytest.importorskip("onnx")
    return {key: _graph_counts(key) for key in _graph_keys()}


def test_the_graph_keys_cover_every_block_type_and_variant(graph_counts) -> None:
    keys = list(graph_counts)
    assert set(Counter(k.block for k in keys)) == set(BLOCK_TYPES)
    assert {k.se for k in keys if k.block == "irb"} == {True, False}
    assert {k.se for k in keys if k.block == "fused_irb"} == {True, False}
    assert any(k.block == "irb" and k.e == 1 for k in keys)
    assert {k.s for k in keys if BLOCK_TYPES[k.block].residual} == {1, 2}
    assert any(BLOCK_TYPES[k.block].residual and not k.has_residual and k.block in ("xx", "bl", "dw") for k in keys)
    assert {k.has_residual for k in keys} == {True, False}


def test_params_are_the_elements_of_the_graphs_float_initializers(graph_counts) -> None:
    wrong = {str(k): (key_cost(k).params, g.params) for k, g in graph_counts.items() if key_cost(k).params != g.params}
    assert not wrong, f"key_cost params != graph initializer elements (cost, graph): {wrong}"


def test_macs_are_those_of_the_graphs_conv_and_gemm_nodes(graph_counts) -> None:
    wrong = {
        str(k): (key_cost(k, BATCH).macs, g.macs) for k, g in graph_counts.items() if key_cost(k, BATCH).macs != g.macs
    }
    assert not wrong, f"key_cost MACs != graph MACs (cost, graph): {wrong}"


def test_layers_are_the_graphs_nodes_in_order(graph_counts) -> None:
    wrong = [str(k) for k, g in graph_counts.items() if tuple(layer.op for layer in key_layers(k)) != g.ops]
    assert not wrong, f"layers differ from the graph's non-Constant nodes: {wrong}"


def test_a_conv_is_counted_by_hand() -> None:
    # conv 3->16 k3 s2 on 16x16: output 16x8x8 = 1024, weights 16*3*9 + 16 = 448; then Relu on 1024
    cost = key_cost(CONV)
    assert (cost.macs, cost.params) == (1024 * 27, 448)
    assert cost.flops == 2 * 1024 * 27 + 1024
    assert cost.activation_elements == 1024 + 1024 and cost.peak_elements == 1024
    assert cost.bytes_moved == 4 * ((768 + 1024) + 448 + (1024 + 1024))
    assert cost.arithmetic_intensity == pytest.approx(cost.flops / cost.bytes_moved)
    assert cost.weight_bytes == 4 * 448 and cost.memory_bytes == 4 * (448 + 1024 + 1024)


def test_a_batch_multiplies_the_activations_but_reads_the_weights_once() -> None:
    one, four = key_cost(CONV), key_cost(CONV, 4)
    assert (four.macs, four.flops, four.params) == (4 * one.macs, 4 * one.flops, one.params)
    assert four.bytes_moved == 4 * (one.bytes_moved - one.weight_bytes) + one.weight_bytes
    assert four.peak_elements == 4 * one.peak_elements
    assert four.memory_bytes == 4 * (one.memory_bytes - one.weight_bytes) + one.weight_bytes


@pytest.mark.parametrize(("precision", "size"), [("fp32", 4), ("fp16", 2), ("bf16", 2), ("int8", 1)])
def test_the_precision_sets_the_element_size(precision: str, size: int) -> None:
    fp32, cost = key_cost(CONV, 2), key_cost(CONV, 2, precision)
    assert cost.bytes_moved * 4 == fp32.bytes_moved * size and cost.memory_bytes * 4 == fp32.memory_bytes * size
    assert (cost.flops, cost.params, cost.precision) == (fp32.flops, fp32.params, precision)


def test_element_sizes_cover_the_precisions_a_table_is_built_in() -> None:
    config = pytest.importorskip("kernels_bench.config")
    assert set(ELEMENT_BYTES) == set(config.PRECISIONS)


@pytest.mark.parametrize(
    ("batch", "precision", "message"),
    [(0, "fp32", "batch must be"), (True, "fp32", "batch must be"), (1, "fp8", "unknown precision 'fp8'")],
)
def test_bad_batch_or_precision_is_refused(batch: int, precision: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        key_cost(CONV, batch, precision)


def test_a_key_string_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="parse_key"):
        key_cost(str(CONV))  # type: ignore[arg-type]


def test_se_squeezes_to_the_keys_se_channels() -> None:
    key = parse_key("irb_i16x8x8_o24_k3_s2_e6_se1_swish")
    (reduce,) = [layer for layer in key_layers(key) if layer.path == "se.reduce"]
    assert reduce.output == (key.se_channels, 1, 1) and reduce.inputs == ((key.mid_channels, 1, 1),)


def test_irb_with_expansion_1_counts_no_1x1_expand() -> None:
    key = parse_key("irb_i16x8x8_o16_k3_s1_e1_se0_relu6")
    convs = [layer for layer in key_layers(key) if layer.op == "Conv"]
    assert [c.path for c in convs] == ["expand.0.0", "project.0"]
    assert key_cost(key).macs == 16 * 64 * 9 + 16 * 64 * 16


def test_tail_classifies_into_num_classes_and_pool_fc_into_cout() -> None:
    tail = key_layers(parse_key("tail_i16x4x4_o32_k1_s1_e1_se0_relu"))[-1]
    pool_fc = key_layers(parse_key("pool_fc_i16x4x4_o10_k1_s1_e1_se0_relu"))[-1]
    assert (tail.op, tail.output, tail.macs) == ("Gemm", (NUM_CLASSES,), 32 * NUM_CLASSES)
    assert (pool_fc.op, pool_fc.output, pool_fc.weights) == ("Gemm", (10,), 16 * 10 + 10)


def test_elementwise_layers_count_one_flop_per_output_element() -> None:
    key = parse_key("irb_i16x8x8_o16_k3_s1_e4_se1_swish")
    for layer in key_layers(key):
        if layer.op in ("Relu", "Clip", "Sigmoid", "Mul", "Add"):
            assert layer.flops == layer.output_elements and layer.macs == 0 and layer.weights == 0
    mul = next(layer for layer in key_layers(key) if layer.path == "se" and layer.op == "Mul")
    assert mul.inputs == ((64, 8, 8), (64, 1, 1)) and mul.output == (64, 8, 8)


def test_costs_are_the_key_costs_as_columns() -> None:
    keys = [CONV, parse_key("irb_i16x8x8_o24_k3_s2_e6_se1_swish"), parse_key("tail_i16x4x4_o32_k1_s1_e1_se0_relu")]
    columns = costs(keys, 8, "fp16")
    assert set(columns) == set(COST_FIELDS)
    for name in COST_FIELDS:
        assert columns[name].tolist() == [getattr(key_cost(k, 8, "fp16"), name) for k in keys]
    assert columns["macs"].dtype == np.int64 and columns["arithmetic_intensity"].dtype == np.float64
