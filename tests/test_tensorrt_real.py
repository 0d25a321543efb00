"""The real TensorRT and cuda-python APIs make every call the stand-ins of ``test_tensorrt_backend`` fake.

The unit tests of the TensorRT backend run against hand-written stand-ins for
``trt`` and cuda-python's runtime. They guard the backend's logic (flags per
version, cleanup order, fallbacks), not the API itself. The test marked
``tensorrt`` here runs the backend on the real TensorRT and cuda-python through
recording wrappers and then checks that every method, property and attribute a
stand-in defines was used on the real object it stands for, so a stand-in cannot
drift from the API it fakes without a failure on the first TensorRT machine.

The unmarked tests keep the list of stand-ins complete: a new ``Fake*`` class, or
a new member of one, must be mapped here (to the real type, or marked as the
stand-in's own bookkeeping).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import test_gpu_truth as gpu_truth_tests
import test_tensorrt_backend as trt_tests

#: The real type (``type(obj).__name__`` in the tensorrt module, or ``cudart`` / ``trt``) each stand-in fakes.
STANDS_FOR: dict[str, str] = {
    "FakeLoggerBase": "ILogger",
    "FakeCache": "ITimingCache",
    "FakeConfig": "IBuilderConfig",
    "FakeParser": "OnnxParser",
    "FakeBuilder": "Builder",
    "FakeContext": "IExecutionContext",
    "FakeEngine": "ICudaEngine",
    "FakeCudart": "cudart",
    "FakeRuntimeApi": "cudart",
}

#: Members of the stand-ins that are their own bookkeeping (or API the backend never uses), not calls to check.
BOOKKEEPING: frozenset[str] = frozenset({"FakeEngine.tensors", "FakeLoggerBase.Severity"})

#: API members the stand-ins set as plain instance attributes or namespace entries rather than class members.
NAMESPACE_CALLS: frozenset[str] = frozenset(
    {
        "IBuilderConfig.builder_optimization_level",
        "IBuilderConfig.avg_timing_iterations",
        "ICudaEngine.num_io_tensors",
        "trt.__version__",
        "trt.NetworkDefinitionCreationFlag",
        "trt.BuilderFlag",
        "trt.MemoryPoolType",
        "trt.ILogger",
        "trt.OnnxParser",
        "trt.Builder",
        "trt.Runtime",
        "trt.TensorIOMode",
        "trt.nptype",
        "Runtime.deserialize_cuda_engine",
    }
)

#: Types whose instances the recorder wraps (the objects the backend calls methods on).
API_TYPES: frozenset[str] = frozenset(v for v in STANDS_FOR.values() if v not in ("cudart", "trt")) | {
    "Runtime",
    "INetworkDefinition",
}


def _fake_classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for module in (trt_tests, gpu_truth_tests):
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and name.startswith("Fake") and obj.__module__ == module.__name__:
                found[name] = obj
    return found


def faked_calls() -> set[str]:
    """Every API member a stand-in defines, as ``RealType.member``."""
    calls = set(NAMESPACE_CALLS)
    for name, cls in _fake_classes().items():
        real = STANDS_FOR.get(name)
        if real is None:
            continue
        for klass in cls.__mro__:
            if klass is object or klass.__module__ not in (trt_tests.__name__, gpu_truth_tests.__name__):
                continue
            for member in vars(klass):
                if member.startswith("_") or f"{klass.__name__}.{member}" in BOOKKEEPING:
                    continue
                calls.add(f"{real}.{member}")
    return calls


# ----- the list of stand-ins stays complete (runs everywhere) ---------------------------------------------------------
def test_every_trt_stand_in_is_mapped_to_the_real_type_it_fakes():
    # FakeTorch stands in for torch's CUDA calls, checked by the GPU check's hold section, not for TensorRT
    unmapped = sorted(set(_fake_classes()) - set(STANDS_FOR) - {"FakeTorch"})
    assert not unmapped, f"map these stand-ins in STANDS_FOR (or list their bookkeeping): {unmapped}"
    assert {
        "ITimingCache.serialize",
        "IBuilderConfig.set_flag",
        "OnnxParser.num_errors",
        "ICudaEngine.get_tensor_mode",
        "IExecutionContext.execute_async_v3",
        "cudart.cudaStreamBeginCapture",
        "cudart.cudaGraphLaunch",
    } <= faked_calls()


def test_bookkeeping_names_real_members_of_the_stand_ins():
    classes = _fake_classes()
    for entry in BOOKKEEPING:
        cls, member = entry.split(".")
        assert member in vars(classes[cls]), entry


# ----- recording wrappers over the real modules -----------------------------------------------------------------------
class Calls(set):
    """The ``RealType.member`` names used on the real APIs."""


def _unwrap(value: Any) -> Any:
    return object.__getattribute__(value, "_real") if isinstance(value, (_Instance, _Class)) else value


def _recorded_callable(fn: Any, name: str, calls: Calls) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        calls.add(name)
        out = fn(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()})
        return _wrap(out, calls)

    return call


def _wrap(value: Any, calls: Calls) -> Any:
    return _Instance(value, calls) if type(value).__name__ in API_TYPES else value


class _Instance:
    """A real API object whose attribute reads, writes and calls are recorded as ``Type.member``."""

    def __init__(self, real: Any, calls: Calls) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_calls", calls)

    def __getattr__(self, name: str) -> Any:
        real, calls = object.__getattribute__(self, "_real"), object.__getattribute__(self, "_calls")
        value = getattr(real, name)
        label = f"{type(real).__name__}.{name}"
        calls.add(label)
        return _recorded_callable(value, label, calls) if callable(value) else _wrap(value, calls)

    def __setattr__(self, name: str, value: Any) -> None:
        real, calls = object.__getattribute__(self, "_real"), object.__getattribute__(self, "_calls")
        calls.add(f"{type(real).__name__}.{name}")
        setattr(real, name, _unwrap(value))


class _Class:
    """A real tensorrt class: calling it is recorded and wraps the instance; it can still be subclassed."""

    def __init__(self, real: type, label: str, calls: Calls) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_calls", calls)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        real, label, calls = (object.__getattribute__(self, n) for n in ("_real", "_label", "_calls"))
        return _recorded_callable(real, label, calls)(*args, **kwargs)

    def __getattribute__(self, name: str) -> Any:
        # everything, ``__init__`` included, is the real class's: ``trt.ILogger.__init__(self)`` in a subclass
        if name in ("__call__", "__mro_entries__", "__instancecheck__", "__class__"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "_real"), name)

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object.__getattribute__(self, "_real"),)

    def __instancecheck__(self, obj: Any) -> bool:
        return isinstance(_unwrap(obj), object.__getattribute__(self, "_real"))


class _Module:
    """A real module (``tensorrt`` as ``trt``, cuda-python's runtime as ``cudart``) with recorded members."""

    def __init__(self, real: Any, prefix: str, calls: Calls) -> None:
        self._real, self._prefix, self._calls = real, prefix, calls

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._real, name)
        label = f"{self._prefix}.{name}"
        self._calls.add(label)
        if inspect.isclass(value) and self._prefix == "trt":
            return _Class(value, label, self._calls)
        if callable(value) and not inspect.isclass(value):
            return _recorded_callable(value, label, self._calls)
        return value


