"""``--executor local``: one worker process per GPU (or per CPU worker) on this machine, without Ray.

Workers are started with the ``spawn`` method; each has one duplex pipe to the
driver, over which it receives chunks of keys and sends one row per key, as a
plain dict, as soon as the key is measured.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from profiler.executors.base import Executor, WorkerLost, check_refusals, combine_caches
from profiler.executors.queue import ChunkQueue, given_up_rows
from profiler.executors.worker import FaultInjection, KeyWorker, WorkerSpec
from tables.errors import error_text


def _process_main(index: int, spec: WorkerSpec, slot_env: dict[str, str], conn: Any, fault: Any) -> None:
    """Body of a local worker process: create the backend, then answer the driver's messages."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    os.environ.update(slot_env)
    try:
        worker = KeyWorker.from_spec(spec, index, fault)
    except Exception as exc:
        conn.send(("error", None, error_text(exc)))
        return
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                break
            kind = message[0]
            if kind == "stop":
                break
            try:
                if kind == "info":
                    conn.send(("info", None, worker.info(message[1])))
                elif kind == "chunk":
                    _, chunk_id, keys, batch, precision = message
                    for key in keys:
                        conn.send(("row", chunk_id, worker.measure_one(key, batch, precision)))
                    conn.send(("done", chunk_id, None))
                elif kind == "floor":
                    conn.send(("floor", None, worker.floor(*message[1:])))
                elif kind == "reference":
                    conn.send(("reference", None, worker.reference(*message[1:])))
                elif kind == "cache":
                    conn.send(("cache", None, worker.timing_cache_bytes()))
                elif kind == "combine":
                    conn.send(("combined", None, worker.combine_timing_caches(message[1])))
            except Exception as exc:
                conn.send(("error", None, error_text(exc)))
    finally:
        with contextlib.suppress(Exception):
            worker.close()
        conn.close()


@dataclass
class _Proc:
    slot: int
    process: Any
    conn: Any
    ready: bool = False
    chunks: dict[int, list[str]] = field(default_factory=dict)  # chunk id -> keys without a row yet, in order


