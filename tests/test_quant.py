"""INT8 Q/DQ: the onnxruntime flavour runs as QLinearConv, the TensorRT flavour follows TensorRT's rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from onnx import helper, numpy_helper  # noqa: E402

from kernels_bench.export import export_keys  # noqa: E402
from kernels_bench.onnx_graphs import block_graph  # noqa: E402
from kernels_bench.quant import (  # noqa: E402
    activation_max_abs,
    calibration_inputs,
    check_tensorrt_qdq,
    quantize_model,
)
from tables.key import parse_key  # noqa: E402

BATCH = 2
#: Every block type once, with residual and projection shortcuts, SE and each activation.
TRT_KEYS = [
    parse_key(text)
    for text in (
        "conv_i8x8x8_o16_k3_s1_e1_se0_relu6",
        "conv_pool_i3x16x16_o16_k7_s2_e1_se0_relu",
        "xx_i16x8x8_o16_k3_s1_e1_se0_relu",
        "xx_i16x8x8_o32_k3_s2_e1_se0_relu",
        "bl_i16x8x8_o32_k3_s2_e0.25_se0_relu",
        "dw_i16x8x8_o16_k3_s1_e3_se0_relu",
        "irb_i16x8x8_o16_k3_s1_e4_se1_swish",
        "irb_i16x8x8_o16_k3_s1_e1_se0_relu6",
        "fused_irb_i16x8x8_o32_k5_s2_e4_se1_swish",
        "tail_i16x4x4_o32_k1_s1_e1_se0_relu",
        "pool_fc_i16x4x4_o10_k1_s1_e1_se0_relu",
    )
]
ORT_KEYS = [
    parse_key(text)
    for text in (
        "conv_i8x8x8_o16_k3_s1_e1_se0_relu6",
        "xx_i16x8x8_o16_k3_s1_e1_se0_relu",
        "irb_i16x8x8_o16_k3_s1_e4_se1_swish",
        "bl_i16x8x8_o32_k3_s2_e0.25_se0_relu",
    )
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def _session(path: Path, level: object = None, optimized: Path | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    if level is not None:
        opts.graph_optimization_level = level
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _int8_vs_fp32(key: object, target: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    fp32 = export_keys(key, BATCH, "fp32", cache_dir=cache)
    int8 = export_keys(key, BATCH, "int8", target=target, cache_dir=cache)
    x = np.random.default_rng(7).standard_normal(fp32.input_shape).astype(np.float32)
    return _session(int8.path).run(None, {"input": x})[0], _session(fp32.path).run(None, {"input": x})[0]


def _load(key: object, target: str, cache: Path) -> onnx.ModelProto:
    return onnx.load(str(export_keys(key, BATCH, "int8", target=target, cache_dir=cache).path))


# ----- onnxruntime flavour -------------------------------------------------------------


@pytest.mark.parametrize("key", ORT_KEYS, ids=str)
def test_onnxruntime_flavour_fuses_into_qlinearconv(key: object, cache: Path, tmp_path: Path) -> None:
    graph = export_keys(key, BATCH, "int8", target="onnxruntime", cache_dir=cache)
    optimized = tmp_path / "optimized.onnx"
    _session(graph.path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, optimized)
    ops = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    assert "QLinearConv" in ops


@pytest.mark.parametrize("key", ORT_KEYS, ids=str)
def test_onnxruntime_flavour_stays_close_to_fp32(key: object, cache: Path) -> None:
    int8, fp32 = _int8_vs_fp32(key, "onnxruntime", cache)
    assert _cosine(int8, fp32) > 0.99


def test_onnxruntime_flavour_is_symmetric(cache: Path) -> None:
    model = _load(ORT_KEYS[1], "onnxruntime", cache)
    zero_points = {n.input[2] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    values = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name in zero_points]
    assert values and all(np.all(v == 0) for v in values)


def test_onnxruntime_flavour_quantizes_conv_outputs(cache: Path) -> None:
    model = _load(ORT_KEYS[0], "onnxruntime", cache)
    conv_outputs = {n.output[0] for n in model.graph.node if n.op_type == "Conv"}
    assert any(n.op_type == "QuantizeLinear" and n.input[0] in conv_outputs for n in model.graph.node)


def _quantize_static(model: onnx.ModelProto, tmp_path: Path) -> onnx.ModelProto:
    """onnxruntime's own static QDQ quantizer with the flavour's settings, on the same calibration batch."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    feeds = iter(calibration_inputs(model, 1, 0))

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    src, dst = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(model, str(src))
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return onnx.load(str(dst))


