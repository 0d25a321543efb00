"""The scale-out plan of a build: which executor, how many workers, how keys are chunked, and what it will cost.

:func:`make_plan` checks the scale-out options against each other and the
device profile; :func:`make_executor` creates the executor of a plan;
:func:`estimated_key_cost_s` and :func:`print_dry_run` are what ``--dry-run``
shows: key counts, the time it will take on one worker and divided over the
plan's workers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernels_bench.config import BackendConfig
from profiler.devices import DeviceProfile
from tables.cli import UsageError
from tables.host import logical_cpus
from tables.key import BlockKey

if TYPE_CHECKING:  # pragma: no cover
    from kernels_bench.timing import TimingSettings
    from profiler.executors import Executor

#: Per-key wall-clock cost (s) used by --dry-run when nothing was measured yet:
#: export + compile + warm-up + 30 timed runs. TensorRT is dominated by the engine build.
DEFAULT_KEY_COST_S = {"tensorrt": 6.0, "onnxruntime": 0.35, "torch": 0.25}
EXECUTORS = ("serial", "local", "ray")
DEFAULT_CHUNK_SIZE = 4


@dataclass
class Plan:
    """How the keys are measured: the executor, its number of workers, keys per chunk, GPUs, CPU shares."""

    executor: str
    workers: int
    chunk_size: int
    gpus: list[str] | None = None
    note: str = ""
    address: str | None = None
    cpu_shares: list[list[int]] | None = None


def parse_gpus(text: str) -> list[str]:
    """``"0,1,3"`` -> ``["0", "1", "3"]`` (each GPU once)."""
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise UsageError(f"--gpus {text!r} is not a list of GPU indices: write e.g. --gpus 0,1,2,3")
    if len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus {text!r} names a GPU twice: give each GPU once")
    return gpus


def cpu_shares(cpus: Sequence[int], workers: int) -> list[list[int]]:
    """Split ``cpus`` into ``workers`` contiguous shares of (nearly) equal size; a usage error if too few."""
    if len(cpus) < workers:
        raise UsageError(f"--cpus names {len(cpus)} CPU(s) for {workers} workers: name at least one per worker")
    base, extra = divmod(len(cpus), workers)
    shares, start = [], 0
    for i in range(workers):
        size = base + (1 if i < extra else 0)
        shares.append(list(cpus[start : start + size]))
        start += size
    return shares


def make_plan(
    *,
    executor: str,
    config: BackendConfig,
    profile: DeviceProfile,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    gpus: str | None = None,
    address: str | None = None,
    detected: Mapping[str, Any] | None = None,
) -> Plan:
    """Check the scale-out options against each other and decide the number of workers.

    ``detected`` (device facts) is needed only to count the GPUs of ``--executor
    local`` on a GPU profile without ``--gpus``.
    """
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if chunk_size < 1:
        raise UsageError(f"--chunk-size must be at least 1, got {chunk_size}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if address and executor != "ray":
        raise UsageError("--address is for --executor ray: add --executor ray or drop --address")
    if gpus and executor != "local":
        raise UsageError("--gpus is for --executor local (Ray places one actor per GPU itself)")
    if config.cpus and executor == "ray":
        raise UsageError("--cpus is for the serial and local executors (Ray places its workers itself)")
    if executor == "serial":
        if workers not in (None, 1):
            raise UsageError("--workers needs --executor local or --executor ray")
        return Plan("serial", 1, chunk_size)
    cpu = profile.kind == "cpu"
    if cpu and gpus:
        raise UsageError("--gpus needs a GPU device profile; on cpu use --workers N")
    per_core = max(1, logical_cpus() // max(1, config.threads))
    if executor == "local":
        if cpu:
            plan = Plan("local", workers or per_core, chunk_size)
            if config.cpus:
                plan.cpu_shares = cpu_shares(list(config.cpus), plan.workers)
            return plan
        if workers is not None:
            raise UsageError("--executor local on a GPU runs one worker per GPU: choose them with --gpus 0,1,...")
        if gpus:
            chosen = parse_gpus(gpus)
        else:
            count = int((detected or {}).get("gpu_count") or 0)
            if count < 1:
                raise UsageError("--executor local found no GPU on this machine: name them with --gpus 0,1,...")
            chosen = [str(i) for i in range(count)]
        return Plan("local", len(chosen), chunk_size, gpus=chosen)
    if workers:
        return Plan("ray", workers, chunk_size, address=address)
    if cpu and not address:
        return Plan("ray", per_core, chunk_size, address=address)
    note = "one actor per " + ("CPU" if cpu else "GPU") + " of the cluster"
    return Plan("ray", 0, chunk_size, note=note, address=address)


def make_executor(
    plan: Plan,
    config: BackendConfig,
    timing: TimingSettings,
    *,
    drift_reference: str | None,
    cache_base: Path,
    boundary: str = "none",
) -> Executor:
    """The executor of ``plan``; its workers create their backend from ``config`` when it starts.

    ``cache_base`` is the folder under which the backend keeps state its workers
    share (TensorRT timing caches: ``<cache_base>/timing-cache``).
    """
    from kernels_bench.backends import backend_class
    from profiler.executors import (
        LocalExecutor,
        RayExecutor,
        SerialExecutor,
        WorkerSpec,
        fault_from_environment,
    )

    cls = backend_class(config.backend)
    folder = cls.cache_folder(Path(cache_base).resolve())
    env: dict[str, str] = {}
    if config.device_kind == "cpu" and plan.executor != "serial":  # one worker per core: --threads threads each
        env = {name: str(config.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    spec = WorkerSpec(
        config=config,
        timing=dict(timing.to_dict()),
        env=env,
        cache_folder=folder,
        cache_seeds=cls.cache_seeds(folder) if plan.executor == "ray" else {},
        drift_reference=drift_reference,
        boundary=boundary,
    )
    if plan.executor == "serial":
        return SerialExecutor(spec)
    try:
        fault = fault_from_environment()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if plan.executor == "local":
        slots = [{"CUDA_VISIBLE_DEVICES": g} for g in plan.gpus] if plan.gpus else [{} for _ in range(plan.workers)]
        return LocalExecutor(spec, slots, cpu_shares=plan.cpu_shares, chunk_size=plan.chunk_size, fault=fault)
    try:
        return RayExecutor(
            spec,
            workers=plan.workers or None,
            gpu=config.device_kind == "cuda",
            address=plan.address,
            chunk_size=plan.chunk_size,
            fault=fault,
        )
    except ImportError as exc:
        raise UsageError(str(exc)) from None


# --------------------------------------------------------------------------- estimates
#: How much a key costs with each boundary method, against the key alone (the default estimate): in_context and
#: differential time one more graph of about the key's size per key, identity a small graph per output shape.
BOUNDARY_COST_FACTOR: dict[str, float] = {"none": 1.0, "identity": 1.1, "in_context": 2.0, "differential": 2.0}


def estimated_key_cost_s(
    out_dir: Path, table_name: str, backend: str, *, drift_correct: bool = False, boundary: str = "none"
) -> tuple[float, str]:
    """Per-key wall time: the median of what this output already measured (boundary graphs included), else a
    default.

    The default assumes the timed runs are about half of a key's cost, which drift
    correction doubles (the reference is timed as long as the key), times the
    boundary method's :data:`BOUNDARY_COST_FACTOR`.
    """
    try:
        from tables.store import PartStore

        frame = PartStore(out_dir, table_name, None).rows()
    except (OSError, ValueError):
        frame = None
    if frame is not None and len(frame):
        ok = frame[frame["status"] == "ok"]
        if len(ok):
            extra = ok["boundary_s"].fillna(0.0) if "boundary_s" in ok else 0.0
            cost = (ok["export_s"] + ok["compile_s"] + ok["warmup_s"] + ok["timed_s"] + extra).median()
            if math.isfinite(cost) and cost > 0:
                return float(cost), f"median of {len(ok)} keys already measured here"
    factor = BOUNDARY_COST_FACTOR.get(boundary, 1.0)
    with_boundary = f", --boundary {boundary}" if boundary != "none" else ""
    if drift_correct:
        return (
            1.5 * factor * DEFAULT_KEY_COST_S[backend],
            f"default estimate for this backend with --drift-correct{with_boundary}",
        )
    what = f"default estimate for this backend{with_boundary} (nothing measured yet)"
    return factor * DEFAULT_KEY_COST_S[backend], what


def fmt_duration(seconds: float) -> str:
    """``42 s``, ``12.5 min`` or ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(plan: Plan, pending_keys: int, one_worker_s: float) -> None:
    """The --dry-run lines of a scale-out plan: workers, chunks and the estimated wall time."""
    chunks = math.ceil(pending_keys / plan.chunk_size)
    where = f" on GPUs {','.join(plan.gpus)}" if plan.gpus else ""
    head = f"plan: --executor {plan.executor}, "
    head += f"{plan.workers} workers{where}" if plan.workers else plan.note
    print(f"{head}, chunks of {plan.chunk_size} keys ({chunks} chunks for {pending_keys} keys)")
    if plan.workers:
        print(
            f"estimated wall time: {fmt_duration(one_worker_s / plan.workers)} "
            f"({fmt_duration(one_worker_s)} of per-key cost divided across {plan.workers} workers)"
        )
    else:
        print(f"estimated wall time: {fmt_duration(one_worker_s)} divided by the number of actors (--workers N)")


