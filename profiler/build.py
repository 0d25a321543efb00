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

On the cpu profile a build drift-corrects by default: it times a fixed
reference graph right before every timed sample and brings every key to one
reference speed (see "Drift correction" in the README), because a host CPU's
speed moves with whatever else runs. ``--no-drift-correct`` turns it off (half
the timed work, for a machine known to be quiet); on a GPU profile it is off
unless asked for::

    python -m profiler.build --device cpu --batch 1 --no-drift-correct
    python -m profiler.build --device h100 --batch 64 --drift-correct

Short keys (those the first pass measured under ``--short-below`` ms, 2 by
default) are measured again: on the cpu profile each gets three measurements in
all by default (``--short-rounds``), mixed into the build minutes apart (a
short key's next one comes a sixth of the build after its previous one, amid
keys of every size), and the table holds each one's median. A sub-millisecond key's thirty samples
span a fraction of a second of a machine whose speed moves, so one pass leaves
a small many-block network's sum several percent off from build to build;
``--short-rounds 1`` turns it off. GPU profiles measure every key once unless
asked::

    python -m profiler.build --device cpu --batch 1 --short-rounds 5 --short-below 1
    python -m profiler.build --device h100 --batch 64 --short-rounds 3

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
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kernels_bench.boundary import BOUNDARY_METHODS, DEFAULT_BOUNDARY
from kernels_bench.config import BACKENDS, PRECISIONS, BackendConfig, format_cpus, precisions_for
from kernels_bench.errors import PrecisionNotSupported, check_engine_installed
from kernels_bench.export import default_cache_dir
from kernels_bench.measure import DEFAULT_DRIFT_REFERENCE
from profiler import enumeration, sharding
from profiler.devices import DeviceProfile, check_device, detect_for, get_profile
from profiler.options import add_backend_arguments, add_timing_arguments, config_from_args, timing_from_args
from profiler.plan import DEFAULT_CHUNK_SIZE, EXECUTORS, fmt_duration, make_executor, make_plan, print_dry_run
from profiler.proof import DEFAULT_VALIDATE_SAMPLE, MAX_VALIDATE_SAMPLE
from profiler.tablebuild import (
    DEFAULT_SHORT_BELOW_MS,
    DEFAULT_SHORT_ROUNDS_CPU,
    TableJob,
    build_table,
    steadiness_note,
)
from tables.atomic import remove_stale_temporaries
from tables.cli import CliParser, UsageError, run_cli, text_arg
from tables.host import logical_cpus, spare_cpu, usable_cpus
from tables.key import parse_key
from tables.paths import table_filename

#: Documented limits of the numeric options (a build beyond them would not end, or not fit in memory).
MAX_BATCH = 4096
MAX_ROUNDS = 100
MAX_SHORT_BELOW_MS = 1000.0
MAX_SAMPLE = 100_000  # architectures of --sample (GPUNet's 229,550 keys are all covered well before)
MAX_WORKERS = 1024
MAX_CHUNK_SIZE = 10_000
MAX_SEED = 2**32 - 1