def test_the_recorders_record_unwrap_and_subclass():
    """The wrappers themselves, over a stand-in module whose types carry the real names."""
    import types

    class ILogger:
        def __init__(self) -> None:
            self.ready = True

    class INetworkDefinition:
        pass

    class IBuilderConfig:
        builder_optimization_level = 3

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            assert type(logger).__mro__[1] is ILogger  # the subclass of the real base, not a wrapper
            self.logger = logger

        def create_network(self, flags: int) -> INetworkDefinition:
            return INetworkDefinition()

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            assert type(network) is INetworkDefinition and type(config) is IBuilderConfig  # unwrapped
            return b"plan"

    module = types.ModuleType("tensorrt")
    module.ILogger, module.Builder, module.__version__ = ILogger, Builder, "10.3.0"
    calls = Calls()
    trt = _Module(module, "trt", calls)

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

    logger = Logger()
    assert logger.ready and isinstance(logger, trt.ILogger)
    builder = trt.Builder(logger)
    network = builder.create_network(1)
    config = builder.create_builder_config()
    config.builder_optimization_level = 5
    assert builder.build_serialized_network(network, config) == b"plan"
    assert object.__getattribute__(config, "_real").builder_optimization_level == 5
    assert str(trt.__version__) == "10.3.0"
    assert calls >= {
        "trt.ILogger",
        "trt.Builder",
        "Builder.create_network",
        "Builder.create_builder_config",
        "Builder.build_serialized_network",
        "IBuilderConfig.builder_optimization_level",
        "trt.__version__",
    }


