"""``--executor ray``: one Ray actor per GPU (``num_gpus=1``), or per CPU worker (``num_cpus=1``).

Keys go to whichever actor is free in small chunks; each chunk comes back as
one list of rows. An actor that dies has its unfinished chunks sent to another
actor and is replaced while the replacement budget lasts.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernels_bench.errors import install_hint
from profiler.executors.base import Executor, WorkerLost, check_refusals, combine_caches
from profiler.executors.queue import Chunk, ChunkQueue, given_up_rows
from profiler.executors.worker import FaultInjection, KeyWorker, WorkerSpec
from tables.errors import error_text

RAY_INSTALL_HINT = f"--executor ray needs Ray: {install_hint('ray')}"


def import_ray() -> Any:
    """``import ray``, or ``ImportError`` whose one line says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_INSTALL_HINT) from None
    return ray


class _ActorBody:
    """What one Ray actor runs: a :class:`KeyWorker` created once and kept warm."""

    def __init__(self, spec: WorkerSpec, index: int, fault: FaultInjection | None) -> None:
        self.worker = KeyWorker.from_spec(spec, index, fault)

    def info(self, precisions: Sequence[str]) -> dict[str, Any]:
        return self.worker.info(precisions)

    def measure(self, keys: Sequence[str], batch: int, precision: str) -> list[dict[str, Any]]:
        return self.worker.measure(keys, batch, precision)

    def floor(self, shape: Sequence[int], batch: int, precision: str) -> dict[str, Any]:
        return self.worker.floor(shape, batch, precision)

    def reference(self, batch: int, precision: str) -> dict[str, Any]:
        return self.worker.reference(batch, precision)

    def timing_cache_bytes(self) -> bytes:
        return self.worker.timing_cache_bytes()

    def combine_timing_caches(self, blobs: Sequence[bytes]) -> dict[str, bytes]:
        return self.worker.combine_timing_caches(blobs)

    def close(self) -> None:
        self.worker.close()


