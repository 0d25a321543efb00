"""TensorRT: engines from ONNX, one code path for TensorRT 8.6, 10.x and 11.x.

Build side (pure functions of a ``trt`` module, so they are unit-tested with a
stand-in namespace):

- :func:`parse_version` and :func:`strongly_typed_for` decide the typing mode:
  8.6 has only weakly typed networks; 10.x is weakly typed unless
  ``strongly_typed=True``; 11.x is always strongly typed.
- :func:`network_creation_flags`: ``EXPLICIT_BATCH`` on 8.6, ``STRONGLY_TYPED``
  when asked on 10.x (and on 11.x where the flag still exists), else 0.
- :func:`precision_flags`: weakly typed fp16 sets ``FP16``; weakly typed int8
  sets ``INT8`` and ``FP16`` (the unquantized layers run in half); strongly typed
  networks take precision from the ONNX (an fp16 graph, Q/DQ for int8) and get no
  precision flag; fp32 clears ``TF32`` in every mode.
- :class:`BuildOptions` validates ``builder_optimization_level`` (0-5),
  ``avg_timing_iterations`` (>= 1) and the workspace size.
- :class:`~kernels_bench.backends.tensorrt_cache.TimingCache`: one cache object
  shared by every build of a backend, loaded from its file when present, merged
  with what another process saved in the meantime, and saved atomically after
  each build; a build folder keeps one file per worker, combined at its end
  (:mod:`kernels_bench.backends.tensorrt_cache`).
- :func:`build_engine`: parse, configure, ``build_serialized_network``; a parse
  or build failure raises :class:`EngineBuildError` carrying the parser's and
  the builder's error messages, so a caller records that key as failed.

Run side: :class:`TensorRTRunner` deserializes the engine, binds device buffers
(``cudaMalloc``) with ``set_tensor_address`` and enqueues ``execute_async_v3`` on
a dedicated stream; :class:`~kernels_bench.cuda_timer.CudaEventTimer` events on
that stream time the runs. With ``cuda_graphs=True`` one enqueue is captured in
a CUDA graph (after a first plain enqueue and synchronize) and replayed; if
capture fails the runner falls back to plain enqueues and records why.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kernels_bench.backends.base import OnnxGraphBackend, RunnerBase, parse_device, release_all
from kernels_bench.backends.tensorrt_cache import TIMING_CACHE_FOLDER, TimingCache, TimingCacheFiles, timing_cache_tag
from kernels_bench.config import BackendConfig
from kernels_bench.errors import engine_missing
from kernels_bench.gpu import gpu_environment
from tables.host import host_environment

#: Oldest TensorRT this backend supports.
MIN_VERSION: tuple[int, int, int] = (8, 6, 0)

#: Severity of TensorRT log messages that are printed (INTERNAL_ERROR=0 ... VERBOSE=4).
_SEVERITY_NAMES = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the graph or build an engine for it.

    Attributes:
        errors: the parser's or the builder's error messages, in order.
    """

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


# ----- versions and typing -----------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int]:
    """``"8.6.1.6"`` -> (8, 6, 1); ``"10.0.0b6"`` -> (10, 0, 0); ``"11.0"`` -> (11, 0, 0)."""
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
    if m is None:
        raise ValueError(f"unreadable TensorRT version {text!r}: expected e.g. '8.6.1' or '10.3.0'")
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def check_version(version: tuple[int, int, int]) -> None:
    """Raise ``ValueError`` for a TensorRT older than :data:`MIN_VERSION`."""
    if version < MIN_VERSION:
        found = ".".join(map(str, version))
        raise ValueError(f"TensorRT {found} is too old: this backend needs TensorRT 8.6 or later")


def strongly_typed_for(version: tuple[int, int, int], requested: bool | None) -> bool:
    """Whether networks are strongly typed for this version and request.

    Args:
        version: TensorRT version from :func:`parse_version`.
        requested: ``True``/``False`` to ask, ``None`` for the version's default.

    Returns:
        False on 8.6 (weak typing only; ``True`` raises ``ValueError``), the request
        on 9.x/10.x (default False), True on 11.x (``False`` raises ``ValueError``).
    """
    check_version(version)
    major = version[0]
    if major == 8:
        if requested:
            raise ValueError("TensorRT 8.6 has no strongly typed networks: leave strongly_typed unset or False")
        return False
    if major >= 11:
        if requested is False:
            raise ValueError(f"TensorRT {major} networks are always strongly typed: leave strongly_typed unset or True")
        return True
    return bool(requested)


