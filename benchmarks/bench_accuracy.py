"""Prediction accuracy on the CPU: a table built by ``profiler.build``, checked by ``profiler.validate``.

Target: onnxruntime on the CPU provider, fp32, batch 1, one intra-op thread,
the default timing protocol (30 timed runs, 5 warm-up runs and at least 20 ms, 10% trim)
with two settings against a noisy machine, both recorded in the table and the
validation file: the measuring process is pinned to one core (``--cpus``, default the
last CPU this process may use, when it may use two or more) and a timed sample
lasts at least ``--table-min-sample-ms`` (blocks, default 20 ms) or
``--min-sample-ms`` (whole networks, default 100 ms). Every network is timed in
``--rounds`` rounds (default 3), round-robin over the networks, and keeps the
median; the held-out share is ``--holdout`` (default 0.5). The table's keys are
measured in ``profiler.build``'s default shuffled order, so each network's
blocks are spread over the build. Both steps use drift correction (the build's
``--drift-correct``: a reference graph timed before every sample, every key and
network brought to the table's reference speed; the reference graph is
``--drift-reference``, default ``profiler.build``'s) unless ``--no-drift-correct``;
the table is built in ``--table-rounds`` rounds (default 2: every key measured
in two passes, each in its own shuffled order, the median kept).

Networks: ``--gpunet`` Sobol samples of the GPUNet space and ``--genet`` of the
GENet-normal perturbation space (seed ``--seed``), plus every reference network
(:mod:`profiler.networks`). To keep the run short on a small CPU the GPUNet
samples are moved to ``--gpunet-resolution`` (default 224 px, the smallest of
the space; every other choice is kept); GENet samples keep their own
resolution (192/224/256 px).

Steps (each a subprocess, exactly what a user runs):

1. write the samples to an archs file (``WORK/archs.json``);
2. ``python -m profiler.build --device cpu --backend onnxruntime --batch 1
   --precision fp32 --threads 1 --cpus C --min-sample-ms 20 --drift-correct
   --rounds 2 --networks all --archs WORK/archs.json --out WORK``: one table with
   every key of those networks;
3. ``python -m profiler.validate --table WORK/cpu_onnxruntime_fp32_b1.parquet
   --networks all --archs WORK/archs.json --holdout H --seed S --rounds R
   --min-sample-ms 100``: each network built whole and timed with the same
   backend settings (pinning included), the calibration fitted on the fit split
   and the metrics reported on the held-out split.

It then prints the held-out metrics before and after calibration against the
targets (share within +-5% after calibration >= 95%, Kendall tau >= 0.9,
RMSPE <= 3%) and, to explain the errors, the backend floor, the calibration
model and the held-out errors per source and against the number of blocks.
With drift correction it also prints how much steadier the corrected figures are
than the raw ones, from the same measurements: per key between the table's
rounds, per network between the validation's rounds. A second run with the same
``--work`` reuses the table (``profiler.build`` resumes) and the exported graphs;
``--report-only`` measures nothing and prints the figures of a finished run.

Run from the repository root::

    python benchmarks/bench_accuracy.py                          # 20 GPUNet + 20 GENet + 9 reference networks
    python benchmarks/bench_accuracy.py --gpunet 10 --genet 10 --work /tmp/acc --json acc.json
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

#: Targets of the issue, on the held-out networks after calibration.
TARGETS: dict[str, tuple[str, float]] = {
    "within_5_pct": (">=", 95.0),
    "kendall_tau": (">=", 0.9),
    "rmspe_pct": ("<=", 3.0),
}
TABLE_NAME = "cpu_onnxruntime_fp32_b1.parquet"


def write_archs(path: Path, n_gpunet: int, n_genet: int, seed: int, gpunet_resolution: int) -> int:
    """Write the sampled networks as an archs file; returns how many."""
    from profiler.spaces import genet, gpunet

    entries: list[dict[str, Any]] = []
    g = gpunet.sample(n_gpunet, seed)
    if n_gpunet:
        g[:, 0] = gpunet_resolution
    for i, row in enumerate(g):
        gpunet.validate(row)
        entries.append({"name": f"gpunet-sample-{i:03d}", "gpunet": [int(v) for v in row]})
    for i, row in enumerate(genet.sample(n_genet, seed)):
        entries.append({"name": f"genet-sample-{i:03d}", "genet": [int(v) for v in row], "genet_base": "normal"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"architectures": entries}, indent=1) + "\n", encoding="utf-8")
    return len(entries)


def run_step(cmd: list[str], label: str) -> float:
    """Run one CLI step, streaming its output; returns its wall time in s (exits on failure)."""
    print(f"$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=_ROOT, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # 1: some keys/networks failed, the rest is usable
        sys.exit(f"{label} failed with exit status {proc.returncode}")
    print(f"[{label}: {wall / 60:.1f} min]", flush=True)
    return wall


def group_of(name: str) -> str:
    """Which family a network belongs to, from its name."""
    if name.startswith("gpunet-sample"):
        return "GPUNet samples"
    if name.startswith("genet-sample"):
        return "GENet samples"
    return "reference"


def explain(df: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Lines that help read the errors: floor, model, per-family errors, error vs block count."""
    lines = []
    floor = meta.get("floor") or {}
    floor_ms = floor.get("latency_ms", floor.get("trimmed_mean_ms"))
    cal = meta.get("calibration") or {}
    lines.append(
        f"backend floor (identity graph): {floor_ms:.4f} ms per call"
        if floor_ms is not None
        else "backend floor: not measured"
    )
    lines.append(
        f"calibration model: {cal.get('model')} (a={cal.get('a', 1.0):.4g}, b={cal.get('b', 0.0):.4g} ms, "
        f"io {cal.get('io_ms_per_mel') or 0.0:.4g} ms per M elements, type scales {cal.get('type_scales') or {}}); "
        f"CV MAPE per model { {k: round(v, 2) for k, v in (cal.get('cv_mape_pct') or {}).items()} }"
    )
    drift = meta.get("drift_reference")
    if drift:
        during = drift.get("during_build") or {}
        ref = [r for rounds in df["reference_rounds_ms"] for r in rounds]
        lines.append(
            f"drift reference {drift['key']}: table speed {drift['latency_ms']:.4g} ms; 10th-90th percentile "
            f"{during.get('p10_ms', float('nan')):.4g}-{during.get('p90_ms', float('nan')):.4g} ms during the build, "
            f"{np.percentile(ref, 10):.4g}-{np.percentile(ref, 90):.4g} ms during the validation"
        )
    else:
        lines.append("no drift correction")
    ok = df[df["status"] == "ok"].copy()
    ok["group"] = [group_of(n) for n in ok["network"]]
    held = ok[ok["split"] == "holdout"]
    lines.append("held-out errors by family (mean |error| %, uncal -> cal, n):")
    for grp, part in held.groupby("group"):
        lines.append(
            f"  {grp:<16} {part['error_uncal_pct'].abs().mean():6.2f} -> {part['error_pct'].abs().mean():6.2f}"
            f"  n={len(part)}  measured {part['measured_ms'].min():.2f}..{part['measured_ms'].max():.2f} ms"
        )
    if len(ok) >= 3:
        r_blocks = float(np.corrcoef(ok["n_blocks"], ok["error_uncal_pct"])[0, 1])
        r_ms = float(np.corrcoef(np.log(ok["measured_ms"]), ok["error_uncal_pct"])[0, 1])
        rel_std = float((ok["measured_std_ms"] / ok["measured_ms"]).median() * 100)
        lines.append(
            f"all networks: corr(uncal error, n_blocks) {r_blocks:+.2f}; corr(uncal error, log latency) {r_ms:+.2f}; "
            f"median run-to-run std {rel_std:.2f}% of the latency"
        )
        if "measured_rounds_ms" in ok:
            spread = [(max(r) - min(r)) / float(np.median(r)) * 100 for r in ok["measured_rounds_ms"] if len(r) > 1]
            if spread:
                lines.append(
                    f"round-to-round spread (max-min over median): median {np.median(spread):.2f}%, "
                    f"90th percentile {np.percentile(spread, 90):.2f}%"
                )
        lines.append(
            f"uncalibrated error over all networks: mean {ok['error_uncal_pct'].mean():+.2f}%, "
            f"std {ok['error_uncal_pct'].std():.2f}%"
        )
    worst = held.reindex(held["error_pct"].abs().sort_values(ascending=False).index).head(5)
    lines.append("worst held-out networks after calibration:")
    for _, r in worst.iterrows():
        lines.append(
            f"  {r['network']:<22} measured {r['measured_ms']:8.3f} ms  sum {r['sum_ms']:8.3f}  "
            f"predicted {r['predicted_ms']:8.3f}  error {r['error_pct']:+6.2f}%  blocks {r['n_blocks']}"
        )
    return lines