def print_dry_run(
    *,
    plan: Plan,
    profile: DeviceProfile,
    backend: str,
    batch: int,
    precisions: Sequence[str],
    counts: Mapping[str, int],
    all_keys: Sequence[BlockKey],
    keys: Sequence[BlockKey],
    out_dir: Path,
    table_names: Mapping[str, str],
    rounds: int,
    drift_correct: bool,
    shard: tuple[int, int] | None = None,
    boundary: str = "none",
    short: tuple[int, float] = (1, 2.0),
) -> None:
    """What ``--dry-run`` prints: key counts per source and block type, what each table still needs, the time.

    ``short`` is (``--short-rounds``, ``--short-below``): the short keys' rounds past ``rounds`` are counted for
    the keys the first round has measured; for the rest, at most all of them (which ones are short is known
    once they are measured)."""
    from profiler.tablebuild import done_counts, round_places, short_keys
    from tables.store import PartStore

    print(f"device {profile.name}, backend {backend}, batch {batch}, precisions {','.join(precisions)}")
    for label, n in counts.items():
        print(f"  {label}: {n} keys")
    by_block = Counter(k.block for k in all_keys)
    print(f"unique keys: {len(all_keys)}  (" + ", ".join(f"{b} {n}" for b, n in sorted(by_block.items())) + ")")
    if shard:
        print(f"shard {shard[0]}/{shard[1]}: {len(keys)} of the {len(all_keys)} keys")
    total = 0.0
    pending = 0
    short_rounds, below = short
    stored = max(rounds, short_rounds)
    at_most = 0.0
    for p in precisions:
        name = table_names[p]
        done = done_counts(out_dir, name, keys, stored)
        where, first = round_places(out_dir, name, stored)[0]
        cost, why = estimated_key_cost_s(where, first, backend, drift_correct=drift_correct, boundary=boundary)
        todo = len(keys) * rounds - sum(done[:rounds])
        extra = ""
        if short_rounds > rounds:
            try:
                first_rows = PartStore(where, first, None).rows() if where.is_dir() else None
            except (OSError, ValueError):
                first_rows = None
            wanted = {str(k) for k in keys}
            known = short_keys(first_rows, below) & wanted if first_rows is not None else set()
            unknown = len(keys) - done[0]
            todo += len(known) * (short_rounds - rounds) - sum(done[rounds:])
            at_most += unknown * (short_rounds - rounds) * cost
            extra = (
                f"; keys under {below:g} ms measured {short_rounds} times in all ({len(known)} known so far"
                + (f", up to {unknown} more once measured" if unknown else "")
                + ")"
            )
        total += todo * cost
        pending += todo
        what = f"{done[0]} done" if rounds == 1 else f"{'+'.join(map(str, done[:rounds]))} done in {rounds} rounds"
        if stored > rounds:
            what += f" (short keys' further rounds: {'+'.join(map(str, done[rounds:]))} done)"
        print(f"  {out_dir / name}: {what}, {todo} to measure at {cost:.2f} s/key ({why}){extra}")
    more = f", plus at most {fmt_duration(at_most)} for the short keys not yet known" if at_most else ""
    print(f"estimated time: {fmt_duration(total)} on one worker ({total / 3600:.2f} device-hours){more}")
    if plan.executor != "serial":
        print_plan(plan, pending, total)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_KEY_COST_S",
    "EXECUTORS",
    "Plan",
    "cpu_shares",
    "estimated_key_cost_s",
    "fmt_duration",
    "make_executor",
    "make_plan",
    "parse_gpus",
    "print_dry_run",
    "print_plan",
]
