"""ONNX export: graphs match the torch modules, BN is folded, files are cached, fp16 is really fp16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from kernels_bench.blocks import build_block, build_network  # noqa: E402
from kernels_bench.export import (  # noqa: E402
    EXPORT_FORMAT_VERSION,
    METHODS,
    ExportedGraph,
    choose_opset,
    default_cache_dir,
    export_identity,
    export_keys,
)
from kernels_bench.onnx_graphs import reference_state_dict  # noqa: E402
from tables.key import BlockKey, parse_key  # noqa: E402

#: Three or more small keys per block type.
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
        "xx_i16x8x8_o32_k3_s2_e1_se0_relu",
        "xx_i8x8x8_o16_k5_s1_e0.5_se0_swish",
        "bl_i32x8x8_o32_k3_s1_e0.25_se0_relu",
        "bl_i16x8x8_o32_k3_s2_e0.25_se0_relu",
        "bl_i16x8x8_o16_k5_s1_e0.5_se0_relu6",
        "dw_i16x8x8_o16_k3_s1_e3_se0_relu",
        "dw_i16x8x8_o24_k5_s2_e3_se0_relu",
        "dw_i8x8x8_o8_k3_s1_e6_se0_swish",
        "irb_i16x8x8_o16_k3_s1_e1_se0_relu6",
        "irb_i16x8x8_o16_k3_s1_e4_se1_swish",
        "irb_i16x8x8_o24_k5_s2_e6_se0_relu",
        "fused_irb_i16x8x8_o16_k3_s1_e2_se0_relu",
        "fused_irb_i16x8x8_o32_k5_s2_e4_se1_swish",
        "fused_irb_i8x8x8_o16_k3_s1_e3_se1_relu6",
        "tail_i16x4x4_o32_k1_s1_e1_se0_relu",
        "tail_i8x1x1_o16_k1_s1_e1_se0_swish",
        "tail_i8x3x5_o8_k1_s1_e1_se0_relu6",
        "pool_fc_i16x4x4_o10_k1_s1_e1_se0_relu",
        "pool_fc_i32x1x1_o1000_k1_s1_e1_se0_relu",
        "pool_fc_i8x7x7_o5_k1_s1_e1_se0_relu",
    )
]
BATCH = 2
NETWORK = [
    parse_key("conv_i3x16x16_o16_k3_s2_e1_se0_swish"),
    parse_key("irb_i16x8x8_o24_k3_s2_e4_se1_swish"),
    parse_key("tail_i24x4x4_o32_k1_s1_e1_se0_relu"),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def _run(graph: ExportedGraph, x: np.ndarray, *, level: object = None, optimized: Path | None = None) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if level is not None:
        opts.graph_optimization_level = level
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(graph.path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {graph.input_name: x})[0]


def _reference(keys: BlockKey | list[BlockKey], method: str) -> torch.nn.Module:
    """The torch module carrying the weights the ``method`` export was built from."""
    module = build_network(keys) if isinstance(keys, list) else build_block(keys)
    if method == "direct":
        state = {name: torch.from_numpy(value) for name, value in reference_state_dict(keys).items()}
        module.load_state_dict(state, strict=True)
    return module


def _torch(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("key", KEYS, ids=str)
def test_fp32_graph_matches_torch(key: BlockKey, method: str, cache: Path) -> None:
    graph = export_keys(key, BATCH, "fp32", cache_dir=cache, method=method)
    x = _input(graph.input_shape)
    ref = _torch(_reference(key, method), x)
    got = _run(graph, x)
    assert got.shape == graph.output_shapes[0] == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("key", KEYS, ids=str)
def test_batch_norm_is_folded(key: BlockKey, method: str, cache: Path) -> None:
    graph = export_keys(key, BATCH, "fp32", cache_dir=cache, method=method)
    ops = {n.op_type for n in onnx.load(str(graph.path)).graph.node}
    assert "BatchNormalization" not in ops
    assert ops & {"Conv", "Gemm"}


def test_exported_graph_has_static_shapes(cache: Path) -> None:
    graph = export_keys(KEYS[0], BATCH, "fp32", cache_dir=cache)
    model = onnx.load(str(graph.path))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert tuple(dims) == graph.input_shape == (BATCH, 3, 16, 16)


def test_second_export_is_a_cache_hit(tmp_path: Path) -> None:
    first = export_keys(KEYS[0], BATCH, "fp32", cache_dir=tmp_path)
    second = export_keys(KEYS[0], BATCH, "fp32", cache_dir=tmp_path)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert first.path == second.path and first.path.parent == tmp_path
    assert second.export_s < first.export_s


def test_cache_leaves_no_temporary_files(tmp_path: Path) -> None:
    export_keys(KEYS[0], BATCH, "fp32", cache_dir=tmp_path)
    assert [p.suffix for p in tmp_path.iterdir()] == [".onnx"]


@pytest.mark.parametrize(
    "change",
    [{"batch": 4}, {"precision": "fp16"}, {"seed": 1}, {"opset": 18}, {"method": "torch"}],
    ids=["batch", "precision", "seed", "opset", "method"],
)
def test_cache_file_differs_when_an_input_differs(change: dict, cache: Path) -> None:
    args = {"batch": BATCH, "precision": "fp32", "seed": 0, "opset": None, "method": "direct"}
    base = export_keys(KEYS[1], args["batch"], args["precision"], seed=args["seed"], cache_dir=cache)
    args.update(change)
    other = export_keys(
        KEYS[1],
        args["batch"],
        args["precision"],
        seed=args["seed"],
        opset=args["opset"],
        method=args["method"],
        cache_dir=cache,
    )
    assert other.path != base.path


def test_cache_file_name_is_a_sha256(cache: Path) -> None:
    graph = export_keys(KEYS[0], BATCH, "fp32", cache_dir=cache)
    assert len(graph.path.stem) == 64 and int(graph.path.stem, 16) >= 0
    assert isinstance(EXPORT_FORMAT_VERSION, int)


def test_default_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LATENCY_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("LATENCY_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "nas-latency" / "onnx"


def test_requested_opset_is_written(cache: Path) -> None:
    graph = export_keys(KEYS[1], BATCH, "fp32", opset=18, cache_dir=cache)
    model = onnx.load(str(graph.path))
    assert graph.opset == 18
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]


def test_fp16_graph_is_valid_and_float16_throughout(cache: Path) -> None:
    graph = export_keys(parse_key("irb_i16x8x8_o16_k3_s1_e4_se1_swish"), BATCH, "fp16", cache_dir=cache)
    model = onnx.load(str(graph.path))
    onnx.checker.check_model(model, full_check=True)
    f16 = onnx.TensorProto.FLOAT16
    assert graph.input_dtype == "float16"
    assert model.graph.input[0].type.tensor_type.elem_type == f16
    assert model.graph.output[0].type.tensor_type.elem_type == f16
    assert all(t.data_type == f16 for t in model.graph.initializer if t.data_type in (f16, onnx.TensorProto.FLOAT))


@pytest.mark.parametrize(
    "text",
    [
        "conv_i8x9x9_o8_k3_s1_e1_se0_relu6",
        "fused_irb_i16x8x8_o32_k5_s2_e4_se1_swish",
        "tail_i16x4x4_o32_k1_s1_e1_se0_relu",
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_fp16_graph_runs_close_to_torch(text: str, method: str, cache: Path) -> None:
    key = parse_key(text)
    graph = export_keys(key, BATCH, "fp16", cache_dir=cache, method=method)
    x = _input(graph.input_shape)
    ref = _torch(_reference(key, method), x.astype(np.float16).astype(np.float32))
    got = _run(graph, x.astype(np.float16))
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=2e-2, atol=2e-2 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("method", METHODS)
def test_network_of_chained_keys_matches_torch(method: str, cache: Path) -> None:
    graph = export_keys(NETWORK, BATCH, "fp32", cache_dir=cache, method=method)
    x = _input(graph.input_shape)
    ref = _torch(_reference(NETWORK, method), x)
    got = _run(graph, x)
    assert graph.input_shape == (BATCH, 3, 16, 16) and graph.output_shapes == ((BATCH, 1000),)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_key_strings_are_accepted(cache: Path) -> None:
    graph = export_keys(str(KEYS[0]), BATCH, "fp32", cache_dir=cache)
    assert graph.path == export_keys(KEYS[0], BATCH, "fp32", cache_dir=cache).path


def test_unknown_precision_is_refused(cache: Path) -> None:
    with pytest.raises(ValueError, match="allowed fp32, fp16, int8"):
        export_keys(KEYS[0], BATCH, "int4", cache_dir=cache)


def test_direct_is_the_default_method(cache: Path) -> None:
    default = export_keys(KEYS[0], BATCH, "fp32", cache_dir=cache)
    assert default.path == export_keys(KEYS[0], BATCH, "fp32", method="direct", cache_dir=cache).path
    assert default.path != export_keys(KEYS[0], BATCH, "fp32", method="torch", cache_dir=cache).path


def test_unknown_method_is_refused(cache: Path) -> None:
    with pytest.raises(ValueError, match="allowed direct, torch"):
        export_keys(KEYS[0], BATCH, "fp32", method="dynamo", cache_dir=cache)


def test_unknown_target_is_refused(cache: Path) -> None:
    with pytest.raises(ValueError, match="allowed onnxruntime, tensorrt"):
        export_keys(KEYS[0], BATCH, "fp32", target="openvino", cache_dir=cache)


@pytest.mark.parametrize("batch", [0, -1, 1.5, True])
def test_bad_batch_is_refused(batch: object, cache: Path) -> None:
    with pytest.raises(ValueError, match="positive integer batch"):
        export_keys(KEYS[0], batch, "fp32", cache_dir=cache)  # type: ignore[arg-type]


def test_unsupported_opset_is_refused(cache: Path) -> None:
    with pytest.raises(ValueError, match="from 13 to 20"):
        export_keys(KEYS[0], BATCH, "fp32", opset=11, cache_dir=cache)


def test_keys_that_do_not_chain_are_refused(cache: Path) -> None:
    with pytest.raises(ValueError, match="do not chain"):
        export_keys([NETWORK[0], NETWORK[2]], BATCH, "fp32", cache_dir=cache)


@pytest.mark.parametrize(
    ("target", "version", "opset"),
    [("tensorrt", "8.6.1", 17), ("tensorrt", "10.3.0", 17), ("tensorrt", None, 17), ("onnxruntime", "1.31.1", 17)],
)
def test_choose_opset(target: str, version: str | None, opset: int) -> None:
    assert choose_opset(target, version) == opset


def test_choose_opset_refuses_unknown_target() -> None:
    with pytest.raises(ValueError, match="allowed onnxruntime, tensorrt"):
        choose_opset("tflite")


def test_choose_opset_refuses_unreadable_version() -> None:
    with pytest.raises(ValueError, match="unreadable engine version"):
        choose_opset("tensorrt", "latest")


def test_identity_graph_returns_its_input_on_onnxruntime(tmp_path: Path) -> None:
    graph = export_identity((2, 8, 4, 4), "fp32", cache_dir=tmp_path)
    x = _input(graph.input_shape)
    optimized = tmp_path / "optimized.onnx"
    got = _run(graph, x, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized=optimized)
    np.testing.assert_array_equal(got, x)
    assert graph.output_shapes == (graph.input_shape,)
    assert [n.op_type for n in onnx.load(str(optimized)).graph.node] == ["Identity"]


def test_identity_graph_in_fp16_is_float16(tmp_path: Path) -> None:
    graph = export_identity((1, 3, 8, 8), "fp16", cache_dir=tmp_path)
    model = onnx.load(str(graph.path))
    assert graph.input_dtype == "float16"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_identity_graph_is_cached(tmp_path: Path) -> None:
    first = export_identity((1, 3, 8, 8), "fp32", cache_dir=tmp_path)
    assert export_identity((1, 3, 8, 8), "fp32", cache_dir=tmp_path).cache_hit and not first.cache_hit


def test_identity_refuses_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive integers"):
        export_identity((1, 0, 8, 8), "fp32", cache_dir=tmp_path)
