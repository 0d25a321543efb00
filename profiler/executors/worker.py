"""What every executor's worker runs: one backend kept warm between keys, and the test hook that kills it.

A :class:`WorkerSpec` is plain data sent to every worker (another process, a
Ray actor on another machine); :meth:`KeyWorker.from_spec` creates the
worker's backend from it in the worker's own process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernels_bench.config import BackendConfig
from tables.errors import error_text

#: Environment variable of the fault-injection hook (``W:N``: worker W dies before its key N+1).
FAULT_ENV = "LATENCY_BUILD_FAULT_KILL"

#: Exit status of a worker process that ends itself through the fault-injection hook.
FAULT_EXIT_STATUS = 70


@dataclass(frozen=True)
class FaultInjection:
    """Test hook: worker ``worker`` exits abruptly before measuring key number ``after_keys + 1``."""

    worker: int
    after_keys: int


def fault_from_environment(environ: Mapping[str, str] | None = None) -> FaultInjection | None:
    """The fault-injection hook configured in ``LATENCY_BUILD_FAULT_KILL`` (``W:N``), or ``None``."""
    text = (environ if environ is not None else os.environ).get(FAULT_ENV, "").strip()
    if not text:
        return None
    try:
        worker, after = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={text!r} is not W:N (worker number, keys before it exits)") from None
    if worker < 0 or after < 0:
        raise ValueError(f"{FAULT_ENV}={text!r}: W and N must be >= 0")
    return FaultInjection(worker, after)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to create its backend; plain data, sent to every worker.

    Attributes:
        config: the backend configuration (one worker's; a local worker may get its own CPUs,
            see :meth:`for_cpus`).
        timing: fields of :class:`kernels_bench.timing.TimingSettings`.
        env: environment variables every worker sets before importing an engine.
        cache_folder: where the backend keeps state a build shares between workers (the TensorRT
            timing caches); ``None``: none.
        cache_seeds: that state from earlier builds, file name -> bytes, for workers on other machines.
        drift_reference: the drift reference graph's key, timed between the samples of
            every key (``None``: no drift reference).
        drift_ratio: length of a reference sample over a measured sample.
        boundary: how each key's boundary is measured right after the key
            (:data:`kernels_bench.boundary.BOUNDARY_METHODS`; ``"none"``: not measured).
    """

    config: BackendConfig
    timing: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    cache_folder: str | None = None
    cache_seeds: dict[str, bytes] = field(default_factory=dict)
    drift_reference: str | None = None
    drift_ratio: float = 1.0
    boundary: str = "none"

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self.config.backend

    def for_cpus(self, cpus: Sequence[int]) -> WorkerSpec:
        """This spec for a worker pinned to ``cpus``."""
        return dataclasses.replace(self, config=self.config.replace(cpus=tuple(cpus)))


def backend_opset(backend: Any, backend_name: str, env: Mapping[str, Any]) -> int | None:
    """The ONNX opset the backend's graphs are exported with (``None`` for the torch backend)."""
    if backend_name == "torch":
        return None
    from kernels_bench.export import choose_opset

    return getattr(backend, "opset", None) or choose_opset(backend_name, env.get("engine_version"))