def network_creation_flags(trt: Any, version: tuple[int, int, int], strongly_typed: bool | None) -> int:
    """The ``flags`` argument of ``builder.create_network`` for this version and typing request.

    ``EXPLICIT_BATCH`` on 8.x and 9.x (10.x ignores it, 11.x removed it);
    ``STRONGLY_TYPED`` when networks are strongly typed and the flag exists (9.x on request, 10.x on
    request, 11.x where it is still defined).
    """
    strong = strongly_typed_for(version, strongly_typed)
    flag_enum = trt.NetworkDefinitionCreationFlag
    flags = 0
    if version[0] < 10:
        flags |= 1 << int(flag_enum.EXPLICIT_BATCH)
    if strong and hasattr(flag_enum, "STRONGLY_TYPED"):
        flags |= 1 << int(flag_enum.STRONGLY_TYPED)
    return flags


def int8_export_options(version: tuple[int, int, int], strongly_typed: bool) -> dict[str, str]:
    """How an int8 graph must be written for this TensorRT.

    - weights: float initializers with a Q/DQ pair on 8.x (8.4 refused int8
      initializers with a DequantizeLinear), int8 initializers from 10.0;
    - float type: float16 around the Q/DQ for strongly typed networks (10.x on
      request, all of 11.x), which run everything not quantized in the graph's
      own type, as weakly typed 8.6 and 10.x run it in FP16 with the FP16 flag
      (so int8 tables compare across versions); float32 otherwise.
    """
    return {
        "qdq_weights": "float" if version[0] < 10 else "int8",
        "qdq_float": "float16" if strongly_typed else "float32",
    }


def precision_flags(precision: str, strongly_typed: bool, tf32: bool = False) -> tuple[list[str], list[str]]:
    """Names of the ``trt.BuilderFlag`` members to set and to clear.

    Returns:
        ``(set, clear)``: fp32 -> ([], ["TF32"]) (([], []) with ``tf32``: TF32 math allowed);
        weakly typed fp16 -> (["FP16"], []); weakly typed int8 -> (["INT8", "FP16"], []);
        strongly typed fp16/int8 -> ([], []).
    """
    if precision == "fp32":
        return [], ([] if tf32 else ["TF32"])
    if precision not in ("fp16", "int8"):
        raise ValueError(f"TensorRT builds fp32, fp16 or int8, not {precision!r}")
    if strongly_typed:
        return [], []
    return (["FP16"] if precision == "fp16" else ["INT8", "FP16"]), []