def drift_figures(work: Path, df: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Raw against drift-corrected figures, from the same measurements (lines to print).

    Per key: the table's rounds (``<table>.rounds/round-N.parquet``, each its own
    shuffled pass over every key) compared pairwise, |log ratio| of the raw trimmed
    mean and of the figure brought to the table's reference speed. Per network:
    the std over the validation rounds of the log figure, raw (the corrected
    figure times the reference's speed ratio) and corrected.
    """
    drift = meta.get("drift_reference")
    if not drift:
        return []
    lines = ["raw -> drift-corrected, same measurements:"]
    files = sorted((work / f"{TABLE_NAME}.rounds").glob("round-*.parquet"))
    files = [f for f in files if f.is_file()]
    if len(files) >= 2:
        rounds = [pd.read_parquet(f).set_index("key") for f in files]
        rounds = [r[r["status"] == "ok"] for r in rounds]
        for column, label in (("raw_latency_ms", "raw"), ("latency_ms", "corrected")):
            diffs = []
            for i in range(len(rounds)):
                for j in range(i + 1, len(rounds)):
                    keys = rounds[i].index.intersection(rounds[j].index)
                    a = rounds[i].loc[keys, column].to_numpy(float)
                    b = rounds[j].loc[keys, column].to_numpy(float)
                    diffs.append(np.abs(np.log(a / b)) * 100)
            d = np.concatenate(diffs)
            lines.append(
                f"  per key, table round vs round ({len(files)} rounds, {len(d)} pairs), {label:<9}: "
                f"median |difference| {np.median(d):.2f}%, 90th percentile {np.percentile(d, 90):.2f}%"
            )
    ok = df[df["status"] == "ok"]
    table_ref = float(drift["latency_ms"])
    stds: dict[str, list[float]] = {"raw": [], "corrected": []}
    for corrected, ref in zip(ok["measured_rounds_ms"], ok["reference_rounds_ms"]):
        corrected = np.asarray(corrected, dtype=float)
        ref = np.asarray(ref, dtype=float)
        if len(corrected) < 2 or len(ref) != len(corrected):
            continue
        stds["corrected"].append(float(np.std(np.log(corrected), ddof=1) * 100))
        stds["raw"].append(float(np.std(np.log(corrected * ref / table_ref), ddof=1) * 100))
    if stds["raw"]:
        lines.append(
            f"  per network, validation round to round ({len(stds['raw'])} networks): median std "
            f"{np.median(stds['raw']):.2f}% raw -> {np.median(stds['corrected']):.2f}% corrected"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 (the figures are printed whatever they are)."""
    from tables.host import spare_cpu

    cpu = spare_cpu()
    spare = "" if cpu is None else str(cpu)  # default --cpus: the last CPU, when there are two or more
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpunet", type=int, default=20, help="GPUNet samples (default 20)")
    p.add_argument("--genet", type=int, default=20, help="GENet-normal samples (default 20)")
    p.add_argument("--gpunet-resolution", type=int, default=224, help="input size of the GPUNet samples, px (224)")
    p.add_argument("--seed", type=int, default=0, help="sampling and split seed (default 0)")
    p.add_argument("--holdout", type=float, default=0.5, help="held-out share (default 0.5)")
    p.add_argument("--cpus", default=spare, help="CPUs to pin to, '' for none (default: %(default)s)")
    p.add_argument("--table-min-sample-ms", type=float, default=20.0, help="blocks: minimum sample, ms (20)")
    p.add_argument("--min-sample-ms", type=float, default=100.0, help="networks: minimum sample, ms (100)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per network, round-robin (default 3)")
    p.add_argument("--no-drift-correct", action="store_true", help="build and validate without a drift reference")
    p.add_argument("--table-rounds", type=int, default=2, help="rounds of the table build (default 2)")
    p.add_argument("--drift-reference", help="the drift reference key (default: profiler.build's)")
    p.add_argument(
        "--work", type=Path, default=_ROOT / "out" / "bench_accuracy", help="work folder (default out/bench_accuracy)"
    )
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: print the figures of the table and validation already in --work",
    )
    args = p.parse_args(argv)

    work = args.work.resolve()
    archs = work / "archs.json"
    out = work / "validation.parquet"
    if args.report_only:
        if not out.is_file():
            sys.exit(f"error: no validation in {work}: run without --report-only first")
        n = len(json.loads(archs.read_text(encoding="utf-8"))["architectures"])
        return report(work, out, n, None, None, args.json)
    n = write_archs(archs, args.gpunet, args.genet, args.seed, args.gpunet_resolution)
    py = sys.executable
    cache = str(work / "graphs")
    t_build = run_step(
        [py, "-m", "profiler.build", "--device", "cpu", "--backend", "onnxruntime", "--batch", "1"]
        + ["--precision", "fp32", "--threads", "1", "--networks", "all", "--archs", str(archs)]
        + ["--min-sample-ms", str(args.table_min_sample_ms)]
        + ([] if args.no_drift_correct else ["--drift-correct"])
        + (["--drift-reference", args.drift_reference] if args.drift_reference and not args.no_drift_correct else [])
        + ["--rounds", str(args.table_rounds), "--seed", str(args.seed)]
        + (["--cpus", args.cpus] if args.cpus else [])
        + ["--out", str(work), "--cache-dir", cache, "--no-progress", "--no-validate"],
        "table build",
    )
    t_val = run_step(
        [py, "-m", "profiler.validate", "--table", str(work / TABLE_NAME), "--networks", "all"]
        + ["--archs", str(archs), "--holdout", str(args.holdout), "--seed", str(args.seed)]
        + ["--rounds", str(args.rounds), "--min-sample-ms", str(args.min_sample_ms)]
        + ["--out", str(out), "--cache-dir", cache, "--no-progress"],
        "validation",
    )
    return report(work, out, n, t_build, t_val, args.json)


