"""How much does drift correction steady the figures? Raw against corrected, from the same measurements.

Runs exactly what a user runs, on the CPU (onnxruntime fp32, batch 1, one
thread, pinned to one CPU, 20 ms samples):

1. ``python -m profiler.build --drift-correct`` over every key of the reference
   networks, twice (two folders, two shuffled orders: ``--seed 1`` and ``--seed 2``);
2. ``python -m profiler.validate --rounds R`` on the first table: every
   reference network timed R times, round-robin.

Every figure exists twice in those files: as measured (``raw_latency_ms``; a
network round's figure times the reference's speed ratio) and brought to the
table's reference speed (``latency_ms``, ``measured_rounds_ms``). The two are
compared side by side on the same measurements:

- per key: the relative difference between the two builds (median and 90th
  percentile of |log ratio|); the corrected figures of build 2 are first brought
  to build 1's reference speed, as ``profiler.merge`` does (each build measures
  its own reference speed once, at its start);
- per network: the spread of its block sum between the two builds (std of the
  log ratio over the networks);
- per network: the spread of its end-to-end figure between rounds (median over
  the networks of the std of log figures);
- per network: how far its block sum is from its end-to-end figure, once the
  common offset is removed (std of log(sum / measured) over the networks).

The raw figures here were taken with the reference's samples in between; a build
without ``--drift-correct`` times its samples back to back, otherwise the same.

    python benchmarks/bench_drift.py [--rounds 4] [--cpus 1] [--work DIR] [--json out.json] [--report-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLE = "cpu_onnxruntime_fp32_b1.parquet"


def run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, check=False)
    if done.returncode != 0:
        sys.exit(f"failed with exit status {done.returncode}: {' '.join(cmd)}")
    return time.perf_counter() - t0


def main() -> int:
    from tables.host import spare_cpu

    cpu = spare_cpu()
    spare = "" if cpu is None else str(cpu)  # default --cpus: the last CPU, when there are two or more
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per network in the validation (default 4)")
    parser.add_argument("--cpus", default=spare, help="CPUs to pin to, '' for none (default: %(default)s)")
    parser.add_argument("--min-sample-ms", type=float, default=20.0, help="minimum sample length, ms (default 20)")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench_drift", help="work folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--report-only", action="store_true", help="measure nothing: report the run in --work")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from tables.host import cpu_model
    from tables.predictor import block_sums
    from tables.table import LatencyTable

    work = args.work.resolve()
    py = sys.executable
    pin = ["--cpus", args.cpus] if args.cpus else []
    started = datetime.datetime.now(datetime.timezone.utc)
    walls: dict[str, float] = {}
    validation = work / "validation.parquet"
    if args.report_only:
        if not validation.is_file():
            sys.exit(f"error: no validation in {work}: run without --report-only first")
        started = datetime.datetime.fromtimestamp(validation.stat().st_mtime, datetime.timezone.utc)
    for seed in () if args.report_only else (1, 2):
        walls[f"build {seed}"] = run(
            [py, "-m", "profiler.build", "--device", "cpu", "--batch", "1", "--precision", "fp32", "--threads", "1"]
            + ["--networks", "all", "--drift-correct", "--min-sample-ms", str(args.min_sample_ms), *pin]
            + ["--seed", str(seed), "--out", str(work / f"build{seed}"), "--cache-dir", str(work / "graphs")]
            + ["--no-progress", "--no-validate"]
        )
    if not args.report_only:
        walls["validation"] = run(
            [py, "-m", "profiler.validate", "--table", str(work / "build1" / TABLE), "--networks", "all"]
            + ["--rounds", str(args.rounds), "--min-sample-ms", str(args.min_sample_ms), "--holdout", "0"]
            + ["--out", str(validation), "--cache-dir", str(work / "graphs"), "--no-save-calibration", "--no-progress"]
        )

    frames = [pd.read_parquet(work / f"build{s}" / TABLE).set_index("key") for s in (1, 2)]
    keys = frames[0].index.intersection(frames[1].index)
    val = pq.read_table(validation).to_pandas()
    meta = json.loads(pq.read_schema(validation).metadata[b"nas_latency"])
    ref = float(meta["drift_reference"]["latency_ms"])
    tables = [LatencyTable.load(work / f"build{s}" / TABLE, calibration=False) for s in (1, 2)]
    from profiler.enumeration import architectures_for_networks

    archs = {a.name: a for a in architectures_for_networks(list(val["network"]))}
    ordered = [archs[n] for n in val["network"]]

    figures: dict[str, dict[str, float]] = {}
    # build 2's corrected figures brought to build 1's reference speed (what profiler.merge does)
    speeds = [float(t.metadata["drift_reference"]["latency_ms"]) for t in tables]
    for mode, column in (("raw", "raw_latency_ms"), ("corrected", "latency_ms")):
        a, b = frames[0].loc[keys, column], frames[1].loc[keys, column]
        if mode == "corrected":
            b = b * (speeds[0] / speeds[1])
        key_diff = np.abs(np.log(a.to_numpy() / b.to_numpy())) * 100
        if mode == "raw":  # block sums from the raw column: a table whose latency is the raw figure
            sums = [
                np.array([sum(f.loc[str(k), "raw_latency_ms"] for k in arch.keys) for arch in ordered]) for f in frames
            ]
        else:
            sums = [block_sums(t, ordered)[0] for t in tables]
        rounds = []
        for _, row in val.iterrows():
            corrected = np.asarray(row["measured_rounds_ms"], dtype=float)
            now = np.asarray(row["reference_rounds_ms"], dtype=float)
            rounds.append(corrected if mode == "corrected" else corrected * now / ref)
        measured = np.array([np.median(r) for r in rounds])
        round_std = np.array([np.std(np.log(r), ddof=1) * 100 for r in rounds])
        offset = np.log(sums[0] / measured)
        figures[mode] = {
            "key_diff_median_pct": float(np.median(key_diff)),
            "key_diff_p90_pct": float(np.percentile(key_diff, 90)),
            "sum_diff_std_pct": float(np.std(np.log(sums[0] / sums[1]), ddof=1) * 100),
            "network_round_std_median_pct": float(np.median(round_std)),
            "sum_vs_measured_std_pct": float(np.std(offset - offset.mean(), ddof=1) * 100),
        }
    during = [frames[i]["reference_ms"] for i in (0, 1)]
    spread = {f"build {i + 1}": np.percentile(d, [10, 50, 90]).round(4).tolist() for i, d in enumerate(during)}
    ref_val = [r for rs in val["reference_rounds_ms"] for r in rs]
    spread["validation"] = np.percentile(ref_val, [10, 50, 90]).round(4).tolist()

    print()
    print(
        f"{cpu_model()} ({os.cpu_count()} logical CPUs), {started:%Y-%m-%d %H:%M} UTC; onnxruntime CPU fp32 b1, "
        f"1 thread, pinned to CPU {args.cpus or 'none'}; samples >= {args.min_sample_ms:g} ms; "
        f"{len(keys)} keys in two builds, {len(val)} networks x {args.rounds} rounds"
    )
    if walls:
        print("wall: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items()))
    print(f"reference speed of each build (its start): {speeds[0]:.4g} ms, {speeds[1]:.4g} ms")
    print("drift reference (10th/50th/90th percentile, ms): " + "; ".join(f"{k} {v}" for k, v in spread.items()))
    print("| figure | raw | drift-corrected | ratio |")
    print("|---|---|---|---|")
    labels = {
        "key_diff_median_pct": "per key, build 1 vs build 2: median |difference|",
        "key_diff_p90_pct": "per key, build 1 vs build 2: 90th percentile |difference|",
        "sum_diff_std_pct": "per network block sum, build 1 vs build 2: std of the difference",
        "network_round_std_median_pct": "per network end to end, round to round: median std",
        "sum_vs_measured_std_pct": "per network, block sum vs end to end: std (offset removed)",
    }
    for name, label in labels.items():
        raw, cor = figures["raw"][name], figures["corrected"][name]
        print(f"| {label} | {raw:.2f}% | {cor:.2f}% | {cor / raw:.2f} |")
    if args.json:
        args.json.write_text(
            json.dumps({"started": str(started), "figures": figures, "reference_spread": spread}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
