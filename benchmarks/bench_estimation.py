"""Profile less, know more: a table measured at a fraction of its keys against the same table measured fully.

Steps (each build a subprocess, exactly what a user runs):

1. write ``--gpunet`` GPUNet (resolution ``--gpunet-resolution``) and
   ``--genet`` GENet-normal seeded samples to ``WORK/archs.json``;
2. the partial build: ``python -m profiler.build --device cpu --batch 1
   --precision fp32 --networks all --archs WORK/archs.json --out WORK
   --no-validate --measure-fraction F`` (timed; the table is copied to
   ``WORK/partial.parquet``);
3. the same command with ``--measure-fraction 1``: the build resumes and
   measures every other key (timed): the full table, the reference (or, with
   ``--reference W0``, the full table of an earlier run of the same samples,
   measured in another build: the partial table's own keys then differ from the
   reference by the build-to-build noise too).

It then reports, side by side:

- the estimated keys (those the partial table lacks) against their measured
  values in the full table: median and 90th-percentile absolute error, per
  block type, for each estimator model fitted on the partial table (the model
  :func:`tables.estimator.fit_estimator` keeps by cross-validation, and the
  other one);
- every architecture (the samples and the reference networks) predicted from
  the partial table (``predict(..., estimate_missing=True, calibrated=False)``)
  against its prediction from the full table (``calibrated=False``): the share
  within +-5%, the largest differences, and how often the partial table's 90%
  interval holds the full table's prediction;
- the measuring time saved: the partial build's wall time and measured seconds
  (the rows' own phase seconds) against the full table's.

Targets of the issue: the estimated keys' median absolute error <= 5%, and >=
95% of the architectures within +-5% of their full-table prediction.
``--report-only`` prints the figures of a finished ``--work`` folder.

Run from the repository root::

    python benchmarks/bench_estimation.py --json estimation.json
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
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

TABLE = "cpu_onnxruntime_fp32_b1.parquet"
PHASES = ("export_s", "compile_s", "warmup_s", "timed_s", "boundary_s")


def write_archs(work: Path, args: argparse.Namespace) -> Path:
    """The seeded samples as an archs file; returns its path."""
    from profiler.spaces import genet, gpunet

    out: list[dict[str, Any]] = []
    rows = gpunet.sample(args.gpunet, args.seed)
    if args.gpunet:
        rows[:, 0] = args.gpunet_resolution
    for i, row in enumerate(rows):
        out.append({"name": f"gpunet-{i:03d}", "gpunet": [int(v) for v in gpunet.validate(row)]})
    for i, row in enumerate(genet.sample(args.genet, args.seed)):
        out.append({"name": f"genet-{i:03d}", "genet": [int(v) for v in row], "genet_base": "normal"})
    path = work / "archs.json"
    path.write_text(json.dumps({"architectures": out}, indent=1) + "\n")
    return path


def build(work: Path, archs: Path, fraction: float, extra: str) -> float:
    """Run the build at ``fraction``; returns its wall time in seconds."""
    cmd = [
        sys.executable,
        "-m",
        "profiler.build",
        "--device",
        "cpu",
        "--batch",
        "1",
        "--precision",
        "fp32",
        "--networks",
        "all",
        "--archs",
        str(archs),
        "--out",
        str(work),
        "--no-validate",
        "--no-progress",
        "--measure-fraction",
        f"{fraction:g}",
        *shlex.split(extra),
    ]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=_ROOT)
    return time.perf_counter() - t0


def measured_seconds(frame: Any) -> float:
    """The seconds a table's rows spent being measured (their phase columns)."""
    return float(sum(frame[c].fillna(0.0).sum() for c in PHASES if c in frame.columns))


def ape(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(est) / np.asarray(ref) - 1.0) * 100.0


