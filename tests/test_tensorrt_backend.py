"""The TensorRT backend's pure-Python parts against stand-in ``trt`` namespaces for 8.6, 10.x and 11.x,
the cuda-python helpers against a stand-in runtime, and (marked tensorrt) a real engine build."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kernels_bench.backends.tensorrt_backend import (
    BuildOptions,
    EngineBuildError,
    build_engine,
    check_version,
    configure_builder,
    network_creation_flags,
    parse_version,
    precision_flags,
    recording_logger,
    strongly_typed_for,
)
from kernels_bench.backends.tensorrt_cache import TimingCache
from kernels_bench.cuda_timer import CudaError, CudaEventTimer, check, stream_handle
from kernels_bench.errors import BackendUnavailable

# ----- stand-in trt modules -----------------------------------------------------------


class FakeLoggerBase:
    class Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self) -> None:
        pass


def fake_trt(version: str) -> SimpleNamespace:
    """A namespace with the enums of one TensorRT major version (arbitrary bit positions)."""
    major = int(version.split(".")[0])
    flags: dict[str, int] = {}
    if major < 11:
        flags["EXPLICIT_BATCH"] = 0
    if major == 10:
        flags["STRONGLY_TYPED"] = 5
    return SimpleNamespace(
        __version__=version,
        NetworkDefinitionCreationFlag=SimpleNamespace(**flags),
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32"),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        ILogger=FakeLoggerBase,
    )


class FakeCache:
    """A timing cache whose bytes are a JSON list of entries."""

    def __init__(self, entries: set[str]) -> None:
        self.entries = set(entries)

    def serialize(self) -> bytes:
        return json.dumps(sorted(self.entries)).encode()

    def combine(self, other: FakeCache, ignore_mismatch: bool) -> bool:
        self.entries |= other.entries
        return True


class FakeConfig:
    def __init__(self, accept_cache: bool = True) -> None:
        self.flags_set: list[str] = []
        self.flags_cleared: list[str] = []
        self.pool: dict[str, int] = {}
        self.builder_optimization_level = 3
        self.avg_timing_iterations = 1
        self.timing_cache: FakeCache | None = None
        self.accept_cache = accept_cache

    def set_flag(self, flag: str) -> None:
        self.flags_set.append(flag)

    def clear_flag(self, flag: str) -> None:
        self.flags_cleared.append(flag)

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pool[pool] = size

    def create_timing_cache(self, data: bytes) -> FakeCache | None:
        if not data:
            return FakeCache(set())
        try:
            return FakeCache(set(json.loads(data)))
        except ValueError:
            return None

    def set_timing_cache(self, cache: FakeCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return self.accept_cache


# ----- versions and flags -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.6.1.6", (8, 6, 1)),
        ("10.3.0", (10, 3, 0)),
        ("10.0.0b6", (10, 0, 0)),
        ("11.0", (11, 0, 0)),
        ("10", (10, 0, 0)),
    ],
)
def test_parse_version(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected


def test_parse_version_rejects_text_without_a_number() -> None:
    with pytest.raises(ValueError, match="unreadable TensorRT version"):
        parse_version("dev")


def test_tensorrt_older_than_8_6_is_refused() -> None:
    with pytest.raises(ValueError, match=r"needs TensorRT 8\.6 or later"):
        check_version((8, 5, 3))


def test_8_6_uses_the_explicit_batch_flag() -> None:
    trt = fake_trt("8.6.1")
    assert network_creation_flags(trt, (8, 6, 1), None) == 1 << 0


def test_8_6_refuses_strong_typing() -> None:
    with pytest.raises(ValueError, match=r"8\.6 has no strongly typed networks"):
        network_creation_flags(fake_trt("8.6.1"), (8, 6, 1), True)


def test_10_is_weakly_typed_by_default_with_no_creation_flag() -> None:
    assert strongly_typed_for((10, 3, 0), None) is False
    assert network_creation_flags(fake_trt("10.3.0"), (10, 3, 0), None) == 0


def test_10_strongly_typed_on_request_sets_the_strongly_typed_flag() -> None:
    assert strongly_typed_for((10, 3, 0), True) is True
    assert network_creation_flags(fake_trt("10.3.0"), (10, 3, 0), True) == 1 << 5


def test_11_is_always_strongly_typed_and_never_touches_explicit_batch() -> None:
    trt = fake_trt("11.0.0")
    assert strongly_typed_for((11, 0, 0), None) is True
    assert network_creation_flags(trt, (11, 0, 0), None) == 0  # no EXPLICIT_BATCH, no STRONGLY_TYPED in this 11


def test_11_sets_strongly_typed_where_the_flag_still_exists() -> None:
    trt = fake_trt("11.0.0")
    trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED = 5
    assert network_creation_flags(trt, (11, 0, 0), None) == 1 << 5


def test_11_refuses_weak_typing() -> None:
    with pytest.raises(ValueError, match="always strongly typed"):
        strongly_typed_for((11, 1, 0), False)


@pytest.mark.parametrize(
    ("precision", "strong", "expected"),
    [
        ("fp32", False, ([], ["TF32"])),
        ("fp32", True, ([], ["TF32"])),
        ("fp16", False, (["FP16"], [])),
        ("int8", False, (["INT8", "FP16"], [])),
        ("fp16", True, ([], [])),
        ("int8", True, ([], [])),
    ],
)
def test_precision_flags_per_typing_mode(precision: str, strong: bool, expected: tuple[list[str], list[str]]) -> None:
    assert precision_flags(precision, strong) == expected


def test_precision_flags_refuse_bf16() -> None:
    with pytest.raises(ValueError, match="fp32, fp16 or int8"):
        precision_flags("bf16", False)


def test_configure_builder_sets_flags_and_options_on_the_config() -> None:
    trt, config = fake_trt("10.3.0"), FakeConfig()
    applied = configure_builder(trt, config, "int8", False, BuildOptions(5, 4, 1 << 20))
    assert config.flags_set == ["INT8", "FP16"]
    assert config.builder_optimization_level == 5
    assert config.avg_timing_iterations == 4
    assert config.pool == {"WORKSPACE": 1 << 20}
    assert applied["builder_flags_set"] == ["INT8", "FP16"]


def test_configure_builder_clears_tf32_for_fp32() -> None:
    config = FakeConfig()
    configure_builder(fake_trt("8.6.1"), config, "fp32", False, BuildOptions())
    assert config.flags_cleared == ["TF32"]
    assert config.flags_set == []


def test_zero_workspace_keeps_tensorrts_default() -> None:
    config = FakeConfig()
    configure_builder(fake_trt("10.3.0"), config, "fp16", False, BuildOptions(workspace_bytes=0))
    assert config.pool == {}


@pytest.mark.parametrize("level", [-1, 6, 2.5, True])
def test_builder_optimization_level_must_be_0_to_5(level: object) -> None:
    with pytest.raises(ValueError, match=r"builder_optimization_level=.*from 0 to 5"):
        BuildOptions(builder_optimization_level=level)  # type: ignore[arg-type]


def test_avg_timing_iterations_must_be_positive() -> None:
    with pytest.raises(ValueError, match="avg_timing_iterations=0"):
        BuildOptions(avg_timing_iterations=0)


# ----- timing cache --------------------------------------------------------------------------


def test_timing_cache_starts_empty_without_a_file(tmp_path: Path) -> None:
    cache = TimingCache(tmp_path / "trt.cache")
    cache.attach(FakeConfig())
    assert cache.cache.entries == set()
    assert cache.loaded_bytes == 0


def test_timing_cache_is_one_object_shared_by_every_build_config(tmp_path: Path) -> None:
    cache = TimingCache(tmp_path / "trt.cache")
    first, second = FakeConfig(), FakeConfig()
    cache.attach(first)
    cache.attach(second)
    assert first.timing_cache is second.timing_cache is cache.cache


def test_timing_cache_round_trips_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "trt.cache"
    writer = TimingCache(path)
    writer.attach(FakeConfig())
    writer.cache.entries |= {"conv_a", "conv_b"}
    writer.save()
    reader = TimingCache(path)
    reader.attach(FakeConfig())
    assert reader.cache.entries == {"conv_a", "conv_b"}
    assert reader.loaded_bytes == path.stat().st_size


def test_timing_cache_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    cache = TimingCache(tmp_path / "trt.cache")
    cache.attach(FakeConfig())
    cache.save()
    assert [p.name for p in tmp_path.iterdir()] == ["trt.cache"]


def test_timing_cache_save_merges_what_another_process_saved_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "trt.cache"
    a, b = TimingCache(path), TimingCache(path)
    a.attach(FakeConfig())
    b.attach(FakeConfig())
    a.cache.entries.add("from_a")
    a.save()
    b.cache.entries.add("from_b")
    b.save()
    assert set(json.loads(path.read_bytes())) == {"from_a", "from_b"}


def test_timing_cache_merges_another_file(tmp_path: Path) -> None:
    other = tmp_path / "other.cache"
    other.write_bytes(json.dumps(["remote"]).encode())
    cache = TimingCache(tmp_path / "trt.cache")
    cache.attach(FakeConfig())
    cache.cache.entries.add("local")
    assert cache.merge_file(other) is True
    assert cache.cache.entries == {"local", "remote"}


def test_an_unreadable_timing_cache_file_starts_empty_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "trt.cache"
    path.write_bytes(b"not a cache")
    cache = TimingCache(path)
    cache.attach(FakeConfig())
    assert cache.cache.entries == set()
    assert "not a usable timing cache" in (cache.load_problem or "")


def test_a_timing_cache_refused_by_tensorrt_is_an_error_saying_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="delete it or pass ignore_mismatch=True"):
        TimingCache(tmp_path / "trt.cache").attach(FakeConfig(accept_cache=False))


def test_an_in_memory_timing_cache_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = TimingCache(None)
    cache.attach(FakeConfig())
    cache.save()
    assert list(tmp_path.iterdir()) == []


# ----- logger and build ---------------------------------------------------------------------


def test_recording_logger_keeps_errors_and_not_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    logger = recording_logger(fake_trt("10.3.0"), print_severity=1)
    logger.errors.clear()
    logger.log(1, "layer conv1 has no implementation")
    logger.log(2, "just a warning")
    assert logger.errors == ["layer conv1 has no implementation"]
    assert "[TensorRT ERROR] layer conv1" in capsys.readouterr().err


class FakeParser:
    def __init__(self, ok: bool, errors: list[str]) -> None:
        self.ok, self.errors = ok, errors

    def parse_from_file(self, path: str) -> bool:
        return self.ok

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


class FakeBuilder:
    def __init__(self, plan: Any, logger: Any, build_errors: list[str]) -> None:
        self.plan, self.logger, self.build_errors = plan, logger, build_errors
        self.network_flags: int | None = None
        self.config = FakeConfig()

    def create_network(self, flags: int) -> object:
        self.network_flags = flags
        return object()

    def create_builder_config(self) -> FakeConfig:
        return self.config

    def build_serialized_network(self, network: object, config: FakeConfig) -> Any:
        self.logger.errors.extend(self.build_errors)
        return self.plan


def fake_build(
    version: str,
    *,
    plan: Any = b"plan",
    parse_ok: bool = True,
    parse_errors: list[str] | None = None,
    build_errors: list[str] | None = None,
    precision: str = "fp16",
    cache: TimingCache | None = None,
) -> tuple[Any, dict[str, Any], FakeBuilder]:
    trt = fake_trt(version)
    trt.OnnxParser = lambda network, logger: FakeParser(parse_ok, parse_errors or [])
    logger = SimpleNamespace(errors=["an older error"])
    builder = FakeBuilder(plan, logger, build_errors or [])
    out, applied = build_engine(
        trt,
        builder,
        logger,
        Path("block.onnx"),
        version=parse_version(version),
        precision=precision,
        strongly_typed=None,
        options=BuildOptions(),
        timing_cache=cache,
    )
    return out, applied, builder


def test_build_engine_returns_the_plan_and_what_it_applied() -> None:
    plan, applied, builder = fake_build("8.6.1")
    assert plan == b"plan"
    assert builder.network_flags == 1
    assert builder.config.flags_set == ["FP16"]
    assert applied["strongly_typed"] is False


def test_build_engine_on_11_sets_no_precision_flag() -> None:
    _, applied, builder = fake_build("11.0.0")
    assert builder.config.flags_set == []
    assert applied["strongly_typed"] is True


def test_build_engine_attaches_the_shared_timing_cache(tmp_path: Path) -> None:
    cache = TimingCache(tmp_path / "trt.cache")
    _, _, builder = fake_build("10.3.0", cache=cache)
    assert builder.config.timing_cache is cache.cache


def test_a_parse_failure_raises_with_the_parser_errors() -> None:
    with pytest.raises(EngineBuildError, match=r"could not parse block\.onnx: unsupported op Foo") as info:
        fake_build("10.3.0", parse_ok=False, parse_errors=["unsupported op Foo"])
    assert info.value.errors == ["unsupported op Foo"]


def test_a_build_returning_none_raises_with_only_this_builds_errors() -> None:
    with pytest.raises(EngineBuildError, match=r"could not build an engine for block.onnx \(int8\)") as info:
        fake_build("8.6.1", plan=None, build_errors=["no int8 tactic for conv1"], precision="int8")
    assert info.value.errors == ["no int8 tactic for conv1"]
    assert isinstance(info.value, RuntimeError)


# ----- cuda-python helpers with a stand-in runtime ------------------------------------------------


class FakeCudart:
    """The few runtime calls the timer uses; records what was called."""

    class cudaError_t:
        cudaSuccess = 0
        cudaErrorInvalidValue = 1

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._events = 0

    def cudaGetErrorName(self, err: int) -> tuple[int, bytes]:
        return 0, {0: b"cudaSuccess", 1: b"cudaErrorInvalidValue"}[err]

    def cudaEventCreate(self) -> tuple[int, str]:
        self._events += 1
        return 0, f"event{self._events}"

    def cudaEventRecord(self, event: str, stream: int) -> tuple[int]:
        self.calls.append(("record", (event, stream)))
        return (0,)

    def cudaEventSynchronize(self, event: str) -> tuple[int]:
        self.calls.append(("synchronize", event))
        return (0,)

    def cudaEventElapsedTime(self, start: str, end: str) -> tuple[int, float]:
        return 0, 1.25

    def cudaEventDestroy(self, event: str) -> tuple[int]:
        self.calls.append(("destroy", event))
        return (0,)


def test_check_returns_the_payload_of_a_successful_call() -> None:
    rt = FakeCudart()
    assert check(rt, (0, 42), "cudaMalloc") == 42
    assert check(rt, (0,), "cudaFree") is None
    assert check(rt, (0, 1, 2), "cudaX") == (1, 2)


def test_check_raises_with_the_call_and_the_error_name() -> None:
    with pytest.raises(CudaError, match=r"cudaMalloc\(64\) failed with cudaErrorInvalidValue"):
        check(FakeCudart(), (1, None), "cudaMalloc(64)")


def test_event_timer_records_on_the_given_stream_and_waits_for_the_end() -> None:
    rt = FakeCudart()
    with CudaEventTimer(rt) as timer:
        timer.start(7)
        timer.stop(7)
        assert timer.elapsed_ms() == 1.25
    assert rt.calls[:3] == [("record", ("event1", 7)), ("record", ("event2", 7)), ("synchronize", "event2")]
    assert ("destroy", "event1") in rt.calls and ("destroy", "event2") in rt.calls


def test_stream_handle_accepts_torch_streams_and_ints() -> None:
    assert stream_handle(SimpleNamespace(cuda_stream=1234)) == 1234
    assert stream_handle(99) == 99
    assert stream_handle(None) == 0


# ----- the backend itself ------------------------------------------------------------------------


def test_tensorrt_backend_without_tensorrt_names_the_extra() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    from kernels_bench.backends.tensorrt_backend import TensorRTBackend

    with pytest.raises(BackendUnavailable, match=r"tensorrt.*pip install -e '\.\[tensorrt\]'"):
        TensorRTBackend("cuda")


def _tensorrt_ready() -> bool:
    try:
        import tensorrt  # noqa: F401

        from kernels_bench.cuda_timer import load_cudart

        rt = load_cudart()
        err, count = rt.cudaGetDeviceCount()
        return err == rt.cudaError_t.cudaSuccess and count > 0
    except Exception:
        return False


@pytest.mark.tensorrt
@pytest.mark.skipif(not _tensorrt_ready(), reason="needs TensorRT, cuda-python and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_builds_and_times_a_block(precision: str, tmp_path: Path) -> None:
    from kernels_bench.backends import get_backend
    from kernels_bench.measure import measure_keys
    from kernels_bench.timing import TimingSettings
    from tables.key import BlockKey

    key = BlockKey("irb", 32, 16, 16, 32, k=3, s=1, e=4, se=True, act="swish")
    cache_file = tmp_path / "trt.cache"
    with get_backend("tensorrt", device="cuda", timing_cache=cache_file, cache_dir=tmp_path) as backend:
        result = measure_keys(backend, key, 8, precision, TimingSettings(repeats=30))
    assert len(result.samples_ms) == 30
    assert result.settings["clock"] == "cuda_events"
    assert result.trimmed_mean_ms > 0
    assert cache_file.stat().st_size > 0


@pytest.mark.tensorrt
@pytest.mark.skipif(not _tensorrt_ready(), reason="needs TensorRT, cuda-python and a CUDA GPU")
def test_tensorrt_cuda_graph_runner_records_whether_the_graph_was_used(tmp_path: Path) -> None:
    from kernels_bench.backends import get_backend
    from kernels_bench.measure import measure_keys
    from kernels_bench.timing import TimingSettings
    from tables.key import BlockKey

    key = BlockKey("conv", 16, 16, 16, 32, k=3, s=1)
    with get_backend("tensorrt", device="cuda", cuda_graphs=True, cache_dir=tmp_path) as backend:
        result = measure_keys(backend, key, 4, "fp16", TimingSettings(repeats=10))
    assert result.settings["cuda_graph"] == "used" or result.settings["cuda_graph"].startswith("fallback")


# ----- the runner against stand-in trt and cuda-python runtimes -----------------------------------


class FakeRuntimeApi(FakeCudart):
    """Adds memory, streams and graph capture to the stand-in runtime."""

    cudaStreamNonBlocking = 1
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def __init__(self, capture_ok: bool = True) -> None:
        super().__init__()
        self.capture_ok = capture_ok
        self.allocated: dict[int, int] = {}
        self.copies: list[tuple[int, int]] = []
        self._next_ptr = 0x1000

    def cudaMalloc(self, n: int) -> tuple[int, int]:
        ptr, self._next_ptr = self._next_ptr, self._next_ptr + n + 256
        self.allocated[ptr] = n
        return 0, ptr

    def cudaFree(self, ptr: int) -> tuple[int]:
        del self.allocated[ptr]
        return (0,)

    def cudaMemcpy(self, dst: int, src: int, n: int, kind: int) -> tuple[int]:
        self.copies.append((dst, n))
        return (0,)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[int, int]:
        self.calls.append(("stream_create", flags))
        return 0, 77

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        self.calls.append(("stream_destroy", stream))
        return (0,)

    def cudaStreamBeginCapture(self, stream: int, mode: int) -> tuple[int]:
        return (0,) if self.capture_ok else (1,)

    def cudaStreamEndCapture(self, stream: int) -> tuple[int, str]:
        return 0, "graph"

    def cudaGraphInstantiate(self, graph: str, flags: int) -> tuple[int, str]:
        return 0, "graph_exec"

    def cudaGraphLaunch(self, graph_exec: str, stream: int) -> tuple[int]:
        self.calls.append(("launch", stream))
        return (0,)

    def cudaGraphExecDestroy(self, graph_exec: str) -> tuple[int]:
        return (0,)

    def cudaGraphDestroy(self, graph: str) -> tuple[int]:
        return (0,)

    def cudaGetLastError(self) -> tuple[int]:
        return (0,)


class FakeContext:
    def __init__(self, accept_addresses: bool = True) -> None:
        self.addresses: dict[str, int] = {}
        self.enqueued_on: list[int] = []
        self.accept_addresses = accept_addresses

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return self.accept_addresses

    def execute_async_v3(self, stream: int) -> bool:
        self.enqueued_on.append(stream)
        return True


class FakeEngine:
    tensors = {"input": ((2, 3, 4, 4), "INPUT"), "output": ((2, 5), "OUTPUT")}

    def __init__(self, context: FakeContext) -> None:
        self.context = context
        self.num_io_tensors = len(self.tensors)

    def create_execution_context(self) -> FakeContext:
        return self.context

    def get_tensor_name(self, i: int) -> str:
        return list(self.tensors)[i]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name][0]

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_mode(self, name: str) -> str:
        return self.tensors[name][1]


def fake_runtime_trt(context: FakeContext) -> SimpleNamespace:
    import numpy as np

    engine = FakeEngine(context)
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda plan: engine)
    return SimpleNamespace(
        Runtime=lambda logger: runtime,
        TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
        nptype=lambda dtype: np.float32,
    )


def make_runner(cuda_graphs: bool = False, capture_ok: bool = True, accept_addresses: bool = True):
    from kernels_bench.backends.tensorrt_backend import TensorRTRunner

    rt, context = FakeRuntimeApi(capture_ok), FakeContext(accept_addresses)
    logger = SimpleNamespace(errors=[])
    runner = TensorRTRunner(fake_runtime_trt(context), b"plan", logger, cuda_graphs=cuda_graphs, cudart=rt)
    return runner, rt, context


def test_runner_binds_a_device_buffer_of_the_right_size_to_every_tensor() -> None:
    runner, rt, context = make_runner()
    assert set(context.addresses) == {"input", "output"}
    sizes = {name: rt.allocated[ptr] for name, ptr in context.addresses.items()}
    assert sizes == {"input": 2 * 3 * 4 * 4 * 4, "output": 2 * 5 * 4}
    assert rt.copies == [(context.addresses["input"], 2 * 3 * 4 * 4 * 4)]  # only the input gets data
    runner.close()


def test_runner_enqueues_on_its_own_non_default_stream_between_the_events() -> None:
    runner, rt, context = make_runner()
    context.enqueued_on.clear()
    rt.calls.clear()
    assert runner.timed(4) == 1.25
    assert context.enqueued_on == [77] * 4
    assert [c for c in rt.calls if c[0] == "record"] == [("record", ("event1", 77)), ("record", ("event2", 77))]
    assert runner.clock == "cuda_events"
    runner.close()


def test_runner_replays_a_captured_cuda_graph() -> None:
    runner, rt, context = make_runner(cuda_graphs=True)
    assert runner.info["cuda_graph"] == "used"
    context.enqueued_on.clear()
    rt.calls.clear()
    runner.timed(3)
    assert context.enqueued_on == []
    assert [c for c in rt.calls if c[0] == "launch"] == [("launch", 77)] * 3
    runner.close()


def test_runner_falls_back_to_plain_enqueues_when_capture_fails() -> None:
    runner, _, context = make_runner(cuda_graphs=True, capture_ok=False)
    assert runner.info["cuda_graph"].startswith("fallback: cudaStreamBeginCapture failed")
    context.enqueued_on.clear()
    runner.timed(2)
    assert context.enqueued_on == [77, 77]
    runner.close()


def test_runner_close_frees_buffers_events_and_stream() -> None:
    runner, rt, _ = make_runner()
    runner.close()
    assert rt.allocated == {}
    assert ("stream_destroy", 77) in rt.calls
    assert ("destroy", "event1") in rt.calls


def test_runner_frees_what_it_allocated_when_setup_fails() -> None:
    from kernels_bench.backends.tensorrt_backend import TensorRTRunner

    rt, context = FakeRuntimeApi(), FakeContext(accept_addresses=False)
    with pytest.raises(RuntimeError, match="refused the device address of tensor input"):
        TensorRTRunner(fake_runtime_trt(context), b"plan", SimpleNamespace(errors=[]), cuda_graphs=False, cudart=rt)
    assert rt.allocated == {}
    assert ("stream_destroy", 77) in rt.calls


# ----- graph checks before a build ----------------------------------------------------------------


def test_the_tensorrt_int8_flavour_passes_the_qdq_check(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from kernels_bench.backends.tensorrt_backend import check_graph
    from kernels_bench.export import export_keys
    from tables.key import BlockKey

    graph = export_keys(BlockKey("conv", 8, 8, 8, 8), 1, "int8", target="tensorrt", cache_dir=tmp_path)
    check_graph(graph, strongly_typed=False)


def test_the_onnxruntime_int8_flavour_is_refused_before_building(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from kernels_bench.backends.tensorrt_backend import check_graph
    from kernels_bench.export import export_keys
    from tables.key import BlockKey

    graph = export_keys(BlockKey("conv", 8, 8, 8, 8), 1, "int8", target="onnxruntime", cache_dir=tmp_path)
    with pytest.raises(EngineBuildError, match="Q/DQ that TensorRT does not accept") as info:
        check_graph(graph, strongly_typed=False)
    assert info.value.errors


def test_strongly_typed_fp16_refuses_a_float32_graph() -> None:
    from kernels_bench.backends.tensorrt_backend import check_graph

    graph = SimpleNamespace(path=Path("g.onnx"), precision="fp16", input_dtype="float32")
    with pytest.raises(ValueError, match="export it with precision='fp16'"):
        check_graph(graph, strongly_typed=True)
    check_graph(graph, strongly_typed=False)  # weak typing gets fp16 from the builder flag
