"""``--executor serial``: keys one after the other on one backend in this process (the default)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from profiler.executors.base import Executor, combine_caches
from profiler.executors.worker import KeyWorker, WorkerSpec


class SerialExecutor(Executor):
    """Keys one after the other on one backend in this process.

    Args:
        spec: the worker's backend, timing protocol and drift reference (its backend is
            created by :meth:`start`), or ``None`` with ``worker`` given.
        worker: an existing worker to use instead (tests).
    """

    name = "serial"

    def __init__(self, spec: WorkerSpec | None = None, *, worker: KeyWorker | None = None) -> None:
        if (spec is None) == (worker is None):
            raise ValueError("SerialExecutor needs a WorkerSpec or a KeyWorker (one of them)")
        self.spec = spec
        self.worker = worker
        self.workers = 1
        self._closed = False

    def start(self, precisions: Sequence[str]) -> dict[str, Any]:
        if self.worker is None:
            assert self.spec is not None
            self.worker = KeyWorker.from_spec(self.spec, 0)
        for p in precisions:
            self.worker.backend.check_precision(p)
        return self.worker.info(precisions)

    def _ready(self) -> KeyWorker:
        if self.worker is None:
            raise RuntimeError("the serial executor is not started: call start() first")
        return self.worker

    def floor(self, shape: Sequence[int], batch: int, precision: str) -> dict[str, Any]:
        return self._ready().floor(shape, batch, precision)

    def reference(self, batch: int, precision: str) -> dict[str, Any]:
        return self._ready().reference(batch, precision)

    def measure(self, keys: Sequence[str], batch: int, precision: str) -> Iterator[list[dict[str, Any]]]:
        worker = self._ready()
        for key in keys:
            yield [worker.measure_one(key, batch, precision)]

    def close(self) -> None:
        if self._closed or self.worker is None:
            self._closed = True
            return
        self._closed = True
        worker = self.worker
        try:
            if self.spec is not None:
                combine_caches(self.spec, [worker.timing_cache_bytes()], worker.combine_timing_caches)
        finally:
            worker.close()


__all__ = ["SerialExecutor"]