def evaluate(work: Path, walls: dict[str, float]) -> dict[str, Any]:
    """The figures of a finished work folder."""
    from profiler.enumeration import architectures_for_archs_file
    from profiler.networks import NETWORKS
    from tables.estimator import MODELS, fit_estimator
    from tables.key import parse_key
    from tables.predictor import predict
    from tables.table import LatencyTable

    partial = LatencyTable.load(work / "partial.parquet", calibration=False)
    full = LatencyTable.load(work / TABLE, calibration=False)
    archs = [*(make() for make in NETWORKS.values()), *architectures_for_archs_file(work / "archs.json")]
    keys = list(dict.fromkeys(k for a in archs for k in a.keys))
    unmeasured = [k for k in keys if k not in full]  # a reference build stopped early: compare what it has
    archs = [a for a in archs if all(k in full for k in a.keys)]
    measured_types = {parse_key(k).block if isinstance(k, str) else k.block for k in partial.keys}
    no_type = [k for k in keys if k.block not in measured_types]  # the estimator refuses these (one line)
    archs = [a for a in archs if all(k.block in measured_types for k in a.keys)]
    missing = [k for k in keys if k not in partial and k in full and k.block in measured_types]
    truth = full.block_array[full.indices(missing)]
    measured_keys = [k for k in partial.keys]
    measured_values = partial.block_array
    # each drift-corrected table is at its own reference speed (the fastest sustained one over its own keys):
    # the figures again with the partial table brought to the full table's speed, to tell the two apart
    speed = [(t.metadata.get("drift_reference") or {}).get("latency_ms") for t in (partial, full)]
    rescale = float(speed[1]) / float(speed[0]) if all(speed) else 1.0
    full_sums = np.asarray([predict(full, a.keys, calibrated=False).ms_per_batch for a in archs])
    measured_block = dict(zip((str(k) for k in partial.keys), partial.block_array))
    models: dict[str, Any] = {}
    for model in MODELS:
        est = fit_estimator(
            measured_keys, measured_values, batch=partial.batch, precision=partial.precision, models=(model,)
        )
        estimate = est.estimate(missing)
        # every architecture from the partial table with this model's estimates (what predict sums, uncalibrated)
        block = {**measured_block, **dict(zip((str(k) for k in missing), estimate))}
        sums = np.asarray([sum(block[str(k)] for k in a.keys) + partial.network_ms for a in archs])
        arch_err = (sums / full_sums - 1.0) * 100.0
        e = ape(estimate, truth)
        blocks = np.asarray([k.block for k in missing])
        models[model] = {
            "cv_median_ape_pct": est.cv[model],
            "median_ape_pct": float(np.median(e)),
            "median_ape_pct_same_speed": float(np.median(ape(estimate * rescale, truth))),
            "p90_ape_pct": float(np.percentile(e, 90)),
            "archs_within_5_pct": float(np.mean(np.abs(arch_err) <= 5.0) * 100.0),
            "archs_median_abs_err_pct": float(np.median(np.abs(arch_err))),
            "per_type": {
                str(b): {"n": int((blocks == b).sum()), "median_ape_pct": float(np.median(e[blocks == b]))}
                for b in sorted(set(blocks.tolist()))
            },
        }
    kept = partial.estimator()
    pred_partial, pred_full, inside, n_est, names = [], [], [], [], []
    for arch in archs:
        p = predict(partial, arch.keys, estimate_missing=True, calibrated=False)
        f = predict(full, arch.keys, calibrated=False)
        pred_partial.append(p.ms_per_batch)
        pred_full.append(f.ms_per_batch)
        inside.append(p.low_ms <= f.ms_per_batch <= p.high_ms)
        n_est.append(p.n_estimated / len(arch.keys))
        names.append(arch.name)
    pp, pf = np.asarray(pred_partial), np.asarray(pred_full)
    err = (pp / pf - 1.0) * 100.0
    err_same = (pp * rescale / pf - 1.0) * 100.0
    worst = np.argsort(-np.abs(err))[:5]
    pframe, fframe = partial.to_frame(), full.to_frame()
    return {
        "keys": len(keys),
        "keys_not_in_reference": len(unmeasured),
        "keys_of_unmeasured_types": sorted({str(k.block) for k in no_type}),
        "measured_partial": len(partial),
        "estimated": len(missing),
        "fraction_measured": len(partial) / len(keys),
        "estimator_kept": kept.model,
        "estimator_cv": kept.cv,
        "models": models,
        "archs": len(archs),
        "archs_within_5_pct": float(np.mean(np.abs(err) <= 5.0) * 100.0),
        "archs_median_abs_err_pct": float(np.median(np.abs(err))),
        "archs_max_abs_err_pct": float(np.max(np.abs(err))),
        "archs_interval_holds_full_pct": float(np.mean(inside) * 100.0),
        "reference_speed_ms": {"partial": speed[0], "full": speed[1]},
        "archs_within_5_pct_same_speed": float(np.mean(np.abs(err_same) <= 5.0) * 100.0),
        "archs_median_abs_err_pct_same_speed": float(np.median(np.abs(err_same))),
        "archs_estimated_block_share_median": float(np.median(n_est)),
        "worst": [{"name": names[i], "err_pct": float(err[i])} for i in worst],
        "wall_partial_s": walls.get("partial"),
        "wall_rest_s": walls.get("rest"),
        "measured_s_partial": measured_seconds(pframe),
        "measured_s_full": measured_seconds(fframe),
    }


