"""Executors: where the keys of a build are measured.

The build driver (:mod:`profiler.build`) owns the table: it alone writes rows
(``PartStore.append``, the same crash-safe parts as a local build) and drives the
progress bar. An executor only measures. Three of them share one interface,
:class:`Executor`:

- :class:`SerialExecutor` (``--executor serial``, the default): one backend in
  this process, keys one after the other.
- :class:`LocalExecutor` (``--executor local``): one worker process per GPU
  (``--gpus 0,1,...``; ``CUDA_VISIBLE_DEVICES`` set per worker) or, on the cpu
  device profile, ``--workers N`` processes; started with the ``spawn`` method,
  rows sent back as plain dicts over one pipe per worker.
- :class:`RayExecutor` (``--executor ray``): one Ray actor per GPU
  (``num_gpus=1``), or per CPU worker (``num_cpus=1``) on the cpu profile.

Every worker (:class:`KeyWorker`) creates its backend once and keeps it warm
between keys (and, with drift correction, its drift reference graph: one per
batch and precision, timed between the samples of every key it measures); with
TensorRT each worker has its own timing cache file, and the
caches are combined into one file when the executor closes. Keys go out in small
chunks (``--chunk-size``), at most ``in_flight`` chunks per worker, so a free
worker always has the next chunk at hand. A key whose measurement raises an
ordinary exception is recorded as failed at once, with its error. A worker that
dies (killed, out of memory, a crash in the engine) has its unfinished keys sent
to another worker and is replaced while the replacement budget lasts; a key
that was being measured when its worker died twice is recorded as failed.

Fault injection (tests): with ``LATENCY_BUILD_FAULT_KILL=W:N`` in the driver's
environment, worker ``W`` (numbered from 0) exits abruptly (``os._exit``) before
measuring its ``N+1``-th key, in its first incarnation only (its replacement
runs normally). The variable is read by the driver and handed to that worker,
so it also reaches workers of a Ray cluster started elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variable of the fault-injection hook (``W:N``: worker W dies before its key N+1).
FAULT_ENV = "LATENCY_BUILD_FAULT_KILL"

#: A key is recorded as failed when the worker measuring it died this many times.
MAX_WORKER_DEATHS_PER_KEY = 2

#: Exit status of a worker process that ends itself through the fault-injection hook.
FAULT_EXIT_STATUS = 70

_TIMING_CACHE_NAME = "tensorrt.timing-cache"


# --------------------------------------------------------------------------- worker side
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
        backend: backend name (``onnxruntime``, ``torch``, ``tensorrt``).
        device: ``"cpu"`` or ``"cuda"`` (a GPU worker sees only its own GPU).
        options: keyword options of :func:`kernels_bench.backends.get_backend`.
        timing: fields of :class:`kernels_bench.timing.TimingSettings`.
        env: environment variables every worker sets before importing an engine.
        timing_cache_dir: TensorRT: folder of the per-worker timing caches and of the combined one.
        timing_cache_seed: TensorRT: bytes of the combined cache of earlier runs, each worker's start.
        drift_reference: the drift reference graph's key, timed between the samples of
            every key (``None``: no drift reference).
        drift_ratio: length of a reference sample over a measured sample.
    """

    backend: str
    device: str
    options: dict[str, Any]
    timing: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    timing_cache_dir: str | None = None
    timing_cache_seed: bytes | None = None
    drift_reference: str | None = None
    drift_ratio: float = 1.0


#: Environment variable naming the CPUs a local worker pins its backend to (set per worker by the driver).
WORKER_CPUS_ENV = "PROFILER_WORKER_CPUS"


def worker_timing_cache_path(directory: str | Path, index: int) -> Path:
    """The timing-cache file of worker ``index``."""
    return Path(directory) / f"tensorrt.worker-{index}.timing-cache"


def combined_timing_cache_path(directory: str | Path) -> Path:
    """The timing-cache file that combines every worker's cache."""
    return Path(directory) / _TIMING_CACHE_NAME


def error_line(exc: BaseException) -> str:
    """``"Type: first line of the message"``, at most 2000 characters: the error column of a failed row."""
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:2000]