# --------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m profiler.build``."""
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
    p.add_argument("--backend", choices=BACKENDS, help="default: tensorrt on a GPU device, onnxruntime on cpu")
    src = p.add_argument_group("what to profile (default: the reference networks)")
    src.add_argument(
        "--space",
        type=text_arg,
        help="gpunet, gpunet-padded, genet, or a space file (JSON/YAML): every key of the space",
    )
    src.add_argument("--sample", type=int, help="only the keys of N architectures sampled from --space with Sobol")
    src.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    src.add_argument("--networks", help="comma-separated reference networks (e.g. resnet-50,gpunet-0) or 'all'")
    src.add_argument("--archs", type=text_arg, help="a JSON/YAML file listing architectures: exactly their keys")
    src.add_argument("--limit", type=int, help="profile only the first N keys (smoke runs)")
    src.add_argument(
        "--measure-fraction",
        type=float,
        metavar="F",
        help="measure only this fraction (0 < F <= 1) of the keys, chosen to cover every block type and FLOPs "
        "range and then where the estimator is least sure; the rest are estimated on demand with their measured "
        "error (run again with a larger F to measure more)",
    )
    t = p.add_argument_group("timing protocol")
    add_timing_arguments(t, defaults=True)
    t.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every key this many times, each round a pass over all keys in its own order, and keep the "
        "median of the rounds (default 1); on a noisy machine 2-3 rounds steady the table",
    )
    t.add_argument(
        "--short-rounds",
        type=int,
        metavar="N",
        help="measure the short keys (those the first round measured under --short-below ms) N times in all, "
        "mixed into the build minutes apart, and keep each one's median "
        f"(default: {DEFAULT_SHORT_ROUNDS_CPU} on the cpu profile, where a sub-millisecond key's samples span a "
        "fraction of a second of a machine whose speed moves; 1 (off) on GPU profiles)",
    )
    t.add_argument(
        "--short-below",
        type=float,
        default=DEFAULT_SHORT_BELOW_MS,
        metavar="MS",
        help=f"what a short key is for --short-rounds: ms per batch (default {DEFAULT_SHORT_BELOW_MS:g})",
    )
    t.add_argument(
        "--drift-correct",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time a fixed reference graph right before every timed sample and bring each key to the table's "
        "reference speed (for machines whose speed drifts; about doubles the timed part of a build). Default: on "
        "for the cpu profile (a host CPU's speed moves with what else runs), off for GPU profiles",
    )
    t.add_argument(
        "--boundary",
        choices=BOUNDARY_METHODS,
        default=DEFAULT_BOUNDARY,
        help=f"how each key's boundary (what a block timed alone pays that a whole network pays once) is measured "
        f"right after it, so that the block sum needs no calibration to be close (default {DEFAULT_BOUNDARY}; "
        "none: the plain sum)",
    )
    t.add_argument(
        "--drift-reference",
        metavar="KEY",
        help=f"block key of the reference graph of --drift-correct (default {DEFAULT_DRIFT_REFERENCE})",
    )
    add_backend_arguments(p.add_argument_group("backend options"))
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
    o.add_argument("--out", type=text_arg, default="tables_out", help="output directory (default: ./tables_out)")
    o.add_argument(
        "--order",
        choices=("shuffled", "given"),
        default="shuffled",
        help="order of measuring the keys: shuffled with --seed (default; spreads each network's blocks over the "
        "build, so a drifting machine does not move one network's whole sum) or as enumerated",
    )
    v = p.add_argument_group("validation (after the build)")
    v.add_argument(
        "--no-validate",
        action="store_true",
        help="skip the end-to-end validation that proves each table (reference networks that fit the table plus a "
        "seeded sample of the space; calibration and validation files written next to the table)",
    )
    v.add_argument(
        "--validate-sample",
        type=int,
        default=DEFAULT_VALIDATE_SAMPLE,
        metavar="N",
        help=f"architectures of the space being profiled in the validation (default {DEFAULT_VALIDATE_SAMPLE})",
    )
    o.add_argument("--dry-run", action="store_true", help="print key counts and an estimated time; build nothing")
    o.add_argument("--retry-failed", action="store_true", help="measure again the keys that failed in an earlier run")
    o.add_argument("--force-device", action="store_true", help="build even if the GPU does not match --device")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument(
        "--no-speed-probe",
        action="store_true",
        help="without drift correction, skip timing the default reference graph at the start and end of the build "
        "(a probe of the machine's speed, a few tenths of a second on a CPU; the table's steadiness then rests on "
        "its keys' spread alone, and a later validation cannot say how far the machine's speed moved)",
    )
    return p


def parse_precisions(text: str | None, profile: DeviceProfile) -> list[str]:
    """The precisions of ``--precision`` (default fp32,int8 on cpu, fp16 on a GPU), each once, in order."""
    if text is None:
        return ["fp32", "int8"] if profile.kind == "cpu" else ["fp16"]
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part not in PRECISIONS and text.strip():
            raise UsageError(f"unknown precision {part!r} in --precision: choose from {', '.join(PRECISIONS)}")
        if part not in out:
            out.append(part)
    if out == [""]:
        raise UsageError("--precision is empty: give e.g. --precision fp16,int8")
    return out


def check_out_dir(path: Path) -> Path:
    """Create ``--out`` if needed; a usage error when it is a file, cannot be created or is not writable."""
    import os

    if not str(path).strip():
        raise UsageError("--out is empty: give an output directory (default tables_out)")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file, not a directory: choose a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {path}: {exc.strerror}; choose a writable --out") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {path} is not writable: choose a writable --out")
    return path