class KeyWorker:
    """One backend kept warm between keys: what every executor's worker runs.

    Args:
        backend: the backend (created once, closed by :meth:`close`).
        backend_name: its name, for the opset.
        timing: the timing protocol settings (``TimingSettings``).
        index: the worker's number (fault injection, timing-cache file).
        fault: the fault-injection hook for this worker, if any.
        drift_reference: key of the drift reference graph timed between the samples
            of every key (``None``: none).
        drift_ratio: length of a reference sample over a measured sample.
    """

    def __init__(
        self,
        backend: Any,
        backend_name: str,
        timing: Any,
        *,
        index: int = 0,
        fault: FaultInjection | None = None,
        drift_reference: str | None = None,
        drift_ratio: float = 1.0,
        boundary: str = "none",
    ) -> None:
        from kernels_bench.boundary import check_method

        self.backend = backend
        self.boundary = check_method(boundary)
        self._boundary_meter: Any = None
        self.backend_name = backend_name
        self.timing = timing
        self.index = index
        self.fault = fault if fault is not None and fault.worker == index else None
        self.keys_started = 0
        self.drift_reference = drift_reference
        self.drift_ratio = drift_ratio
        self._references: dict[tuple[int, str, str], Any] = {}
        self._memory_limit: int | bool | None = False  # False: not looked up yet

    @classmethod
    def from_spec(cls, spec: WorkerSpec, index: int, fault: FaultInjection | None = None) -> KeyWorker:
        """Create the worker's backend from ``spec`` (in the worker's own process)."""
        for name, value in spec.env.items():
            os.environ[name] = value
        from kernels_bench.backends import backend_class, create_backend
        from kernels_bench.timing import TimingSettings

        extra = backend_class(spec.backend).worker_options(spec.cache_folder, index, spec.cache_seeds)
        backend = create_backend(spec.config, **extra)
        return cls(
            backend,
            spec.backend,
            TimingSettings(**spec.timing),
            index=index,
            fault=fault,
            drift_reference=spec.drift_reference,
            drift_ratio=spec.drift_ratio,
            boundary=spec.boundary,
        )

    def info(self, precisions: Sequence[str]) -> dict[str, Any]:
        """Environment, settings and opset of the backend, and why it refuses any of ``precisions``."""
        env = self.backend.environment()
        refusals: dict[str, str] = {}
        for p in precisions:
            try:
                self.backend.check_precision(p)
            except ValueError as exc:
                refusals[p] = str(exc)
        return {
            "environment": env,
            "settings": self.backend.settings(),
            "opset": backend_opset(self.backend, self.backend_name, env),
            "refusals": refusals,
        }

    def floor(self, shape: Sequence[int], batch: int, precision: str) -> dict[str, Any]:
        """Time the identity graph of ``shape``: the table's ``floor`` entry."""
        from kernels_bench.measure import measure_floor
        from tables.schema import floor_entry

        result = measure_floor(self.backend, tuple(shape), batch, precision, self.timing)
        return floor_entry(result, shape)

    def _reference(self, batch: int, precision: str, key: str | None = None) -> Any:
        """The reference graph ``key`` (default: the drift reference) loaded for (batch, precision), or ``None``
        without drift correction and without ``key``."""
        key = key or self.drift_reference
        if key is None:
            return None
        ref = self._references.get((batch, precision, key))
        if ref is None:
            from kernels_bench.measure import DriftReference

            ref = DriftReference(self.backend, key, batch=batch, precision=precision, ratio=self.drift_ratio)
            self._references[(batch, precision, key)] = ref
        return ref

    def reference(self, batch: int, precision: str) -> dict[str, Any]:
        """Time the drift reference alone: the table's reference speed (its ``drift_reference`` entry).

        Three times the protocol's repeats, so that the speed every key is brought to
        is known better than any one key's. A worker without drift correction times
        the default reference graph instead, as a probe of the machine's speed
        (recorded in the table's ``steadiness``; nothing is corrected with it).
        """
        from kernels_bench.measure import DEFAULT_DRIFT_REFERENCE
        from tables.schema import reference_entry

        ref = self._reference(batch, precision, self.drift_reference or DEFAULT_DRIFT_REFERENCE)
        result = ref.measure(dataclasses.replace(self.timing, repeats=3 * self.timing.repeats))
        return reference_entry(result, str(ref.key), self.drift_ratio)

    def measure_one(self, key: str, batch: int, precision: str) -> dict[str, Any]:
        """One key -> its table row; an ordinary exception gives a failed row carrying the error.

        With a drift reference the row's ``reference_ms`` holds its speed while the
        key was timed; ``latency_ms`` is left as measured (the driver corrects it).
        """
        import kernels_bench.measure as measure
        from tables.key import parse_key
        from tables.schema import result_row

        if self.fault is not None and self.keys_started >= self.fault.after_keys:
            os._exit(FAULT_EXIT_STATUS)
        self.keys_started += 1
        block_key = parse_key(key)
        too_large = self._too_large(block_key, batch, precision)
        if too_large is not None:
            return result_row(block_key, error=too_large)
        try:
            reference = self._reference(batch, precision)
            result = measure.measure_keys(self.backend, [block_key], batch, precision, self.timing, reference=reference)
            t0 = time.perf_counter()
            boundary = self._boundary(block_key, batch, precision, result, reference)
            spent = time.perf_counter() - t0 if boundary is not None else None
            return result_row(block_key, result, boundary_ms=boundary, boundary_s=spent)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one bad key must not end a multi-day build
            _free_device_memory()
            return result_row(block_key, error=error_text(exc))

    def _boundary(self, key: Any, batch: int, precision: str, result: Any, reference: Any) -> float | None:
        """The key's ``boundary_ms`` by this worker's method (``None`` without one), timed right after the key."""
        if self.boundary == "none":
            return None
        if self._boundary_meter is None:
            from kernels_bench.boundary import BoundaryMeter

            self._boundary_meter = BoundaryMeter(self.backend, self.boundary, self.timing)
        return self._boundary_meter.measure(key, batch, precision, result, reference=reference)

    def memory_limit(self) -> int | None:
        """Bytes of memory on the backend's device (the GPU's, or the host's for the CPU), ``None`` if unknown."""
        if self._memory_limit is False:
            from kernels_bench.backends.base import parse_device

            kind, index = parse_device(str(getattr(self.backend, "device", "cpu")))
            if kind == "cuda":
                from kernels_bench.gpu import device_memory_bytes

                self._memory_limit = device_memory_bytes(index)
            else:
                from tables.host import host_memory_bytes

                self._memory_limit = host_memory_bytes()
        return self._memory_limit  # type: ignore[return-value]

    def _too_large(self, key: Any, batch: int, precision: str) -> str | None:
        """Why ``key`` cannot fit the device at ``batch`` (its weights and two largest tensors alone exceed the
        device's memory), or ``None``. Such a key is a permanent failure: measuring it would only run out of
        memory, or take the machine down with it."""
        from tables.cost import ELEMENT_BYTES, key_cost

        limit = self.memory_limit()
        if limit is None or precision not in ELEMENT_BYTES:
            return None
        need = key_cost(key, batch, precision).memory_bytes
        if need <= limit:
            return None
        gib = 1 << 30
        return (
            f"key {key} needs at least {need / gib:.1f} GiB for its weights and largest tensors at batch {batch} "
            f"({precision}), more than the {limit / gib:.1f} GiB of {getattr(self.backend, 'device', 'cpu')}: "
            "drop it from the space or use a smaller --batch"
        )

    def measure(self, keys: Sequence[str], batch: int, precision: str) -> list[dict[str, Any]]:
        """A chunk of keys -> their rows, in order."""
        return [self.measure_one(k, batch, precision) for k in keys]

    def timing_cache_bytes(self) -> bytes:
        """This worker's engine timing cache, serialized (empty for engines without one)."""
        return self.backend.timing_cache_bytes()

    def combine_timing_caches(self, blobs: Sequence[bytes]) -> dict[str, bytes]:
        """Several workers' timing caches combined by this worker's engine: file name -> bytes to write."""
        return self.backend.combine_timing_caches(blobs)

    def close(self) -> None:
        for ref in self._references.values():
            with contextlib.suppress(Exception):
                ref.close()
        self._references.clear()
        self.backend.close()


def write_cache_files(folder: str | None, files: Mapping[str, bytes]) -> list[Path]:
    """Write combined engine state (file name -> bytes) into the build's cache folder, atomically."""
    from tables.atomic import write_bytes

    if folder is None:
        return []
    return [write_bytes(Path(folder) / name, data) for name, data in files.items() if data]


def _free_device_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = [
    "FAULT_ENV",
    "FAULT_EXIT_STATUS",
    "FaultInjection",
    "KeyWorker",
    "WorkerSpec",
    "backend_opset",
    "fault_from_environment",
    "write_cache_files",
]
