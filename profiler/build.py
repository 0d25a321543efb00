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

from profiler import enumeration
from profiler.devices import DeviceProfile, check_device, detect_device, get_profile
from profiler.networks import NETWORKS
from tables.key import BlockKey

TOOL_VERSION = "0.1.0"
BACKEND_NAMES = ("tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")

#: Per-key wall-clock cost (s) used by --dry-run when nothing was measured yet:
#: export + compile + warm-up + 30 timed runs. TensorRT is dominated by the engine build.
DEFAULT_KEY_COST_S = {"tensorrt": 6.0, "onnxruntime": 0.35, "torch": 0.25}


class UsageError(ValueError):
    """A command-line mistake: reported as one line, exit status 2."""


@dataclass
class KeySource:
    """What to profile: the keys and a description for the table's metadata."""

    keys: list[BlockKey]
    description: dict[str, object] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # keys per source, before deduplication


# --------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    t.add_argument("--warmup", type=int, default=10, help="warm-up runs per key (default 10)")
    t.add_argument("--warmup-ms", type=float, default=50.0, help="minimum warm-up time per key in ms (default 50)")
    t.add_argument("--trim", type=float, default=0.1, help="share dropped at each end for the trimmed mean (0.1)")
    b = p.add_argument_group("backend options")
    b.add_argument("--threads", type=int, default=1, help="CPU threads of the onnxruntime/torch CPU runs (default 1)")
    b.add_argument("--opt-level", type=int, help="TensorRT builder optimization level 0-5 (default 3)")
    b.add_argument("--strongly-typed", action="store_true", help="TensorRT 10: build strongly typed networks")
    b.add_argument("--cuda-graphs", action="store_true", help="replay CUDA graphs (torch, tensorrt)")
    b.add_argument("--compile", action="store_true", help="torch backend: torch.compile instead of eager")
    b.add_argument("--cache-dir", help="where exported ONNX graphs and the TensorRT timing cache are kept")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="tables_out", help="output directory (default: ./tables_out)")
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
            repeats=args.repeats, warmup_runs=args.warmup, warmup_min_ms=args.warmup_ms, trim=args.trim
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def make_backend(name: str, profile: DeviceProfile, args: argparse.Namespace):
    from kernels_bench.backends import get_backend

    options: dict[str, object] = {}
    if args.cache_dir:
        options["cache_dir"] = Path(args.cache_dir)
    if name in ("onnxruntime", "torch"):
        options["threads"] = args.threads
    if name == "torch":
        options["compile"] = args.compile
        if profile.kind == "gpu":
            options["cuda_graphs"] = args.cuda_graphs
    if name == "tensorrt":
        if args.opt_level is not None:
            options["builder_optimization_level"] = args.opt_level
        options["strongly_typed"] = args.strongly_typed
        options["cuda_graphs"] = args.cuda_graphs
    device = "cpu" if profile.kind == "cpu" else "cuda"
    return get_backend(name, device=device, **options)


# --------------------------------------------------------------------------- estimates
def estimated_key_cost_s(out_dir: Path, table_name: str, backend: str) -> tuple[float, str]:
    """Per-key wall time: the median of what this output already measured, else a default."""
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
    backend,
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
) -> tuple[Path, int, list[tuple[str, str]]]:
    """Measure the missing keys of one table; returns (table path, keys measured now, failures)."""
    from kernels_bench.measure import measure_floor, measure_keys
    from tables.schema import SCHEMA_VERSION, result_row, table_filename
    from tables.store import BuildLock, PartStore

    name = table_filename(profile.name, backend_name, precision, batch)
    with BuildLock(out_dir / f"{name}.lock"):
        store = PartStore(out_dir, name, None)
        status = store.done_keys()
        todo = [k for k in keys if str(k) not in status or (retry_failed and status[str(k)] == "failed")]
        previous = store.metadata() if hasattr(store, "metadata") else None
        floor = (previous or {}).get("floor")
        if floor is None and todo:
            shape = floor_shape(keys, batch)
            fr = measure_floor(backend, shape, batch, precision, settings)
            floor = {
                "input_shape": list(shape),
                "trimmed_mean_ms": fr.trimmed_mean_ms,
                "median_ms": fr.median_ms,
                "min_ms": fr.min_ms,
                "max_ms": fr.max_ms,
                "std_ms": fr.std_ms,
                "cv": fr.cv,
            }
        env = backend.environment()
        metadata = {
            "schema_version": SCHEMA_VERSION,
            "kind": "latency_table",
            "device_profile": profile.name,
            "device": detected,
            "engine": {"name": env.get("engine"), "version": env.get("engine_version")},
            "environment": env,
            "backend": backend_name,
            "backend_settings": backend.settings(),
            "precision": precision,
            "batch": batch,
            "timing": settings.to_dict(),
            "floor": floor,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tool_version": TOOL_VERSION,
            "source": source,
            "opset": _opset_of(backend, backend_name, env),
        }
        store.set_metadata(metadata)
        failures: list[tuple[str, str]] = []
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"{precision} b{batch}", unit="key", dynamic_ncols=True, file=sys.stderr)
        try:
            for key in todo:
                if bar is not None:
                    bar.set_postfix_str(key.block, refresh=False)
                try:
                    result = measure_keys(backend, [key], batch, precision, settings)
                    row = result_row(key, result)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # one bad key must not end a multi-day build
                    message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:2000]
                    row = result_row(key, error=message)
                    failures.append((str(key), message))
                    _free_device_memory()
                store.append([row])
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        path = store.compact()
        # failures of earlier runs that were not retried still count for the summary
        for k, st in status.items():
            if st == "failed" and not retry_failed and any(str(x) == k for x in keys):
                failures.append((k, "failed in an earlier run (use --retry-failed to measure it again)"))
        return path, len(todo), failures


