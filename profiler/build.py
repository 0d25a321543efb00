"""``python -m profiler.build``: build latency tables for one target.

One Parquet table per (device, backend, precision, batch) under ``--out``,
named ``{device}_{backend}_{precision}_b{batch}.parquet``. Results are written
in small parts as they are measured; a build stopped at any moment (Ctrl-C,
SIGKILL, a lost machine) resumes where it stopped when the same command is run
again, and ends with exactly one row per key.

Examples::

    python -m profiler.build --device cpu --batch 1                 # reference networks, fp32 + int8
    python -m profiler.build --device v100 --batch 64 --precision fp16,int8
    python -m profiler.build --device a100 --space gpunet --sample 500 --dry-run
    python -m profiler.build --device cpu --archs my_archs.json --backend torch
    python -m profiler.build --device cpu --batch 1 --cpus 1 --min-sample-ms 20   # steadier on a busy host

On a machine whose speed drifts (a shared cloud VM), ``--drift-correct`` times
a fixed reference graph right before every timed sample and brings every key
to one reference speed (see "Drift correction" in the README)::

    python -m profiler.build --device cpu --batch 1 --cpus 1 --drift-correct

Keys are measured in a shuffled order (``--seed``; ``--order given`` keeps the
enumeration order), so that the blocks of one network are spread over the
build and a slow drift of the machine's speed does not move one network's
whole block sum.

Scale out (see :mod:`profiler.executors`): the measuring is done by an executor,
while this process alone writes the table and shows one progress bar::

    python -m profiler.build --device a100 --batch 64 --executor local --gpus 0,1,2,3
    python -m profiler.build --device cpu --batch 1 --executor local --workers 4 --threads 1
    python -m profiler.build --device a100 --batch 64 --executor ray --address auto --chunk-size 4
    python -m profiler.build --device a100 --batch 64 --shard 3/8     # one Slurm array task of 8

A shard writes ``<table stem>.shard-I-of-N.parquet``; ``python -m profiler.merge``
joins the shards into one table.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from profiler import enumeration, sharding
from profiler.cli import CliParser, UsageError, report_error, run_cli
from profiler.devices import DeviceProfile, check_device, detect_device, get_profile
from profiler.networks import NETWORKS
from tables.key import BlockKey, parse_key

if TYPE_CHECKING:
    from profiler.executors import Executor

TOOL_VERSION = "0.1.0"
BACKEND_NAMES = ("tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")

#: Per-key wall-clock cost (s) used by --dry-run when nothing was measured yet:
#: export + compile + warm-up + 30 timed runs. TensorRT is dominated by the engine build.
DEFAULT_KEY_COST_S = {"tensorrt": 6.0, "onnxruntime": 0.35, "torch": 0.25}
EXECUTORS = ("serial", "local", "ray")
DEFAULT_CHUNK_SIZE = 4


@dataclass
class KeySource:
    """What to profile: the keys and a description for the table's metadata."""

    keys: list[BlockKey]
    description: dict[str, object] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # keys per source, before deduplication


