"""CUDA events, streams and device buffers through cuda-python's runtime bindings.

Used by the TensorRT runner (which has no torch tensors) and usable around any
work enqueued on a known stream (for example a torch kernel on
``torch.cuda.Stream().cuda_stream``). Every runtime call returns a tuple whose
first item is an error code; :func:`check` verifies it on every call and raises
:class:`CudaError` with the error's name.

``cuda.bindings.runtime`` (cuda-python >= 12.6.1) is imported lazily, with
``from cuda import cudart`` as the fallback for older cuda-python; missing both
raises :class:`~kernels_bench.backends.base.BackendUnavailable` naming the
``tensorrt`` extra.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

#: Resolution of cudaEventElapsedTime, ms (about half a microsecond).
EVENT_RESOLUTION_MS = 0.0005


class CudaError(RuntimeError):
    """A CUDA runtime call returned an error code."""


def load_cudart() -> ModuleType:
    """The cuda-python runtime module (new layout first, then the pre-13 one)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as new_error:
        try:
            from cuda import cudart  # cuda-python < 12.6.1 layout, removed in 13.0
        except ImportError:
            from kernels_bench.errors import missing

            raise missing("cuda-python", "tensorrt", "tensorrt", new_error) from None
    return cudart


def error_name(cudart: Any, err: Any) -> str:
    """Name of a CUDA error code, e.g. ``cudaErrorMemoryAllocation``."""
    try:
        result = cudart.cudaGetErrorName(err)
        name = result[1] if isinstance(result, tuple) else result
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return str(err)


def check(cudart: Any, result: Any, what: str) -> Any:
    """Verify a runtime call's error code and return its payload.

    Args:
        cudart: the runtime module (see :func:`load_cudart`).
        result: what the call returned: ``(err,)``, ``(err, value)`` or ``(err, v1, v2, ...)``.
        what: the call, for the message (e.g. ``"cudaMalloc(1024)"``).

    Returns:
        ``None`` for ``(err,)``, the value for ``(err, value)``, else the tuple of values.
    """
    if isinstance(result, tuple):
        err, payload = result[0], result[1:]
    else:
        err, payload = result, ()
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"{what} failed with {error_name(cudart, err)}")
    if not payload:
        return None
    return payload[0] if len(payload) == 1 else payload


def native_handle(obj: Any) -> int:
    """The address a cuda-python object (a stream, an event, a graph) wraps, as an int.

    ``cuda.bindings.utils.get_cuda_native_handle`` where it exists (cuda-bindings
    12.9 and 13.x deprecate ``int(obj)``), else ``int(obj)``.
    """
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    try:
        return int(get_cuda_native_handle(obj))
    except (TypeError, ValueError):  # not a cuda-python object (an int already, a stand-in)
        return int(obj)


def stream_handle(stream: Any) -> int:
    """An integer stream handle from a :class:`Stream`, a cuda-python stream, a torch stream or an int."""
    if isinstance(stream, Stream):
        return stream.handle_int
    cuda_stream = getattr(stream, "cuda_stream", None)  # torch.cuda.Stream
    if cuda_stream is not None:
        return int(cuda_stream)
    return native_handle(stream) if stream is not None else 0