def drift_on(args: argparse.Namespace, profile: DeviceProfile) -> bool:
    """Whether the build drift-corrects: ``--drift-correct`` / ``--no-drift-correct`` when given, else on for
    the cpu profile (a host CPU, shared with whatever else runs, moves its speed by 5-40% within an hour on a
    cloud VM: BENCHMARKS.md) and off for GPU profiles."""
    given = getattr(args, "drift_correct", None)
    return profile.kind == "cpu" if given is None else bool(given)


def short_rounds(args: argparse.Namespace, profile: DeviceProfile) -> int:
    """How many times the build measures its short keys: ``--short-rounds`` when given, else
    :data:`~profiler.tablebuild.DEFAULT_SHORT_ROUNDS_CPU` on the cpu profile and 1 (no more than every key) on
    GPU profiles."""
    given = getattr(args, "short_rounds", None)
    if given is not None:
        return int(given)
    return DEFAULT_SHORT_ROUNDS_CPU if profile.kind == "cpu" else 1


def drift_reference_key(args: argparse.Namespace, profile: DeviceProfile) -> str | None:
    """The drift reference's key string when the build drift-corrects (``None`` when not); a bad key is a usage
    error."""
    given = getattr(args, "drift_reference", None)
    if not drift_on(args, profile):
        if given:
            why = "--no-drift-correct was given" if args.drift_correct is False else "GPU profiles default to none"
            raise UsageError(f"--drift-reference needs drift correction ({why}): add --drift-correct")
        return None
    try:
        return str(parse_key(given or DEFAULT_DRIFT_REFERENCE))
    except ValueError as exc:
        raise UsageError(f"--drift-reference: {exc}") from None


def backend_config(args: argparse.Namespace, profile: DeviceProfile) -> BackendConfig:
    """The backend configuration the flags ask for on this profile (checked; nothing is imported)."""
    backend = args.backend or profile.default_backend
    device = "cpu" if profile.kind == "cpu" else "cuda"
    if profile.kind == "cpu" and backend == "tensorrt":
        raise UsageError("--backend tensorrt needs a GPU device profile; on cpu use onnxruntime or torch")
    config = config_from_args(args, backend, device)
    return config.replace(cpus=default_cpus(args, config)) if args.cpus is None else config


