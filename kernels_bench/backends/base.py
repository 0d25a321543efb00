"""The backend interface, its errors, and what every backend shares.

A backend is a loader: :meth:`Backend.prepare` makes the graph (the export step:
an ONNX file or a torch module), :meth:`Backend.load` compiles it into a
:class:`~kernels_bench.timing.Runner` (the compile step) that the timing
protocol runs. Backends import their engine lazily and raise
:class:`BackendUnavailable` naming the pip extra that provides it.
"""

from __future__ import annotations

import os
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from kernels_bench.timing import Runner, host_clock_resolution_ms
from tables.key import BlockKey

#: Precision names understood by the backends (each backend runs a subset).
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")

#: pip extra that provides each engine.
EXTRAS: dict[str, str] = {"cpu": ".[cpu]", "ort-gpu": ".[ort-gpu]", "tensorrt": ".[tensorrt]"}


class BackendUnavailable(RuntimeError):
    """The engine (or the device) a backend needs is not installed or not present."""


class PrecisionNotSupported(ValueError):
    """A backend cannot run a precision meaningfully on its device."""


def install_hint(extra: str) -> str:
    """The pip command that installs an extra, e.g. ``pip install -e '.[cpu]'``."""
    return f"pip install -e '{EXTRAS[extra]}'"


def missing(module: str, backend: str, extra: str, error: BaseException | None = None) -> BackendUnavailable:
    """A :class:`BackendUnavailable` for a module that failed to import."""
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    return BackendUnavailable(
        f"the {backend} backend needs the Python package {module!r}, which could not be imported{detail}; "
        f"install it with: {install_hint(extra)}"
    )


def as_key_list(keys: BlockKey | Sequence[BlockKey]) -> list[BlockKey]:
    """One key or an ordered chain of keys, as a non-empty list."""
    if isinstance(keys, BlockKey):
        return [keys]
    result = list(keys)
    if not result:
        raise ValueError("no block keys given: pass one BlockKey or a non-empty sequence of chained keys")
    for k in result:
        if not isinstance(k, BlockKey):
            raise ValueError(f"expected BlockKey objects, got {type(k).__name__}: parse strings with tables.parse_key")
    return result


def check_batch(batch: int) -> int:
    """Validate a batch size (a positive integer)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"invalid batch={batch!r}: use a positive integer")
    return batch


def cpu_model() -> str:
    """Host CPU model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def host_environment() -> dict[str, Any]:
    """Facts about the host shared by all backends: CPU model, logical CPUs, OS, Python."""
    return {
        "host_cpu": cpu_model(),
        "host_logical_cpus": os.cpu_count() or 0,
        "host_os": f"{platform.system()} {platform.release()}",
        "python_version": platform.python_version(),
    }


def parse_cpus(text: str) -> list[int]:
    """CPU indices from a list such as ``"1"``, ``"0,2"`` or ``"0-3,6"``; sorted, without repeats.

    Raises:
        ValueError: an item is not a non-negative integer or an ascending ``A-B`` range.
    """
    cpus: set[int] = set()
    for item in str(text).split(","):
        item = item.strip()
        lo, sep, hi = item.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            first = last = -1
        if first < 0 or last < first:
            raise ValueError(f"invalid CPU list {text!r}: use indices and ranges such as 1 or 0,2 or 0-3")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def spare_cpu() -> int | None:
    """The last CPU this process may use, when it may use two or more (the rest is left to the OS).

    ``None`` on a single-CPU process or where the platform cannot tell (not Linux):
    the CPU to pin a measurement to, away from the OS and the rest of the process.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    return cpus[-1] if len(cpus) >= 2 else None


class CpuPinning:
    """Pins the calling process (its main thread and the threads it starts later) to some CPUs.

    On a shared or busy machine a measurement moved between cores, or sharing one
    with the operating system, varies by several percent from one second to the
    next; pinning the timed process to a core of its own removes much of that.
    Linux only (``os.sched_setaffinity``). :meth:`restore` puts the previous set back.

    Args:
        cpus: CPU indices; ``None`` or empty leaves the affinity alone.

    Raises:
        ValueError: the platform cannot pin, or a CPU is not available to this process.
    """

    def __init__(self, cpus: Sequence[int] | None) -> None:
        self.cpus: list[int] | None = None
        self._previous: set[int] | None = None
        if not cpus:
            return
        wanted = sorted({int(c) for c in cpus})
        if not hasattr(os, "sched_setaffinity"):
            raise ValueError(f"pinning to CPUs {wanted} needs Linux (os.sched_setaffinity); leave the CPUs unset")
        available = os.sched_getaffinity(0)
        outside = [c for c in wanted if c not in available]
        if outside:
            raise ValueError(
                f"CPUs {outside} are not available to this process (it may use {sorted(available)}): choose among those"
            )
        self._previous = set(available)
        os.sched_setaffinity(0, wanted)
        self.cpus = wanted

    def restore(self) -> None:
        """Give the process back the CPUs it had before (idempotent)."""
        if self._previous is not None:
            os.sched_setaffinity(0, self._previous)
            self._previous = None


def nvidia_driver_version() -> str | None:
    """The NVIDIA kernel driver version from ``/proc/driver/nvidia/version`` (Linux), or None."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        return None
    for token in first.split():
        parts = token.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            return token
    return None


