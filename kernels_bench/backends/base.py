"""The backend interface and what every backend shares (the runner base class, CPU pinning).

A backend is a loader: :meth:`Backend.prepare` makes the graph (the export step:
an ONNX file or a torch module), :meth:`Backend.load` compiles it into a
:class:`~kernels_bench.timing.Runner` (the compile step) that the timing
protocol runs. Backends import their engine lazily and raise
:class:`~kernels_bench.errors.BackendUnavailable` naming the pip extra that provides it.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from kernels_bench.config import check_precision, device_kind, precisions_for, refusal
from kernels_bench.timing import Runner, host_clock_resolution_ms
from tables.key import BlockKey


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


class Backend(ABC):
    """One inference engine on one device.

    Subclasses set :attr:`name` and :attr:`device`; what the backend runs on its
    device, and why it refuses the rest, is the data of :mod:`kernels_bench.config`
    (:attr:`precisions`, :meth:`check_precision`), so a command can refuse a
    request before it creates a backend. Use as a context manager or call
    :meth:`close`.
    """

    name: str = ""
    device: str = "cpu"
    closed: bool = False

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions this backend runs meaningfully on its device."""
        return precisions_for(self.name, self.device)

    def refusal(self, precision: str) -> str | None:
        """Why this backend does not run ``precision`` on its device (``None`` when it does)."""
        return refusal(self.name, self.device, precision)

    def check_precision(self, precision: str) -> None:
        """Raise :class:`~kernels_bench.errors.PrecisionNotSupported` unless this backend runs ``precision`` here."""
        check_precision(self.name, self.device, precision)

    # ----- state a build shares between its workers (TensorRT's timing caches; nothing elsewhere) -----
    @classmethod
    def cache_folder(cls, base: str | os.PathLike[str]) -> str | None:
        """The folder under ``base`` (a build's cache or output folder) where this engine keeps shared state.

        ``None`` for engines that keep none.
        """
        return None

    @classmethod
    def cache_seeds(cls, folder: str | None) -> dict[str, bytes]:
        """The state earlier builds left in ``folder`` (file name -> bytes), for workers on other machines."""
        return {}

    @classmethod
    def worker_options(cls, folder: str | None, index: int, seeds: Mapping[str, bytes]) -> dict[str, Any]:
        """Extra keyword options that make worker ``index`` of a build keep its state in ``folder``."""
        return {}

    def timing_cache_bytes(self) -> bytes:
        """The engine's timing cache, serialized, for a build to combine across workers (empty: none)."""
        return b""

    def combine_timing_caches(self, blobs: Sequence[bytes]) -> dict[str, bytes]:
        """Combine serialized timing caches of several workers: file name -> bytes to write into the
        build's cache folder (empty: this engine keeps none)."""
        return {}

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

    def export_options(self) -> dict[str, Any]:
        """Options of :func:`kernels_bench.export.export_keys` this engine needs (int8 Q/DQ forms; none here)."""
        return {}

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
            **self.export_options(),
        )

    def prepare_identity(self, input_shape: tuple[int, ...], precision: str) -> Any:
        """Export an Identity graph with input and output of ``input_shape`` (batch included)."""
        self.check_precision(precision)
        from kernels_bench.export import export_identity

        return export_identity(tuple(input_shape), precision, opset=self.graph_opset(), cache_dir=self.cache_dir)


class RunnerBase(ABC):
    """What every runner shares: the closed guard, the context manager and a release that runs once.

    Subclasses implement :meth:`_timed` and :meth:`_release`, and set
    :attr:`clock` and :attr:`timer_resolution_ms`.
    """

    clock: str = "host"
    timer_resolution_ms: float = 0.0

    def __init__(self, info: dict[str, Any] | None = None) -> None:
        self.info: dict[str, Any] = dict(info or {})
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def timed(self, iters: int, *, cold_l2: bool = False) -> float:
        """Total time of ``iters`` back-to-back inferences, ms, timed as the runner's :attr:`clock` says.

        ``cold_l2``: a GPU runner writes a buffer twice its L2 cache's size first (outside the timed
        region); host runners ignore it.
        """
        if self._closed:
            raise RuntimeError("runner is closed: load the graph again to time it")
        return self._timed(iters, cold_l2)

    @abstractmethod
    def _timed(self, iters: int, cold_l2: bool) -> float:
        """Total time of ``iters`` back-to-back inferences, ms (the runner is open)."""

    @abstractmethod
    def _release(self) -> None:
        """Free what the runner owns (called once, by :meth:`close`)."""

    def close(self) -> None:
        """Release the runner's resources once; later calls do nothing."""
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> RunnerBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def release_all(*steps: Callable[[], object]) -> None:
    """Run every release step in order even when one fails; then raise the first failure.

    A runner frees its graph, buffers, events and stream this way, so one
    failing call does not leak everything after it.
    """
    first: BaseException | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:  # keep freeing; report the first problem at the end
            if first is None:
                first = exc
    if first is not None:
        raise first


class HostClockRunner(RunnerBase):
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
        super().__init__(info)
        self.timer_resolution_ms = host_clock_resolution_ms()
        self._run_once = run_once
        self._release_fn = release
        self._context = context or nullcontext

    def _timed(self, iters: int, cold_l2: bool) -> float:
        """Total time of ``iters`` back-to-back inferences, ms (host clock; caches are left as they are)."""
        run = self._run_once
        with self._context():
            start = time.perf_counter_ns()
            for _ in range(iters):
                run()
            end = time.perf_counter_ns()
        return (end - start) / 1e6

    def _release(self) -> None:
        release, self._release_fn, self._run_once = self._release_fn, None, _closed_run
        if release is not None:
            release()


def _closed_run() -> None:
    raise RuntimeError("runner is closed: load the graph again to time it")


def parse_device(device: str) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"`` / ``"cuda:1"`` -> ("cuda", index)."""
    kind = device_kind(device)
    return kind, int(device[5:]) if device.startswith("cuda:") else 0