def _tensorrt_ready() -> bool:
    return trt_tests._tensorrt_ready()


# ----- the real APIs make every faked call (TensorRT machines only) ---------------------------------------------------
@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not _tensorrt_ready(), reason="needs TensorRT, cuda-python and a CUDA GPU")
def test_the_real_apis_make_every_call_the_stand_ins_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorrt

    import kernels_bench.backends.tensorrt_backend as backend_module
    import kernels_bench.cuda_timer as cuda_timer
    from kernels_bench.backends.tensorrt_backend import BuildOptions, EngineBuildError, TensorRTBackend, build_engine
    from kernels_bench.cuda_timer import CudaError, DeviceBuffer, check
    from kernels_bench.measure import measure_keys
    from kernels_bench.timing import TimingSettings
    from tables.key import BlockKey

    calls = Calls()
    real_rt = cuda_timer.load_cudart()
    rt = _Module(real_rt, "cudart", calls)
    trt = _Module(tensorrt, "trt", calls)
    monkeypatch.setattr(cuda_timer, "load_cudart", lambda: rt)
    monkeypatch.setattr(backend_module, "_import_tensorrt", lambda: trt)
    monkeypatch.setattr(backend_module, "_LOGGER", None)  # a logger made through the recorder

    key = BlockKey("irb", 32, 16, 16, 32, k=3, s=1, e=4, se=True, act="swish")
    folder = tmp_path / "timing-cache"
    for precision, graphs, cold in (("fp16", False, False), ("fp32", True, True)):
        with TensorRTBackend("cuda", timing_cache_folder=folder, cache_dir=tmp_path, cuda_graphs=graphs) as backend:
            result = measure_keys(backend, key, 4, precision, TimingSettings(repeats=10, cold_l2=cold))
            assert result.trimmed_mean_ms > 0
            if graphs:
                assert result.settings["cuda_graph"] == "used", result.settings["cuda_graph"]
            blob = backend.timing_cache_bytes()
            assert backend.combine_timing_caches([blob, blob])

    # a parse failure reads the parser's errors
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx graph")
    builder = trt.Builder(backend_module.recording_logger(trt))
    with pytest.raises(EngineBuildError, match="could not parse"):
        build_engine(
            trt,
            builder,
            backend_module.recording_logger(trt),
            bad,
            version=backend_module.parse_version(tensorrt.__version__),
            precision="fp16",
            strongly_typed=None,
            options=BuildOptions(),
        )

    # capture refused on the legacy default stream, cleared by cudaGetLastError; a failed call is named
    mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    assert rt.cudaStreamBeginCapture(0, mode)[0] != real_rt.cudaError_t.cudaSuccess
    rt.cudaGetLastError()
    with pytest.raises(CudaError, match="cudaErrorMemoryAllocation"):
        DeviceBuffer(1 << 60, rt)
    check(rt, rt.cudaDeviceSynchronize(), "cudaDeviceSynchronize")

    missing = sorted(faked_calls() - calls)
    assert not missing, f"faked calls never made on the real APIs (the stand-ins drifted from them): {missing}"