class LocalExecutor(Executor):
    """One worker process per GPU (or per CPU worker) on this machine.

    Args:
        spec: what each worker creates.
        slots: one environment per worker (e.g. ``{"CUDA_VISIBLE_DEVICES": "1"}``); its length is the worker count.
        cpu_shares: the CPUs each worker is pinned to (one list per slot), or ``None``: the spec's own.
        chunk_size: keys per message.
        in_flight: chunks a worker holds at most (the one it measures and the next).
        fault: fault-injection hook.
        replacements: how many dead workers may be replaced in all (default: one per worker).
    """

    name = "local"

    def __init__(
        self,
        spec: WorkerSpec,
        slots: Sequence[Mapping[str, str]],
        *,
        cpu_shares: Sequence[Sequence[int]] | None = None,
        chunk_size: int = 4,
        in_flight: int = 2,
        fault: FaultInjection | None = None,
        replacements: int | None = None,
    ) -> None:
        if not slots:
            raise ValueError("the local executor needs at least one worker")
        if cpu_shares is not None and len(cpu_shares) != len(slots):
            raise ValueError(f"{len(cpu_shares)} CPU shares for {len(slots)} workers: give one per worker")
        self.spec = spec
        self.slots = [dict(s) for s in slots]
        self.cpu_shares = [tuple(c) for c in cpu_shares] if cpu_shares is not None else None
        self.workers = len(self.slots)
        self.chunk_size = chunk_size
        self.in_flight = max(1, in_flight)
        self.fault = fault
        self.replacements_left = self.workers if replacements is None else replacements
        self.procs: list[_Proc] = []
        self.deaths = 0
        self._closed = False
        import multiprocessing

        self._ctx = multiprocessing.get_context("spawn")

    # ----- processes
    def _slot_spec(self, slot: int) -> WorkerSpec:
        return self.spec if self.cpu_shares is None else self.spec.for_cpus(self.cpu_shares[slot])

    def _spawn(self, slot: int, fault: FaultInjection | None) -> _Proc:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_process_main,
            args=(slot, self._slot_spec(slot), self.slots[slot], child, fault),
            name=f"latency-worker-{slot}",
            daemon=True,
        )
        process.start()
        child.close()
        proc = _Proc(slot, process, parent)
        self.procs.append(proc)
        return proc

    def _recv(self, proc: _Proc, timeout: float | None = None) -> tuple[str, Any, Any] | None:
        """The next message of ``proc``; ``None`` when it died (``timeout``: None waits for ever)."""
        from multiprocessing.connection import wait

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if proc.conn.poll():
                try:
                    return proc.conn.recv()
                except (EOFError, OSError):
                    return None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([proc.conn, proc.process.sentinel], left)
            if not ready and deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"worker {proc.slot} did not answer within {timeout:.0f} s")
            if proc.conn not in ready and proc.process.sentinel in ready and not proc.conn.poll():
                return None

    def _request(self, message: tuple, answer: str) -> Any:
        """Send ``message`` to the first live worker and return its answer's payload."""
        for proc in list(self.procs):
            if not proc.ready:
                continue
            try:
                return self._ask(proc, message, answer)
            except WorkerLost:
                self._bury(proc)
        raise WorkerLost("no live worker left to answer; see the messages above")

    def start(self, precisions: Sequence[str]) -> dict[str, Any]:
        for slot in range(self.workers):
            fault = self.fault if self.fault is not None and self.fault.worker == slot else None
            self._spawn(slot, fault)
        info: dict[str, Any] | None = None
        for proc in list(self.procs):
            self._send(proc, ("info", list(precisions)))
            reply = self._recv(proc)
            if reply is None:
                raise RuntimeError(f"worker {proc.slot} exited while starting (exit status {proc.process.exitcode})")
            kind, _, payload = reply
            if kind == "error":
                raise RuntimeError(f"worker {proc.slot} could not start its backend: {payload}")
            proc.ready = True
            info = info or payload
        assert info is not None
        check_refusals(info)
        if self.cpu_shares is not None:  # the table records every worker's share, not one worker's
            settings = dict(info["settings"])
            settings["cpus"] = sorted({c for share in self.cpu_shares for c in share})
            settings["cpus_per_worker"] = [list(share) for share in self.cpu_shares]
            info = {**info, "settings": settings}
        return info

    @staticmethod
    def _send(proc: _Proc, message: tuple) -> bool:
        try:
            proc.conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            return False
        return True

    def _bury(self, proc: _Proc) -> None:
        with contextlib.suppress(Exception):
            proc.conn.close()
        proc.process.join(timeout=1)
        if proc in self.procs:
            self.procs.remove(proc)
        self.deaths += 1

    def _replace(self, slot: int, precisions: Sequence[str]) -> None:
        if self.replacements_left <= 0:
            return
        self.replacements_left -= 1
        proc = self._spawn(slot, None)
        self._send(proc, ("info", list(precisions)))  # its answer marks it ready

    # ----- measuring
    def floor(self, shape: Sequence[int], batch: int, precision: str) -> dict[str, Any]:
        return self._request(("floor", list(shape), batch, precision), "floor")

    def reference(self, batch: int, precision: str) -> dict[str, Any]:
        return self._request(("reference", batch, precision), "reference")

    def measure(self, keys: Sequence[str], batch: int, precision: str) -> Iterator[list[dict[str, Any]]]:
        from multiprocessing.connection import wait

        queue = ChunkQueue(keys, self.chunk_size)
        while queue.remaining or any(p.chunks for p in self.procs):
            for proc in self.procs:
                while proc.ready and len(proc.chunks) < self.in_flight:
                    chunk = queue.take(spread=self.workers * self.in_flight)
                    if chunk is None:
                        break
                    proc.chunks[chunk.id] = list(chunk.keys)
                    if not self._send(proc, ("chunk", chunk.id, chunk.keys, batch, precision)):
                        break  # it died: found below, and its keys go back to the queue
            if not self.procs:
                raise WorkerLost(
                    f"every worker died ({self.deaths} deaths) with {queue.remaining} keys left; "
                    "the keys measured so far are kept: run the same command again to resume"
                )
            wait([p.conn for p in self.procs] + [p.process.sentinel for p in self.procs], timeout=5.0)
            rows: list[dict[str, Any]] = []
            for proc in list(self.procs):
                alive = proc.process.is_alive()  # read before draining: a dead worker's pipe is complete
                lost = self._drain(proc, queue, rows)
                if lost or not alive:
                    rows.extend(self._handle_death(proc, queue, [precision]))
            if rows:
                yield rows

    def _drain(self, proc: _Proc, queue: ChunkQueue, rows: list[dict[str, Any]]) -> bool:
        """Read every message ``proc`` has sent; accepted rows go to ``rows``. True when the worker is lost."""
        while proc.conn.poll():
            try:
                kind, chunk_id, payload = proc.conn.recv()
            except (EOFError, OSError):
                return True
            if kind == "row":
                unfinished = proc.chunks.get(chunk_id)
                if unfinished is not None and payload["key"] in unfinished:
                    unfinished.remove(payload["key"])
                if queue.accept(payload["key"]):
                    rows.append(payload)
            elif kind == "done":
                proc.chunks.pop(chunk_id, None)
            elif kind == "info":
                proc.ready = True
            elif kind == "error":  # the worker could not start, or failed outside any key's measurement
                print(f"warning: worker {proc.slot}: {payload}", file=sys.stderr)
                proc.process.terminate()
                return True
        return False

    def _handle_death(self, proc: _Proc, queue: ChunkQueue, precisions: Sequence[str]) -> list[dict[str, Any]]:
        proc.process.join(timeout=5)
        reason = f"worker {proc.slot} exited with status {proc.process.exitcode}"
        held = [keys for _, keys in sorted(proc.chunks.items())]  # oldest chunk first: the one being measured
        back, given_up = queue.worker_lost(held, reason, rows_per_key=True)
        print(f"warning: {reason}; its {back} unfinished keys go to another worker", file=sys.stderr)
        proc.chunks.clear()
        self._bury(proc)
        self._replace(proc.slot, precisions)
        return given_up_rows(given_up)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # a worker still holding chunks is busy (an interrupted build): it is stopped, not waited for;
            # its timing-cache file was saved after its last engine build
            live = [p for p in self.procs if p.ready and not p.chunks and p.process.is_alive()]
            if live and self.spec.cache_folder is not None:
                blobs = [self._ask(p, ("cache",), "cache") for p in live]
                combine_caches(self.spec, blobs, lambda bs: self._ask(live[0], ("combine", bs), "combined"))
        except Exception as exc:
            print(f"warning: the workers' timing caches were not combined: {error_text(exc)}", file=sys.stderr)
        finally:
            for proc in self.procs:
                if proc.chunks:
                    proc.process.terminate()
                else:
                    self._send(proc, ("stop",))
            for proc in self.procs:
                proc.process.join(timeout=5)
                if proc.process.is_alive():
                    proc.process.terminate()
                    proc.process.join(timeout=5)
                with contextlib.suppress(Exception):
                    proc.conn.close()
            self.procs.clear()

    def _ask(self, proc: _Proc, message: tuple, answer: str) -> Any:
        """Send ``message`` to ``proc`` and return the payload of its ``answer`` (skipping stale messages)."""
        if not self._send(proc, message):
            raise WorkerLost(f"worker {proc.slot} died")
        while True:
            reply = self._recv(proc, timeout=600)
            if reply is None:
                raise WorkerLost(f"worker {proc.slot} died")
            if reply[0] == "error":
                raise RuntimeError(f"worker {proc.slot}: {reply[2]}")
            if reply[0] == answer:
                return reply[2]


__all__ = ["LocalExecutor"]