def _ray_error_line(exc: BaseException) -> str:
    """The most telling line of a Ray error (the worker's own exception when there is one)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        looks_like_error = ":" in line and head.replace(".", "").replace("_", "").isalnum() and head[:1].isupper()
        if looks_like_error and not head.startswith(("Ray", "ActorDied")):
            return line[:2000]
    return (lines[0] if lines else type(exc).__name__)[:2000]


@dataclass
class _Actor:
    slot: int
    handle: Any
    refs: list[Any] = field(default_factory=list)  # in submission order: an actor runs them in that order


class RayExecutor(Executor):
    """One Ray actor per GPU (``num_gpus=1``) or per CPU worker (``num_cpus=1``).

    Args:
        spec: what each actor creates.
        workers: number of actors; ``None``: one per GPU of the cluster (GPU) or per CPU (cpu profile).
        gpu: whether each actor takes one GPU.
        address: a running cluster (``auto`` or ``HOST:PORT``); ``None`` starts a local Ray.
        chunk_size, in_flight, fault, replacements: as for :class:`~profiler.executors.local.LocalExecutor`.
    """

    name = "ray"

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        workers: int | None,
        gpu: bool,
        address: str | None = None,
        chunk_size: int = 4,
        in_flight: int = 2,
        fault: FaultInjection | None = None,
        replacements: int | None = None,
    ) -> None:
        self.ray = import_ray()
        self.spec = spec
        self.requested = workers
        self.gpu = gpu
        self.address = address
        self.chunk_size = chunk_size
        self.in_flight = max(1, in_flight)
        self.fault = fault
        self.replacements = replacements
        self.replacements_left = 0
        self.actors: list[_Actor] = []
        self.deaths = 0
        self.workers = workers or 0
        self._owns_ray = False
        self._closed = False
        self._cls: Any = None

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
        if self.address:
            kwargs["address"] = self.address
        else:
            kwargs["num_cpus"] = self.requested or os.cpu_count() or 1
        ray.init(**kwargs)
        self._owns_ray = True

    def _options(self) -> dict[str, Any]:
        if self.gpu:
            return {"num_gpus": 1, "max_restarts": 0}
        return {"num_cpus": 1, "max_restarts": 0}

    def _new_actor(self, slot: int, fault: FaultInjection | None) -> _Actor:
        handle = self._cls.options(**self._options()).remote(self.spec, slot, fault)
        actor = _Actor(slot, handle)
        self.actors.append(actor)
        return actor

    def start(self, precisions: Sequence[str]) -> dict[str, Any]:
        ray = self.ray
        self._connect()
        if self.requested is None:
            resources = ray.cluster_resources()
            count = int(resources.get("GPU", 0) if self.gpu else resources.get("CPU", 0))
            if count < 1:
                what = "GPU" if self.gpu else "CPU"
                raise RuntimeError(f"the Ray cluster has no {what} for a worker; pass --workers N or check the cluster")
            self.workers = count
        self.replacements_left = self.workers if self.replacements is None else self.replacements
        self._cls = ray.remote(_ActorBody)
        for slot in range(self.workers):
            fault = self.fault if self.fault is not None and self.fault.worker == slot else None
            self._new_actor(slot, fault)
        infos = []
        for actor in self.actors:
            try:
                infos.append(ray.get(actor.handle.info.remote(list(precisions))))
            except Exception as exc:
                raise RuntimeError(f"Ray worker {actor.slot} could not start: {_ray_error_line(exc)}") from None
        check_refusals(infos[0])
        return infos[0]

    def _call_one(self, method: str, *args: Any) -> Any:
        last: BaseException | None = None
        for actor in list(self.actors):
            try:
                return self.ray.get(getattr(actor.handle, method).remote(*args))
            except self._death_errors() as exc:
                last = exc
                self.actors.remove(actor)
                self.deaths += 1
            except self.ray.exceptions.RayTaskError as exc:
                raise RuntimeError(f"Ray worker {actor.slot}: {_ray_error_line(exc)}") from None
        raise WorkerLost(f"no live Ray worker left ({_ray_error_line(last) if last else 'none started'})")

    def _death_errors(self) -> tuple[type[BaseException], ...]:
        ex = self.ray.exceptions
        names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "OwnerDiedError")
        return tuple(getattr(ex, n) for n in names if hasattr(ex, n))

    def floor(self, shape: Sequence[int], batch: int, precision: str) -> dict[str, Any]:
        return self._call_one("floor", list(shape), batch, precision)

    def reference(self, batch: int, precision: str) -> dict[str, Any]:
        return self._call_one("reference", batch, precision)

    def measure(self, keys: Sequence[str], batch: int, precision: str) -> Iterator[list[dict[str, Any]]]:
        ray = self.ray
        deaths = self._death_errors()
        queue = ChunkQueue(keys, self.chunk_size)
        pending: dict[Any, tuple[_Actor, Chunk]] = {}
        while queue.remaining or pending:
            for actor in self.actors:
                while len(actor.refs) < self.in_flight:
                    chunk = queue.take(spread=len(self.actors) * self.in_flight)
                    if chunk is None:
                        break
                    ref = actor.handle.measure.remote(list(chunk.keys), batch, precision)
                    actor.refs.append(ref)
                    pending[ref] = (actor, chunk)
            if not pending:
                raise WorkerLost(
                    f"every Ray worker died ({self.deaths} deaths) with {queue.remaining} keys left; "
                    "the keys measured so far are kept: run the same command again to resume"
                )
            done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            rows: list[dict[str, Any]] = []
            for ref in done:
                if ref not in pending:
                    continue  # already handled with its dead actor
                actor, chunk = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except deaths as exc:
                    rows.extend(self._handle_death(actor, ref, chunk, pending, queue, exc))
                    continue
                except ray.exceptions.RayTaskError as exc:  # an error outside any key's measurement
                    actor.refs.remove(ref)
                    message = _ray_error_line(exc)
                    rows.extend(given_up_rows([(k, message) for k in chunk.keys if queue.accept(k)]))
                    continue
                actor.refs.remove(ref)
                rows.extend(r for r in result if queue.accept(r["key"]))
            if rows:
                yield rows

    def _handle_death(
        self,
        actor: _Actor,
        ref: Any,
        chunk: Chunk,
        pending: dict[Any, tuple[_Actor, Chunk]],
        queue: ChunkQueue,
        exc: BaseException,
    ) -> list[dict[str, Any]]:
        # the actor ran its chunks in submission order; a chunk it finished before dying still counts
        held: list[Chunk] = []
        salvaged: list[dict[str, Any]] = []
        for r in actor.refs:
            c = chunk if r == ref else pending.pop(r, (None, None))[1]
            if c is None:
                continue
            if r != ref:
                try:
                    salvaged.extend(row for row in self.ray.get(r, timeout=0) if queue.accept(row["key"]))
                    continue
                except Exception:
                    pass
            held.append(c)
        actor.refs.clear()
        reason = f"Ray worker {actor.slot} died: {_ray_error_line(exc)}"
        back, given_up = queue.worker_lost([c.keys for c in held] or [chunk.keys], reason, rows_per_key=False)
        print(f"warning: {reason}; its {back} unfinished keys go to another worker", file=sys.stderr)
        if actor in self.actors:
            self.actors.remove(actor)
            self.deaths += 1
            with contextlib.suppress(Exception):
                self.ray.kill(actor.handle, no_restart=True)
            if self.replacements_left > 0:
                self.replacements_left -= 1
                self._new_actor(actor.slot, None)
        return salvaged + given_up_rows(given_up)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ray = self.ray
        try:
            idle = [a for a in self.actors if not a.refs]  # busy ones (an interrupted build) are not waited for
            if idle and self.spec.cache_folder is not None:
                blobs = ray.get([a.handle.timing_cache_bytes.remote() for a in idle])
                combine_caches(self.spec, blobs, lambda bs: self._call_one("combine_timing_caches", bs))
        except Exception as exc:
            print(f"warning: the workers' timing caches were not combined: {error_text(exc)}", file=sys.stderr)
        finally:
            for actor in self.actors:
                if not actor.refs:
                    with contextlib.suppress(Exception):
                        ray.get(actor.handle.close.remote(), timeout=30)
                with contextlib.suppress(Exception):
                    ray.kill(actor.handle, no_restart=True)
            self.actors.clear()
            if self._owns_ray:
                with contextlib.suppress(Exception):
                    ray.shutdown()


__all__ = ["RAY_INSTALL_HINT", "RayExecutor", "import_ray"]
