"""The command-line options ``profiler.build`` and ``profiler.validate`` share, and what they become.

- the timing protocol (``--repeats``, ``--warmup``, ``--warmup-ms``, ``--trim``,
  ``--min-sample-ms``) <-> :class:`kernels_bench.timing.TimingSettings`;
- the backend options (``--threads``, ``--cpus``, ``--opt-level``,
  ``--strongly-typed``, ``--cuda-graphs``, ``--compile``, and ``--cache-dir``)
  <-> :class:`kernels_bench.config.BackendConfig`, whose field names they are.

Both conversions refuse a bad value with a one-line :class:`~tables.cli.UsageError`
before anything is imported or started.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from kernels_bench.config import FIELDS, BackendConfig, parse_cpus
from kernels_bench.timing import GPU_WARMUP_MS, TimingSettings
from tables.cli import UsageError, text_arg

#: Flag -> field of :class:`TimingSettings`.
TIMING_FLAGS: dict[str, str] = {
    "repeats": "repeats",
    "warmup": "warmup_runs",
    "warmup_ms": "warmup_min_ms",
    "trim": "trim",
    "min_sample_ms": "min_sample_ms",
    "cold_l2": "cold_l2",
}


def add_timing_arguments(group: argparse._ArgumentGroup, *, defaults: bool) -> None:
    """The timing-protocol flags; with ``defaults=False`` every one defaults to ``None`` (the table's own)."""
    d = TimingSettings()

    def default(value: Any) -> Any:
        return value if defaults else None

    group.add_argument("--repeats", type=int, default=default(d.repeats), help=f"timed runs ({d.repeats})")
    group.add_argument("--warmup", type=int, default=default(d.warmup_runs), help=f"warm-up runs ({d.warmup_runs})")
    group.add_argument(
        "--warmup-ms",
        type=float,
        default=default(d.warmup_min_ms),
        help=f"minimum warm-up time, ms ({d.warmup_min_ms:g})",
    )
    group.add_argument(
        "--trim", type=float, default=default(d.trim), help=f"share dropped at each end for the trimmed mean ({d.trim})"
    )
    group.add_argument(
        "--min-sample-ms",
        type=float,
        default=default(d.min_sample_ms),
        help="minimum length of one timed sample in ms: short inferences are run back to back and averaged "
        f"(default {d.min_sample_ms:g}: only the timer's resolution sets it); longer samples average out a noisy "
        "machine",
    )
    group.add_argument(
        "--cold-l2",
        action="store_const",
        const=True,
        default=False if defaults else None,
        help="GPU: flush the L2 cache before every sample (default: L2-warm, as inside a network; recorded)",
    )


def timing_from_args(
    args: argparse.Namespace, base: Mapping[str, Any] | None = None, *, gpu: bool = False
) -> TimingSettings:
    """The timing protocol of the flags; a flag left ``None`` keeps ``base``'s value (a table's ``timing``).

    Without a base, ``--warmup-ms`` defaults to :data:`~kernels_bench.timing.GPU_WARMUP_MS` when ``gpu``.
    """
    values = dict(base or {})
    if base is None and gpu:
        values["warmup_min_ms"] = GPU_WARMUP_MS
    for flag, name in TIMING_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            values[name] = value
    try:
        return TimingSettings.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def add_backend_arguments(group: argparse._ArgumentGroup) -> None:
    """The backend flags: one per :data:`kernels_bench.config.FIELDS` entry, and ``--cache-dir``."""
    for f in FIELDS:
        if f.name == "threads":
            group.add_argument(f.flag, type=int, default=1, help=f.help)
        elif f.name == "cpus":
            group.add_argument(
                f.flag,
                type=text_arg,
                help=f.help + "; with --executor local each worker gets its own share; a serial cpu build pins "
                "to the last usable CPU unless given ('none': unpinned)",
            )
        elif f.name == "opt_level":
            group.add_argument(f.flag, type=int, help=f.help)
        elif f.name == "strongly_typed":
            group.add_argument(f.flag, action="store_const", const=True, default=None, help=f.help)
        else:
            group.add_argument(f.flag, action="store_true", help=f.help)
    group.add_argument(
        "--cache-dir", type=text_arg, help="where exported ONNX graphs and the TensorRT timing caches are kept"
    )


#: ``--cpus none``: measure unpinned (the build's default on the cpu profile is one spare CPU).
NO_PIN = "none"


def cpus_from_text(text: str | None) -> tuple[int, ...]:
    """The CPUs of ``--cpus`` (``()`` when not given or ``none``); a malformed list is a usage error."""
    if text is None or text.strip().lower() == NO_PIN:
        return ()
    try:
        return tuple(parse_cpus(text))
    except ValueError as exc:
        raise UsageError(f"--cpus: {exc}") from None


def config_from_args(args: argparse.Namespace, backend: str, device: str) -> BackendConfig:
    """The :class:`BackendConfig` the backend flags ask for; an option of another backend is a usage error."""
    try:
        return BackendConfig(
            backend,
            device,
            threads=args.threads,
            cpus=cpus_from_text(args.cpus),
            opt_level=args.opt_level,
            strongly_typed=args.strongly_typed,
            cuda_graphs=args.cuda_graphs,
            tf32=args.tf32,
            compile=args.compile,
            cache_dir=args.cache_dir,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


__all__ = [
    "NO_PIN",
    "TIMING_FLAGS",
    "add_backend_arguments",
    "add_timing_arguments",
    "config_from_args",
    "cpus_from_text",
    "timing_from_args",
]