def report(fig: dict[str, Any]) -> None:
    kept = fig["estimator_kept"]
    print(
        f"keys {fig['keys']}: measured {fig['measured_partial']} ({fig['fraction_measured'] * 100:.1f}%), "
        f"estimated {fig['estimated']}; estimator kept by cross-validation: {kept} "
        f"(cv median |error| {', '.join(f'{m} {v:.2f}%' for m, v in fig['estimator_cv'].items())})"
    )
    if fig.get("keys_not_in_reference"):
        print(
            f"the full (reference) build was stopped before {fig['keys_not_in_reference']} keys: they and the "
            "architectures holding them are left out of the comparison"
        )
    if fig.get("keys_of_unmeasured_types"):
        print(
            "the partial table measured no key of type(s) "
            + ", ".join(fig["keys_of_unmeasured_types"])
            + ": the estimator refuses those keys, so they and their architectures are left out"
        )
    print(
        f"{'model':<22}{'cv median':>11}{'median |err|':>14}{'p90 |err|':>11}{'archs +-5%':>12}"
        "   on the estimated keys, per type"
    )
    for model, m in fig["models"].items():
        types = ", ".join(f"{b} {v['median_ape_pct']:.1f}% (n {v['n']})" for b, v in m["per_type"].items())
        mark = " (kept)" if model == kept else ""
        print(
            f"{model + mark:<22}{m['cv_median_ape_pct']:>10.2f}%{m['median_ape_pct']:>13.2f}%"
            f"{m['p90_ape_pct']:>10.2f}%{m.get('archs_within_5_pct', float('nan')):>11.1f}%   {types}"
        )
    print(
        f"architectures {fig['archs']}: {fig['archs_within_5_pct']:.1f}% within +-5% of the full table's prediction "
        f"(median |diff| {fig['archs_median_abs_err_pct']:.2f}%, max {fig['archs_max_abs_err_pct']:.2f}%; median "
        f"share of estimated blocks {fig['archs_estimated_block_share_median'] * 100:.0f}%); the partial table's "
        f"90% interval holds the full prediction for {fig['archs_interval_holds_full_pct']:.1f}%"
    )
    print("largest differences: " + ", ".join(f"{w['name']} {w['err_pct']:+.1f}%" for w in fig["worst"]))
    ref = fig.get("reference_speed_ms") or {}
    if ref.get("partial") and ref.get("full"):
        print(
            f"reference speed: the partial table's keys are at {ref['partial']:.4g} ms, the full table's at "
            f"{ref['full']:.4g} ms (each its own fastest sustained speed); with the partial table brought to the "
            f"full table's speed: {fig['archs_within_5_pct_same_speed']:.1f}% within +-5% (median |diff| "
            f"{fig['archs_median_abs_err_pct_same_speed']:.2f}%); estimated keys' median |error| "
            + ", ".join(f"{m} {v['median_ape_pct_same_speed']:.2f}%" for m, v in fig["models"].items())
        )
    wp, wr = fig.get("wall_partial_s"), fig.get("wall_rest_s")
    if wp is not None and wr is not None:
        print(
            f"measuring time: partial build {wp:.0f} s wall ({fig['measured_s_partial']:.0f} s in its rows) against "
            f"{wp + wr:.0f} s for the full table ({fig['measured_s_full']:.0f} s in its rows): "
            f"{(1 - wp / (wp + wr)) * 100:.0f}% saved"
        )
    m = fig["models"][kept]
    print(
        f"targets: estimated keys' median |error| <= 5%: {m['median_ape_pct']:.2f}% "
        f"{'met' if m['median_ape_pct'] <= 5.0 else 'MISSED'}; >= 95% of architectures within +-5%: "
        f"{fig['archs_within_5_pct']:.1f}% {'met' if fig['archs_within_5_pct'] >= 95.0 else 'MISSED'}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpunet", type=int, default=100, help="GPUNet samples (default 100)")
    p.add_argument("--genet", type=int, default=100, help="GENet-normal samples (default 100)")
    p.add_argument("--gpunet-resolution", type=int, default=224)
    p.add_argument("--fraction", type=float, default=0.2, help="the partial build's --measure-fraction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build-flags", default="", help="extra documented profiler.build flags, e.g. '--cpus 1'")
    p.add_argument("--work", type=Path, default=_ROOT / "out" / "bench_estimation")
    p.add_argument("--json", type=Path)
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--reference",
        type=Path,
        help="a finished --work folder of the same samples: its full table is the reference instead of resuming "
        "this partial build (every key of the reference measured in another build: the measured keys differ by "
        "the build-to-build noise too)",
    )
    args = p.parse_args(argv)
    work = args.work
    walls_path = work / "walls.json"
    if not args.report_only:
        work.mkdir(parents=True, exist_ok=True)
        archs = write_archs(work, args)
        if args.reference and (args.reference / "archs.json").read_text() != archs.read_text():
            sys.exit(f"error: {args.reference} holds other samples than these flags give")
        walls = {"partial": build(work, archs, args.fraction, args.build_flags)}
        shutil.copy(work / TABLE, work / "partial.parquet")
        if args.reference:
            shutil.copy(args.reference / TABLE, work / TABLE)
            ref_walls = json.loads((args.reference / "walls.json").read_text())
            walls["rest"] = float(ref_walls["partial"]) + float(ref_walls["rest"]) - walls["partial"]
            walls["reference"] = str(args.reference)
        else:
            walls["rest"] = build(work, archs, 1.0, args.build_flags)
        walls_path.write_text(json.dumps(walls) + "\n")
    walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    fig = evaluate(work, walls)
    from tables.host import cpu_model

    fig["cpu"] = cpu_model()
    fig["date"] = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    print(f"profile less, {fig['cpu']}, {fig['date']}")
    report(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
