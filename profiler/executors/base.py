"""The interface every executor implements, and what the executors share."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from profiler.executors.worker import WorkerSpec, write_cache_files
from tables.errors import error_text


class WorkerLost(RuntimeError):
    """Every worker died and none could be replaced."""


class Executor(ABC):
    """Measures keys for the build driver; yields rows, writes nothing.

    Use: :meth:`start` once (returns the backend's description), then per table
    :meth:`floor`, :meth:`reference` and :meth:`measure`, then :meth:`close`
    (also a context manager).
    """

    name: str = "executor"
    workers: int = 1

    @abstractmethod
    def start(self, precisions: Sequence[str]) -> dict[str, Any]:
        """Start the workers; returns a worker's :meth:`KeyWorker.info` for ``precisions``."""

    @abstractmethod
    def floor(self, shape: Sequence[int], batch: int, precision: str) -> dict[str, Any]:
        """The floor entry (identity graph of ``shape``) measured by one worker."""

    @abstractmethod
    def reference(self, batch: int, precision: str) -> dict[str, Any]:
        """The drift reference timed alone by one worker (the table's ``drift_reference`` entry)."""

    @abstractmethod
    def measure(self, keys: Sequence[str], batch: int, precision: str) -> Iterator[list[dict[str, Any]]]:
        """Measure every key once; yields lists of rows (one row per key overall) as they complete."""

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (combining their timing caches first); idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_refusals(info: Mapping[str, Any]) -> None:
    """Raise the first precision refusal a worker reported in its :meth:`KeyWorker.info`."""
    refusals = info.get("refusals") or {}
    if refusals:
        from kernels_bench.errors import PrecisionNotSupported

        raise PrecisionNotSupported(next(iter(refusals.values())))


def combine_caches(
    spec: WorkerSpec, blobs: Sequence[bytes], combine: Callable[[list[bytes]], Mapping[str, bytes]]
) -> None:
    """Combine the workers' timing caches (``combine`` asks one worker) and write the result into the cache folder.

    Nothing happens for engines without one (every blob empty). A failure is a
    warning: the keys are measured and stored whatever happens to the caches.
    """
    blobs = [b for b in blobs if b]
    if spec.cache_folder is None or not blobs:
        return
    try:
        write_cache_files(spec.cache_folder, combine(blobs))
    except Exception as exc:
        print(f"warning: the workers' timing caches were not combined: {error_text(exc)}", file=sys.stderr)


__all__ = ["Executor", "WorkerLost", "check_refusals", "combine_caches"]
