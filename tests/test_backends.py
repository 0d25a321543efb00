"""The backend registry, the onnxruntime and torch backends on the CPU, and measure_keys/measure_floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kernels_bench.backends import BACKENDS, Backend, BackendUnavailable, PrecisionNotSupported, get_backend
from kernels_bench.measure import measure_floor, measure_keys
from kernels_bench.timing import Runner, TimingSettings, time_runner
from tables.key import BlockKey

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

FAST = TimingSettings(repeats=30, warmup_runs=3, warmup_min_ms=5.0)
KEY = BlockKey("irb", 16, 8, 8, 16, k=3, s=1, e=2, se=True, act="swish")
REPO = Path(__file__).resolve().parents[1]


def conv_relu_onnx(path: Path, batch: int = 2, channels: int = 8, size: int = 8) -> Path:
    """A hand-built Conv -> Relu graph with fixed shapes."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, channels, size, size])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def ort_cpu() -> Backend:
    with get_backend("onnxruntime", device="cpu") as backend:
        yield backend


@pytest.fixture
def torch_cpu() -> Backend:
    with get_backend("torch", device="cpu") as backend:
        yield backend


# ----- registry ------------------------------------------------------------------


def test_backends_lists_the_three_engines() -> None:
    assert BACKENDS == ("tensorrt", "onnxruntime", "torch")


def test_unknown_backend_name_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'tvm'.*tensorrt, onnxruntime, torch"):
        get_backend("tvm")


def test_unknown_backend_option_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid option for the onnxruntime backend"):
        get_backend("onnxruntime", thread=2)


def test_invalid_device_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid device 'gpu'"):
        get_backend("onnxruntime", device="gpu")


def test_importing_backends_and_timing_needs_no_heavy_engine(fresh_imports) -> None:
    assert fresh_imports["kernels_bench light"] == []


def test_missing_tensorrt_is_backend_unavailable_naming_the_extra() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(BackendUnavailable, match=r"pip install -e '\.\[tensorrt\]'"):
        get_backend("tensorrt", device="cuda")


# ----- onnxruntime --------------------------------------------------------------------


def test_onnxruntime_times_a_hand_built_graph_on_the_cpu(ort_cpu: Backend, tmp_path: Path) -> None:
    with ort_cpu.load(conv_relu_onnx(tmp_path / "g.onnx")) as runner:
        assert isinstance(runner, Runner)
        result = time_runner(runner, FAST)
    assert len(result.samples_ms) == 30
    assert result.min_ms <= result.median_ms <= result.max_ms
    assert result.min_ms > 0
    assert result.settings["clock"] == "host"
    assert result.settings["threads"] == 1


def test_onnxruntime_measures_a_block_with_all_phases_and_settings(ort_cpu: Backend, tmp_path: Path) -> None:
    ort_cpu.cache_dir = tmp_path
    result = measure_keys(ort_cpu, KEY, 2, "fp32", FAST)
    assert len(result.samples_ms) == 30
    assert result.trimmed_mean_ms > 0
    assert result.min_ms <= result.trimmed_mean_ms <= result.max_ms
    assert result.std_ms >= 0 and result.cv >= 0
    assert all(result.phases[p] > 0 for p in ("export_s", "compile_s", "warmup_s", "timed_s"))
    s = result.settings
    assert (s["backend"], s["provider"], s["threads"], s["clock"]) == (
        "onnxruntime",
        "CPUExecutionProvider",
        1,
        "host",
    )
    assert (s["precision"], s["batch"], s["keys"]) == ("fp32", 2, [str(KEY)])


def test_onnxruntime_records_the_thread_count_it_was_given(tmp_path: Path) -> None:
    with get_backend("onnxruntime", threads=2) as backend:
        assert backend.settings()["threads"] == 2
        with backend.load(conv_relu_onnx(tmp_path / "g.onnx")) as runner:
            result = time_runner(runner, TimingSettings(repeats=3, warmup_runs=1, warmup_min_ms=0.0))
    assert result.settings["threads"] == 2


