"""GPU paths, proven on the CPU where they can be: int8 Q/DQ forms per TensorRT version, network flags,
provider and TF32 policies, the GPU-side hold, NVML, timing-cache names, cleanup and the dependency pins."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kernels_bench.backends.base import release_all
from kernels_bench.backends.tensorrt_backend import (
    check_graph,
    int8_export_options,
    network_creation_flags,
    precision_flags,
)
from kernels_bench.backends.tensorrt_cache import TimingCacheFiles, timing_cache_tag
from kernels_bench.config import BackendConfig
from kernels_bench.gpu_timing import SPIN_FLOOR_MS, SpinHold, flush_bytes, throttle_names

ROOT = Path(__file__).resolve().parents[1]
onnx = pytest.importorskip("onnx")


# ----- fault 1: the int8 TensorRT graph of every reference network passes the Q/DQ check --------------------------
@pytest.mark.parametrize(
    "network", ["gpunet-0", "gpunet-1", "gpunet-2", "mobilenetv2-1.0", "efficientnet-b0", "resnet-18", "genet-light"]
)
def test_the_int8_tensorrt_graph_of_a_whole_reference_network_has_the_qdq_tensorrt_accepts(network, tmp_path):
    from kernels_bench.export import export_keys
    from kernels_bench.quant import check_tensorrt_qdq
    from profiler.networks import get_network

    graph = export_keys(list(get_network(network).keys), 1, "int8", target="tensorrt", cache_dir=tmp_path)
    assert check_tensorrt_qdq(onnx.load(str(graph.path))) == []


def test_a_q_on_a_conv_output_that_feeds_an_activation_is_still_refused():
    from onnx import TensorProto, helper, numpy_helper

    from kernels_bench.quant import check_tensorrt_qdq

    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("QuantizeLinear", ["c", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"),
        helper.make_node("Relu", ["dq"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4, 2, 2))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4, 2, 2))],
        initializer=[w, scale, zero],
    )
    problems = check_tensorrt_qdq(helper.make_model(graph))
    assert any("quantizes the output of Conv 'conv'" in p for p in problems)


# ----- faults 4 and 6: int8 forms per TensorRT version and typing ------------------------------------------------
@pytest.mark.parametrize(
    ("version", "strong", "expected"),
    [
        ((8, 6, 1), False, {"qdq_weights": "float", "qdq_float": "float32"}),
        ((9, 3, 0), True, {"qdq_weights": "float", "qdq_float": "float16"}),
        ((10, 3, 0), False, {"qdq_weights": "int8", "qdq_float": "float32"}),
        ((10, 3, 0), True, {"qdq_weights": "int8", "qdq_float": "float16"}),
        ((11, 0, 0), True, {"qdq_weights": "int8", "qdq_float": "float16"}),
    ],
)
def test_int8_graphs_are_written_in_the_form_each_tensorrt_reads(version, strong, expected):
    assert int8_export_options(version, strong) == expected


def test_strongly_typed_int8_is_qdq_over_an_fp16_graph_at_opset_19(tmp_path):
    from kernels_bench.export import FP16_QDQ_MIN_OPSET, export_keys
    from kernels_bench.quant import check_tensorrt_qdq
    from tables.key import BlockKey

    key = BlockKey("irb", 16, 8, 8, 16, k=3, s=1, e=4, se=True, act="swish")
    graph = export_keys(key, 2, "int8", target="tensorrt", cache_dir=tmp_path, qdq_float="float16")
    model = onnx.load(str(graph.path))
    onnx.checker.check_model(model, full_check=True)
    assert graph.input_dtype == "float16" and graph.opset >= FP16_QDQ_MIN_OPSET
    scales = {i.name: i for i in model.graph.initializer if i.name.endswith("scale")}
    assert scales and all(t.data_type == onnx.TensorProto.FLOAT16 for t in scales.values())
    assert check_tensorrt_qdq(model) == []
    check_graph(graph, strongly_typed=True)  # accepted for strongly typed TensorRT
    plain = export_keys(key, 2, "int8", target="tensorrt", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="qdq_float='float16'"):
        check_graph(plain, strongly_typed=True)


def test_tensorrt_8_int8_keeps_float_weights_with_a_qdq_pair(tmp_path):
    from kernels_bench.export import export_keys
    from kernels_bench.quant import check_tensorrt_qdq
    from tables.key import BlockKey

    key = BlockKey("conv", 8, 8, 8, 16, k=3, s=1)
    graph = export_keys(key, 1, "int8", target="tensorrt", cache_dir=tmp_path, qdq_weights="float")
    model = onnx.load(str(graph.path))
    weights = {i.name: i for i in model.graph.initializer if i.name.endswith(".weight")}
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT for w in weights.values())
    weight_qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in weights]
    assert len(weight_qs) == len(weights)
    names = {i.name for i in model.graph.initializer}
    assert not any(f"{w}_int8" in names for w in weights)
    assert check_tensorrt_qdq(model) == []


# ----- fault 5: EXPLICIT_BATCH on 9.x too ---------------------------------------------------------------------------
def flags_enum(**names: int) -> SimpleNamespace:
    return SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace(**names))


@pytest.mark.parametrize(
    ("version", "strong", "expected"),
    [((9, 3, 0), None, 1 << 0), ((9, 3, 0), True, (1 << 0) | (1 << 5)), ((10, 0, 0), None, 0)],
)
def test_explicit_batch_is_set_on_8_and_9(version, strong, expected):
    trt = flags_enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=5)
    assert network_creation_flags(trt, version, strong) == expected


# ----- fault 2: a session that did not get the CUDA provider is refused ----------------------------------------------
def test_a_session_that_fell_back_to_the_cpu_provider_is_refused():
    from kernels_bench.backends.onnxruntime_backend import check_cuda_provider, version_tuple
    from kernels_bench.errors import BackendUnavailable

    check_cuda_provider(["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="did not give this session the CUDA provider"):
        check_cuda_provider(["CPUExecutionProvider"])
    assert version_tuple("1.18.1") == (1, 18) and version_tuple("1.9.0rc1") == (1, 9) and version_tuple("2") == (2, 0)


# ----- fault 8: one TF32 policy, recorded ----------------------------------------------------------------------------
def test_tf32_is_off_by_default_for_every_gpu_backend_and_recorded():
    for backend in ("tensorrt", "onnxruntime", "torch"):
        config = BackendConfig(backend, "cuda")
        assert config.tf32 is False and config.to_dict()["tf32"] is False
        assert "--tf32" in BackendConfig(backend, "cuda", tf32=True).cli_args()
    with pytest.raises(ValueError, match="--tf32 needs a GPU"):
        BackendConfig("onnxruntime", "cpu", tf32=True)
    assert precision_flags("fp32", False) == ([], ["TF32"])
    assert precision_flags("fp32", False, tf32=True) == ([], [])


# ----- fault 3: the GPU-side hold ---------------------------------------------------------------------------------
class FakeTorch:
    """The parts of torch a SpinHold uses: events, streams, _sleep (1 ms per 1e6 cycles)."""

    def __init__(self) -> None:
        self.slept: list[int] = []
        fake = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                self.at = 0.0

            def record(self, stream: object = None) -> None:
                self.at = sum(fake.slept) / 1e6

            def synchronize(self) -> None:
                pass

            def elapsed_time(self, other: Event) -> float:
                return other.at - self.at

        class StreamContext:
            def __init__(self, stream: object) -> None:
                pass

            def __enter__(self) -> None:
                return None

            def __exit__(self, *exc: object) -> None:
                return None

        self.cuda = SimpleNamespace(Event=Event, stream=StreamContext, _sleep=self.slept.append)


def test_the_hold_learns_to_outlast_the_hosts_enqueue_and_counts_the_samples_it_did_not():
    torch = FakeTorch()
    hold = SpinHold(torch, stream=None)
    assert hold.cycles_per_ms == pytest.approx(1e6)
    assert hold.engage(100) == SPIN_FLOOR_MS  # nothing learnt yet
    hold.note_enqueue(host_ms=2.0, iters=100)  # the host needed 2 ms: the floor was short
    assert hold.short == 1
    spin = hold.engage(100)
    assert spin == pytest.approx(1.5 * 2.0) and torch.slept[-1] == pytest.approx(3e6, rel=1e-6)
    hold.note_enqueue(host_ms=2.2, iters=100)
    assert hold.short == 1 and hold.info()["gpu_hold"].startswith("spin kernel")


def test_without_a_cuda_torch_there_is_no_hold():
    from kernels_bench.gpu_timing import make_hold

    assert make_hold(0) is None  # CPU torch here


def test_a_cold_l2_sample_flushes_twice_the_l2_and_at_least_64_mib():
    assert flush_bytes(50 << 20) == 100 << 20
    assert flush_bytes(4 << 20) == 64 << 20


def test_time_runner_asks_a_gpu_runner_for_cold_samples_and_records_its_state():
    from kernels_bench.timing import TimingSettings, time_runner

    class GpuRunner:
        clock = "cuda_events"
        timer_resolution_ms = 0.0005
        info: dict = {}

        def __init__(self) -> None:
            self.cold: list[bool] = []

        def timed(self, iters: int, *, cold_l2: bool = False) -> float:
            self.cold.append(cold_l2)
            return iters * 0.1

        def device_state(self) -> dict:
            return {"sm_clock_mhz": 1980}

    runner = GpuRunner()
    result = time_runner(runner, TimingSettings(repeats=4, warmup_runs=1, warmup_min_ms=0.0, cold_l2=True))
    assert runner.cold[-4:] == [True] * 4 and not any(runner.cold[:-4])  # only the timed samples are cold
    assert result.settings["l2"] == "cold"
    assert result.settings["device_state"] == {"before": {"sm_clock_mhz": 1980}, "after": {"sm_clock_mhz": 1980}}


# ----- fault 9: clocks and throttle reasons --------------------------------------------------------------------------
def test_throttle_reasons_are_named_from_nvmls_bits():
    assert throttle_names(0) == []
    assert throttle_names(0x1 | 0x4) == ["gpu_idle", "sw_power_cap"]
    assert throttle_names(0x40 | 0x10000) == ["hw_thermal_slowdown", "0x10000"]


def test_without_nvml_there_is_no_device_state(monkeypatch):
    from kernels_bench import gpu_timing

    monkeypatch.setattr(gpu_timing, "_NVML", False)
    assert gpu_timing.device_state(0) is None


# ----- fault 10: timing caches keyed by TensorRT version and GPU -----------------------------------------------------
def test_timing_cache_files_are_named_by_tensorrt_version_gpu_and_compute_capability(tmp_path):
    tag = timing_cache_tag("10.3.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert tag == "tensorrt-10.3.0-nvidia-h100-80gb-hbm3-sm90"
    files = TimingCacheFiles(tmp_path, tag)
    assert files.worker(2).name == f"{tag}.worker-2.timing-cache" and files.combined.name == f"{tag}.timing-cache"
    other = TimingCacheFiles(tmp_path, timing_cache_tag("10.4.0", "NVIDIA H100 80GB HBM3", "9.0"))
    files.combined.write_bytes(b"old cache")
    assert other.prepare_worker(0).exists() is False  # another version never starts from this cache
    assert files.prepare_worker(0).read_bytes() == b"old cache"  # the same version and GPU does
    assert TimingCacheFiles.seeds(tmp_path) == {files.combined.name: b"old cache"}


# ----- fault 11: cleanup goes on after a failing step; handles -------------------------------------------------------
def test_release_all_runs_every_step_and_raises_the_first_failure():
    done: list[str] = []

    def fail(name: str):
        def step() -> None:
            done.append(name)
            raise RuntimeError(name)

        return step

    with pytest.raises(RuntimeError, match="first"):
        release_all(fail("first"), lambda: done.append("second"), fail("third"), lambda: done.append("fourth"))
    assert done == ["first", "second", "third", "fourth"]


def test_a_native_handle_falls_back_to_int_without_cuda_bindings():
    from kernels_bench.cuda_timer import native_handle

    assert native_handle(0x1234) == 0x1234


def test_a_missing_execution_context_is_an_engine_error_not_a_crash():
    from kernels_bench.backends.tensorrt_backend import EngineBuildError, TensorRTRunner

    class Engine:
        def create_execution_context(self) -> None:
            return None

    class Runtime:
        def __init__(self, logger: object) -> None:
            pass

        def deserialize_cuda_engine(self, plan: object) -> Engine:
            return Engine()

    trt = SimpleNamespace(Runtime=Runtime)
    logger = SimpleNamespace(errors=["out of memory"])
    with pytest.raises(EngineBuildError, match=r"execution context.*out of memory"):
        TensorRTRunner(trt, b"plan", logger, cuda_graphs=False, cudart=SimpleNamespace())


# ----- fault 7: cuda-python pinned per CUDA major --------------------------------------------------------------------
def test_the_tensorrt_extras_pin_cuda_python_per_cuda_major():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cu13 = [d for d in extras["tensorrt"] if d.startswith("cuda-python")]
    cu12 = [d for d in extras["tensorrt-cu12"] if d.startswith("cuda-python")]
    trt8 = [d for d in extras["tensorrt8"] if d.startswith("cuda-python")]
    assert cu13 == ["cuda-python>=13,<14"]
    assert cu12 == ["cuda-python>=12.6.1,<13"]
    assert trt8 == ["cuda-python>=12.6.1,<13"]
    assert "tensorrt>=8.6,<9" in extras["tensorrt8"]
    assert "tensorrt-cu12>=10.0" in extras["tensorrt-cu12"]


class _DriverRuntime:
    """Only what :func:`check_driver` calls: the driver's CUDA version as ``(err, version)``."""

    class cudaError_t:
        cudaSuccess = 0

    def __init__(self, version: int) -> None:
        self.version = version

    def cudaDriverGetVersion(self):
        return (0, self.version)