def report(work: Path, out: Path, n: int, t_build: float | None, t_val: float | None, json_out: Path | None) -> int:
    """Print (and optionally save) the figures of a finished run; returns 0."""
    import pyarrow.parquet as pq

    df = pq.read_table(out).to_pandas()
    meta = json.loads(pq.read_schema(out).metadata[b"nas_latency"])
    metrics = meta["metrics"]
    print()
    print(
        f"accuracy on {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores), "
        f"{datetime.datetime.fromtimestamp(out.stat().st_mtime, datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        "(validation written): onnxruntime "
        f"{(meta.get('engine') or {}).get('version')} CPU, fp32, batch 1, 1 thread, "
        f"pinned to CPUs {(meta.get('validation') or {}).get('cpus')}, "
        f"{(meta.get('validation') or {}).get('rounds')} rounds per network"
    )
    print(f"{n} sampled + reference networks; {len(df)} validated, {int((df['status'] != 'ok').sum())} failed")
    if t_build is not None and t_val is not None:
        print(f"table build {t_build / 60:.1f} min, validation {t_val / 60:.1f} min")
    print(f"{'held-out (' + metrics.get('evaluated_on', '?') + ')':<24}{'uncal':>10}{'cal':>10}{'target':>10}")
    for name, label in (
        ("within_5_pct", "within +-5% (%)"),
        ("within_10_pct", "within +-10% (%)"),
        ("mape_pct", "MAPE (%)"),
        ("max_ape_pct", "max APE (%)"),
        ("rmspe_pct", "RMSPE (%)"),
        ("kendall_tau", "Kendall tau"),
        ("spearman_rho", "Spearman rho"),
        ("n", "networks"),
    ):
        target = TARGETS.get(name)
        cells = [f"{float(metrics[s][name]):.3g}" for s in ("uncalibrated", "calibrated")]
        met = ""
        if target:
            value = float(metrics["calibrated"][name])
            ok = value >= target[1] if target[0] == ">=" else value <= target[1]
            met = f"{target[0]}{target[1]:g} {'met' if ok else 'MISSED'}"
        print(f"{label:<24}{cells[0]:>10}{cells[1]:>10}  {met}")
    print()
    for line in explain(df, meta) + drift_figures(work, df, meta):
        print(line)
    if json_out:
        json_out.write_text(
            json.dumps(
                {"metrics": metrics, "calibration": meta.get("calibration"), "build_s": t_build, "validate_s": t_val},
                indent=1,
                default=str,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
