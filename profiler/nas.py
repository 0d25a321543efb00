"""First stage of a latency-constrained search: sample, predict, bucket by latency budget.

GPUNet's agent first screens a very large set of candidates of the search space
against latency budgets ("how many candidates run under 0.5 ms?") before it
trains anything. This module does that with the latency table alone:

- :func:`sample_candidates` draws N encodings of a staged space with a scrambled,
  seeded Sobol sequence (``space.sample``);
- :func:`predict_candidates` predicts all of them at once with
  :func:`tables.predictor.predict_many` (numpy gathers, no Python loop per
  candidate);
- :func:`bucket_by_budget` counts how many fall under each budget and
  :func:`candidates_under` returns the encodings that do.

Latencies and budgets are in ms per batch of the table's batch size (ms per
image for a batch-1 table).

Command line::

    python -m profiler.nas --table T.parquet --space gpunet --sample 100000 --budgets 0.5,1,2
    python -m profiler.nas --table T.parquet --space genet --sample 20000 --budgets 5,10 --out under10.parquet

:func:`synthetic_table` makes a clearly labelled synthetic table (latency a
fixed function of a key's multiply-accumulate count) for examples and
benchmarks of the predictor's speed; its numbers are not measurements.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profiler.spaces import resolve_space
from tables.cli import CliParser, UsageError, run_cli, text_arg
from tables.cost import key_cost
from tables.key import BlockKey
from tables.paths import missing_archs_path

#: Device profile and backend names of a synthetic table (never a real device).
SYNTHETIC = "synthetic"
#: Synthetic latency model: ``SYNTHETIC_BASE_MS + SYNTHETIC_MS_PER_GMAC * GMACs`` ms per batch of 1.
SYNTHETIC_BASE_MS = 0.01
SYNTHETIC_MS_PER_GMAC = 0.5


# --------------------------------------------------------------------------- sampling and prediction
def sample_candidates(space: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` Sobol-sampled encodings of ``space`` as an (n, L) int64 array (same seed, same rows)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"number of candidates must be a positive integer; got {n!r}")
    return resolve_space(space).sample(int(n), seed)


def predict_candidates(table, encodings: np.ndarray, space: Any, *, calibrated: bool = True) -> np.ndarray:
    """Predicted latency (ms per batch, float64) of every encoding, vectorized with ``predict_many``.

    ``table`` is a :class:`tables.table.LatencyTable`; with ``calibrated`` its
    calibration (if any) is applied. Raises ``MissingKeysError`` listing the keys
    the table lacks.
    """
    from tables.predictor import predict_many

    return predict_many(table, encodings, resolve_space(space), calibrated=calibrated)


def _budget_array(budgets_ms: Iterable[float]) -> np.ndarray:
    b = np.asarray(list(budgets_ms), dtype=np.float64)
    if b.ndim != 1 or len(b) == 0:
        raise ValueError("give at least one latency budget (ms)")
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"latency budgets must be positive numbers of ms; got {b.tolist()}")
    return b


def bucket_by_budget(latencies_ms: Sequence[float] | np.ndarray, budgets_ms: Iterable[float]) -> pd.DataFrame:
    """How many candidates run within each latency budget.

    Args:
        latencies_ms: predicted latency of each candidate, ms per batch.
        budgets_ms: budgets, ms per batch (any order; the output is sorted ascending).

    Returns:
        One row per budget: ``budget_ms``, ``count`` (candidates with latency <= budget,
        cumulative) and ``share`` (count / number of candidates, 0..1).
    """
    lat = np.asarray(latencies_ms, dtype=np.float64).ravel()
    if len(lat) == 0:
        raise ValueError("no candidate latencies to bucket")
    if not np.all(np.isfinite(lat)):
        raise ValueError("candidate latencies contain NaN or infinite values")
    budgets = np.sort(_budget_array(budgets_ms))
    counts = np.searchsorted(np.sort(lat), budgets, side="right").astype(np.int64)
    return pd.DataFrame({"budget_ms": budgets, "count": counts, "share": counts / len(lat)})


def candidates_under(
    encodings: np.ndarray, latencies_ms: Sequence[float] | np.ndarray, budget_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates within ``budget_ms`` (ms per batch): (encodings, latencies), fastest first."""
    enc = np.asarray(encodings)
    lat = np.asarray(latencies_ms, dtype=np.float64).ravel()
    if enc.ndim != 2 or enc.shape[0] != len(lat):
        raise ValueError(f"encodings must be (N, L) with N = {len(lat)} latencies; got shape {enc.shape}")
    budget = float(_budget_array([budget_ms])[0])
    idx = np.flatnonzero(lat <= budget)
    idx = idx[np.argsort(lat[idx], kind="stable")]
    return enc[idx], lat[idx]