def default_cpus(args: argparse.Namespace, config: BackendConfig) -> tuple[int, ...]:
    """The pinning of a build that gives no ``--cpus``: one serial CPU measurement goes to the last CPU this
    process may use (:func:`tables.host.spare_cpu`, the rest left to the OS and the shell), as the accuracy
    benchmarks measure; unpinned on a GPU, with several workers, or on a single-CPU machine. Recorded in the
    table's settings like a given ``--cpus``; ``--cpus none`` measures unpinned."""
    if not config.applies("cpus") or config.device_kind != "cpu":
        return ()
    if getattr(args, "executor", "serial") != "serial" or (getattr(args, "workers", None) or 1) != 1:
        return ()
    spare = spare_cpu()
    return () if spare is None or config.threads > 1 else (spare,)


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse numbers outside the documented limits before anything starts (one line each)."""
    if not 1 <= args.batch <= MAX_BATCH:
        raise UsageError(f"--batch must be an integer from 1 to {MAX_BATCH}, got {args.batch}")
    if args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, got {args.rounds}")
    if args.rounds > MAX_ROUNDS:
        raise UsageError(f"--rounds {args.rounds} is more than {MAX_ROUNDS}: use at most {MAX_ROUNDS} rounds")
    if args.short_rounds is not None and not 1 <= args.short_rounds <= MAX_ROUNDS:
        raise UsageError(
            f"--short-rounds must be from 1 to {MAX_ROUNDS}, got {args.short_rounds}: 1 measures short keys once"
        )
    if not 0.0 < args.short_below <= MAX_SHORT_BELOW_MS:
        raise UsageError(
            f"--short-below must be a latency in ms from 0 to {MAX_SHORT_BELOW_MS:g}, got {args.short_below:g}"
        )
    if args.sample is not None and not 1 <= args.sample <= MAX_SAMPLE:
        raise UsageError(
            f"--sample must be from 1 to {MAX_SAMPLE:,} architectures, got {args.sample}: for every key of the "
            "space use --space alone"
        )
    if args.workers is not None and not 1 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be from 1 to {MAX_WORKERS}, got {args.workers}")
    if not 1 <= args.chunk_size <= MAX_CHUNK_SIZE:
        raise UsageError(f"--chunk-size must be from 1 to {MAX_CHUNK_SIZE}, got {args.chunk_size}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed must be from 0 to {MAX_SEED}, got {args.seed}")
    if args.measure_fraction is not None and not 0.0 < args.measure_fraction <= 1.0:
        raise UsageError(
            f"--measure-fraction must be a fraction in (0, 1], got {args.measure_fraction}: e.g. 0.2 measures a fifth"
        )
    if not 0 <= args.validate_sample <= MAX_VALIDATE_SAMPLE:
        raise UsageError(
            f"--validate-sample must be from 0 to {MAX_VALIDATE_SAMPLE} architectures, got {args.validate_sample}"
        )


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> int:
    """Build the tables the arguments ask for; returns 0, or 1 when some key failed."""
    check_numbers(args)
    profile = get_profile(args.device)
    config = backend_config(args, profile)
    precisions = parse_precisions(args.precision, profile)
    for p in precisions:  # refused here, before any engine is imported or device looked for
        try:
            config.check_precision(p)
        except PrecisionNotSupported as exc:
            runs = precisions_for(config.backend, config.device)
            if args.precision is not None or not runs:
                raise
            raise PrecisionNotSupported(
                f"{exc}; {p} is one of the {profile.name} profile's default precisions ({', '.join(precisions)}): "
                f"give the ones it runs, e.g. --precision {','.join(runs)}"
            ) from None
    timing = timing_from_args(args, gpu=config.device_kind == "cuda")
    shard = None
    if args.shard is not None:
        shard = sharding.parse_shard(args.shard)
    drift = drift_reference_key(args, profile)
    config.check_machine(usable_cpus(), logical_cpus())
    detected = None
    if not args.dry_run:  # a dry run plans anywhere; a build needs the profile's device, checked before any work
        detected = detect_for(profile)
        mismatch = check_device(profile, detected, force=args.force_device)
        if mismatch:
            print(f"warning: {mismatch.split('; pass')[0]} (forced)", file=sys.stderr)
        check_engine_installed(config.backend, config.device_kind)
    needs_gpus = args.executor == "local" and profile.kind == "gpu" and not args.gpus
    if needs_gpus and detected is None:
        detected = detect_for(profile)
    plan = make_plan(
        executor=args.executor,
        config=config,
        profile=profile,
        chunk_size=args.chunk_size,
        workers=args.workers,
        gpus=args.gpus,
        address=args.address,
        detected=detected,
    )
    source = enumeration.collect_keys(
        space=args.space,
        sample=args.sample,
        seed=args.seed,
        networks_text=args.networks,
        archs=args.archs,
        limit=args.limit,
    )
    if not source.keys:
        raise UsageError("no keys to profile: the chosen space, networks or archs file is empty")
    keys = sharding.select_shard(source.keys, *shard) if shard else list(source.keys)
    description = dict(source.description)
    extra_metadata: dict = {}
    if shard:
        description["shard"] = sharding.shard_metadata(*shard)
        extra_metadata["shard"] = sharding.shard_metadata(*shard)
    out_dir = Path(args.out)

    def name_of(precision: str) -> str:
        name = table_filename(profile.name, config.backend, precision, args.batch)
        return sharding.shard_table_name(name, *shard) if shard else name

    if args.dry_run:
        print_dry_run(
            plan=plan,
            profile=profile,
            backend=config.backend,
            batch=args.batch,
            precisions=precisions,
            counts=source.counts,
            all_keys=source.keys,
            keys=keys,
            out_dir=out_dir,
            table_names={p: name_of(p) for p in precisions},
            rounds=args.rounds,
            short=(short_rounds(args, profile), args.short_below),
            drift_correct=drift is not None,
            boundary=args.boundary,
            shard=shard,
        )
        if config.cpus:
            how = (
                "given by --cpus"
                if args.cpus is not None
                else "the default: the last usable CPU; --cpus none: unpinned"
            )
            print(f"measuring pinned to CPU(s) {format_cpus(config.cpus)} ({how})")
        if drift is not None and args.drift_correct is None:
            print(f"drift-corrected to reference {drift} (the default on the cpu profile; --no-drift-correct: off)")
        if not args.no_validate and not shard:
            print(
                f"then each table is validated end to end on the reference networks that fit it and "
                f"{args.validate_sample} sampled architectures of the space profiled (--no-validate skips it)"
            )
        return 0

    if plan.executor == "ray":
        from profiler.executors import import_ray

        try:
            import_ray()
        except ImportError as exc:
            raise UsageError(str(exc)) from None
    check_out_dir(out_dir)
    remove_stale_temporaries(Path(config.cache_dir) if config.cache_dir else default_cache_dir())
    assert detected is not None
    if not keys:
        print(f"shard {shard[0]}/{shard[1]} holds none of the {len(source.keys)} keys: its tables stay empty")
    executor = make_executor(
        plan,
        config,
        timing,
        drift_reference=drift,
        cache_base=Path(config.cache_dir or out_dir),
        boundary=args.boundary,
    )
    job = TableJob(
        profile=profile,
        config=config,
        precision=precisions[0],
        batch=args.batch,
        timing=timing,
        keys=tuple(keys),
        out_dir=out_dir,
        table_name=name_of(precisions[0]),
        source=description,
        detected=detected,
        floor_keys=tuple(source.keys),
        order_seed=None if args.order == "given" else args.seed,
        drift_reference=drift,
        rounds=args.rounds,
        short_rounds=short_rounds(args, profile),
        short_below_ms=args.short_below,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        extra_metadata=extra_metadata,
        boundary=args.boundary,
        speed_probe=not args.no_speed_probe,
    )
    any_failed = False
    built: list[Path] = []
    try:
        info = executor.start(precisions)
        for p in precisions:
            t0 = time.perf_counter()
            this = job.replace(precision=p, table_name=name_of(p))
            extra_lines: list[str] = []
            if args.measure_fraction is None:
                outcome = build_table(this, executor, info)
            else:
                from profiler.selection import build_fraction

                outcome, extra_lines = build_fraction(this, executor, info, args.measure_fraction, args.seed)
            wall = time.perf_counter() - t0
            failures = outcome.failures
            ok = f"{len(keys) - len(failures)} ok"
            if args.measure_fraction is not None:  # the rest is not measured: count what the table holds
                from tables.table import LatencyTable

                held = LatencyTable.load(outcome.path, calibration=False)
                ok = f"{sum(1 for k in keys if k in held)} ok of {len(keys)} keys"
            rate = f", {outcome.measured / wall * 3600:.0f} keys/h" if outcome.measured and wall > 0 else ""
            print(
                f"{outcome.path}: {ok}, {len(failures)} failed; measured {outcome.measured} now in "
                f"{fmt_duration(wall)}{rate}"
            )
            if failures:
                print(f"  failed: {outcome.summary()}")
            for note in [*extra_lines, *steadiness_note(outcome.path)]:
                print(note)
            for k, kind, msg in failures[:10]:
                print(f"  failed ({kind}) {k}: {msg}")
            if len(failures) > 10:
                print(f"  ... and {len(failures) - 10} more (see the table's error column)")
            any_failed = any_failed or bool(failures)
            built.append(outcome.path)
    finally:
        executor.close()
    if args.no_validate:
        return 1 if any_failed else 0
    if shard:
        print("validation: skipped for a shard; validate the merged table with python -m profiler.validate")
        return 1 if any_failed else 0
    from profiler.proof import prove

    for path in built:
        lines, failed = prove(
            path,
            n_sample=args.validate_sample,
            seed=args.seed,
            cache_dir=config.cache_dir,
            progress=not args.no_progress,
        )
        for line in lines:
            print(line)
        any_failed = any_failed or failed
    return 1 if any_failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 some keys failed, 2 bad input, 130 interrupted)."""
    return run_cli(
        run,
        build_parser(),
        argv,
        interrupted="interrupted: every key measured so far is kept; run the same command again to resume",
    )


__all__ = ["build_parser", "main", "run"]


if __name__ == "__main__":
    sys.exit(main())
