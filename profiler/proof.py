"""A build proves its table: end-to-end validation on a calibration set chosen for the table.

``python -m profiler.build`` ends, unless ``--no-validate``, by timing whole
networks with the table's own backend, settings and protocol
(:func:`profiler.validate.validate_table`), fitting the calibration on part of
them and reporting the error on the rest. The calibration set
(:func:`calibration_set`) is

- every reference network whose keys are all measured in the table and whose
  block sum is at most :data:`MAX_VALIDATION_RUN_MS` per inference (a network
  that fits the table's resolution and batch: its thirty-odd timed runs take
  seconds, not minutes);
- ``--validate-sample N`` architectures of the space being profiled, seeded
  (``--seed``): a subset of the build's own ``--sample``, of its ``--archs``
  file, or a Sobol sample of a whole ``--space``;

split by source into a fit part (70%) and a held-out part (30%). The calibration
and the validation file are written next to the table
(``<table>.calibration.json``, ``<table>.validation.parquet``), the held-out
accuracy is stored in the table's metadata (``validation``), and a few lines are
printed. Nothing is measured for keys: a network whose keys are not all in the
table is left out, and said so.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from profiler import enumeration
from profiler.spaces import Architecture
from tables.cli import UsageError, WorkFailed
from tables.errors import error_text

#: A reference network whose block sum predicts more than this per inference (ms per batch) is left out of a
#: build's validation: its thirty-odd timed runs would take minutes.
MAX_VALIDATION_RUN_MS = 1000.0

#: Architectures of the space being profiled in a build's validation (``--validate-sample``).
DEFAULT_VALIDATE_SAMPLE = 10

#: Most architectures ``--validate-sample`` takes.
MAX_VALIDATE_SAMPLE = 1000

#: Share of the calibration set held out from the fit and reported on.
HOLDOUT = 0.3


def _pick(archs: Sequence[Architecture], n: int, seed: int) -> list[Architecture]:
    """A seeded subset of ``n`` of ``archs``, in their order."""
    if len(archs) <= n:
        return list(archs)
    chosen = np.sort(np.random.default_rng(seed).choice(len(archs), size=n, replace=False))
    return [archs[int(i)] for i in chosen]


def calibration_set(
    table: Any, source: Mapping[str, Any] | None, n_sample: int, seed: int
) -> tuple[list[Architecture], list[str]]:
    """The networks that validate ``table`` (a :class:`tables.table.LatencyTable`) and notes on what was left out.

    ``source``: the table's metadata ``source`` (what the build profiled); ``n_sample``: architectures of the
    space being profiled; ``seed``: their seed.
    """
    from profiler.networks import NETWORKS

    notes: list[str] = []
    chosen: list[Architecture] = []
    too_slow: list[str] = []
    for arch in enumeration.architectures_for_networks(list(NETWORKS)):
        if not table.coverage(arch).complete:
            continue
        total = float(np.sum(table.latencies(arch.keys)))
        if total > MAX_VALIDATION_RUN_MS:
            too_slow.append(arch.name)
            continue
        chosen.append(arch)
    if too_slow:
        notes.append(
            f"left out {', '.join(too_slow)}: over {MAX_VALIDATION_RUN_MS:g} ms per inference at batch {table.batch}"
        )
    source = dict(source or {})
    pool: list[Architecture] = []
    sample = source.get("sample")
    if isinstance(sample, Mapping):
        pool = enumeration.architectures_for_sample(sample["space"], int(sample["n"]), int(sample["seed"]))
    elif source.get("archs"):
        try:
            pool = enumeration.architectures_for_archs_file(source["archs"])
        except (OSError, ValueError) as exc:
            notes.append(f"the archs file is not readable any more ({error_text(exc)})")
    elif source.get("space"):
        pool = enumeration.architectures_for_sample(source["space"], n_sample, seed)
    picked = _pick(pool, n_sample, seed) if n_sample > 0 else []
    known = {a.name for a in chosen}
    lacking = 0
    for arch in picked:
        if arch.name in known:
            continue
        if not table.coverage(arch).complete:
            lacking += 1
            continue
        chosen.append(arch)
        known.add(arch.name)
    if lacking:
        notes.append(f"left out {lacking} sampled architecture(s) whose keys are not all measured")
    return chosen, notes


def validation_arguments(table_path: Path, *, seed: int, cache_dir: str | None, progress: bool) -> argparse.Namespace:
    """The arguments of ``python -m profiler.validate`` for a build's own validation of ``table_path``."""
    from profiler import validate

    argv = ["--table", str(table_path), "--seed", str(seed), "--holdout", str(HOLDOUT)]
    if cache_dir:
        argv += ["--cache-dir", str(cache_dir)]
    if not progress:
        argv.append("--no-progress")
    return validate.build_parser().parse_args(argv)