def _spread(result: Any) -> dict[str, Any]:
    """The statistics of a timing result besides its trimmed mean, as stored in metadata entries."""
    return {name: getattr(result, name) for name in ("median_ms", "min_ms", "max_ms", "std_ms", "cv")}


def floor_entry(result: Any, shape: Sequence[int]) -> dict[str, Any]:
    """The metadata ``floor`` of a table from the identity graph's timing result (ms per batch)."""
    return {"input_shape": [int(d) for d in shape], "trimmed_mean_ms": result.trimmed_mean_ms, **_spread(result)}


def reference_entry(result: Any, key: str, ratio: float) -> dict[str, Any]:
    """The metadata ``drift_reference`` of a table: the reference graph timed alone (ms per batch)."""
    return {
        "key": key,
        "ratio": ratio,
        "latency_ms": result.trimmed_mean_ms,
        **_spread(result),
        "n_samples": len(result.samples_ms),
    }


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
    ) -> None:
        self.backend = backend
        self.backend_name = backend_name
        self.timing = timing
        self.index = index
        self.fault = fault if fault is not None and fault.worker == index else None
        self.keys_started = 0
        self.drift_reference = drift_reference
        self.drift_ratio = drift_ratio
        self._references: dict[tuple[int, str], Any] = {}

    @classmethod
    def from_spec(cls, spec: WorkerSpec, index: int, fault: FaultInjection | None = None) -> KeyWorker:
        """Create the worker's backend from ``spec`` (in the worker's own process)."""
        for name, value in spec.env.items():
            os.environ[name] = value
        from kernels_bench.backends import get_backend
        from kernels_bench.timing import TimingSettings

        options = dict(spec.options)
        cpus = os.environ.get(WORKER_CPUS_ENV)
        if cpus and spec.backend in ("onnxruntime", "torch"):
            from kernels_bench.backends.base import parse_cpus

            options["cpus"] = parse_cpus(cpus)
        if spec.backend == "tensorrt" and spec.timing_cache_dir:
            path = worker_timing_cache_path(spec.timing_cache_dir, index)
            if spec.timing_cache_seed and not path.exists():
                from kernels_bench.backends.tensorrt_backend import write_atomic

                write_atomic(path, spec.timing_cache_seed)
            options["timing_cache"] = path
        backend = get_backend(spec.backend, device=spec.device, **options)
        return cls(
            backend,
            spec.backend,
            TimingSettings(**spec.timing),
            index=index,
            fault=fault,
            drift_reference=spec.drift_reference,
            drift_ratio=spec.drift_ratio,
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

        result = measure_floor(self.backend, tuple(shape), batch, precision, self.timing)
        return floor_entry(result, shape)

    def _reference(self, batch: int, precision: str) -> Any:
        """The drift reference loaded for (batch, precision), or ``None`` without drift correction."""
        if self.drift_reference is None:
            return None
        ref = self._references.get((batch, precision))
        if ref is None:
            from kernels_bench.measure import DriftReference

            ref = DriftReference(
                self.backend, self.drift_reference, batch=batch, precision=precision, ratio=self.drift_ratio
            )
            self._references[(batch, precision)] = ref
        return ref

    def reference(self, batch: int, precision: str) -> dict[str, Any]:
        """Time the drift reference alone: the table's reference speed (its ``drift_reference`` entry).

        Three times the protocol's repeats, so that the speed every key is brought to
        is known better than any one key's.
        """
        import dataclasses

        ref = self._reference(batch, precision)
        if ref is None:
            raise ValueError("this worker has no drift reference: start it with drift_reference=KEY")
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
        try:
            reference = self._reference(batch, precision)
            result = measure.measure_keys(self.backend, [block_key], batch, precision, self.timing, reference=reference)
            return result_row(block_key, result)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one bad key must not end a multi-day build
            _free_device_memory()
            return result_row(block_key, error=error_line(exc))

    def measure(self, keys: Sequence[str], batch: int, precision: str) -> list[dict[str, Any]]:
        """A chunk of keys -> their rows, in order."""
        return [self.measure_one(k, batch, precision) for k in keys]

    def timing_cache_bytes(self) -> bytes:
        """This worker's TensorRT timing cache, serialized (empty for other backends)."""
        cache = getattr(self.backend, "timing_cache", None)
        if cache is None:
            return b""
        cache.save()
        return cache.serialize()

    def combine_timing_caches(self, blobs: Sequence[bytes]) -> bytes:
        """Combine serialized TensorRT timing caches (``ITimingCache.combine``) into one."""
        if self.backend_name != "tensorrt":
            return b""
        from kernels_bench.backends.tensorrt_backend import TimingCache

        trt = self.backend._trt
        config = trt.Builder(self.backend._logger).create_builder_config()
        combined = TimingCache(None)
        combined.attach(config)
        for blob in blobs:
            if blob and not combined.merge_bytes(blob):
                print(f"warning: worker {self.index}: TensorRT refused a timing cache to combine", file=sys.stderr)
        return combined.serialize()

    def close(self) -> None:
        for ref in self._references.values():
            with contextlib.suppress(Exception):
                ref.close()
        self._references.clear()
        self.backend.close()


def _free_device_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- scheduling
@dataclass(frozen=True)
class Chunk:
    """Keys sent to one worker in one message."""

    id: int
    keys: tuple[str, ...]


class ChunkQueue:
    """The keys of one table still to measure, handed out in chunks; the retry rule for dead workers.

    Each key is accepted once (:meth:`accept` refuses a second row for a key).
    When a worker dies, :meth:`worker_died` puts its unfinished keys back: the keys
    it may have been measuring are charged one death and come back one per chunk
    (so that the next death names the culprit); keys it had not started come back
    uncharged. A key charged :data:`MAX_WORKER_DEATHS_PER_KEY` times is given up.
    """

    def __init__(self, keys: Sequence[str], chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk size must be at least 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._next_id = 0
        self._queue: deque[Chunk] = deque()
        self._open: set[str] = set(keys)
        self._unsent = 0
        self.deaths: dict[str, int] = {}
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), chunk_size):
            self._queue.append(self._chunk(keys[i : i + chunk_size]))

    def _chunk(self, keys: Sequence[str]) -> Chunk:
        self._next_id += 1
        self._unsent += len(keys)
        return Chunk(self._next_id, tuple(keys))

    @property
    def remaining(self) -> int:
        """Keys without a row yet."""
        return len(self._open)

    @property
    def unsent(self) -> int:
        """Keys waiting in the queue (not held by any worker)."""
        return max(0, self._unsent)

    def take(self, spread: int = 1) -> Chunk | None:
        """The next chunk to send, or ``None`` when every key is sent or done.

        ``spread``: the number of chunks the workers hold at most (workers x chunks in flight).
        Near the end chunks shrink, at most ``unsent / spread`` keys, so that no
        worker idles while another still holds several keys.
        """
        while self._queue:
            chunk = self._queue.popleft()
            self._unsent -= len(chunk.keys)
            keys = tuple(k for k in chunk.keys if k in self._open)
            if not keys:
                continue
            limit = max(1, min(len(keys), (self.unsent + len(keys)) // max(1, spread)))
            if limit < len(keys):
                self._queue.appendleft(self._chunk(keys[limit:]))
                keys = keys[:limit]
            return chunk if keys == chunk.keys else Chunk(chunk.id, keys)
        return None

    def accept(self, key: str) -> bool:
        """Record that ``key`` has its row; ``False`` when it already had one (drop the duplicate)."""
        if key not in self._open:
            return False
        self._open.discard(key)
        return True

    def worker_died(self, suspects: Sequence[str], untouched: Sequence[str], reason: str) -> list[tuple[str, str]]:
        """Put back the keys of a dead worker; returns ``(key, error)`` of the keys given up (now closed).

        ``suspects``: keys the worker may have been measuring when it died (charged one death);
        ``untouched``: keys it held but had not started (put back uncharged, in front).
        """
        given_up: list[tuple[str, str]] = []
        back: list[Chunk] = []
        for key in suspects:
            if key not in self._open:
                continue
            self.deaths[key] = self.deaths.get(key, 0) + 1
            if self.deaths[key] >= MAX_WORKER_DEATHS_PER_KEY:
                self._open.discard(key)
                given_up.append(
                    (key, f"WorkerDied: the worker measuring this key died {self.deaths[key]} times ({reason})")
                )
            else:
                back.append(self._chunk([key]))
        rest = [k for k in untouched if k in self._open]
        for i in range(0, len(rest), self.chunk_size):
            back.append(self._chunk(rest[i : i + self.chunk_size]))
        self._queue.extendleft(reversed(back))
        return given_up


def _given_up_rows(given_up: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    from tables.schema import result_row

    return [result_row(key, error=message) for key, message in given_up]


# --------------------------------------------------------------------------- interface
class Executor(ABC):
    """Measures keys for the build driver; yields rows, writes nothing.

    Use: :meth:`start` once (returns the backend's description), then per table
    :meth:`floor` and :meth:`measure`, then :meth:`close` (also a context manager).
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
        """Stop the workers (combining TensorRT timing caches first); idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Keys one after the other on one backend in this process (the default)."""

    name = "serial"

    def __init__(
        self,
        backend: Any,
        backend_name: str,
        timing: Any,
        *,
        drift_reference: str | None = None,
        drift_ratio: float = 1.0,
    ) -> None:
        self.worker = KeyWorker(backend, backend_name, timing, drift_reference=drift_reference, drift_ratio=drift_ratio)
        self.workers = 1

    def start(self, precisions: Sequence[str]) -> dict[str, Any]:
        for p in precisions:
            self.worker.backend.check_precision(p)
        return self.worker.info(precisions)

    def floor(self, shape: Sequence[int], batch: int, precision: str) -> dict[str, Any]:
        return self.worker.floor(shape, batch, precision)

    def reference(self, batch: int, precision: str) -> dict[str, Any]:
        return self.worker.reference(batch, precision)

    def measure(self, keys: Sequence[str], batch: int, precision: str) -> Iterator[list[dict[str, Any]]]:
        for key in keys:
            yield [self.worker.measure_one(key, batch, precision)]

    def close(self) -> None:
        self.worker.close()


def _check_refusals(info: Mapping[str, Any]) -> None:
    refusals = info.get("refusals") or {}
    if refusals:
        from kernels_bench.backends import PrecisionNotSupported

        raise PrecisionNotSupported(next(iter(refusals.values())))


# --------------------------------------------------------------------------- local processes
def _process_main(index: int, spec: WorkerSpec, slot_env: dict[str, str], conn: Any, fault: Any) -> None:
    """Body of a local worker process: create the backend, then answer the driver's messages."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    os.environ.update(slot_env)
    try:
        worker = KeyWorker.from_spec(spec, index, fault)
    except Exception as exc:
        conn.send(("error", None, error_line(exc)))
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
                conn.send(("error", None, error_line(exc)))
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


class WorkerLost(RuntimeError):
    """Every worker died and none could be replaced."""


class LocalExecutor(Executor):
    """One worker process per GPU (or per CPU worker) on this machine, without Ray.

    Args:
        spec: what each worker creates.
        slots: one environment per worker (e.g. ``{"CUDA_VISIBLE_DEVICES": "1"}``); its length is the worker count.
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
        chunk_size: int = 4,
        in_flight: int = 2,
        fault: FaultInjection | None = None,
        replacements: int | None = None,
    ) -> None:
        if not slots:
            raise ValueError("the local executor needs at least one worker")
        self.spec = spec
        self.slots = [dict(s) for s in slots]
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
    def _spawn(self, slot: int, fault: FaultInjection | None) -> _Proc:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_process_main,
            args=(slot, self.spec, self.slots[slot], child, fault),
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
        _check_refusals(info)
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
        status = proc.process.exitcode
        reason = f"worker {proc.slot} exited with status {status}"
        held = [keys for _, keys in sorted(proc.chunks.items())]  # oldest chunk first: the one being measured
        suspects = held[0][:1] if held and held[0] else []
        untouched = [k for keys in held for k in keys if k not in suspects]
        print(
            f"warning: {reason}; its {len(suspects) + len(untouched)} unfinished keys go to another worker",
            file=sys.stderr,
        )
        proc.chunks.clear()
        self._bury(proc)
        self._replace(proc.slot, precisions)
        return _given_up_rows(queue.worker_died(suspects, untouched, reason))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # a worker still holding chunks is busy (an interrupted build): it is stopped, not waited for;
            # its timing-cache file was saved after its last engine build
            live = [p for p in self.procs if p.ready and not p.chunks and p.process.is_alive()]
            if self.spec.backend == "tensorrt" and self.spec.timing_cache_dir and live:
                blobs = [self._ask(p, ("cache",), "cache") for p in live]
                _combine_timing_caches(
                    self.spec.timing_cache_dir, blobs, lambda bs: self._ask(live[0], ("combine", bs), "combined")
                )
        except Exception as exc:
            print(f"warning: the workers' timing caches were not combined: {error_line(exc)}", file=sys.stderr)
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


def _combine_timing_caches(directory: str, blobs: Sequence[bytes], combine: Any) -> Path:
    """Combine the workers' TensorRT timing caches (and the combined file of earlier runs) in one worker."""
    from kernels_bench.backends.tensorrt_backend import write_atomic

    blobs = [b for b in blobs if b]
    path = combined_timing_cache_path(directory)
    if path.is_file():
        blobs.append(path.read_bytes())
    data = combine(blobs)
    if data:
        write_atomic(path, data)
    return path


def read_timing_cache_seed(directory: str | None) -> bytes | None:
    """The combined TensorRT timing cache of earlier runs in ``directory`` (``None`` when absent)."""
    if not directory:
        return None
    path = combined_timing_cache_path(directory)
    return path.read_bytes() if path.is_file() else None


# --------------------------------------------------------------------------- Ray
RAY_INSTALL_HINT = "--executor ray needs Ray: pip install -e '.[ray]'"


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

    def combine_timing_caches(self, blobs: Sequence[bytes]) -> bytes:
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
        chunk_size, in_flight, fault, replacements: as for :class:`LocalExecutor`.
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
        _check_refusals(infos[0])
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
                    rows.extend(_given_up_rows([(k, message) for k in chunk.keys if queue.accept(k)]))
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
        # the actor ran its chunks in submission order: the oldest unfinished one is the one it died on
        held: list[Chunk] = []
        salvaged: list[dict[str, Any]] = []
        for r in actor.refs:
            c = chunk if r == ref else pending.pop(r, (None, None))[1]
            if c is None:
                continue
            if r != ref:
                try:  # a chunk it finished before dying still counts
                    salvaged.extend(row for row in self.ray.get(r, timeout=0) if queue.accept(row["key"]))
                    continue
                except Exception:
                    pass
            held.append(c)
        actor.refs.clear()
        suspects = list(held[0].keys) if held else list(chunk.keys)
        untouched = [k for c in held[1:] for k in c.keys]
        reason = f"Ray worker {actor.slot} died: {_ray_error_line(exc)}"
        print(
            f"warning: {reason}; its {len(suspects) + len(untouched)} unfinished keys go to another worker",
            file=sys.stderr,
        )
        if actor in self.actors:
            self.actors.remove(actor)
            self.deaths += 1
            with contextlib.suppress(Exception):
                self.ray.kill(actor.handle, no_restart=True)
            if self.replacements_left > 0:
                self.replacements_left -= 1
                self._new_actor(actor.slot, None)
        return salvaged + _given_up_rows(queue.worker_died(suspects, untouched, reason))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ray = self.ray
        try:
            idle = [a for a in self.actors if not a.refs]  # busy ones (an interrupted build) are not waited for
            if self.spec.backend == "tensorrt" and self.spec.timing_cache_dir and idle:
                blobs = ray.get([a.handle.timing_cache_bytes.remote() for a in idle])
                _combine_timing_caches(
                    self.spec.timing_cache_dir, blobs, lambda bs: self._call_one("combine_timing_caches", bs)
                )
        except Exception as exc:
            print(f"warning: the workers' timing caches were not combined: {error_line(exc)}", file=sys.stderr)
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