def _opset_of(backend, backend_name: str, env: dict) -> int | None:
    """The ONNX opset the backend's graphs are exported with (None for the torch backend)."""
    if backend_name == "torch":
        return None
    from kernels_bench.export import choose_opset

    return getattr(backend, "opset", None) or choose_opset(backend_name, env.get("engine_version"))


def _free_device_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> int:
    if args.batch <= 0:
        raise UsageError(f"--batch must be a positive integer, got {args.batch}")
    profile = get_profile(args.device)
    precisions = parse_precisions(args.precision, profile)
    backend_name = args.backend or profile.default_backend
    if profile.kind == "cpu" and backend_name == "tensorrt":
        raise UsageError("--backend tensorrt needs a GPU device profile; on cpu use onnxruntime or torch")
    source = collect_keys(args)
    if not source.keys:
        raise UsageError("no keys to profile: the chosen space, networks or archs file is empty")
    out_dir = Path(args.out)
    from tables.schema import table_filename

    if args.dry_run:
        print(f"device {profile.name}, backend {backend_name}, batch {args.batch}, precisions {','.join(precisions)}")
        for label, n in source.counts.items():
            print(f"  {label}: {n} keys")
        by_block = Counter(k.block for k in source.keys)
        print(f"unique keys: {len(source.keys)}  (" + ", ".join(f"{b} {n}" for b, n in sorted(by_block.items())) + ")")
        total = 0.0
        for p in precisions:
            name = table_filename(profile.name, backend_name, p, args.batch)
            done = _done_count(out_dir, name, source.keys)
            cost, why = estimated_key_cost_s(out_dir, name, backend_name)
            todo = len(source.keys) - done
            total += todo * cost
            print(f"  {out_dir / name}: {done} done, {todo} to measure at {cost:.2f} s/key ({why})")
        print(f"estimated time: {_fmt_duration(total)} on one worker ({total / 3600:.2f} device-hours)")
        return 0

    check_out_dir(out_dir)
    detected = detect_device()
    mismatch = check_device(profile, detected, force=args.force_device)
    if mismatch:
        print(f"warning: {mismatch.split('; pass')[0]} (forced)", file=sys.stderr)
    settings = timing_settings(args)
    backend = make_backend(backend_name, profile, args)
    any_failed = False
    try:
        for p in precisions:
            backend.check_precision(p)
        for p in precisions:
            t0 = time.perf_counter()
            path, measured, failures = build_table(
                keys=source.keys,
                backend=backend,
                backend_name=backend_name,
                profile=profile,
                detected=detected,
                precision=p,
                batch=args.batch,
                settings=settings,
                out_dir=out_dir,
                source=source.description,
                retry_failed=args.retry_failed,
                progress=not args.no_progress,
            )
            wall = time.perf_counter() - t0
            ok = len(source.keys) - len(failures)
            rate = f", {measured / wall * 3600:.0f} keys/h" if measured and wall > 0 else ""
            print(f"{path}: {ok} ok, {len(failures)} failed; measured {measured} now in {_fmt_duration(wall)}{rate}")
            for k, msg in failures[:10]:
                print(f"  failed {k}: {msg}")
            if len(failures) > 10:
                print(f"  ... and {len(failures) - 10} more (see the table's error column)")
            any_failed = any_failed or bool(failures)
    finally:
        backend.close()
    return 1 if any_failed else 0


def _done_count(out_dir: Path, name: str, keys: Sequence[BlockKey]) -> int:
    if not out_dir.is_dir():
        return 0
    from tables.store import PartStore

    try:
        status = PartStore(out_dir, name, None).done_keys()
    except (OSError, ValueError):
        return 0
    return sum(1 for k in keys if str(k) in status)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 some keys failed, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(
            "interrupted: every key measured so far is kept; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if args.debug:
            raise
        return report_error(exc)


def report_error(exc: BaseException) -> int:
    """Print one line for an error a user can cause; exit status 2 (1 for an unexpected error)."""
    from_user = isinstance(exc, (ValueError, KeyError, OSError, RuntimeError, ImportError))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, KeyError) and text.startswith(("'", '"')):
        text = text.strip("'\"")
    if from_user:
        print(f"error: {text}", file=sys.stderr)
        return 2
    print(f"internal error: {type(exc).__name__}: {text} (rerun with --debug for the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
