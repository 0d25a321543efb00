"""GPU timing: torch on CUDA with events, onnxruntime's CUDA provider, and the cuda-python event timer.

Every test here is marked ``gpu`` and skipped without a CUDA device.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from kernels_bench.backends import get_backend  # noqa: E402
from kernels_bench.measure import measure_floor, measure_keys  # noqa: E402
from kernels_bench.timing import TimingSettings  # noqa: E402
from tables.key import BlockKey  # noqa: E402

KEY = BlockKey("irb", 64, 28, 28, 64, k=5, s=1, e=6, se=True, act="swish")


def _cudart_or_skip():
    try:
        from kernels_bench.cuda_timer import load_cudart

        return load_cudart()
    except Exception as error:
        pytest.skip(f"cuda-python is not usable here: {error}")


def test_torch_times_fp16_blocks_with_cuda_events() -> None:
    with get_backend("torch", device="cuda") as backend:
        result = measure_keys(backend, KEY, 32, "fp16", TimingSettings())
    assert len(result.samples_ms) == 30
    assert result.settings["clock"] == "cuda_events"
    assert result.settings["cudnn_benchmark"] is True
    assert 0 < result.min_ms <= result.trimmed_mean_ms <= result.max_ms


def test_torch_inner_loop_covers_a_thousand_event_resolutions_for_tiny_kernels() -> None:
    tiny = BlockKey("conv", 8, 8, 8, 8, k=1, s=1)
    with get_backend("torch", device="cuda") as backend:
        result = measure_keys(backend, tiny, 1, "fp16", TimingSettings(repeats=5))
    assert result.inner_loop * result.trimmed_mean_ms >= 0.5 * 0.9


def test_torch_cuda_graphs_replay_the_captured_block() -> None:
    with get_backend("torch", device="cuda", cuda_graphs=True) as backend:
        result = measure_keys(backend, KEY, 8, "fp16", TimingSettings(repeats=10))
    assert result.settings["cuda_graphs"] is True
    assert result.trimmed_mean_ms > 0


def test_torch_floor_on_cuda_is_cheaper_than_a_block() -> None:
    settings = TimingSettings(repeats=10)
    with get_backend("torch", device="cuda") as backend:
        block = measure_keys(backend, KEY, 32, "fp16", settings)
        floor = measure_floor(backend, (32, *KEY.input_shape), 32, "fp16", settings)
    assert floor.trimmed_mean_ms < block.trimmed_mean_ms


def test_onnxruntime_cuda_provider_times_with_device_io_binding(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    with get_backend("onnxruntime", device="cuda", cache_dir=tmp_path) as backend:
        result = measure_keys(backend, KEY, 8, "fp16", TimingSettings(repeats=10))
    assert result.settings["provider"] == "CUDAExecutionProvider"
    assert result.settings["clock"] == "cuda_events"


def test_cuda_python_timer_agrees_with_torch_events_within_two_percent() -> None:
    rt = _cudart_or_skip()
    from kernels_bench.cuda_timer import CudaEventTimer

    stream = torch.cuda.Stream()
    a = torch.randn(2048, 2048, device="cuda")
    b = torch.randn(2048, 2048, device="cuda")
    torch_start = torch.cuda.Event(enable_timing=True)
    torch_end = torch.cuda.Event(enable_timing=True)
    ratios = []
    with CudaEventTimer(rt) as timer, torch.cuda.stream(stream):
        for _ in range(3):
            torch.mm(a, b)
        for _ in range(25):
            timer.start(stream)
            torch_start.record(stream)
            for _ in range(10):
                torch.mm(a, b)
            torch_end.record(stream)
            timer.stop(stream)
            ours = timer.elapsed_ms()
            torch_end.synchronize()
            ratios.append(ours / torch_start.elapsed_time(torch_end))
    assert statistics.median(ratios) == pytest.approx(1.0, rel=0.02)


def test_device_buffer_round_trips_host_data() -> None:
    rt = _cudart_or_skip()
    import numpy as np

    from kernels_bench.cuda_timer import DeviceBuffer

    data = np.arange(1024, dtype=np.float32)
    back = np.zeros_like(data)
    with DeviceBuffer(data.nbytes, rt) as buffer:
        buffer.copy_from_host(data)
        buffer.copy_to_host(back)
    assert np.array_equal(data, back)


def test_cuda_python_stream_synchronizes_and_closes() -> None:
    rt = _cudart_or_skip()
    from kernels_bench.cuda_timer import CudaEventTimer, Stream

    with Stream(rt) as stream, CudaEventTimer(rt) as timer:
        timer.start(stream)
        timer.stop(stream)
        stream.synchronize()
        assert timer.elapsed_ms() >= 0.0