def _quantized_tensors(model: onnx.ModelProto) -> set[str]:
    names = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    return {name.removesuffix("_QuantizeLinear_Input") for name in names}


@pytest.mark.parametrize("key", [*ORT_KEYS, *TRT_KEYS[8:]], ids=str)
def test_onnxruntime_flavour_quantizes_the_tensors_quantize_static_does(key: object, tmp_path: Path) -> None:
    model = block_graph(key, BATCH, opset=17)
    assert _quantized_tensors(quantize_model(model, "onnxruntime")) == _quantized_tensors(
        _quantize_static(model, tmp_path)
    )


def test_onnxruntime_flavour_weights_are_per_channel_and_biases_int32(cache: Path) -> None:
    model = _load(ORT_KEYS[2], "onnxruntime", cache)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    q_scale = {n.output[0]: n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        x_dq, w_dq, b_dq = (dq[name] for name in conv.input)
        w, w_scale, b, b_scale = (
            inits[w_dq.input[0]],
            inits[w_dq.input[1]],
            inits[b_dq.input[0]],
            inits[b_dq.input[1]],
        )
        assert w.dtype == np.int8 and w_scale.shape == (w.shape[0],)
        assert [a.i for a in w_dq.attribute if a.name == "axis"] == [0]
        assert b.dtype == np.int32 and np.all(inits[b_dq.input[2]] == 0)
        x_scale = inits[q_scale[x_dq.input[0]]]
        np.testing.assert_allclose(b_scale, x_scale * w_scale, rtol=1e-6)


def test_onnxruntime_flavour_relu_output_shares_the_conv_scale(cache: Path) -> None:
    model = _load(ORT_KEYS[1], "onnxruntime", cache)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q_scale = {n.input[0]: inits[n.input[1]] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_source = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    q_input = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    assert relus
    for relu in relus:
        conv_output = q_input[dq_source[relu.input[0]]]
        assert q_scale[relu.output[0]] == q_scale[conv_output]


def test_calibration_is_one_run_over_one_seeded_batch() -> None:
    model = block_graph(ORT_KEYS[0], BATCH, opset=17)
    (feed,) = calibration_inputs(model, 1, seed=3)
    ranges = activation_max_abs(model, ["input", "output"], seed=3)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    output = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feed)
    assert ranges == {"input": float(np.abs(feed["input"]).max()), "output": float(np.abs(output[0]).max())}


# ----- TensorRT flavour ----------------------------------------------------------------


@pytest.mark.parametrize("key", TRT_KEYS, ids=str)
def test_tensorrt_flavour_passes_rule_check(key: object, cache: Path) -> None:
    assert check_tensorrt_qdq(_load(key, "tensorrt", cache)) == []


@pytest.mark.parametrize("key", TRT_KEYS, ids=str)
def test_tensorrt_flavour_runs_on_onnxruntime_close_to_fp32(key: object, cache: Path) -> None:
    int8, fp32 = _int8_vs_fp32(key, "tensorrt", cache)
    assert _cosine(int8, fp32) > 0.99


def test_tensorrt_flavour_quantizes_every_conv_input_and_weight(cache: Path) -> None:
    model = _load(parse_key("irb_i16x8x8_o16_k3_s1_e4_se1_swish"), "tensorrt", cache)
    dq_outputs = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        assert conv.input[0] in dq_outputs and conv.input[1] in dq_outputs
        axis = [a.i for a in dq_outputs[conv.input[1]].attribute if a.name == "axis"]
        assert axis == [0]


def test_tensorrt_flavour_keeps_biases_float(cache: Path) -> None:
    model = _load(parse_key("irb_i16x8x8_o16_k3_s1_e4_se1_swish"), "tensorrt", cache)
    inits = {i.name: i for i in model.graph.initializer}
    biases = [n.input[2] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert biases and all(inits[b].data_type == onnx.TensorProto.FLOAT for b in biases)


def test_tensorrt_flavour_quantizes_the_residual_input_of_add(cache: Path) -> None:
    model = _load(parse_key("irb_i16x8x8_o16_k3_s1_e4_se1_swish"), "tensorrt", cache)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    (add,) = [n for n in model.graph.node if n.op_type == "Add"]
    assert sorted(producer.get(i, "input") for i in add.input) == ["Conv", "DequantizeLinear"]


def test_int8_export_keeps_float32_io_and_records_flavour(cache: Path) -> None:
    graph = export_keys(TRT_KEYS[0], BATCH, "int8", target="tensorrt", cache_dir=cache)
    assert (graph.precision, graph.flavour, graph.input_dtype) == ("int8", "tensorrt", "float32")


def test_flavours_are_cached_separately(cache: Path) -> None:
    a = export_keys(TRT_KEYS[0], BATCH, "int8", target="tensorrt", cache_dir=cache)
    b = export_keys(TRT_KEYS[0], BATCH, "int8", target="onnxruntime", cache_dir=cache)
    assert a.path != b.path


# ----- the rule check flags broken graphs -------------------------------------------------


def _trt_model(cache: Path) -> onnx.ModelProto:
    return _load(parse_key("conv_i8x8x8_o16_k3_s1_e1_se0_relu6"), "tensorrt", cache)


def test_check_flags_nonzero_zero_point(cache: Path) -> None:
    model = _trt_model(cache)
    zp = next(i for i in model.graph.initializer if i.name == "qdq_zero_point_int8")
    zp.CopyFrom(numpy_helper.from_array(np.array(3, dtype=np.int8), zp.name))
    assert any("zero point is not 0" in p for p in check_tensorrt_qdq(model))


def test_check_flags_per_channel_scale_without_axis_zero(cache: Path) -> None:
    model = _trt_model(cache)
    for node in model.graph.node:
        for a in node.attribute:
            if a.name == "axis":
                a.i = 1
    assert any("axis=0" in p for p in check_tensorrt_qdq(model))


def test_check_flags_non_positive_scale(cache: Path) -> None:
    model = _trt_model(cache)
    scale = next(i for i in model.graph.initializer if i.name.endswith("_act_scale"))
    scale.CopyFrom(numpy_helper.from_array(np.array(-0.1, dtype=np.float32), scale.name))
    assert any("not positive" in p for p in check_tensorrt_qdq(model))


def test_check_flags_q_on_conv_output(cache: Path) -> None:
    model = _trt_model(cache)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    out = conv.output[0]
    conv.output[0] = out + "_raw"
    scale = next(i.name for i in model.graph.initializer if i.name.endswith("_act_scale"))
    q = helper.make_node("QuantizeLinear", [out + "_raw", scale, "qdq_zero_point_int8"], [out + "_q"], name="bad_Q")
    dq = helper.make_node("DequantizeLinear", [out + "_q", scale, "qdq_zero_point_int8"], [out], name="bad_DQ")
    position = list(model.graph.node).index(conv) + 1
    model.graph.node.insert(position, dq)
    model.graph.node.insert(position, q)
    assert any("quantizes the output of Conv" in p for p in check_tensorrt_qdq(model))


def test_check_flags_onnxruntime_flavour_int32_bias(cache: Path) -> None:
    problems = check_tensorrt_qdq(_load(ORT_KEYS[0], "onnxruntime", cache))
    assert any("int32 (bias)" in p for p in problems)
    assert any("quantizes the output of Conv" in p for p in problems)


def test_unknown_flavour_is_refused(cache: Path) -> None:
    model = onnx.load(str(export_keys(TRT_KEYS[0], BATCH, "fp32", cache_dir=cache).path))
    with pytest.raises(ValueError, match="allowed tensorrt, onnxruntime"):
        quantize_model(model, "openvino")