def test_onnxruntime_runs_int8_on_the_cpu(ort_cpu: Backend, tmp_path: Path) -> None:
    ort_cpu.cache_dir = tmp_path
    result = measure_keys(ort_cpu, KEY, 1, "int8", TimingSettings(repeats=5, warmup_runs=1, warmup_min_ms=0.0))
    assert result.settings["precision"] == "int8"
    assert len(result.samples_ms) == 5


def test_onnxruntime_floor_times_the_identity_graph(ort_cpu: Backend, tmp_path: Path) -> None:
    ort_cpu.cache_dir = tmp_path
    result = measure_floor(ort_cpu, (2, 16, 8, 8), 2, "fp32", FAST)
    assert len(result.samples_ms) == 30
    assert result.settings["identity_shape"] == [2, 16, 8, 8]


def test_measure_floor_requires_the_shape_to_start_with_the_batch(ort_cpu: Backend) -> None:
    with pytest.raises(ValueError, match="must start with the batch size 4"):
        measure_floor(ort_cpu, (2, 16, 8, 8), 4, "fp32")


def test_onnxruntime_cpu_refuses_fp16_because_it_casts_to_fp32(ort_cpu: Backend) -> None:
    with pytest.raises(PrecisionNotSupported, match=r"does not run fp16: .*casts fp16 to fp32"):
        ort_cpu.check_precision("fp16")


def test_measure_keys_refuses_fp16_on_onnxruntime_cpu_before_exporting(ort_cpu: Backend, tmp_path: Path) -> None:
    ort_cpu.cache_dir = tmp_path
    with pytest.raises(PrecisionNotSupported):
        measure_keys(ort_cpu, KEY, 1, "fp16")
    assert list(tmp_path.iterdir()) == []


def test_onnxruntime_refuses_bf16(ort_cpu: Backend) -> None:
    with pytest.raises(PrecisionNotSupported, match="bf16"):
        ort_cpu.check_precision("bf16")


def test_unknown_precision_is_refused(ort_cpu: Backend) -> None:
    with pytest.raises(PrecisionNotSupported, match="unknown precision 'fp8'"):
        ort_cpu.check_precision("fp8")


def test_onnxruntime_cuda_without_the_cuda_provider_names_the_ort_gpu_extra() -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(BackendUnavailable, match=r"pip install -e '\.\[ort-gpu\]'"):
        get_backend("onnxruntime", device="cuda")


def test_onnxruntime_refuses_a_non_positive_thread_count() -> None:
    with pytest.raises(ValueError, match="threads=0"):
        get_backend("onnxruntime", threads=0)


def test_onnxruntime_environment_names_engine_version_and_host(ort_cpu: Backend) -> None:
    env = ort_cpu.environment()
    assert env["engine"] == "onnxruntime"
    assert env["engine_version"] == ort.__version__
    assert env["host_cpu"] and env["host_logical_cpus"] >= 1


def test_a_closed_runner_refuses_to_time(ort_cpu: Backend, tmp_path: Path) -> None:
    runner = ort_cpu.load(conv_relu_onnx(tmp_path / "g.onnx"))
    runner.close()
    with pytest.raises(RuntimeError, match="runner is closed"):
        runner.timed(1)


def test_onnxruntime_load_of_a_missing_file_says_to_export(ort_cpu: Backend, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="export the graph first"):
        ort_cpu.load(tmp_path / "absent.onnx")


# ----- torch ---------------------------------------------------------------------------


def test_torch_times_a_block_on_the_cpu_with_a_fixed_thread_count(torch_cpu: Backend) -> None:
    result = measure_keys(torch_cpu, KEY, 2, "fp32", FAST)
    assert len(result.samples_ms) == 30
    assert result.min_ms <= result.trimmed_mean_ms <= result.max_ms
    assert result.settings["threads"] == 1
    assert result.settings["clock"] == "host"
    assert result.settings["backend"] == "torch"
    assert result.phases["export_s"] > 0 and result.phases["compile_s"] > 0