# ----- builder options ------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings that change the engines.

    Attributes:
        builder_optimization_level: 0-5 (TensorRT's default 3; higher searches more tactics).
        avg_timing_iterations: timing runs per tactic during the build (API default 1, trtexec 8).
        workspace_bytes: workspace memory-pool limit, bytes; 0 keeps TensorRT's default.
        tf32: allow TF32 math in fp32 engines (default False: TensorRT's TF32 flag is cleared).
    """

    builder_optimization_level: int = 3
    avg_timing_iterations: int = 8
    workspace_bytes: int = 1 << 30
    tf32: bool = False

    def __post_init__(self) -> None:
        level = self.builder_optimization_level
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 5:
            raise ValueError(
                f"invalid builder_optimization_level={level!r}: use an integer from 0 to 5 (TensorRT's default is 3)"
            )
        iters = self.avg_timing_iterations
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise ValueError(f"invalid avg_timing_iterations={iters!r}: use an integer >= 1 (trtexec uses 8)")
        ws = self.workspace_bytes
        if isinstance(ws, bool) or not isinstance(ws, int) or ws < 0:
            raise ValueError(f"invalid workspace_bytes={ws!r}: use a byte count >= 0 (0 keeps TensorRT's default)")


def configure_builder(
    trt: Any, config: Any, precision: str, strongly_typed: bool, options: BuildOptions
) -> dict[str, Any]:
    """Apply precision flags and build options to a builder config.

    Returns:
        What was applied: ``builder_flags_set``, ``builder_flags_cleared`` and the options.
    """
    to_set, to_clear = precision_flags(precision, strongly_typed, options.tf32)
    for name in to_set:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in to_clear:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if options.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.builder_optimization_level
    config.avg_timing_iterations = options.avg_timing_iterations
    return {"builder_flags_set": to_set, "builder_flags_cleared": to_clear, **asdict(options)}


# ----- logger and build ---------------------------------------------------------


_LOGGER: Any = None


def recording_logger(trt: Any, print_severity: int = 1) -> Any:
    """A process-wide ``trt.ILogger`` that keeps every error and prints up to ``print_severity``.

    TensorRT uses the first logger it is given for the whole process, so one
    logger is shared by every builder and runtime. Errors are kept in its
    ``errors`` list so a failed build can report them.
    """
    global _LOGGER
    if _LOGGER is not None and getattr(_LOGGER, "_trt", None) is trt:
        _LOGGER.print_severity = print_severity
        return _LOGGER

    class RecordingLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self._trt = trt
            self.errors: list[str] = []
            self.print_severity = print_severity

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= 1:
                self.errors.append(str(msg))
            if level <= self.print_severity:
                name = _SEVERITY_NAMES[level] if 0 <= level < len(_SEVERITY_NAMES) else str(level)
                print(f"[TensorRT {name}] {msg}", file=sys.stderr)

    _LOGGER = RecordingLogger()
    return _LOGGER


def build_engine(
    trt: Any,
    builder: Any,
    logger: Any,
    onnx_path: str | Path,
    *,
    version: tuple[int, int, int],
    precision: str,
    strongly_typed: bool | None,
    options: BuildOptions,
    timing_cache: TimingCache | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Parse an ONNX file and build a serialized engine.

    Args:
        trt: the tensorrt module.
        builder: a ``trt.Builder`` (reused across builds).
        logger: the logger given to the builder (its ``errors`` list is read on failure).
        onnx_path: the graph; external data is resolved next to it.
        version: TensorRT version from :func:`parse_version`.
        precision: fp32, fp16 or int8.
        strongly_typed: typing request (see :func:`strongly_typed_for`).
        options: builder options.
        timing_cache: the shared cache, attached to this build's config.

    Returns:
        ``(plan, applied)``: the serialized engine (``IHostMemory``) and the
        settings applied to this build.

    Raises:
        EngineBuildError: the parser or the builder failed; ``errors`` holds their messages.
    """
    strong = strongly_typed_for(version, strongly_typed)
    path = Path(onnx_path)
    first_error = len(getattr(logger, "errors", []))
    network = builder.create_network(network_creation_flags(trt, version, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT could not parse {path.name}: {'; '.join(errors) or 'no details'}", errors)
    config = builder.create_builder_config()
    applied = configure_builder(trt, config, precision, strong, options)
    applied["strongly_typed"] = strong
    if timing_cache is not None:
        timing_cache.attach(config)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = list(getattr(logger, "errors", [])[first_error:])
        detail = "; ".join(errors) or "no error message from the builder"
        raise EngineBuildError(f"TensorRT could not build an engine for {path.name} ({precision}): {detail}", errors)
    return plan, applied


def _dtype_itemsize(trt: Any, dtype: Any) -> tuple[Any, int]:
    """(numpy dtype or None, bytes per element) of a ``trt.DataType``."""
    import numpy as np

    try:
        np_dtype = np.dtype(trt.nptype(dtype))
        return np_dtype, np_dtype.itemsize
    except TypeError:  # bf16 and fp8 have no numpy type
        name = str(dtype).rsplit(".", 1)[-1].upper()
        sizes = {"BF16": 2, "HALF": 2, "FP8": 1, "INT8": 1, "UINT8": 1, "BOOL": 1, "INT64": 8}
        if name not in sizes:
            raise ValueError(f"tensor type {dtype} has no known size: use fp32, fp16 or int8 graphs") from None
        return None, sizes[name]


def check_graph(prepared: Any, strongly_typed: bool) -> None:
    """Refuse a graph the build cannot use, before building.

    Args:
        prepared: an exported graph (``path``, ``precision``, ``input_dtype``).
        strongly_typed: whether the network will be strongly typed.

    Raises:
        EngineBuildError: an int8 graph whose Q/DQ TensorRT does not accept
            (:func:`kernels_bench.quant.check_tensorrt_qdq`), listing the problems.
        ValueError: a float32 graph for strongly typed fp16 (precision comes from the graph).
    """
    precision = prepared.precision
    if precision == "int8":
        import onnx

        from kernels_bench.quant import check_tensorrt_qdq

        problems = check_tensorrt_qdq(onnx.load(str(prepared.path)))
        if problems:
            raise EngineBuildError(
                f"the int8 graph {Path(prepared.path).name} has Q/DQ that TensorRT does not accept: "
                + "; ".join(problems),
                problems,
            )
    if precision in ("fp16", "int8") and strongly_typed and getattr(prepared, "input_dtype", "float16") != "float16":
        what = "export it with precision='fp16'" if precision == "fp16" else "export its Q/DQ with qdq_float='float16'"
        raise ValueError(
            f"strongly typed TensorRT takes its float type from the graph, but this graph is float32: {what}"
        )


# ----- runner ----------------------------------------------------------------------


class TensorRTRunner(RunnerBase):
    """One deserialized engine with device buffers, enqueued on its own stream.

    Args:
        trt: the tensorrt module.
        plan: a serialized engine.
        logger: the process-wide logger.
        cuda_graphs: capture one enqueue in a CUDA graph and replay it.
        cudart: cuda-python's runtime module.
    """

    clock = "cuda_events"

    def __init__(
        self, trt: Any, plan: Any, logger: Any, *, cuda_graphs: bool, cudart: Any, device_index: int = 0
    ) -> None:
        super().__init__()
        self._rt = cudart
        self._device_index = device_index
        self._hold: Any = None
        self._scratch: Any = None
        self._buffers: list[Any] = []
        self._graph: Any = None
        self._graph_exec: Any = None
        self._stream: Any = None
        self._timer: Any = None
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self.timer_resolution_ms = 0.0
        try:
            self._setup(trt, plan, logger, cuda_graphs)
        except BaseException:
            self.close()  # free whatever was allocated before the failure
            raise

    def _setup(self, trt: Any, plan: Any, logger: Any, cuda_graphs: bool) -> None:
        import numpy as np

        from kernels_bench.cuda_timer import CudaEventTimer, DeviceBuffer, Stream

        cudart = self._rt
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineBuildError("TensorRT could not deserialize the engine it built", list(logger.errors[-5:]))
        self._context = self._engine.create_execution_context()
        if self._context is None:
            errors = list(logger.errors[-5:])
            detail = "; ".join(errors) or "out of device memory?"
            raise EngineBuildError(f"TensorRT could not create an execution context for the engine ({detail})", errors)
        self._stream = Stream(cudart)
        self._timer = CudaEventTimer(cudart)
        self.timer_resolution_ms = self._timer.resolution_ms
        rng = np.random.default_rng(0)
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(int(d) for d in self._engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ValueError(f"engine tensor {name} has a dynamic shape {shape}: export with a fixed batch")
            np_dtype, itemsize = _dtype_itemsize(trt, self._engine.get_tensor_dtype(name))
            buffer = DeviceBuffer(math.prod(shape) * itemsize, cudart)
            self._buffers.append(buffer)
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and np_dtype is not None:
                host = (
                    rng.standard_normal(shape).astype(np_dtype) if np_dtype.kind == "f" else np.zeros(shape, np_dtype)
                )
                buffer.copy_from_host(np.ascontiguousarray(host))
            if not self._context.set_tensor_address(name, buffer.ptr):
                raise RuntimeError(f"TensorRT refused the device address of tensor {name}")
        self._enqueue()  # the first enqueue initialises state that a graph capture must not see
        self._stream.synchronize()
        self.info["cuda_graph"] = self._capture() if cuda_graphs else "off"
        from kernels_bench.gpu_timing import make_hold

        self._hold = make_hold(self._stream.handle_int, self._device_index)
        self.info.update(self._hold.info() if self._hold is not None else {"gpu_hold": "none (needs torch with CUDA)"})

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._stream.handle_int):
            raise RuntimeError("execute_async_v3 returned False: TensorRT could not enqueue the engine")

    def _capture(self) -> str:
        """Capture one enqueue into a CUDA graph; returns 'used' or 'fallback: <reason>'."""
        from kernels_bench.cuda_timer import CudaError, check

        rt = self._rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            check(rt, rt.cudaStreamBeginCapture(self._stream.handle, mode), "cudaStreamBeginCapture")
        except CudaError as error:
            return f"fallback: {error}"
        enqueued = self._context.execute_async_v3(self._stream.handle_int)
        result = rt.cudaStreamEndCapture(self._stream.handle)
        err, graph = result[0], result[1]
        if err == rt.cudaError_t.cudaSuccess:
            self._graph = graph  # owned from here on: destroyed below if it cannot be used
        try:
            if not enqueued:
                raise CudaError("execute_async_v3 returned False during capture")
            check(rt, (err,), "cudaStreamEndCapture")
            self._graph_exec = check(rt, rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            check(rt, rt.cudaGraphLaunch(self._graph_exec, self._stream.handle), "cudaGraphLaunch")
            self._stream.synchronize()
        except CudaError as error:
            rt.cudaGetLastError()  # clear the capture error so plain enqueues work
            self._destroy_graph()
            self._stream.synchronize()
            return f"fallback: {error}"
        return "used"

    def _destroy_graph(self) -> None:
        rt = self._rt
        if self._graph_exec is not None:
            rt.cudaGraphExecDestroy(self._graph_exec)
            self._graph_exec = None
        if self._graph is not None:
            rt.cudaGraphDestroy(self._graph)
            self._graph = None

    def device_state(self) -> dict[str, Any] | None:
        """The GPU's SM clock, temperature and throttle reasons now (NVML), or ``None``."""
        from kernels_bench.gpu_timing import device_state

        return device_state(self._device_index)

    def _flush_l2(self) -> None:
        """Write a buffer twice the L2 cache's size on the stream (``cudaMemsetAsync``) before a cold sample."""
        from kernels_bench.cuda_timer import DeviceBuffer, check
        from kernels_bench.gpu_timing import flush_bytes

        rt = self._rt
        if self._scratch is None:
            attr = rt.cudaDeviceAttr.cudaDevAttrL2CacheSize
            l2 = int(check(rt, rt.cudaDeviceGetAttribute(attr, self._device_index), "cudaDeviceGetAttribute"))
            self._scratch = DeviceBuffer(flush_bytes(l2), rt)
        buf = self._scratch
        check(rt, rt.cudaMemsetAsync(buf.ptr, 0, buf.nbytes, self._stream.handle), "cudaMemsetAsync")

    def _timed(self, iters: int, cold_l2: bool) -> float:
        """Total GPU time of ``iters`` back-to-back enqueues (or graph launches), ms.

        With torch available the GPU is held by a spin kernel until all are
        enqueued, so the events time GPU work only (see :mod:`kernels_bench.gpu_timing`).
        """
        import time

        from kernels_bench.cuda_timer import check

        rt, stream = self._rt, self._stream
        if cold_l2:
            self._flush_l2()
        if self._hold is not None:
            self._hold.engage(iters)
        self._timer.start(stream)
        t0 = time.perf_counter()
        if self._graph_exec is not None:
            for _ in range(iters):
                check(rt, rt.cudaGraphLaunch(self._graph_exec, stream.handle), "cudaGraphLaunch")
        else:
            for _ in range(iters):
                self._enqueue()
        self._timer.stop(stream)
        if self._hold is not None:
            self._hold.note_enqueue((time.perf_counter() - t0) * 1e3, iters)
            self.info["hold_short"] = self._hold.short
        return self._timer.elapsed_ms()

    def _release(self) -> None:
        """Free the graph, events, buffers, context, engine and stream, each even when an earlier one fails."""
        stream = self._stream

        def sync() -> None:
            if stream is not None:
                stream.synchronize()

        def timer() -> None:
            if self._timer is not None:
                self._timer.close()

        def buffers() -> None:
            held, self._buffers = self._buffers, []
            if self._scratch is not None:
                held.append(self._scratch)
                self._scratch = None
            release_all(*(b.close for b in held))

        def engine() -> None:
            self._context = None  # the context goes before its engine, the engine before its runtime
            self._engine = None
            self._runtime = None

        def close_stream() -> None:
            if stream is not None:
                stream.close()

        release_all(sync, self._destroy_graph, timer, buffers, engine, close_stream)


# ----- backend -------------------------------------------------------------------------


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as error:
        raise engine_missing("tensorrt", "cuda", error) from None
    return trt


class TensorRTBackend(OnnxGraphBackend):
    """TensorRT engines on one CUDA device.

    Args:
        device: ``"cuda"`` or ``"cuda:N"``.
        strongly_typed: ``None`` for the version's default (see :func:`strongly_typed_for`).
        opt_level: builder optimization level 0-5 (``None``: 3, TensorRT's default).
        avg_timing_iterations, workspace_bytes: see :class:`BuildOptions`.
        timing_cache: file of the timing cache shared by all builds (``None``: in memory only, unless
            ``timing_cache_folder`` is given).
        timing_cache_folder: a build's timing-cache folder: this backend keeps worker ``worker``'s file
            there (see :class:`TimingCacheFiles`), started from the combined cache of earlier builds
            (from the folder, or from ``timing_cache_seeds`` sent by a driver on another machine).
        worker: the worker's number in its build.
        timing_cache_seeds: combined caches by file name (see :meth:`TimingCacheFiles.seeds`).
        cuda_graphs: time CUDA-graph launches of the engine instead of plain enqueues.
        opset: ONNX opset of the export (``None``: chosen for this TensorRT version).
        cache_dir: the exporter's ONNX cache directory.
        seed: weight seed of the blocks.
        log_severity: TensorRT messages printed up to this severity (0 internal error ... 4 verbose).
    """

    name = "tensorrt"
    target = "tensorrt"

    def __init__(
        self,
        device: str = "cuda",
        *,
        strongly_typed: bool | None = None,
        opt_level: int | None = None,
        avg_timing_iterations: int = 8,
        workspace_bytes: int = 1 << 30,
        timing_cache: str | Path | None = None,
        timing_cache_folder: str | Path | None = None,
        worker: int = 0,
        timing_cache_seeds: Mapping[str, bytes] | None = None,
        cuda_graphs: bool = False,
        tf32: bool = False,
        opset: int | None = None,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        log_severity: int = 1,
    ) -> None:
        kind, index = parse_device(device)
        if kind != "cuda":
            raise ValueError(f"the tensorrt backend runs on a GPU, not {device!r}: use device='cuda' or 'cuda:N'")
        requested = BackendConfig(
            self.name, device, opt_level=opt_level, strongly_typed=strongly_typed, cuda_graphs=cuda_graphs, tf32=tf32
        )
        self._trt = trt = _import_tensorrt()
        from kernels_bench.cuda_timer import check, check_driver, load_cudart

        self._rt = load_cudart()
        check_driver(self._rt)
        self.version_text = str(trt.__version__)
        self.version = parse_version(self.version_text)
        self.strongly_typed = strongly_typed_for(self.version, strongly_typed)
        level = BuildOptions.builder_optimization_level if opt_level is None else opt_level
        self.build_options = BuildOptions(level, avg_timing_iterations, workspace_bytes, bool(tf32))
        # the configuration as built: the version's typing and the builder level that apply
        self.config = requested.replace(strongly_typed=self.strongly_typed, opt_level=level)
        self.device = device
        self.device_index = index
        self.cuda_graphs = bool(cuda_graphs)
        self.opset = opset
        self.cache_dir = cache_dir
        self.seed = seed
        check(self._rt, self._rt.cudaSetDevice(index), f"cudaSetDevice({index})")
        self._gpu = gpu_environment(index)
        self.cache_files: TimingCacheFiles | None = None
        if timing_cache is None and timing_cache_folder is not None:
            tag = timing_cache_tag(self.version_text, self._gpu.get("device_name"), self._gpu.get("compute_capability"))
            self.cache_files = TimingCacheFiles(timing_cache_folder, tag)
            timing_cache = self.cache_files.prepare_worker(worker, timing_cache_seeds)
        self.timing_cache = TimingCache(timing_cache)
        self._logger = recording_logger(trt, log_severity)
        self._builder: Any = None
        self.last_build: dict[str, Any] = {}

    # ----- export step ---------------------------------------------------------
    def graph_opset(self) -> int:
        """The opset asked for, else the one this TensorRT version's parser reads (<= 17 for 8.6)."""
        if self.opset is not None:
            return self.opset
        from kernels_bench.export import choose_opset

        return choose_opset("tensorrt", self.version_text)

    def export_options(self) -> dict[str, Any]:
        """The int8 Q/DQ forms this TensorRT reads (see :func:`int8_export_options`)."""
        return int8_export_options(self.version, self.strongly_typed)

    # ----- compile step --------------------------------------------------------
    def load(self, prepared: Any) -> TensorRTRunner:
        """Build (with the shared timing cache) and deserialize the engine of an exported graph.

        Args:
            prepared: an ``ExportedGraph`` (anything with ``path`` and ``precision``).

        Raises:
            EngineBuildError: parsing or building failed (record the key as failed).
        """
        self.check_precision(prepared.precision)
        check_graph(prepared, self.strongly_typed)
        trt = self._trt
        if self._builder is None:
            self._builder = trt.Builder(self._logger)
        plan, applied = build_engine(
            trt,
            self._builder,
            self._logger,
            prepared.path,
            version=self.version,
            precision=prepared.precision,
            strongly_typed=self.strongly_typed,
            options=self.build_options,
            timing_cache=self.timing_cache,
        )
        self.timing_cache.save()
        self.last_build = applied
        runner = TensorRTRunner(
            trt, plan, self._logger, cuda_graphs=self.cuda_graphs, cudart=self._rt, device_index=self.device_index
        )
        runner.info.update({k: v for k, v in applied.items() if k.startswith("builder_flags")})
        return runner

    # ----- timing caches across workers ------------------------------------------
    @classmethod
    def cache_folder(cls, base: str | os.PathLike[str]) -> str | None:
        """``<base>/timing-cache``: where a build keeps its TensorRT timing caches."""
        return str(Path(base) / TIMING_CACHE_FOLDER)

    @classmethod
    def cache_seeds(cls, folder: str | None) -> dict[str, bytes]:
        """The combined timing caches of earlier builds in ``folder`` (see :meth:`TimingCacheFiles.seeds`)."""
        return TimingCacheFiles.seeds(folder)

    @classmethod
    def worker_options(cls, folder: str | None, index: int, seeds: Mapping[str, bytes]) -> dict[str, Any]:
        """Worker ``index`` keeps its timing cache in ``folder``, started from the combined one."""
        if folder is None:
            return {}
        return {"timing_cache_folder": folder, "worker": index, "timing_cache_seeds": dict(seeds)}

    def timing_cache_bytes(self) -> bytes:
        """This backend's timing cache, saved to its file and serialized."""
        self.timing_cache.save()
        return self.timing_cache.serialize()

    def combine_timing_caches(self, blobs: Sequence[bytes]) -> dict[str, bytes]:
        """Combine serialized caches (``ITimingCache.combine``) with the folder's combined cache of earlier builds.

        Returns ``{file name: bytes}`` of the combined cache for the driver to write
        into the build's timing-cache folder (``{}`` without a folder). A cache
        TensorRT refuses (another version or GPU) is left out with a warning.
        """
        if self.cache_files is None:
            return {}
        config = self._trt.Builder(self._logger).create_builder_config()
        combined = TimingCache(None)
        combined.attach(config)
        parts = [b for b in blobs if b]
        if self.cache_files.combined.is_file():
            parts.append(self.cache_files.combined.read_bytes())
        for blob in parts:
            if not combined.merge_bytes(blob):
                print("warning: TensorRT refused a timing cache to combine; it was left out", file=sys.stderr)
        data = combined.serialize()
        return {self.cache_files.combined.name: data} if data else {}

    # ----- description ---------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """What changes the engines: the configuration (typing and builder level as applied), the build
        options, TF32 and the TensorRT version."""
        return {
            **self.config.to_dict(),
            "tensorrt_version": self.version_text,
            "avg_timing_iterations": self.build_options.avg_timing_iterations,
            "workspace_bytes": self.build_options.workspace_bytes,
            "opset": self.graph_opset(),
            "int8_qdq": self.export_options(),
        }

    def environment(self) -> dict[str, Any]:
        """TensorRT and cuda-python versions, GPU facts, host facts, the timing-cache file."""
        env: dict[str, Any] = {
            "engine": "tensorrt",
            "engine_version": self.version_text,
            **host_environment(),
            **self._gpu,
            "timing_cache": str(self.timing_cache.path) if self.timing_cache.path else None,
        }
        from kernels_bench.cuda_timer import cuda_python_versions

        env.update(cuda_python_versions())
        return env

    def close(self) -> None:
        """Save the timing cache and drop the builder."""
        if not self.closed:
            self.timing_cache.save()
            self._builder = None
        super().close()