@dataclass
class Screen:
    """Candidates of one space and their predicted latencies (ms per batch).

    Attributes:
        space: the space name.
        encodings: (N, L) int64 encodings.
        latencies_ms: (N,) predicted latencies, ms per batch.
        calibrated: whether the table's calibration was applied.
    """

    space: str
    encodings: np.ndarray
    latencies_ms: np.ndarray
    calibrated: bool

    def buckets(self, budgets_ms: Iterable[float]) -> pd.DataFrame:
        """:func:`bucket_by_budget` of these candidates."""
        return bucket_by_budget(self.latencies_ms, budgets_ms)

    def candidates_under(self, budget_ms: float) -> np.ndarray:
        """Encodings within ``budget_ms`` (ms per batch), fastest first."""
        return candidates_under(self.encodings, self.latencies_ms, budget_ms)[0]


def screen(table, space: Any, n: int, seed: int = 0, *, calibrated: bool = True) -> Screen:
    """Sample ``n`` candidates of ``space`` and predict them all from ``table``."""
    sp = resolve_space(space)
    enc = sample_candidates(sp, n, seed)
    lat = predict_candidates(table, enc, sp, calibrated=calibrated)
    return Screen(sp.name, enc, lat, calibrated and table.calibration is not None)


# --------------------------------------------------------------------------- synthetic table
def synthetic_latency_ms(key: BlockKey) -> float:
    """Synthetic latency of a key: ``0.01 + 0.5 * GMACs`` ms per image (a fixed formula, not a measurement).

    GMACs: the key's multiply-accumulates per image (:func:`tables.cost.key_cost`), in billions.
    """
    return SYNTHETIC_BASE_MS + SYNTHETIC_MS_PER_GMAC * key_cost(key).macs / 1e9


def synthetic_table(keys: Iterable[BlockKey]):  # -> tables.table.LatencyTable
    """A labelled synthetic :class:`~tables.table.LatencyTable` of ``keys`` (batch 1, "fp32").

    Device profile and backend are ``"synthetic"``; metadata ``synthetic`` is
    true and ``source`` states the formula. For speed tests and examples only.
    """
    from tables.key import KEY_FIELDS
    from tables.schema import build_metadata, utc_now
    from tables.table import LatencyTable

    keys = list(dict.fromkeys(keys))
    if not keys:
        raise ValueError("a synthetic table needs at least one key")
    lat = np.fromiter((synthetic_latency_ms(k) for k in keys), dtype=np.float64, count=len(keys))
    n = len(keys)
    frame = pd.DataFrame({"key": [str(k) for k in keys]})
    for f in KEY_FIELDS:
        frame[f] = [getattr(k, f) for k in keys]
    nan = np.full(n, np.nan)
    frame["latency_ms"] = lat
    frame["median_ms"] = lat
    frame["min_ms"] = lat
    frame["max_ms"] = lat
    frame["std_ms"] = np.zeros(n)
    frame["cv"] = np.zeros(n)
    frame["inner_loop"] = pd.array([1] * n, dtype="Int64")
    frame["warmup_runs"] = pd.array([0] * n, dtype="Int64")
    frame["n_samples"] = np.ones(n, dtype=np.int64)
    frame["samples_ms"] = lat.reshape(-1, 1).tolist()
    for name in ("export_s", "compile_s", "warmup_s", "timed_s"):
        frame[name] = nan
    frame["status"] = "ok"
    frame["error"] = None
    frame["measured_at"] = pd.DatetimeIndex(np.full(n, np.datetime64(utc_now().replace(tzinfo=None), "us")), tz="UTC")
    md = build_metadata(
        device_profile=SYNTHETIC,
        backend=SYNTHETIC,
        precision="fp32",
        batch=1,
        device={"name": "synthetic (no device)"},
        engine={"name": SYNTHETIC, "version": None},
        source={
            "synthetic": f"latency_ms = {SYNTHETIC_BASE_MS} + {SYNTHETIC_MS_PER_GMAC} * GMACs (not measured)",
            "keys": n,
        },
        synthetic=True,
    )
    return LatencyTable(frame, md)


# --------------------------------------------------------------------------- CLI
#: Most candidates one screening samples: 41 int64 columns each, about 1.6 GB of encodings at the limit.
MAX_CANDIDATES = 5_000_000