class Stream:
    """A non-default CUDA stream (``cudaStreamCreateWithFlags(cudaStreamNonBlocking)``)."""

    def __init__(self, cudart: ModuleType | None = None) -> None:
        self._rt = cudart or load_cudart()
        flags = getattr(self._rt, "cudaStreamNonBlocking", 1)
        self.handle = check(self._rt, self._rt.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags")

    @property
    def handle_int(self) -> int:
        """The stream as an integer (what TensorRT's ``execute_async_v3`` takes)."""
        return native_handle(self.handle)

    def synchronize(self) -> None:
        """Wait until all work on the stream is done."""
        check(self._rt, self._rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        """Destroy the stream (idempotent)."""
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(self._rt, self._rt.cudaStreamDestroy(handle), "cudaStreamDestroy")

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``), freed by :meth:`close`."""

    def __init__(self, nbytes: int, cudart: ModuleType | None = None) -> None:
        if nbytes < 0:
            raise ValueError(f"invalid buffer size {nbytes}: use a size >= 0 bytes")
        self._rt = cudart or load_cudart()
        self.nbytes = int(nbytes)
        # cudaMalloc(0) may return a null pointer; keep one byte so every tensor has an address.
        self.ptr: int | None = int(check(self._rt, self._rt.cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({nbytes})"))

    def copy_from_host(self, array: Any) -> None:
        """Copy a C-contiguous numpy array of exactly ``nbytes`` bytes to the device (synchronous)."""
        if array.nbytes != self.nbytes:
            raise ValueError(f"host array has {array.nbytes} bytes, device buffer {self.nbytes}")
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self._rt, self._rt.cudaMemcpy(self.ptr, array.ctypes.data, self.nbytes, kind), "cudaMemcpy to device")

    def copy_to_host(self, array: Any) -> None:
        """Copy the buffer into a C-contiguous numpy array of ``nbytes`` bytes (synchronous)."""
        if array.nbytes != self.nbytes:
            raise ValueError(f"host array has {array.nbytes} bytes, device buffer {self.nbytes}")
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self._rt, self._rt.cudaMemcpy(array.ctypes.data, self.ptr, self.nbytes, kind), "cudaMemcpy to host")

    def close(self) -> None:
        """Free the memory (idempotent)."""
        if self.ptr is not None:
            ptr, self.ptr = self.ptr, None
            check(self._rt, self._rt.cudaFree(ptr), "cudaFree")

    def __enter__(self) -> DeviceBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CudaEventTimer:
    """GPU time between two CUDA events recorded on one stream.

    Usage::

        with CudaEventTimer() as timer:
            timer.start(stream)
            ...enqueue work on stream...
            timer.stop(stream)
            ms = timer.elapsed_ms()   # waits for the end event

    Attributes:
        resolution_ms: resolution of ``cudaEventElapsedTime``, ms.
    """

    resolution_ms = EVENT_RESOLUTION_MS

    def __init__(self, cudart: ModuleType | None = None) -> None:
        self._rt = cudart or load_cudart()
        self._start = check(self._rt, self._rt.cudaEventCreate(), "cudaEventCreate")
        self._end = check(self._rt, self._rt.cudaEventCreate(), "cudaEventCreate")
        self._closed = False

    def start(self, stream: Any = 0) -> None:
        """Record the start event on ``stream`` (anything :func:`stream_handle` accepts)."""
        self._record(self._start, stream, "start")

    def stop(self, stream: Any = 0) -> None:
        """Record the end event on ``stream``."""
        self._record(self._end, stream, "end")

    def _record(self, event: Any, stream: Any, which: str) -> None:
        if self._closed:
            raise RuntimeError("CudaEventTimer is closed: create a new one")
        check(self._rt, self._rt.cudaEventRecord(event, stream_handle(stream)), f"cudaEventRecord({which})")

    def elapsed_ms(self) -> float:
        """Wait for the end event and return the time from start to end, ms."""
        check(self._rt, self._rt.cudaEventSynchronize(self._end), "cudaEventSynchronize")
        return float(check(self._rt, self._rt.cudaEventElapsedTime(self._start, self._end), "cudaEventElapsedTime"))

    def close(self) -> None:
        """Destroy both events (idempotent)."""
        if not self._closed:
            self._closed = True
            check(self._rt, self._rt.cudaEventDestroy(self._start), "cudaEventDestroy")
            check(self._rt, self._rt.cudaEventDestroy(self._end), "cudaEventDestroy")

    def __enter__(self) -> CudaEventTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def device_facts(cudart: ModuleType | None = None, device: int = 0) -> dict[str, Any]:
    """Device name, compute capability, driver and runtime CUDA versions through cuda-python."""
    rt = cudart or load_cudart()
    props = check(rt, rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    driver = int(check(rt, rt.cudaDriverGetVersion(), "cudaDriverGetVersion"))
    runtime = int(check(rt, rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    return {
        "device_name": name,
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda_driver_api": f"{driver // 1000}.{(driver % 1000) // 10}",
        "cuda_runtime": f"{runtime // 1000}.{(runtime % 1000) // 10}",
    }


def cuda_python_versions() -> dict[str, str | None]:
    """The installed ``cuda-python`` and ``cuda-bindings`` versions (``None`` for one that is not installed).

    cuda-python 12.6.1 and later is a meta-package over cuda-bindings, which can
    also be installed alone; either provides the runtime module this backend uses.
    """
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("cuda-python", "cuda-bindings"):
        try:
            out[dist.replace("-", "_") + "_version"] = version(dist)
        except PackageNotFoundError:
            out[dist.replace("-", "_") + "_version"] = None
    return out


def bindings_major() -> int | None:
    """Major version of the installed CUDA Python bindings (``cuda-bindings``, else ``cuda-python``)."""
    versions = cuda_python_versions()
    text = versions.get("cuda_bindings_version") or versions.get("cuda_python_version")
    if not text:
        return None
    head = text.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def check_driver(cudart: Any, major: int | None = None) -> None:
    """Refuse CUDA Python bindings newer than the driver's CUDA major, naming the extra to install.

    cuda-python 13.x cannot talk to a CUDA-12 driver (the V100/T4 machines that
    run TensorRT 8.6 and 10.x cu12): every call after this one would fail with
    ``cudaErrorInsufficientDriver``. ``major`` defaults to :func:`bindings_major`.
    """
    from kernels_bench.errors import BackendUnavailable, install_hint

    major = bindings_major() if major is None else major
    try:
        driver = int(check(cudart, cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
    except CudaError:
        return
    if driver == 0:
        raise BackendUnavailable(
            "no NVIDIA driver found (cudaDriverGetVersion returned 0): install the driver, or use --device cpu"
        )
    driver_major = driver // 1000
    if major is not None and driver_major < major:
        if driver_major == 12:
            fix = (
                f"install the CUDA-12 pins with {install_hint('tensorrt-cu12')} (TensorRT 10.x) "
                f"or {install_hint('tensorrt8')} (TensorRT 8.6)"
            )
        else:
            fix = "update the NVIDIA driver (this project's TensorRT extras need a CUDA 12 or 13 driver)"
        raise BackendUnavailable(
            f"the installed cuda-python {major}.x needs a CUDA {major} driver, but this driver supports CUDA "
            f"{driver_major}.{(driver % 1000) // 10}: {fix}"
        )