def record(table_path: Path, entry: Mapping[str, Any], name: str = "validation") -> None:
    """Store ``entry`` as the table's metadata ``name`` (rewritten atomically under the build lock)."""
    from tables.paths import lock_path
    from tables.schema import read_table, write_table
    from tables.store import BuildLock

    with BuildLock(lock_path(table_path.parent, table_path.name)):
        frame, md = read_table(table_path)
        write_table(frame, table_path, {**md, name: dict(entry)})


def _pct(value: Any) -> str:
    try:
        return f"{float(value):.1f}%"
    except (TypeError, ValueError):
        return "n/a"


def prove(
    table_path: Path, *, n_sample: int, seed: int, cache_dir: str | None, progress: bool
) -> tuple[list[str], bool]:
    """Validate a freshly built table end to end; returns the lines to print and whether the work failed.

    A table with no network to validate, or fewer than two, is reported and left as it is (no failure).
    """
    from profiler import validate
    from tables.table import LatencyTable

    table = LatencyTable.load(table_path, calibration=False)
    archs, notes = calibration_set(table, table.metadata.get("source"), n_sample, seed)
    name = table_path.name
    if len(archs) < 2:
        why = "; ".join(notes) or "no network of this table has all its keys measured"
        return [f"validation of {name}: skipped, fewer than 2 networks to time ({why})"], False
    args = validation_arguments(table_path, seed=seed, cache_dir=cache_dir, progress=progress)
    try:
        result = validate.validate_table(args, archs)
    except (UsageError, WorkFailed, ValueError) as exc:
        return [f"validation of {name}: failed: {error_text(exc)}"], True
    held, cal = result.metrics, result.calibration
    where = "held-out" if held.get("evaluated_on") == "holdout" else "all networks (none held out)"
    uncal, calibrated = held["uncalibrated"], held["calibrated"]
    record(
        table_path,
        {
            "file": result.out_path.name,
            "networks": len(result.frame),
            "fit": result.n_fit,
            "held_out": result.n_held,
            "failed": len(result.failed),
            "evaluated_on": held.get("evaluated_on"),
            "calibration": cal.model,
            "calibration_cv_mape_pct": cal.held_out_mape_pct(),
            "uncalibrated": dict(uncal),
            "calibrated": dict(calibrated),
            "machine_speed": dict(result.speed),
        },
    )
    lines = [
        f"validation of {name}: {len(result.frame) - len(result.failed)} networks timed end to end in "
        f"{result.wall_s:.0f} s ({result.n_fit} fit the calibration, {result.n_held} held out)",
        f"  {where} error: block sum MAPE {_pct(uncal.get('mape_pct'))}, {_pct(uncal.get('within_5_pct'))} within "
        f"+-5%; calibrated ({cal.model}) MAPE {_pct(calibrated.get('mape_pct'))}, "
        f"{_pct(calibrated.get('within_5_pct'))} within +-5%",
        f"  {cal.explain()[0]}",
        *(f"  {line.strip()}" for line in cal.explain()[1:]),
        *(
            [
                f"  prediction intervals: {iv['coverage_pct']:.0f}% of {iv['n']} {where} networks inside their "
                f"nominal {iv['level'] * 100:.0f}% interval (median width {iv['median_width_pct']:.1f}%)"
            ]
            if (iv := held.get("interval")) and iv.get("n")
            else []
        ),
        *(f"  note: {n}" for n in notes),
        *(f"  failed {net}: {err}" for net, err in result.failed),
        f"  calibration: {result.saved}; validation: {result.out_path}",
    ]
    return lines, False


__all__ = [
    "DEFAULT_VALIDATE_SAMPLE",
    "HOLDOUT",
    "MAX_VALIDATE_SAMPLE",
    "MAX_VALIDATION_RUN_MS",
    "calibration_set",
    "prove",
    "record",
    "validation_arguments",
]