def test_torch_times_a_hand_built_module(torch_cpu: Backend) -> None:
    from kernels_bench.backends.torch_backend import TorchPrepared

    module = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU())
    with torch_cpu.load(TorchPrepared(module, (1, 4, 8, 8), "fp32")) as runner:
        result = time_runner(runner, TimingSettings(repeats=4, warmup_runs=1, warmup_min_ms=0.0))
    assert len(result.samples_ms) == 4


def test_torch_runs_bf16_on_the_cpu(torch_cpu: Backend) -> None:
    result = measure_keys(torch_cpu, KEY, 1, "bf16", TimingSettings(repeats=3, warmup_runs=1, warmup_min_ms=0.0))
    assert result.settings["precision"] == "bf16"


def test_torch_floor_copies_a_tensor_of_the_input_size(torch_cpu: Backend) -> None:
    result = measure_floor(torch_cpu, (2, 16, 8, 8), 2, "fp32", FAST)
    assert len(result.samples_ms) == 30


def test_torch_sets_the_thread_count_and_restores_it_on_close() -> None:
    before = torch.get_num_threads()
    backend = get_backend("torch", threads=1)
    assert torch.get_num_threads() == 1
    backend.close()
    assert torch.get_num_threads() == before


def test_torch_refuses_int8_pointing_to_the_other_backends(torch_cpu: Backend) -> None:
    with pytest.raises(PrecisionNotSupported, match="use onnxruntime or tensorrt for int8"):
        torch_cpu.check_precision("int8")


def test_torch_refuses_fp16_on_the_cpu(torch_cpu: Backend) -> None:
    with pytest.raises(PrecisionNotSupported, match="no fast fp16 convolution kernels on the CPU"):
        measure_keys(torch_cpu, KEY, 1, "fp16")


def test_torch_cuda_graphs_need_a_cuda_device() -> None:
    with pytest.raises(ValueError, match="--cuda-graphs needs a GPU"):
        get_backend("torch", cuda_graphs=True)


def test_torch_on_cuda_without_a_gpu_is_unavailable() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailable, match=r"torch\.cuda\.is_available\(\) is False"):
        get_backend("torch", device="cuda")


def test_torch_environment_names_engine_and_device(torch_cpu: Backend) -> None:
    env = torch_cpu.environment()
    assert env["engine"] == "torch"
    assert env["engine_version"] == torch.__version__
    assert env["device_name"] == env["host_cpu"]


def test_measure_keys_times_a_chain_of_keys_as_one_network(torch_cpu: Backend) -> None:
    second = BlockKey("conv", 16, 8, 8, 24, k=3, s=2)
    result = measure_keys(torch_cpu, [KEY, second], 1, "fp32", TimingSettings(repeats=3, warmup_min_ms=0.0))
    assert result.settings["keys"] == [str(KEY), str(second)]


def test_measure_keys_refuses_an_empty_key_list(torch_cpu: Backend) -> None:
    with pytest.raises(ValueError, match="no block keys given"):
        measure_keys(torch_cpu, [], 1, "fp32")


# ----- pinning to CPUs -----------------------------------------------------------

linux_only = pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="needs Linux affinity")


def test_parse_cpus_reads_lists_and_ranges() -> None:
    from kernels_bench.config import parse_cpus

    assert parse_cpus("1") == [1]
    assert parse_cpus("3,0-2, 2") == [0, 1, 2, 3]
    for bad in ("", "x", "-1", "3-1", "1,,2", "0-"):
        with pytest.raises(ValueError, match="CPU list"):
            parse_cpus(bad)


@linux_only
@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_cpu_backends_pin_the_process_record_it_and_restore_on_close(name: str, tmp_path: Path) -> None:
    import os

    before = os.sched_getaffinity(0)
    cpu = min(before)
    backend = get_backend(name, cpus=[cpu])
    try:
        assert os.sched_getaffinity(0) == {cpu}
        assert backend.settings()["cpus"] == [cpu]
        result = measure_keys(backend, KEY, 1, "fp32", TimingSettings(repeats=3, warmup_runs=1, warmup_min_ms=0.0))
        assert result.settings["cpus"] == [cpu]
    finally:
        backend.close()
    assert os.sched_getaffinity(0) == before