# --------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    from kernels_bench.measure import DEFAULT_DRIFT_REFERENCE

    p = CliParser(
        prog="python -m profiler.build",
        description="Profile every block key of a search space or of named networks and write Parquet latency tables.",
    )
    p.add_argument(
        "--device", required=True, help="device profile: cpu, v100, t4, a10, a100, h100, h200, l4, orin, ..."
    )
    p.add_argument("--batch", type=int, required=True, help="batch size of every timed inference")
    p.add_argument(
        "--precision",
        help="comma-separated precisions, one table each (fp32, fp16, bf16, int8); "
        "default: fp32,int8 on cpu, fp16 on a GPU",
    )
    p.add_argument("--backend", choices=BACKEND_NAMES, help="default: tensorrt on a GPU device, onnxruntime on cpu")
    src = p.add_argument_group("what to profile (default: the reference networks)")
    src.add_argument("--space", help="gpunet, genet, or a space file (JSON/YAML): every key of the space")
    src.add_argument("--sample", type=int, help="only the keys of N architectures sampled from --space with Sobol")
    src.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    src.add_argument("--networks", help="comma-separated reference networks (e.g. resnet-50,gpunet-0) or 'all'")
    src.add_argument("--archs", help="a JSON/YAML file listing architectures: exactly their keys")
    src.add_argument("--limit", type=int, help="profile only the first N keys (smoke runs)")
    t = p.add_argument_group("timing protocol")
    t.add_argument("--repeats", type=int, default=30, help="timed runs per key (default 30)")
    t.add_argument("--warmup", type=int, default=5, help="warm-up runs per key (default 5)")
    t.add_argument("--warmup-ms", type=float, default=20.0, help="minimum warm-up time per key in ms (default 20)")
    t.add_argument("--trim", type=float, default=0.1, help="share dropped at each end for the trimmed mean (0.1)")
    t.add_argument(
        "--min-sample-ms",
        type=float,
        default=0.0,
        help="minimum length of one timed sample in ms: short inferences are run back to back and averaged "
        "(default 0: only the timer's resolution sets it); longer samples average out a noisy machine",
    )
    t.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every key this many times, each round a pass over all keys in its own order, and keep the "
        "median of the rounds (default 1); on a noisy machine 2-3 rounds steady the table",
    )
    t.add_argument(
        "--drift-correct",
        action="store_true",
        help="time a fixed reference graph right before every timed sample and bring each key to the table's "
        "reference speed (for machines whose speed drifts; about doubles the timed part of a build)",
    )
    t.add_argument(
        "--drift-reference",
        metavar="KEY",
        help=f"block key of the reference graph of --drift-correct (default {DEFAULT_DRIFT_REFERENCE})",
    )
    b = p.add_argument_group("backend options")
    b.add_argument("--threads", type=int, default=1, help="CPU threads of the onnxruntime/torch CPU runs (default 1)")
    b.add_argument("--opt-level", type=int, help="TensorRT builder optimization level 0-5 (default 3)")
    b.add_argument("--strongly-typed", action="store_true", help="TensorRT 10: build strongly typed networks")
    b.add_argument("--cuda-graphs", action="store_true", help="replay CUDA graphs (torch, tensorrt)")
    b.add_argument("--compile", action="store_true", help="torch backend: torch.compile instead of eager")
    b.add_argument("--cache-dir", help="where exported ONNX graphs and the TensorRT timing cache are kept")
    b.add_argument(
        "--cpus",
        help="onnxruntime/torch: pin the measuring process to these CPUs (Linux), e.g. 1 or 0-3; "
        "with --executor local each worker gets its own share",
    )
    x = p.add_argument_group("scale out")
    x.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="serial",
        help="serial: in this process (default); local: worker processes on this machine; ray: Ray actors",
    )
    x.add_argument(
        "--workers",
        type=int,
        help="cpu profile: number of worker processes or actors (one thread each "
        "with --threads 1; default: CPU cores / --threads); ray on a GPU: number of GPU actors",
    )
    x.add_argument("--gpus", help="--executor local: comma-separated GPU indices, one worker each (default: all)")
    x.add_argument(
        "--address", help="--executor ray: a running cluster (auto or HOST:PORT); default: start a local Ray"
    )
    x.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"keys per message to a worker ({DEFAULT_CHUNK_SIZE})",
    )
    x.add_argument(
        "--shard", help="I/N: measure only shard I of N (numbered from 1) of the keys, e.g. a Slurm array task"
    )
    o = p.add_argument_group("output")
    o.add_argument("--out", default="tables_out", help="output directory (default: ./tables_out)")
    o.add_argument(
        "--order",
        choices=("shuffled", "given"),
        default="shuffled",
        help="order of measuring the keys: shuffled with --seed (default; spreads each network's blocks over the "
        "build, so a drifting machine does not move one network's whole sum) or as enumerated",
    )
    o.add_argument("--dry-run", action="store_true", help="print key counts and an estimated time; build nothing")
    o.add_argument("--retry-failed", action="store_true", help="measure again the keys that failed in an earlier run")
    o.add_argument("--force-device", action="store_true", help="build even if the GPU does not match --device")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def parse_precisions(text: str | None, profile: DeviceProfile) -> list[str]:
    if text is None:
        return ["fp32", "int8"] if profile.kind == "cpu" else ["fp16"]
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part not in PRECISIONS:
            raise UsageError(f"unknown precision {part!r} in --precision: choose from {', '.join(PRECISIONS)}")
        if part not in out:
            out.append(part)
    if not out:
        raise UsageError("--precision is empty: give e.g. --precision fp16,int8")
    return out