def gpu_environment(index: int = 0) -> dict[str, Any]:
    """Device name, compute capability, driver and CUDA versions of GPU ``index``.

    Reads what is available: cuda-python first, then torch, then the driver's
    ``/proc`` file; missing facts are simply absent.
    """
    env: dict[str, Any] = {}
    driver = nvidia_driver_version()
    if driver:
        env["driver_version"] = driver
    try:
        from kernels_bench.cuda_timer import device_facts, load_cudart

        env.update(device_facts(load_cudart(), index))
    except Exception:  # cuda-python missing or no usable device: try torch
        try:
            import torch

            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(index)
                env.update(
                    device_name=props.name,
                    compute_capability=f"{props.major}.{props.minor}",
                    cuda_runtime=torch.version.cuda,
                )
        except ImportError:
            pass
    return env


class Backend(ABC):
    """One inference engine on one device.

    Subclasses set :attr:`name`, :attr:`device` and :attr:`precisions` (what the
    device runs meaningfully) and may explain refusals in :attr:`refusals`.
    Use as a context manager or call :meth:`close`.
    """

    name: str = ""
    device: str = "cpu"
    precisions: tuple[str, ...] = ()
    refusals: dict[str, str] = {}
    closed: bool = False

    def check_precision(self, precision: str) -> None:
        """Raise :class:`PrecisionNotSupported` unless this backend runs ``precision`` on its device."""
        if precision not in PRECISIONS:
            raise PrecisionNotSupported(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if precision not in self.precisions:
            reason = self.refusals.get(precision, "")
            reason = f": {reason}" if reason else ""
            raise PrecisionNotSupported(
                f"the {self.name} backend on {self.device} does not run {precision}{reason} "
                f"(it runs {', '.join(self.precisions)})"
            )

    @abstractmethod
    def prepare(self, keys: BlockKey | Sequence[BlockKey], batch: int, precision: str) -> Any:
        """The export step: the graph of ``keys`` (chained) at ``batch`` and ``precision``."""

    @abstractmethod
    def load(self, prepared: Any) -> Runner:
        """The compile step: a runner for a prepared graph."""

    @abstractmethod
    def prepare_identity(self, input_shape: tuple[int, ...], precision: str) -> Any:
        """A graph that copies an input of ``input_shape`` (batch included) to an output of the same size."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every backend setting that changes the numbers (threads, provider, flags, ...)."""

    @abstractmethod
    def environment(self) -> dict[str, Any]:
        """Engine name and version, device name, driver and CUDA versions where applicable, host facts."""

    def close(self) -> None:
        """Release backend-wide resources (idempotent); subclasses extend it."""
        self.closed = True

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device}>"


class OnnxGraphBackend(Backend):
    """A backend that runs exported ONNX graphs: the export step is the same for all of them.

    Subclasses set :attr:`target` (the exporter's target, which picks the INT8
    flavour and the opset) and ``opset``, ``cache_dir`` and ``seed`` attributes.
    """

    target: str = "onnxruntime"
    opset: int | None = None
    cache_dir: Any = None
    seed: int = 0

    def graph_opset(self) -> int:
        """The opset of this backend's graphs: the one asked for, else the exporter's choice for the target."""
        if self.opset is not None:
            return self.opset
        from kernels_bench.export import choose_opset

        return choose_opset(self.target)

    def prepare(self, keys: BlockKey | Sequence[BlockKey], batch: int, precision: str) -> Any:
        """Export the chained keys for :attr:`target`; returns the exporter's ``ExportedGraph``."""
        self.check_precision(precision)
        from kernels_bench.export import export_keys

        return export_keys(
            as_key_list(keys),
            check_batch(batch),
            precision,
            target=self.target,
            opset=self.graph_opset(),
            cache_dir=self.cache_dir,
            seed=self.seed,
        )

    def prepare_identity(self, input_shape: tuple[int, ...], precision: str) -> Any:
        """Export an Identity graph with input and output of ``input_shape`` (batch included)."""
        self.check_precision(precision)
        from kernels_bench.export import export_identity

        return export_identity(tuple(input_shape), precision, opset=self.graph_opset(), cache_dir=self.cache_dir)


class HostClockRunner:
    """A CPU runner: ``time.perf_counter_ns`` around synchronous runs.

    Args:
        run_once: one synchronous inference of the batch.
        release: frees the runner's resources, called once by :meth:`close`.
        info: runner facts recorded with the result (threads, provider, ...).
        context: a context-manager factory entered once around each timed loop
            (e.g. ``torch.inference_mode``), so its cost stays out of the samples.
    """

    clock = "host"

    def __init__(
        self,
        run_once: Callable[[], object],
        *,
        release: Callable[[], None] | None = None,
        info: dict[str, Any] | None = None,
        context: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.timer_resolution_ms = host_clock_resolution_ms()
        self.info: dict[str, Any] = dict(info or {})
        self._run_once = run_once
        self._release = release
        self._context = context or nullcontext
        self._closed = False

    def timed(self, iters: int) -> float:
        """Total time of ``iters`` back-to-back inferences, ms (host clock)."""
        if self._closed:
            raise RuntimeError("runner is closed: load the graph again to time it")
        run = self._run_once
        with self._context():
            start = time.perf_counter_ns()
            for _ in range(iters):
                run()
            end = time.perf_counter_ns()
        return (end - start) / 1e6

    def close(self) -> None:
        """Release resources once; later calls do nothing."""
        if not self._closed:
            self._closed = True
            release, self._release, self._run_once = self._release, None, _closed_run
            if release is not None:
                release()

    def __enter__(self) -> HostClockRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _closed_run() -> None:
    raise RuntimeError("runner is closed: load the graph again to time it")


def parse_device(device: str) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"`` / ``"cuda:1"`` -> ("cuda", index)."""
    if device == "cpu":
        return "cpu", 0
    if device == "cuda":
        return "cuda", 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise ValueError(f"invalid device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
