"""Executors: where the keys of a build are measured.

The build driver (:mod:`profiler.tablebuild`) owns the table: it alone writes
rows (``PartStore.append``, the same crash-safe parts as a local build) and
drives the progress bar. An executor only measures. Three of them share one
interface, :class:`Executor` (:mod:`profiler.executors.base`):

- :class:`SerialExecutor` (``--executor serial``, the default; :mod:`.serial`):
  one backend in this process, keys one after the other.
- :class:`LocalExecutor` (``--executor local``; :mod:`.local`): one worker
  process per GPU (``--gpus 0,1,...``; ``CUDA_VISIBLE_DEVICES`` set per worker)
  or, on the cpu device profile, ``--workers N`` processes (each pinned to its
  own share of ``--cpus``); started with the ``spawn`` method, rows sent back as
  plain dicts over one pipe per worker.
- :class:`RayExecutor` (``--executor ray``; :mod:`.ray_actors`): one Ray actor
  per GPU (``num_gpus=1``), or per CPU worker (``num_cpus=1``) on the cpu profile.

Every worker (:class:`KeyWorker`, :mod:`.worker`) creates its backend once from
a :class:`WorkerSpec` (the :class:`~kernels_bench.config.BackendConfig`, the
timing protocol, the drift reference) and keeps it warm between keys (and, with
drift correction, its drift reference graph: one per batch and precision,
timed between the samples of every key it measures). State an engine shares
between the workers of a build (TensorRT's timing caches) is the backend's own
business (``Backend.worker_options``, ``combine_timing_caches``); the executors
collect it from every worker and write it into the build's cache folder when
they close. Keys go out in small chunks (``--chunk-size``, :mod:`.queue`), at
most ``in_flight`` chunks per worker, so a free worker always has the next
chunk at hand. A key whose measurement raises an ordinary exception is recorded
as failed at once, with its error. A worker that dies (killed, out of memory, a
crash in the engine) has its unfinished keys sent to another worker
(:meth:`ChunkQueue.worker_lost`: the key it was measuring is charged one death)
and is replaced while the replacement budget lasts; a key that was being
measured when its worker died twice is recorded as failed.

Fault injection (tests): with ``LATENCY_BUILD_FAULT_KILL=W:N`` in the driver's
environment, worker ``W`` (numbered from 0) exits abruptly (``os._exit``) before
measuring its ``N+1``-th key, in its first incarnation only (its replacement
runs normally). The variable is read by the driver and handed to that worker,
so it also reaches workers of a Ray cluster started elsewhere.
"""

from __future__ import annotations

from profiler.executors.base import Executor, WorkerLost, check_refusals, combine_caches
from profiler.executors.local import LocalExecutor
from profiler.executors.queue import MAX_WORKER_DEATHS_PER_KEY, Chunk, ChunkQueue, given_up_rows
from profiler.executors.ray_actors import RAY_INSTALL_HINT, RayExecutor, import_ray
from profiler.executors.serial import SerialExecutor
from profiler.executors.worker import (
    FAULT_ENV,
    FAULT_EXIT_STATUS,
    FaultInjection,
    KeyWorker,
    WorkerSpec,
    fault_from_environment,
)

__all__ = [
    "FAULT_ENV",
    "FAULT_EXIT_STATUS",
    "MAX_WORKER_DEATHS_PER_KEY",
    "RAY_INSTALL_HINT",
    "Chunk",
    "ChunkQueue",
    "Executor",
    "FaultInjection",
    "KeyWorker",
    "LocalExecutor",
    "RayExecutor",
    "SerialExecutor",
    "WorkerLost",
    "WorkerSpec",
    "check_refusals",
    "combine_caches",
    "fault_from_environment",
    "given_up_rows",
    "import_ray",
]