def collect_keys(args: argparse.Namespace) -> KeySource:
    """Resolve --space/--sample/--networks/--archs into one deduplicated key list."""
    lists: list[list[BlockKey]] = []
    desc: dict[str, object] = {}
    counts: dict[str, int] = {}
    if args.sample is not None and args.sample <= 0:
        raise UsageError(f"--sample must be a positive number of architectures, got {args.sample}")
    if args.space and args.sample is None:
        keys = enumeration.keys_for_space(args.space)
        lists.append(keys)
        desc["space"] = args.space
        counts[f"space {args.space}"] = len(keys)
    elif args.sample is not None:
        space = args.space or "gpunet"
        keys = enumeration.keys_for_sample(space, args.sample, args.seed)
        lists.append(keys)
        desc["sample"] = {"space": space, "n": args.sample, "seed": args.seed, "method": "sobol"}
        counts[f"sample {args.sample} of {space}"] = len(keys)
    if args.networks:
        names = [n.strip() for n in args.networks.split(",") if n.strip()]
        keys = enumeration.keys_for_networks(names)
        lists.append(keys)
        desc["networks"] = names
        counts["networks " + ",".join(names)] = len(keys)
    if args.archs:
        keys = enumeration.keys_for_archs_file(args.archs)
        lists.append(keys)
        desc["archs"] = str(args.archs)
        counts[f"archs {args.archs}"] = len(keys)
    if not lists:
        names = list(NETWORKS)
        keys = enumeration.keys_for_networks(names)
        lists.append(keys)
        desc["networks"] = names
        counts["reference networks"] = len(keys)
    keys = enumeration.unique_keys(lists)
    if args.limit is not None:
        if args.limit <= 0:
            raise UsageError(f"--limit must be positive, got {args.limit}")
        keys = keys[: args.limit]
        desc["limit"] = args.limit
    return KeySource(keys, desc, counts)


def check_out_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file, not a directory: choose a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {path}: {exc.strerror}; choose a writable --out") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {path} is not writable: choose a writable --out")
    return path