@linux_only
def test_unpinned_backends_leave_the_affinity_alone_and_record_none(ort_cpu: Backend) -> None:
    import os

    before = os.sched_getaffinity(0)
    assert ort_cpu.settings()["cpus"] == []
    ort_cpu.close()
    assert os.sched_getaffinity(0) == before


@linux_only
def test_a_cpu_this_process_cannot_use_is_refused_naming_the_usable_ones() -> None:
    import os

    usable = sorted(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=r"CPUs \[4000\] are not available .* may use") as info:
        get_backend("onnxruntime", cpus=[4000])
    assert str(usable) in str(info.value)


def test_a_cpu_list_beyond_any_machine_is_refused_before_it_is_expanded() -> None:
    from kernels_bench.config import MAX_CPU_INDEX, parse_cpus

    with pytest.raises(ValueError, match=f"beyond {MAX_CPU_INDEX}"):
        parse_cpus("0-1000000000000")
    with pytest.raises(ValueError, match="CPU indices from 0 to"):
        get_backend("onnxruntime", cpus=[100000])


# ----- drift reference -------------------------------------------------------------


def test_a_drift_reference_is_timed_between_the_samples_of_a_key(ort_cpu: Backend) -> None:
    from kernels_bench.measure import DEFAULT_DRIFT_REFERENCE, DriftReference

    # samples long enough that one reference sample holds several runs of the reference
    # (the default reference takes ~5 ms per image on one CPU core, ~10 ms at batch 2)
    settings = TimingSettings(repeats=6, warmup_runs=3, warmup_min_ms=0.0, min_sample_ms=40.0)
    with DriftReference(ort_cpu, batch=2, precision="fp32") as ref:
        assert str(ref.key) == DEFAULT_DRIFT_REFERENCE
        alone = ref.measure(settings)
        assert alone.reference_ms is None and alone.trimmed_mean_ms > 0
        result = measure_keys(ort_cpu, KEY, 2, "fp32", settings, reference=ref)
    assert len(result.reference_samples_ms) == 6 and result.reference_ms > 0
    assert result.settings["drift_reference"] == DEFAULT_DRIFT_REFERENCE
    # a reference sample lasts about as long as a sample of the key
    key_sample = result.trimmed_mean_ms * result.inner_loop
    ref_sample = result.reference_ms * result.reference_inner_loop
    assert result.reference_inner_loop > 1
    # (the key's sample length is planned from a short estimate of one run, so allow a wide band)
    assert 0.25 < ref_sample / key_sample < 5.0


def test_a_drift_reference_loaded_for_another_batch_or_a_closed_one_is_refused(ort_cpu: Backend) -> None:
    from kernels_bench.measure import DriftReference

    ref = DriftReference(ort_cpu, "conv_i8x8x8_o8_k3_s1_e1_se0_relu", batch=1, precision="fp32")
    with pytest.raises(ValueError, match="batch 1"):
        measure_keys(ort_cpu, KEY, 2, "fp32", FAST, reference=ref)
    ref.close()
    ref.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        ref.measure(FAST)
    with pytest.raises(ValueError, match="ratio"):
        DriftReference(ort_cpu, batch=1, precision="fp32", ratio=0)


def test_spare_cpu_is_the_last_usable_cpu_when_there_are_two_or_more(monkeypatch) -> None:
    import os

    from tables.host import spare_cpu

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5, 0, 3}, raising=False)
    assert spare_cpu() == 5
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert spare_cpu() is None
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert spare_cpu() is None


def test_the_torch_backend_takes_the_cache_dir_every_backend_is_given(tmp_path) -> None:
    from kernels_bench.backends import get_backend

    with get_backend("torch", device="cpu", cache_dir=tmp_path) as backend:
        assert backend.name == "torch"
    assert list(tmp_path.iterdir()) == []  # it exports nothing