def parse_budgets(text: str) -> list[float]:
    """``"0.5,1,2"`` -> ``[0.5, 1.0, 2.0]``; one-line :class:`UsageError` on bad input."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise UsageError(f"--budgets: {part!r} is not a number of ms; give e.g. --budgets 0.5,1,2") from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"--budgets: {part!r} must be a positive number of ms")
        out.append(value)
    if not out:
        raise UsageError("--budgets is empty; give e.g. --budgets 0.5,1,2")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m profiler.nas``."""
    p = CliParser(
        prog="python -m profiler.nas",
        description="Sample candidates of a search space, predict them from a latency table, count them per budget.",
    )
    p.add_argument(
        "--table", type=text_arg, required=True, help="latency table (.parquet or a folder) from profiler.build"
    )
    p.add_argument(
        "--space",
        type=text_arg,
        default="gpunet",
        help="gpunet, gpunet-padded, genet, genet-light/normal/large or a space file",
    )
    p.add_argument("--sample", type=int, required=True, help="number of Sobol-sampled candidates")
    p.add_argument("--seed", type=int, default=0, help="Sobol seed (default 0)")
    p.add_argument("--budgets", required=True, help="comma-separated latency budgets, ms per batch (e.g. 0.5,1,2)")
    p.add_argument("--uncalibrated", action="store_true", help="raw block sums, without the table's calibration")
    p.add_argument("--out", type=text_arg, help="write the candidates within the largest budget to this Parquet file")
    return p


def format_buckets(buckets: pd.DataFrame, total: int) -> str:
    """The bucket table as text: budget, count and share of the candidates."""
    lines = [f"{'budget (ms)':>12}{'count':>12}{'share':>9}"]
    for b, c, s in zip(buckets["budget_ms"], buckets["count"], buckets["share"]):
        lines.append(f"{b:>12g}{int(c):>12,}{s * 100:>8.2f}%")
    lines.append(f"{'all':>12}{total:>12,}{100:>8.2f}%")
    return "\n".join(lines)


def _missing_keys(exc, table_path: Path, out: str | None) -> UsageError:
    from profiler.tablebuild import build_command
    from tables.table import write_archs_file

    base = Path(out) if out else table_path if table_path.is_file() else table_path / "nas.parquet"
    archs_file = missing_archs_path(base)
    write_archs_file(exc.keys, archs_file)
    folder = table_path.parent if table_path.is_file() else table_path
    return UsageError(
        f"{len(exc.keys)} block key(s) of the sampled candidates are not in the table; "
        f"profile them with: {build_command(exc.table or {}, archs_file, folder)}"
    )


def run(args: argparse.Namespace) -> int:
    """Sample, predict and print the buckets; returns 0."""
    import time

    from tables.table import LatencyTable, MissingKeysError

    budgets = parse_budgets(args.budgets)
    if not 1 <= args.sample <= MAX_CANDIDATES:
        raise UsageError(
            f"--sample must be from 1 to {MAX_CANDIDATES:,} candidates, got {args.sample}: screen larger sets in "
            "several runs with other --seed values"
        )
    table_path = Path(args.table)
    if not table_path.exists():
        raise UsageError(f"latency table not found: {table_path}; build it with python -m profiler.build")
    table = LatencyTable.load(table_path)
    t0 = time.perf_counter()
    try:
        result = screen(table, args.space, args.sample, args.seed, calibrated=not args.uncalibrated)
    except MissingKeysError as exc:
        exc.table = {**table.metadata, **(exc.table or {})}
        raise _missing_keys(exc, table_path, args.out) from None
    wall = time.perf_counter() - t0
    total = len(result.latencies_ms)
    kind = "calibrated" if result.calibrated else "uncalibrated block sums"
    print(
        f"{total:,} {result.space} candidates (seed {args.seed}) predicted from {table!r} in {wall:.2f} s "
        f"({kind}; ms per batch of {table.batch})"
    )
    lat = result.latencies_ms
    print(f"predicted latency: min {lat.min():.4g}, median {np.median(lat):.4g}, max {lat.max():.4g} ms")
    print(format_buckets(result.buckets(budgets), total))
    if args.out:
        enc, under = candidates_under(result.encodings, lat, max(budgets))
        frame = pd.DataFrame({"encoding": [list(map(int, r)) for r in enc], "predicted_ms": under})
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out, index=False)
        print(f"{len(frame):,} candidates within {max(budgets):g} ms written to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input)."""
    return run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