def test_cuda_python_13_on_a_cuda_12_driver_is_refused_naming_the_cu12_extras():
    from kernels_bench.cuda_timer import check_driver
    from kernels_bench.errors import BackendUnavailable

    with pytest.raises(
        BackendUnavailable, match=r"cuda-python 13.x needs a CUDA 13 driver.*CUDA 12.4.*tensorrt-cu12.*tensorrt8"
    ):
        check_driver(_DriverRuntime(12040), major=13)
    check_driver(_DriverRuntime(13000), major=13)
    check_driver(_DriverRuntime(13010), major=12)
    check_driver(_DriverRuntime(12020), major=12)
    with pytest.raises(BackendUnavailable, match="update the NVIDIA driver"):
        check_driver(_DriverRuntime(11080), major=12)
    with pytest.raises(BackendUnavailable, match="no NVIDIA driver"):
        check_driver(_DriverRuntime(0), major=13)


def test_the_bindings_major_comes_from_cuda_bindings_first(monkeypatch):
    import kernels_bench.cuda_timer as cuda_timer

    monkeypatch.setattr(
        cuda_timer, "cuda_python_versions", lambda: {"cuda_python_version": "12.9.0", "cuda_bindings_version": "13.1.0"}
    )
    assert cuda_timer.bindings_major() == 13
    monkeypatch.setattr(
        cuda_timer, "cuda_python_versions", lambda: {"cuda_python_version": "12.6.2", "cuda_bindings_version": None}
    )
    assert cuda_timer.bindings_major() == 12
    monkeypatch.setattr(
        cuda_timer, "cuda_python_versions", lambda: {"cuda_python_version": None, "cuda_bindings_version": None}
    )
    assert cuda_timer.bindings_major() is None


def test_a_capture_whose_enqueue_fails_destroys_the_graph_it_ended_with():
    from test_tensorrt_backend import FakeContext, FakeRuntimeApi, fake_runtime_trt

    from kernels_bench.backends.tensorrt_backend import TensorRTRunner

    class Refusing(FakeContext):
        def execute_async_v3(self, stream: int) -> bool:
            super().execute_async_v3(stream)
            return len(self.enqueued_on) != 2  # the first enqueue works; the captured one is refused

    class Counting(FakeRuntimeApi):
        destroyed: list[str]

        def cudaGraphDestroy(self, graph: str) -> tuple[int]:
            self.destroyed.append(graph)
            return (0,)

    rt = Counting()
    rt.destroyed = []
    context = Refusing()
    runner = TensorRTRunner(fake_runtime_trt(context), b"plan", SimpleNamespace(errors=[]), cuda_graphs=True, cudart=rt)
    assert runner.info["cuda_graph"] == "fallback: execute_async_v3 returned False during capture"
    assert rt.destroyed == ["graph"]
    runner.close()
    assert rt.destroyed == ["graph"]  # once, not again at close