def timing_settings(args: argparse.Namespace):  # -> kernels_bench.timing.TimingSettings
    from kernels_bench.timing import TimingSettings

    try:
        return TimingSettings(
            repeats=args.repeats,
            warmup_runs=args.warmup,
            warmup_min_ms=args.warmup_ms,
            trim=args.trim,
            min_sample_ms=getattr(args, "min_sample_ms", 0.0),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def make_backend(name: str, profile: DeviceProfile, args: argparse.Namespace):
    from kernels_bench.backends import get_backend

    device = "cpu" if profile.kind == "cpu" else "cuda"
    return get_backend(name, device=device, **backend_options(name, profile, args))


def drift_reference_key(args: argparse.Namespace) -> str | None:
    """The drift reference's key string of ``--drift-correct`` (``None`` without it); a bad key is a usage error."""
    given = getattr(args, "drift_reference", None)
    if not getattr(args, "drift_correct", False):
        if given:
            raise UsageError("--drift-reference needs --drift-correct")
        return None
    from kernels_bench.measure import DEFAULT_DRIFT_REFERENCE

    try:
        return str(parse_key(given or DEFAULT_DRIFT_REFERENCE))
    except ValueError as exc:
        raise UsageError(f"--drift-reference: {exc}") from None


def cpu_list(args: argparse.Namespace) -> list[int] | None:
    """The CPUs of ``--cpus`` (``None`` when not given); a malformed list is a usage error."""
    text = getattr(args, "cpus", None)
    if not text:
        return None
    from kernels_bench.backends.base import parse_cpus

    try:
        return parse_cpus(text)
    except ValueError as exc:
        raise UsageError(f"--cpus: {exc}") from None


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


def backend_options(name: str, profile: DeviceProfile, args: argparse.Namespace) -> dict[str, object]:
    """The keyword options of ``get_backend`` that the command line asks for."""
    options: dict[str, object] = {}
    if args.cache_dir:
        options["cache_dir"] = Path(args.cache_dir)
    if name in ("onnxruntime", "torch"):
        options["threads"] = args.threads
        cpus = cpu_list(args)
        if cpus:
            options["cpus"] = cpus
    if name == "torch":
        options["compile"] = args.compile
        if profile.kind == "gpu":
            options["cuda_graphs"] = args.cuda_graphs
    if name == "tensorrt":
        if args.opt_level is not None:
            options["builder_optimization_level"] = args.opt_level
        options["strongly_typed"] = args.strongly_typed
        options["cuda_graphs"] = args.cuda_graphs
    return options


# --------------------------------------------------------------------------- estimates
def estimated_key_cost_s(
    out_dir: Path, table_name: str, backend: str, *, drift_correct: bool = False
) -> tuple[float, str]:
    """Per-key wall time: the median of what this output already measured, else a default.

    The default assumes the timed runs are about half of a key's cost, which drift
    correction doubles (the reference is timed as long as the key).
    """
    try:
        from tables.store import PartStore

        frame = PartStore(out_dir, table_name, None).rows()
    except (OSError, ValueError):
        frame = None
    if frame is not None and len(frame):
        ok = frame[frame["status"] == "ok"]
        if len(ok):
            cost = (ok["export_s"] + ok["compile_s"] + ok["warmup_s"] + ok["timed_s"]).median()
            if math.isfinite(cost) and cost > 0:
                return float(cost), f"median of {len(ok)} keys already measured here"
    if drift_correct:
        return 1.5 * DEFAULT_KEY_COST_S[backend], "default estimate for this backend with --drift-correct"
    return DEFAULT_KEY_COST_S[backend], "default estimate for this backend (nothing measured yet)"


def _fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- one table
def floor_shape(keys: Sequence[BlockKey], batch: int) -> tuple[int, ...]:
    """Input shape of the identity graph used for the backend floor: the median-sized key input."""
    sizes = sorted(keys, key=lambda k: k.cin * k.h * k.w)
    k = sizes[len(sizes) // 2]
    return (batch, k.cin, k.h, k.w)


def build_table(
    *,
    keys: Sequence[BlockKey],
    executor: Executor,
    info: dict,
    backend_name: str,
    profile: DeviceProfile,
    detected: dict,
    precision: str,
    batch: int,
    settings,
    out_dir: Path,
    source: dict,
    retry_failed: bool,
    progress: bool,
    table_name: str | None = None,
    floor_keys: Sequence[BlockKey] | None = None,
    extra_metadata: dict | None = None,
    order_seed: int | None = None,
    drift_reference: str | None = None,
    rounds: int = 1,
) -> tuple[Path, int, list[tuple[str, str]]]:
    """Measure the missing keys of one table; returns (table path, keys measured now, failures).

    ``executor`` measures (see :mod:`profiler.executors`); this function alone writes
    the rows, as crash-safe parts. ``info`` is what ``executor.start()`` returned.
    ``table_name`` defaults to the table's standard name (a shard passes its own);
    ``floor_keys`` (default ``keys``) choose the floor's input shape, so that every
    shard of a key set measures the same floor. With ``order_seed`` the keys still
    to measure are taken in a random order drawn from that seed (``None``: the
    given order); see :func:`measuring_order`. With ``drift_reference`` (a block
    key; the executor must have been made with it) the reference graph is timed
    alone once (the table's reference speed, metadata ``drift_reference``) and every
    key's ``latency_ms`` is brought to that speed (:func:`tables.schema.drift_corrected`).

    With ``rounds`` > 1 every key is measured once per round, each round a pass
    over all keys in its own shuffled order (``order_seed + round``) kept as its
    own crash-safe table under ``<table>.rounds/``; the table then holds, per key,
    the median of its rounds (:func:`tables.store.combine_rounds`). Returns the
    number of key measurements made now (keys x rounds).
    """
    from tables.schema import SCHEMA_VERSION, apply_drift_correction, table_filename, write_table
    from tables.store import BuildLock, PartStore, combine_rounds

    name = table_name or table_filename(profile.name, backend_name, precision, batch)
    with BuildLock(out_dir / f"{name}.lock"):
        final = PartStore(out_dir, name, None)
        # one round: the table itself; several: one store per round, combined into the table at the end
        stores = [final] if rounds == 1 else [PartStore(d, f, None) for d, f in round_places(out_dir, name, rounds)]
        previous = final.metadata() or stores[0].metadata()
        check_rounds(previous, rounds, out_dir / name)
        drift = check_drift_reference(previous, drift_reference, out_dir / name)
        statuses = [store.done_keys() for store in stores]
        wanted = [str(k) for k in keys]

        def pending(r: int, skip: set[str]) -> list[BlockKey]:
            status = statuses[r]
            return [
                k
                for k, text in zip(keys, wanted)
                if text not in skip and (text not in status or (retry_failed and status[text] == "failed"))
            ]

        # a key that failed in a round is not measured in the later ones (unless --retry-failed)
        failed_before = set() if retry_failed else {k for st in statuses for k, v in st.items() if v == "failed"}
        plan = [len(pending(r, failed_before)) for r in range(rounds)]
        planned = sum(plan)
        floor = (previous or {}).get("floor")
        if floor is None and planned:
            floor = executor.floor(floor_shape(floor_keys or keys, batch), batch, precision)
        if drift_reference is not None and drift is None and planned:
            drift = executor.reference(batch, precision)
        env = info["environment"]
        metadata = {
            "schema_version": SCHEMA_VERSION,
            "kind": "latency_table",
            "device_profile": profile.name,
            "device": detected,
            "engine": {"name": env.get("engine"), "version": env.get("engine_version")},
            "environment": env,
            "backend": backend_name,
            "backend_settings": info["settings"],
            "precision": precision,
            "batch": batch,
            "timing": settings.to_dict(),
            "floor": floor,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tool_version": TOOL_VERSION,
            "source": source,
            "opset": info["opset"],
            "key_order": {"order": "given"} if order_seed is None else {"order": "shuffled", "seed": order_seed},
            "drift_reference": drift,
            "rounds": rounds,
            **(extra_metadata or {}),
        }
        for store in stores:
            store.set_metadata(metadata)
        failures: dict[str, str] = {}
        measured = 0
        bar = None
        if progress and planned:
            from tqdm import tqdm

            label = f"{precision} b{batch}" + (f" x{executor.workers}" if executor.workers > 1 else "")
            bar = tqdm(total=planned, desc=label, unit="key", dynamic_ncols=True, file=sys.stderr)
        try:
            for r, store in enumerate(stores):
                todo = pending(r, failed_before)
                todo = measuring_order(todo, None if order_seed is None else order_seed + r)
                if bar is not None and rounds > 1:
                    bar.total -= plan[r] - len(todo)  # keys that failed in an earlier round of this run
                    bar.set_description(f"{label} round {r + 1}/{rounds}", refresh=False)
                for rows in executor.measure([str(k) for k in todo], batch, precision):
                    if drift is not None:
                        rows = [apply_drift_correction(row, float(drift["latency_ms"])) for row in rows]
                    store.append(rows)
                    for row in rows:
                        if row["status"] == "failed":
                            failures.setdefault(row["key"], row["error"])
                            if not retry_failed:
                                failed_before.add(row["key"])
                    if bar is not None:
                        bar.set_postfix_str(rows[-1]["block"], refresh=False)
                        bar.update(len(rows))
                measured += len(todo)
                if rounds > 1:
                    store.compact()
        finally:
            if bar is not None:
                bar.close()
        if rounds == 1:
            path = final.compact({"drift_reference": drift_summary(drift, final.rows())} if drift else None)
        else:
            import pandas as pd

            per_round = [store.rows() for store in stores]
            table_md = final.metadata() or metadata
            if drift:
                all_rows = pd.concat(per_round, ignore_index=True)
                table_md = {**table_md, "drift_reference": drift_summary(drift, all_rows)}
            path = write_table(combine_rounds(per_round), out_dir / name, table_md)
        # failures of earlier runs that were not retried still count for the summary
        wanted_set = set(wanted)
        for status in statuses:
            for k, st in status.items():
                if st == "failed" and not retry_failed and k in wanted_set:
                    failures.setdefault(k, "failed in an earlier run (use --retry-failed to measure it again)")
        return path, measured, list(failures.items())


def round_places(out_dir: Path, name: str, rounds: int) -> list[tuple[Path, str]]:
    """(folder, file name) of each round's store of table ``name``: the table itself for one round,
    else ``<out>/<table>.rounds/round-1.parquet``, ``round-2.parquet``, ..."""
    if rounds == 1:
        return [(out_dir, name)]
    return [(out_dir / f"{name}.rounds", f"round-{r + 1}.parquet") for r in range(rounds)]


def check_rounds(previous: dict | None, rounds: int, table: Path) -> None:
    """Refuse resuming a table with another number of rounds than it was built with."""
    if previous is None:
        return
    stored = int(previous.get("rounds") or 1)
    if stored != rounds:
        raise UsageError(
            f"{table} was built with --rounds {stored}; this build asks for {rounds}: "
            "repeat the original options or choose another --out"
        )


def check_drift_reference(previous: dict | None, drift_reference: str | None, table: Path) -> dict | None:
    """The stored ``drift_reference`` entry when resuming ``table``; refuses a build that changes it.

    Keys brought to one reference speed and keys measured without one (or with
    another reference graph) cannot share a table.
    """
    if previous is None:
        return None
    stored = previous.get("drift_reference")
    if (stored is None) != (drift_reference is None) or (stored and stored.get("key") != drift_reference):
        was = f"with drift reference {stored.get('key')}" if stored else "without --drift-correct"
        now = f"with drift reference {drift_reference}" if drift_reference else "without --drift-correct"
        raise UsageError(
            f"{table} was built {was}; this build is {now}: repeat the original options or choose another --out"
        )
    return dict(stored) if stored else None


def drift_summary(drift: dict, rows) -> dict:  # rows: pandas.DataFrame of the table
    """The ``drift_reference`` entry with how fast the reference ran while the keys were timed.

    ``during_build``: the median, 10th and 90th percentile of every ok row's
    ``reference_ms`` (ms per batch) and their count: how much the machine's speed
    moved during the build, which the correction took out.
    """
    import numpy as np

    ok = rows[(rows["status"] == "ok") & rows["reference_ms"].notna()]["reference_ms"].to_numpy(float)
    out = dict(drift)
    if len(ok):
        out["during_build"] = {
            "median_ms": float(np.median(ok)),
            "p10_ms": float(np.percentile(ok, 10)),
            "p90_ms": float(np.percentile(ok, 90)),
            "n": len(ok),
        }
    return out


#: Median coefficient of variation of a build's keys above which the build suggests --drift-correct.
UNSTEADY_CV = 0.03


def stability_note(path: Path) -> str | None:
    """One line on how steady the machine was during the build of the table at ``path``, or ``None``.

    With drift correction: how far the reference's speed moved (10th to 90th
    percentile). Without: a hint to use ``--drift-correct`` when the median
    coefficient of variation of the keys' samples exceeds :data:`UNSTEADY_CV`.
    """
    from tables.schema import read_table

    try:
        frame, md = read_table(path)
    except ValueError:
        return None
    during = (md.get("drift_reference") or {}).get("during_build")
    if during:
        spread = (during["p90_ms"] - during["p10_ms"]) / during["median_ms"] * 100
        return (
            f"  drift reference: {during['p10_ms']:.4g}-{during['p90_ms']:.4g} ms (10th-90th percentile) while the "
            f"keys were timed, a {spread:.1f}% swing of the machine's speed; every key was brought to "
            f"{md['drift_reference']['latency_ms']:.4g} ms"
        )
    cv = frame.loc[frame["status"] == "ok", "cv"].median()
    if md.get("drift_reference") is None and cv == cv and cv > UNSTEADY_CV:
        return (
            f"  note: the timed runs varied by a median {cv * 100:.1f}% (coefficient of variation); on a machine "
            "this unsteady --drift-correct (and --cpus) make the table steadier"
        )
    return None


def measuring_order(keys: Sequence[BlockKey], seed: int | None) -> list[BlockKey]:
    """The keys in the order they are measured: shuffled with ``seed``, or as given when ``seed`` is None.

    Keys are enumerated network by network, so in the given order the blocks of
    one network are measured within seconds of each other and a machine whose
    speed drifts over minutes moves a whole network's block sum at once. In a
    shuffled order each network's blocks are spread over the build and the drift
    averages out over its blocks. The order depends only on the set of keys and
    the seed, not on how they were listed.
    """
    ordered = sorted(keys, key=str)
    if seed is None:
        return list(keys)
    import random

    random.Random(seed).shuffle(ordered)
    return ordered


# --------------------------------------------------------------------------- executors
@dataclass
class Plan:
    """How the keys are measured: the executor, its number of workers, keys per chunk, GPUs."""

    executor: str
    workers: int
    chunk_size: int
    gpus: list[str] | None = None
    note: str = ""


def parse_gpus(text: str) -> list[str]:
    """``"0,1,3"`` -> ``["0", "1", "3"]`` (each GPU once)."""
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise UsageError(f"--gpus {text!r} is not a list of GPU indices: write e.g. --gpus 0,1,2,3")
    if len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus {text!r} names a GPU twice: give each GPU once")
    return gpus


def make_plan(args: argparse.Namespace, profile: DeviceProfile, detected: dict | None) -> Plan:
    """Check the scale-out options against each other and decide the number of workers."""
    plan = _make_plan(args, profile, detected)
    cpus = cpu_list(args)
    if cpus and plan.executor == "local":
        cpu_shares(cpus, plan.workers)  # refuses fewer CPUs than workers
    return plan


def _make_plan(args: argparse.Namespace, profile: DeviceProfile, detected: dict | None) -> Plan:
    if args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.address and args.executor != "ray":
        raise UsageError("--address is for --executor ray: add --executor ray or drop --address")
    if args.gpus and args.executor != "local":
        raise UsageError("--gpus is for --executor local (Ray places one actor per GPU itself)")
    if args.cpus and args.executor == "ray":
        raise UsageError("--cpus is for the serial and local executors (Ray places its workers itself)")
    if args.cpus and args.backend == "tensorrt":
        raise UsageError("--cpus pins the onnxruntime and torch backends; drop it for tensorrt")
    if args.executor == "serial":
        if args.workers not in (None, 1):
            raise UsageError("--workers needs --executor local or --executor ray")
        return Plan("serial", 1, args.chunk_size)
    cpu = profile.kind == "cpu"
    if cpu and args.gpus:
        raise UsageError("--gpus needs a GPU device profile; on cpu use --workers N")
    per_core = max(1, (os.cpu_count() or 1) // max(1, args.threads))
    if args.executor == "local":
        if cpu:
            return Plan("local", args.workers or per_core, args.chunk_size)
        if args.workers is not None:
            raise UsageError("--executor local on a GPU runs one worker per GPU: choose them with --gpus 0,1,...")
        if args.gpus:
            gpus = parse_gpus(args.gpus)
        else:
            count = int((detected or {}).get("gpu_count") or 0)
            if count < 1:
                raise UsageError("--executor local found no GPU on this machine: name them with --gpus 0,1,...")
            gpus = [str(i) for i in range(count)]
        return Plan("local", len(gpus), args.chunk_size, gpus=gpus)
    if args.workers:
        return Plan("ray", args.workers, args.chunk_size)
    if cpu and not args.address:
        return Plan("ray", per_core, args.chunk_size)
    return Plan("ray", 0, args.chunk_size, note="one actor per " + ("CPU" if cpu else "GPU") + " of the cluster")


def make_executor(
    plan: Plan, args: argparse.Namespace, profile: DeviceProfile, backend_name: str, settings
) -> Executor:
    """The executor of ``plan``; the serial one creates its backend here, the others in their workers."""
    from profiler.executors import (
        WORKER_CPUS_ENV,
        LocalExecutor,
        RayExecutor,
        SerialExecutor,
        WorkerSpec,
        fault_from_environment,
        read_timing_cache_seed,
    )

    drift = drift_reference_key(args)
    if plan.executor == "serial":
        return SerialExecutor(make_backend(backend_name, profile, args), backend_name, settings, drift_reference=drift)
    cpu = profile.kind == "cpu"
    options = backend_options(backend_name, profile, args)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
    env: dict[str, str] = {}
    if cpu:  # one worker per core: the export and the engine use --threads threads
        env = {name: str(args.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    cache_dir = None
    if backend_name == "tensorrt":  # one timing cache per worker, combined when the executor closes
        cache_dir = str(Path(args.cache_dir or args.out).resolve() / "timing-cache")
    spec = WorkerSpec(
        backend=backend_name,
        device="cpu" if cpu else "cuda",
        options=options,
        timing=dict(settings.to_dict()),
        env=env,
        timing_cache_dir=cache_dir,
        timing_cache_seed=read_timing_cache_seed(cache_dir),
        drift_reference=drift,
    )
    try:
        fault = fault_from_environment()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if plan.executor == "local":
        slots = [{"CUDA_VISIBLE_DEVICES": g} for g in plan.gpus] if plan.gpus else [{} for _ in range(plan.workers)]
        cpus = options.pop("cpus", None)
        if cpus:  # each worker pinned to its own share of --cpus
            for slot, share in zip(slots, cpu_shares(cpus, len(slots))):
                slot[WORKER_CPUS_ENV] = ",".join(str(c) for c in share)
        return LocalExecutor(spec, slots, chunk_size=plan.chunk_size, fault=fault)
    try:
        return RayExecutor(
            spec,
            workers=plan.workers or None,
            gpu=not cpu,
            address=args.address,
            chunk_size=plan.chunk_size,
            fault=fault,
        )
    except ImportError as exc:
        raise UsageError(str(exc)) from None


def _print_plan(plan: Plan, pending_keys: int, one_worker_s: float) -> None:
    """The --dry-run lines of a scale-out plan: workers, chunks and the estimated wall time."""
    chunks = math.ceil(pending_keys / plan.chunk_size)
    where = f" on GPUs {','.join(plan.gpus)}" if plan.gpus else ""
    head = f"plan: --executor {plan.executor}, "
    head += f"{plan.workers} workers{where}" if plan.workers else plan.note
    print(f"{head}, chunks of {plan.chunk_size} keys ({chunks} chunks for {pending_keys} keys)")
    if plan.workers:
        print(
            f"estimated wall time: {_fmt_duration(one_worker_s / plan.workers)} "
            f"({_fmt_duration(one_worker_s)} of per-key cost divided across {plan.workers} workers)"
        )
    else:
        print(f"estimated wall time: {_fmt_duration(one_worker_s)} divided by the number of actors (--workers N)")


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> int:
    if args.batch <= 0:
        raise UsageError(f"--batch must be a positive integer, got {args.batch}")
    profile = get_profile(args.device)
    precisions = parse_precisions(args.precision, profile)
    backend_name = args.backend or profile.default_backend
    if profile.kind == "cpu" and backend_name == "tensorrt":
        raise UsageError("--backend tensorrt needs a GPU device profile; on cpu use onnxruntime or torch")
    shard = None
    if args.shard is not None:
        try:
            shard = sharding.parse_shard(args.shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    drift = drift_reference_key(args)
    if args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, got {args.rounds}")
    source = collect_keys(args)
    if not source.keys:
        raise UsageError("no keys to profile: the chosen space, networks or archs file is empty")
    keys = sharding.select_shard(source.keys, *shard) if shard else list(source.keys)
    description = dict(source.description)
    extra_metadata: dict = {}
    if shard:
        description["shard"] = sharding.shard_metadata(*shard)
        extra_metadata["shard"] = sharding.shard_metadata(*shard)
    out_dir = Path(args.out)
    from tables.schema import table_filename

    def name_of(precision: str) -> str:
        name = table_filename(profile.name, backend_name, precision, args.batch)
        return sharding.shard_table_name(name, *shard) if shard else name

    if args.dry_run:
        needs_gpus = args.executor == "local" and profile.kind == "gpu" and not args.gpus
        plan = make_plan(args, profile, detect_device() if needs_gpus else None)
        print(f"device {profile.name}, backend {backend_name}, batch {args.batch}, precisions {','.join(precisions)}")
        for label, n in source.counts.items():
            print(f"  {label}: {n} keys")
        by_block = Counter(k.block for k in source.keys)
        print(f"unique keys: {len(source.keys)}  (" + ", ".join(f"{b} {n}" for b, n in sorted(by_block.items())) + ")")
        if shard:
            print(f"shard {shard[0]}/{shard[1]}: {len(keys)} of the {len(source.keys)} keys")
        total = 0.0
        pending = 0
        for p in precisions:
            name = name_of(p)
            done = _done_counts(out_dir, name, keys, args.rounds)
            where, first = round_places(out_dir, name, args.rounds)[0]
            cost, why = estimated_key_cost_s(where, first, backend_name, drift_correct=drift is not None)
            todo = len(keys) * args.rounds - sum(done)
            total += todo * cost
            pending += todo
            what = f"{done[0]} done" if args.rounds == 1 else f"{'+'.join(map(str, done))} done in {args.rounds} rounds"
            print(f"  {out_dir / name}: {what}, {todo} to measure at {cost:.2f} s/key ({why})")
        print(f"estimated time: {_fmt_duration(total)} on one worker ({total / 3600:.2f} device-hours)")
        if plan.executor != "serial":
            _print_plan(plan, pending, total)
        return 0

    if args.executor == "ray":
        from profiler.executors import import_ray

        try:
            import_ray()
        except ImportError as exc:
            raise UsageError(str(exc)) from None
    check_out_dir(out_dir)
    detected = detect_device()
    mismatch = check_device(profile, detected, force=args.force_device)
    if mismatch:
        print(f"warning: {mismatch.split('; pass')[0]} (forced)", file=sys.stderr)
    settings = timing_settings(args)
    plan = make_plan(args, profile, detected)
    if not keys:
        print(f"shard {shard[0]}/{shard[1]} holds none of the {len(source.keys)} keys: its tables stay empty")
    executor = make_executor(plan, args, profile, backend_name, settings)
    any_failed = False
    try:
        info = executor.start(precisions)
        for p in precisions:
            t0 = time.perf_counter()
            path, measured, failures = build_table(
                keys=keys,
                executor=executor,
                info=info,
                backend_name=backend_name,
                profile=profile,
                detected=detected,
                precision=p,
                batch=args.batch,
                settings=settings,
                out_dir=out_dir,
                source=description,
                retry_failed=args.retry_failed,
                progress=not args.no_progress,
                table_name=name_of(p),
                floor_keys=source.keys,
                extra_metadata=extra_metadata,
                order_seed=None if args.order == "given" else args.seed,
                drift_reference=drift,
                rounds=args.rounds,
            )
            wall = time.perf_counter() - t0
            ok = len(keys) - len(failures)
            rate = f", {measured / wall * 3600:.0f} keys/h" if measured and wall > 0 else ""
            print(f"{path}: {ok} ok, {len(failures)} failed; measured {measured} now in {_fmt_duration(wall)}{rate}")
            note = stability_note(path)
            if note:
                print(note)
            for k, msg in failures[:10]:
                print(f"  failed {k}: {msg}")
            if len(failures) > 10:
                print(f"  ... and {len(failures) - 10} more (see the table's error column)")
            any_failed = any_failed or bool(failures)
    finally:
        executor.close()
    return 1 if any_failed else 0


def _done_counts(out_dir: Path, name: str, keys: Sequence[BlockKey], rounds: int = 1) -> list[int]:
    """Keys of ``keys`` already stored, per round (one entry for a table built in one round)."""
    from tables.store import PartStore

    counts = []
    for folder, file in round_places(out_dir, name, rounds):
        try:
            status = PartStore(folder, file, None).done_keys() if folder.is_dir() else {}
        except (OSError, ValueError):
            status = {}
        counts.append(sum(1 for k in keys if str(k) in status))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 some keys failed, 2 bad input, 130 interrupted)."""
    return run_cli(
        run,
        build_parser(),
        argv,
        interrupted="interrupted: every key measured so far is kept; run the same command again to resume",
    )


__all__ = ["UsageError", "main", "make_backend", "report_error", "run", "timing_settings"]


if __name__ == "__main__":
    sys.exit(main())
