"""``python -m profiler.validate``: predicted against measured end-to-end latency of whole networks.

Each network is built whole and timed with the table's own backend, backend
settings (threads, CPU pinning, ...), precision, batch and timing protocol (all
read from the table's metadata; ``--repeats``/``--warmup``/``--warmup-ms``/
``--min-sample-ms`` override the protocol, ``--cpus`` the pinning), exactly as
``profiler.build`` times one key: ``measure_keys`` over the network's whole
chain of keys. Every network is timed in rounds, round-robin over the
networks, and its figure is the median of its rounds. By default
(``--rounds auto``) a network gets as many rounds as fit in
:data:`AUTO_ROUND_SPAN_S` seconds of its own measuring (its first round's
export, compile, warm-up and timed seconds; at least one, at most
:data:`AUTO_MAX_ROUNDS`): thirty runs of a small network last a fraction of a
second, one state of a machine whose speed moves, where a large network's
already span several; ``--rounds R`` times every network R times. Its
prediction is the sum of its block entries in the table.

A table built with ``--drift-correct`` brought every key to one reference speed
of the machine; its networks are timed the same way (the same reference graph
timed right before every sample) and brought to the same reference speed, the
one stored in the table, so that a machine that has become faster or slower
since the build compares like with like (``--no-drift-correct`` compares the
raw figures instead).

The networks are split, with a seeded permutation inside each source
(reference networks, GPUNet/GENet samples, file entries) so that every source
is represented on both sides, into a *fit* part that calibrates the sum
(:func:`tables.calibration.fit`) and a *holdout* part the accuracy is reported
on: MAPE, max APE, RMSPE, share within +-5% / +-10%, Kendall tau and Spearman
rho, before and after calibration. The calibration is saved next to the table
(``<table>.calibration.json``), where ``LatencyTable.load`` applies it by
default, unless ``--no-save-calibration``.

Output: a Parquet file, one row per network (``network``, ``source``,
``encoding``, ``n_blocks``, ``io_mel`` (the blocks' input plus output, millions
of elements per batch), ``sum_ms``, ``predicted_ms``, ``measured_ms``,
``measured_std_ms``, ``measured_rounds_ms`` (each round's figure),
``measured_raw_ms`` (the median of the rounds before drift correction; equal to
``measured_ms`` without it), ``reference_rounds_ms`` (the drift reference's
figure in each round, empty without it), ``split``,
``error_pct``, ``error_uncal_pct``, ``status``, ``error``; latencies in ms per
batch, errors in %), with the table's metadata plus ``calibration`` and
``metrics`` under the Parquet key ``b"nas_latency"``; ``python -m
reports.validation`` draws it.

Examples::

    python -m profiler.validate --table tables_out/cpu_onnxruntime_fp32_b1.parquet --networks all
    python -m profiler.validate --table T.parquet --space gpunet --sample 40 --holdout 0.3 --out val.parquet
    python -m profiler.validate --table T.parquet --archs my_archs.json --no-save-calibration

Without ``--networks``/``--sample``/``--archs`` the networks the table was built
for (its metadata ``source``) are validated.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kernels_bench.config import BackendConfig
from kernels_bench.errors import check_engine_installed
from profiler import enumeration
from profiler.devices import check_device, detect_for, get_profile
from profiler.options import add_timing_arguments, cpus_from_text, timing_from_args
from profiler.spaces import Architecture
from profiler.tablebuild import build_command
from tables.cli import CliParser, UsageError, WorkFailed, run_cli, text_arg
from tables.errors import error_text
from tables.paths import calibration_path, missing_archs_path, table_filename, validation_path
from tables.table import write_archs_file

#: Columns of the validation Parquet file, in order.
COLUMNS: tuple[str, ...] = (
    "network",
    "source",
    "encoding",
    "n_blocks",
    "io_mel",
    "sum_ms",
    "predicted_ms",
    "measured_ms",
    "measured_std_ms",
    "measured_rounds_ms",
    "measured_raw_ms",
    "reference_rounds_ms",
    "split",
    "error_pct",
    "error_uncal_pct",
    "status",
    "error",
)

#: Metric rows of the printed summary: (name in accuracy_metrics, label, format).
SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("mape_pct", "MAPE (%)", "{:.2f}"),
    ("max_ape_pct", "max APE (%)", "{:.2f}"),
    ("rmspe_pct", "RMSPE (%)", "{:.2f}"),
    ("within_5_pct", "within +-5% (%)", "{:.0f}"),
    ("within_10_pct", "within +-10% (%)", "{:.0f}"),
    ("kendall_tau", "Kendall tau", "{:.3f}"),
    ("spearman_rho", "Spearman rho", "{:.3f}"),
)


@dataclass
class Measured:
    """End-to-end timing of one network: trimmed mean and std in ms per batch, or the error text.

    With several rounds ``latency_ms`` is the median of the rounds' trimmed means
    (``rounds_ms``) and ``std_ms`` the median of their sample standard deviations.
    With a drift reference each round's figure is drift-corrected; ``raw_ms`` is the
    median of the rounds as measured and ``reference_rounds_ms`` the reference's
    figure in each round.
    """

    latency_ms: float = math.nan
    std_ms: float = math.nan
    error: str | None = None
    rounds_ms: list[float] = field(default_factory=list)
    raw_ms: float = math.nan
    reference_rounds_ms: list[float] = field(default_factory=list)


#: ``--rounds auto``: a network gets as many rounds as fit in this many seconds of its own measuring.
AUTO_ROUND_SPAN_S = 5.0

#: ``--rounds auto``: most rounds of one network.
AUTO_MAX_ROUNDS = 5

#: The ``--rounds`` value that sizes each network's rounds from its first one.
AUTO = "auto"


def auto_rounds(round_s: float) -> int:
    """Rounds of a network whose first round took ``round_s`` seconds of measuring (``--rounds auto``)."""
    if not (math.isfinite(round_s) and round_s > 0):
        return AUTO_MAX_ROUNDS
    return max(1, min(AUTO_MAX_ROUNDS, math.ceil(AUTO_ROUND_SPAN_S / round_s)))


# --------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m profiler.validate``."""
    p = CliParser(
        prog="python -m profiler.validate",
        description="Time whole networks end to end, compare with the table's block sums, fit and save a calibration.",
    )
    p.add_argument(
        "--table", type=text_arg, required=True, help="latency table (.parquet) from python -m profiler.build"
    )
    src = p.add_argument_group("networks (default: those the table was built for)")
    src.add_argument("--networks", help="comma-separated reference networks (e.g. resnet-50,gpunet-0) or 'all'")
    src.add_argument("--sample", type=int, help="N architectures sampled from --space with Sobol")
    src.add_argument(
        "--space",
        type=text_arg,
        help="space of --sample: gpunet, gpunet-padded, genet, genet-light/normal/large or a space file",
    )
    src.add_argument("--seed", type=int, default=0, help="seed of --sample and of the fit/holdout split (default 0)")
    src.add_argument("--archs", type=text_arg, help="a JSON/YAML file listing architectures")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.3,
        help="share of the networks held out from the calibration fit and reported on (0 <= f < 1, default 0.3)",
    )
    p.add_argument(
        "--out", type=text_arg, help="validation Parquet file (default: <table>.validation.parquet next to the table)"
    )
    t = p.add_argument_group("timing protocol (default: the table's)")
    add_timing_arguments(t, defaults=False)
    t.add_argument(
        "--rounds",
        type=rounds_arg,
        default=AUTO,
        help="time every network this many times, in round-robin order over the networks, and keep the median; "
        f"'auto' (default): as many rounds as fit in {AUTO_ROUND_SPAN_S:g} s of each network's own measuring, "
        f"1 to {AUTO_MAX_ROUNDS} (a small network's thirty runs see one moment of a machine whose speed drifts)",
    )
    p.add_argument(
        "--cpus",
        help="pin the measuring process to these CPUs, e.g. 1 or 0-3 (default: the table's pinning, if any)",
    )
    p.add_argument(
        "--no-drift-correct",
        action="store_true",
        help="a table built with --drift-correct: compare the networks' raw figures, without bringing them to the "
        "table's reference speed",
    )
    p.add_argument(
        "--no-save-calibration", action="store_true", help="do not write <table>.calibration.json next to the table"
    )
    p.add_argument(
        "--cache-dir", type=text_arg, help="where exported ONNX graphs (and the TensorRT timing cache) are kept"
    )
    p.add_argument("--force-device", action="store_true", help="validate even if the GPU does not match the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def rounds_arg(text: str) -> int | str:
    """``--rounds``: ``auto`` or a whole number (checked by :func:`check_args`)."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"use 'auto' or a whole number of rounds, not {text!r}") from None


def check_args(args: argparse.Namespace) -> None:
    """Refuse out-of-range numbers with a one-line :class:`UsageError`."""
    if not 0.0 <= args.holdout < 1.0:
        raise UsageError(f"--holdout must be a fraction with 0 <= f < 1, got {args.holdout}")
    if args.rounds != AUTO and args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1 (or auto), got {args.rounds}")
    if args.sample is not None and args.sample <= 0:
        raise UsageError(f"--sample must be a positive number of architectures, got {args.sample}")
    if args.space and args.sample is None:
        raise UsageError("--space needs --sample N: validation times whole networks, not every key of a space")


# --------------------------------------------------------------------------- networks
def collect_architectures(args: argparse.Namespace, table_source: Mapping[str, Any] | None) -> list[Architecture]:
    """The networks to validate: --networks, --sample and --archs together, else the table's own source.

    Names must be unique; a network listed twice (same name) is kept once.
    """
    archs: list[Architecture] = []
    given = args.networks is not None or args.sample is not None or args.archs is not None
    if given:
        if args.networks is not None:
            archs += enumeration.architectures_for_networks(enumeration.network_names(args.networks))
        if args.sample is not None:
            archs += enumeration.architectures_for_sample(args.space or "gpunet", args.sample, args.seed)
        if args.archs:
            archs += enumeration.architectures_for_archs_file(args.archs)
    else:
        source = dict(table_source or {})
        if source.get("networks"):
            archs += enumeration.architectures_for_networks(list(source["networks"]))
        sample = source.get("sample")
        if isinstance(sample, Mapping):
            archs += enumeration.architectures_for_sample(sample["space"], int(sample["n"]), int(sample["seed"]))
        if source.get("archs"):
            archs += enumeration.architectures_for_archs_file(source["archs"])
        if not archs:
            raise UsageError(
                "the table's metadata names no networks to validate (it was built for a whole space); "
                "give --networks, --sample N --space S or --archs FILE"
            )
    unique: dict[str, Architecture] = {}
    for arch in archs:
        unique.setdefault(arch.name, arch)
    return list(unique.values())


def encoding_text(arch: Architecture) -> str:
    """The network's integer encoding as a JSON list, or its name when it has none."""
    return json.dumps(list(arch.encoding)) if arch.encoding is not None else arch.name


def split_networks(sources: Sequence[str], holdout: float, seed: int) -> np.ndarray:
    """``"fit"``/``"holdout"`` per network: a seeded permutation within each source.

    Each source holds out ``round(holdout * n)`` of its n networks; when there are
    at least two networks in all, at least one is held out (``holdout > 0``) and
    at least one fits. Deterministic for a given order, ``holdout`` and ``seed``.
    """
    n = len(sources)
    split = np.full(n, "fit", dtype=object)
    if holdout <= 0 or n < 2:
        return split
    rng = np.random.default_rng(seed)
    src = np.asarray(list(sources), dtype=object)
    for name in sorted(set(src.tolist())):
        idx = np.flatnonzero(src == name)
        k = round(holdout * len(idx))
        split[rng.permutation(idx)[:k]] = "holdout"
    held = np.flatnonzero(split == "holdout")
    if len(held) == 0:
        split[rng.integers(n)] = "holdout"
    elif len(held) == n:
        split[rng.choice(held)] = "fit"
    return split


# --------------------------------------------------------------------------- table
def load_table(path: Path):  # -> tables.table.LatencyTable
    """Load the table without any saved calibration (validation fits a new one)."""
    from tables.table import LatencyTable

    if not path.exists():
        raise UsageError(f"latency table not found: {path}; build it with python -m profiler.build")
    return LatencyTable.load(path, calibration=False)


def table_file(table, path: Path) -> Path:
    """The table's file (for a folder: the file name ``profiler.build`` gives it there)."""
    if path.is_dir():
        return path / table_filename(table.device, table.backend, table.precision, table.batch)
    return path


def check_coverage(table, archs: Sequence[Architecture], table_path: Path, out_path: Path) -> None:
    """Raise a one-line :class:`UsageError` (and write the archs file) when the table lacks keys of some networks."""
    report = table.coverage(archs)
    if report.complete:
        return
    lacking = {str(k) for k in report.missing}
    n_nets = sum(1 for a in archs if any(str(k) in lacking for k in a.keys))
    archs_file = missing_archs_path(out_path)
    write_archs_file(report.missing, archs_file)
    cmd = build_command(table.metadata, archs_file, table_path.parent)
    raise UsageError(
        f"{len(report.missing)} block key(s) of {n_nets} of {len(archs)} network(s) are not in the table "
        f"{table_path}; profile them with: {cmd}"
    )


# --------------------------------------------------------------------------- measuring
def backend_config(md: Mapping[str, Any], cache_dir: str | None, cpus: str | None = None) -> BackendConfig:
    """The backend configuration the table was built with; ``cpus`` (a ``--cpus`` list) replaces its pinning."""
    try:
        config = BackendConfig.from_metadata(md)
        if cpus is not None and config.applies("cpus"):
            config = config.replace(cpus=cpus_from_text(cpus))
        return config.replace(cache_dir=cache_dir)
    except ValueError as exc:
        raise UsageError(f"the table's backend settings: {exc}") from None


def settings_for(md: Mapping[str, Any], args: argparse.Namespace):  # -> kernels_bench.timing.TimingSettings
    """The table's timing protocol with the command-line overrides applied."""
    return timing_from_args(args, md.get("timing") or {})


def measure_networks(
    backend,
    archs: Sequence[Architecture],
    batch: int,
    precision: str,
    settings,
    progress: bool,
    rounds: int | str = 1,
    drift: Mapping[str, Any] | None = None,
) -> list[Measured]:
    """Time each network whole with ``measure_keys``; a network the backend cannot build is recorded as failed.

    With ``rounds`` > 1 every network is timed that many times, round-robin over
    the networks (round 1 of all, then round 2 of all, ...), so that a slow drift
    of the machine's speed touches every network alike; each network's figure is
    the median of its rounds. With ``rounds="auto"`` each network gets
    :func:`auto_rounds` of its first round's seconds (export, compile, warm-up,
    timed), still round-robin. A network that fails once is not timed again.

    ``drift``: the table's ``drift_reference`` entry (``key``, ``ratio``,
    ``latency_ms``): its graph is timed between the samples of every network and
    each round's figure is brought to the speed where it takes ``latency_ms``.
    """
    from kernels_bench.measure import DriftReference, measure_keys
    from tables.schema import drift_corrected

    reference = None
    if drift is not None:
        reference = DriftReference(
            backend, str(drift["key"]), batch=batch, precision=precision, ratio=float(drift.get("ratio", 1.0))
        )
    raws: list[list[float]] = [[] for _ in archs]
    refs: list[list[float]] = [[] for _ in archs]
    figures: list[list[float]] = [[] for _ in archs]
    stds: list[list[float]] = [[] for _ in archs]
    errors: list[str | None] = [None] * len(archs)
    auto = rounds == AUTO
    wanted = [1 if auto else int(rounds)] * len(archs)  # rounds of each network (auto: sized after round 1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(wanted), desc="networks", unit="net", dynamic_ncols=True, file=sys.stderr)
    try:
        r = 0
        while r < max(wanted):
            for i, arch in enumerate(archs):
                if r >= wanted[i]:
                    continue
                if bar is not None:
                    label = arch.name if wanted[i] == 1 else f"round {r + 1}/{wanted[i]} {arch.name}"
                    bar.set_postfix_str(label, False)
                if errors[i] is None:
                    try:
                        result = measure_keys(backend, list(arch.keys), batch, precision, settings, reference=reference)
                        raw = float(result.trimmed_mean_ms)
                        raws[i].append(raw)
                        stds[i].append(float(result.std_ms))
                        if reference is None:
                            figures[i].append(raw)
                        else:
                            refs[i].append(float(result.reference_ms))
                            figures[i].append(drift_corrected(raw, refs[i][-1], float(drift["latency_ms"])))
                        if auto and r == 0:
                            wanted[i] = auto_rounds(float(sum((result.phases or {}).values())))
                            if bar is not None and wanted[i] > 1:
                                bar.total += wanted[i] - 1
                                bar.refresh()
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:  # one network the backend cannot build must not end the run
                        errors[i] = error_text(exc, 500)
                if bar is not None:
                    bar.update(1)
            r += 1
    finally:
        if bar is not None:
            bar.close()
        if reference is not None:
            reference.close()
    out: list[Measured] = []
    for fig, std, err, raw, ref in zip(figures, stds, errors, raws, refs):
        if err is not None:
            out.append(Measured(error=err))
        else:
            out.append(
                Measured(
                    float(np.median(fig)),
                    float(np.median(std)),
                    rounds_ms=list(fig),
                    raw_ms=float(np.median(raw)),
                    reference_rounds_ms=list(ref),
                )
            )
    return out


# --------------------------------------------------------------------------- machine speed
def machine_speed(
    backend: Any,
    metadata: Mapping[str, Any],
    precision: str,
    measured: Sequence[Measured],
    drift: Mapping[str, Any] | None,
    settings: Any,
) -> dict[str, Any]:
    """How fast the machine is now against while the table was built: the reference graph's time both ways.

    A drift-corrected table: the reference timed with every network now against its median while the keys
    were timed. Otherwise the default reference timed alone at batch 1 now against the build's speed probes.
    ``change_pct`` > 0: slower now. ``None`` figures when the table records no speed (an older table) or the
    reference cannot be timed (the validation goes on).
    """
    entry = metadata.get("steadiness") or {}
    out: dict[str, Any] = {
        "build_ms": entry.get("speed_ms"),
        "now_ms": None,
        "change_pct": None,
        "drift_corrected": drift is not None,
    }
    if drift is not None:
        now = [r for m in measured for r in m.reference_rounds_ms]
        out["now_ms"] = float(np.median(now)) if now else None
        out["reference"] = drift.get("key")
    elif entry.get("speed_ms") is not None:
        from kernels_bench.measure import DEFAULT_DRIFT_REFERENCE, DriftReference

        key = entry.get("probe_key") or DEFAULT_DRIFT_REFERENCE
        try:
            with DriftReference(backend, key, batch=1, precision=precision) as ref:
                out["now_ms"] = float(ref.measure(settings).trimmed_mean_ms)
            out["reference"] = str(key)
        except Exception as exc:  # the speed probe corrects nothing: never fail a validation for it
            out["error"] = error_text(exc)
    elif "probes_ms" in entry:
        out["error"] = "the table records no speed of the machine (built with --no-speed-probe, or its probe failed)"
    from tables.steadiness import speed_change_pct

    if out["now_ms"] is not None:
        out["change_pct"] = speed_change_pct(entry, out["now_ms"])
    return out


def speed_line(speed: Mapping[str, Any]) -> str:
    """One line on how far the machine's speed moved since the table was built."""
    change = speed.get("change_pct")
    if change is None:
        why = speed.get("error") or "the table records no speed of the machine (built by an older version)"
        return f"machine speed since the build: unknown ({why})"
    direction = "slower" if change > 0 else "faster"
    return (
        f"machine speed since the build: the reference takes {speed['now_ms']:.4g} ms now against "
        f"{speed['build_ms']:.4g} ms while the table was built: {abs(change):.1f}% {direction} now"
        + (
            "; drift correction brought the networks to the table's speed"
            if speed.get("drift_corrected")
            else "; the table's absolute figures hold for the machine as it was then"
        )
    )


# --------------------------------------------------------------------------- results
def build_frame(
    archs: Sequence[Architecture],
    measured: Sequence[Measured],
    sums: np.ndarray,
    n_blocks: np.ndarray,
    split: np.ndarray,
    io_mel: np.ndarray | None = None,
) -> pd.DataFrame:
    """The validation rows without predictions (``predicted_ms`` and ``error_pct`` NaN until calibrated)."""
    m = np.asarray([x.latency_ms for x in measured], dtype=np.float64)
    frame = pd.DataFrame(
        {
            "network": [a.name for a in archs],
            "source": [a.source for a in archs],
            "encoding": [encoding_text(a) for a in archs],
            "n_blocks": np.asarray(n_blocks, dtype=np.int64),
            "io_mel": np.asarray(io_mel if io_mel is not None else np.full(len(archs), np.nan), dtype=np.float64),
            "sum_ms": np.asarray(sums, dtype=np.float64),
            "predicted_ms": np.full(len(archs), np.nan),
            "measured_ms": m,
            "measured_std_ms": np.asarray([x.std_ms for x in measured], dtype=np.float64),
            "measured_rounds_ms": [list(x.rounds_ms) for x in measured],
            "measured_raw_ms": np.asarray([x.raw_ms for x in measured], dtype=np.float64),
            "reference_rounds_ms": [list(x.reference_rounds_ms) for x in measured],
            "split": [str(s) for s in split],
            "error_pct": np.full(len(archs), np.nan),
            "error_uncal_pct": (np.asarray(sums, dtype=np.float64) - m) / m * 100.0,
            "status": ["failed" if x.error else "ok" for x in measured],
            "error": [x.error for x in measured],
        }
    )
    return frame.loc[:, list(COLUMNS)]


def calibrate(
    frame: pd.DataFrame,
    type_sums: Mapping[str, np.ndarray],
    table,
    seed: int,
    archs: Sequence[Architecture] | None = None,
):  # -> tuple[tables.calibration.Calibration, dict]
    """Fit the calibration on the ok "fit" rows, fill ``predicted_ms``/``error_pct``; returns (calibration, metrics).

    ``metrics`` is ``{"uncalibrated": ..., "calibrated": ..., "evaluated_on": ...}``
    on the ok held-out rows (all ok rows when nothing is held out), and with ``archs`` (the networks of
    ``frame``, in its order) ``"interval"``: the empirical coverage of the nominal 90% prediction intervals
    (:func:`interval_coverage`).
    """
    from tables.calibration import fit
    from tables.metrics import accuracy_metrics

    ok = (frame["status"] == "ok").to_numpy()
    fit_rows = ok & (frame["split"] == "fit").to_numpy()
    if not fit_rows.any():
        raise UsageError("no network of the fit split was measured: lower --holdout or fix the failing networks")
    types = {t: np.asarray(v, dtype=np.float64) for t, v in type_sums.items()}
    sums = frame["sum_ms"].to_numpy(np.float64)
    n_blocks = frame["n_blocks"].to_numpy(np.int64)
    io = frame["io_mel"].to_numpy(np.float64)
    cal = fit(
        sums[fit_rows],
        frame["measured_ms"].to_numpy(np.float64)[fit_rows],
        n_blocks=n_blocks[fit_rows],
        type_sums={t: v[fit_rows] for t, v in types.items()},
        floor_ms=table.floor_ms,
        io_mel=io[fit_rows] if np.all(np.isfinite(io)) else None,
        seed=seed,
        table=table.metadata,
    )
    predicted = np.asarray(cal.apply(sums, n_blocks, types, io), dtype=np.float64)
    measured = frame["measured_ms"].to_numpy(np.float64)
    frame["predicted_ms"] = predicted
    frame["error_pct"] = (predicted - measured) / measured * 100.0
    held = ok & (frame["split"] == "holdout").to_numpy()
    rows, where = (held, "holdout") if held.any() else (ok, "all (no held-out split)")
    metrics = {
        "uncalibrated": accuracy_metrics(sums[rows], measured[rows]),
        "calibrated": accuracy_metrics(predicted[rows], measured[rows]),
        "evaluated_on": where,
    }
    if archs is not None:
        metrics["interval"] = interval_coverage(table, cal, archs, measured, rows)
    return cal, metrics


#: Nominal coverage of the prediction intervals whose empirical coverage a validation reports.
INTERVAL_LEVEL = 0.9


def interval_coverage(table, cal, archs: Sequence[Architecture], measured: np.ndarray, rows: np.ndarray) -> dict:
    """Share of the evaluated networks whose end-to-end latency falls inside their nominal 90% prediction
    interval (calibrated with ``cal``; :func:`tables.predictor.predict`), and the intervals' median width."""
    from tables.predictor import predict

    previous = table.calibration
    table.calibration = cal
    try:
        inside, widths, basis = [], [], None
        for arch, m, use in zip(archs, measured, rows):
            if not use:
                continue
            p = predict(table, arch, level=INTERVAL_LEVEL)
            inside.append(p.low_ms <= m <= p.high_ms)
            widths.append((p.high_ms - p.low_ms) / p.ms_per_batch * 100.0)
            basis = p.interval_basis
    finally:
        table.calibration = previous
    return {
        "level": INTERVAL_LEVEL,
        "n": len(inside),
        "coverage_pct": float(np.mean(inside) * 100.0) if inside else math.nan,
        "median_width_pct": float(np.median(widths)) if widths else math.nan,
        "basis": basis,
    }


def summary_table(metrics: Mapping[str, Any]) -> str:
    """The metrics as a small text table: one row per metric, uncalibrated and calibrated side by side."""
    lines = [
        f"{'held-out metric' if metrics.get('evaluated_on') == 'holdout' else 'metric':<18}{'uncal':>10}{'cal':>10}"
    ]
    for name, label, fmt in SUMMARY_ROWS:
        cells = []
        for stage in ("uncalibrated", "calibrated"):
            value = metrics[stage].get(name, math.nan)
            cells.append("nan" if value is None or not math.isfinite(float(value)) else fmt.format(float(value)))
        lines.append(f"{label:<18}{cells[0]:>10}{cells[1]:>10}")
    lines.append(f"{'networks':<18}{int(metrics['calibrated']['n']):>10}{int(metrics['calibrated']['n']):>10}")
    return "\n".join(lines)


def write_validation(frame: pd.DataFrame, metadata: Mapping[str, Any], path: Path) -> Path:
    """Write the rows with the metadata JSON under ``b"nas_latency"`` atomically; returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tables.atomic import atomic_path
    from tables.schema import METADATA_KEY

    table = pa.Table.from_pandas(frame, preserve_index=False)
    text = json.dumps(dict(metadata), default=str, sort_keys=True, allow_nan=True)
    table = table.replace_schema_metadata({METADATA_KEY: text.encode("utf-8")})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


# --------------------------------------------------------------------------- main
@dataclass
class ValidationResult:
    """What :func:`validate_table` measured and fitted (see the module docstring for the file it wrote)."""

    frame: pd.DataFrame
    metrics: dict[str, Any]
    calibration: Any  # tables.calibration.Calibration
    out_path: Path
    saved: Path | None
    speed: dict[str, Any]
    failed: list[tuple[str, str]]
    wall_s: float
    drift: Mapping[str, Any] | None
    table: Any  # tables.table.LatencyTable

    @property
    def n_fit(self) -> int:
        """Networks measured on the fit side."""
        return int(((self.frame["split"] == "fit") & (self.frame["status"] == "ok")).sum())

    @property
    def n_held(self) -> int:
        """Networks measured on the held-out side."""
        return int(((self.frame["split"] == "holdout") & (self.frame["status"] == "ok")).sum())


def validate_table(args: argparse.Namespace, archs: Sequence[Architecture] | None = None) -> ValidationResult:
    """Measure the networks, fit the calibration, write the validation file (and the calibration unless
    ``--no-save-calibration``); ``archs`` replaces the networks the arguments name. Prints nothing."""
    from tables.predictor import network_features

    table_path = Path(args.table)
    table = load_table(table_path)
    md = table.metadata
    tfile = table_file(table, table_path)
    out_path = Path(args.out) if args.out else validation_path(tfile)
    if out_path.exists() and out_path.is_dir():
        raise UsageError(f"--out {out_path} is a folder: give a .parquet file name")
    archs = list(archs) if archs is not None else collect_architectures(args, md.get("source"))
    check_coverage(table, archs, tfile, out_path)
    features = network_features(table, archs)
    sums, n_blocks, type_sums = features.sum_ms, features.n_blocks, features.type_sums

    profile = get_profile(table.device)
    config = backend_config(md, args.cache_dir, args.cpus)
    config.check_precision(table.precision)
    check_engine_installed(config.backend, config.device_kind)
    settings = settings_for(md, args)
    mismatch = check_device(profile, detect_for(profile), force=args.force_device)
    if mismatch:
        print(f"warning: {mismatch.split('; pass')[0]} (forced)", file=sys.stderr)
    drift = None if args.no_drift_correct else md.get("drift_reference")
    from kernels_bench.backends import create_backend

    backend = create_backend(config)
    t0 = time.perf_counter()
    try:
        backend.check_precision(table.precision)
        measured = measure_networks(
            backend, archs, table.batch, table.precision, settings, not args.no_progress, args.rounds, drift
        )
        speed = machine_speed(backend, md, table.precision, measured, drift, settings)
    finally:
        backend.close()
    wall = time.perf_counter() - t0
    failed = [(a.name, m.error) for a, m in zip(archs, measured) if m.error]
    if len(failed) == len(archs):
        raise WorkFailed(
            f"the {table.backend} backend could not build any of the {len(archs)} networks; first: "
            f"{failed[0][0]}: {failed[0][1]}"
        )

    split = split_networks([a.source for a in archs], args.holdout, args.seed)
    frame = build_frame(archs, measured, sums, n_blocks, split, features.io_mel)
    cal, metrics = calibrate(frame, type_sums, table, args.seed, archs)

    saved = None
    if not args.no_save_calibration:
        saved = cal.save(calibration_path(tfile))
    doc = dict(md)
    doc["kind"] = "validation"
    doc["table_kind"] = md.get("kind")
    doc["table_path"] = str(tfile)
    doc["calibration"] = cal.to_dict()
    doc["metrics"] = metrics
    doc["validation"] = {
        "networks": len(archs),
        "failed": len(failed),
        "holdout": args.holdout,
        "seed": args.seed,
        "timing": settings.to_dict(),
        "rounds": args.rounds,
        **({"auto_rounds": {"span_s": AUTO_ROUND_SPAN_S, "max": AUTO_MAX_ROUNDS}} if args.rounds == AUTO else {}),
        "cpus": list(config.cpus),
        "drift_reference": drift,
        "wall_s": wall,
        "machine_speed": speed,
    }
    write_validation(frame, doc, out_path)
    return ValidationResult(frame, metrics, cal, out_path, saved, speed, failed, wall, drift, table)


def report(result: ValidationResult) -> None:
    """Print what a validation found: counts, the machine's speed, the calibration and the metrics."""
    table, measured_ok = result.table, len(result.frame) - len(result.failed)
    print(
        f"{measured_ok} of {len(result.frame)} networks measured in {result.wall_s:.0f} s "
        f"({result.n_fit} fit, {result.n_held} held out); {table.backend} {table.precision} batch {table.batch}"
    )
    counts = [len(r) for r in result.frame["measured_rounds_ms"] if len(r)]
    if counts and max(counts) > 1:
        print(f"each network timed in {min(counts)}-{max(counts)} rounds (median of its rounds)")
    if result.drift is not None:
        ref = [r for rounds in result.frame["reference_rounds_ms"] for r in rounds]
        lo, hi = np.percentile(ref, [10, 90]) if ref else (math.nan, math.nan)
        print(
            f"drift-corrected to the table's reference speed ({result.drift['key']} in "
            f"{float(result.drift['latency_ms']):.4g} ms); it took {lo:.4g}-{hi:.4g} ms (10th-90th percentile) "
            "while the networks were timed"
        )
    print(speed_line(result.speed))
    print(result.calibration.summary())
    for line in result.calibration.explain():
        print(line)
    print(summary_table(result.metrics))
    iv = result.metrics.get("interval")
    if iv and iv.get("n"):
        print(
            f"prediction intervals: {iv['coverage_pct']:.0f}% of {iv['n']} networks inside their nominal "
            f"{iv['level'] * 100:.0f}% interval (median width {iv['median_width_pct']:.1f}%, {iv['basis']})"
        )
    for name, error in result.failed:
        print(f"failed {name}: {error}")
    print(f"validation: {result.out_path}")
    print(f"calibration: {result.saved}" if result.saved else "calibration: not saved (--no-save-calibration)")


def run(args: argparse.Namespace) -> int:
    """Validate; returns 0 when every network was measured, 1 when some failed (the rest is still reported)."""
    check_args(args)
    result = validate_table(args)
    report(result)
    return 1 if result.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 some networks failed, 2 bad input, 130 interrupted)."""
    return run_cli(run, build_parser(), argv, interrupted="interrupted: nothing was written")


if __name__ == "__main__":
    sys.exit(main())
