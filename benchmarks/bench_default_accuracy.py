"""Right by default: the accuracy of a table built by the README's command, on networks held out of everything.

Steps (each a subprocess, exactly what a user runs):

1. write two seeded sets of sampled architectures: a *fit* set (``--fit-gpunet``
   GPUNet + ``--fit-genet`` GENet-normal samples, seed ``--seed + 1000``) and a
   *held-out* set (``--gpunet`` + ``--genet`` samples, seed ``--seed``);
2. build one table with the README's command, given only the keys to hold
   (``--networks all --archs``) and the precision:
   ``python -m profiler.build --device cpu --batch 1 --precision fp32
   --networks all --archs WORK/archs.json --out WORK --no-validate``
   (plus ``--build-flags``, documented flags only, for a comparison run);
3. ``python -m profiler.validate --table T --archs WORK/fit.json --holdout 0``:
   the calibration fitted on the fit set, saved next to the table;
4. ``python -m profiler.validate --table T --networks all --archs
   WORK/held.json --holdout 0 --no-save-calibration``: every reference network
   and the held-out samples timed end to end (their in-sample fit is ignored).

It then reports, on the held-out networks (every reference network and the
held-out samples), side by side from the same measurements:

- *before*: what the code before this change predicts from such a table: the
  plain sum of the keys' latencies timed alone, and that sum calibrated with the
  calibration this version's fit would choose for plain sums on the fit set;
- *now*: the default prediction: the boundary-corrected block sum
  (``predict(..., calibrated=False)``) and the calibrated prediction
  (``LatencyTable.load`` applies the calibration of step 3);
- *each round alone*: for a table whose short keys were measured in further
  rounds (the cpu profile's default), the block sum of the same build with each
  round's figures alone (round 1: what ``--short-rounds 1`` gives), brought to
  the same reference speed.

against the issue's targets: calibrated >= 95% within +-5%, RMSPE <= 3%,
Kendall tau >= 0.95; uncalibrated block sum >= 90% within +-5%, MobileNetV2
and EfficientNet-B0 each within +-5%. ``--report-only`` prints the figures of a
finished ``--work`` folder.

Run from the repository root (on a lent GPU: ``--device h100 --backend torch
--precision fp16 --batch 64``)::

    python benchmarks/bench_default_accuracy.py --json default_accuracy.json
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
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

TABLE = "cpu_onnxruntime_fp32_b1.parquet"
WATCHED = ("mobilenetv2-1.0", "efficientnet-b0")

#: (metric, comparison, target) of the issue, per prediction.
TARGETS: dict[str, list[tuple[str, str, float]]] = {
    "calibrated": [("within_5_pct", ">=", 95.0), ("rmspe_pct", "<=", 3.0), ("kendall_tau", ">=", 0.95)],
    "uncalibrated": [("within_5_pct", ">=", 90.0)],
}


def write_sets(work: Path, args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The fit set, the held-out set and both together as archs files; returns their paths."""
    from profiler.spaces import genet, gpunet

    def entries(n_gpunet: int, n_genet: int, seed: int, tag: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        rows = gpunet.sample(n_gpunet, seed)
        if n_gpunet:
            rows[:, 0] = args.gpunet_resolution
        for i, row in enumerate(rows):
            out.append({"name": f"gpunet-{tag}-{i:03d}", "gpunet": [int(v) for v in gpunet.validate(row)]})
        for i, row in enumerate(genet.sample(n_genet, seed)):
            out.append({"name": f"genet-{tag}-{i:03d}", "genet": [int(v) for v in row], "genet_base": "normal"})
        return out

    fit = entries(args.fit_gpunet, args.fit_genet, args.seed + 1000, "fit")
    held = entries(args.gpunet, args.genet, args.seed, "held")
    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, items in (("fit.json", fit), ("held.json", held), ("archs.json", fit + held)):
        path = work / name
        path.write_text(json.dumps({"architectures": items}, indent=1) + "\n", encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1], paths[2]


def run_step(cmd: list[str], label: str) -> float:
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {label}: {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=_ROOT, text=True, capture_output=True)
    wall = time.perf_counter() - t0
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
    print(tail, flush=True)
    if done.returncode not in (0, 1):
        sys.exit(f"error: {label} exited {done.returncode}")
    return wall


def metrics(pred: np.ndarray, measured: np.ndarray, names: list[str]) -> dict[str, Any]:
    from tables.metrics import accuracy_metrics

    ok = np.isfinite(pred)  # a network the calibration refused counts as a miss, not as a figure
    out = dict(accuracy_metrics(pred[ok], measured[ok])) if ok.any() else {}
    out["refused"] = int((~ok).sum())
    if out["refused"]:
        for share in ("within_5_pct", "within_10_pct"):
            if share in out:
                out[share] = out[share] * ok.sum() / len(ok)
    err = (pred / measured - 1.0) * 100.0
    for w in WATCHED:
        if w in names:
            out[f"error_{w}_pct"] = float(err[names.index(w)])
    out["errors_pct"] = {n: float(e) for n, e in zip(names, err)}
    return out


def write_combined(work: Path, table: Any, fit_rows: Any, held: Any, fit_archs: list, held_archs: list) -> Path:
    """``WORK/validation.parquet``: the fit networks (split "fit") and the held-out ones (split "holdout") with the
    predictions of the calibration fitted on the fit set, in the layout of ``profiler.validate`` (for
    ``python -m reports.validation``)."""
    import json as _json

    import pandas as pd
    import pyarrow.parquet as pq

    from profiler.validate import write_validation
    from tables.metrics import accuracy_metrics

    parts = []
    for rows, archs, split in ((fit_rows, fit_archs, "fit"), (held, held_archs, "holdout")):
        rows = rows.copy()
        rows["split"] = split
        rows["predicted_ms"] = [calibrated_or_nan(table, a) for a in archs]
        rows["error_pct"] = (rows["predicted_ms"] - rows["measured_ms"]) / rows["measured_ms"] * 100.0
        parts.append(rows)
    frame = pd.concat(parts, ignore_index=True)
    refused = frame.loc[~np.isfinite(frame["predicted_ms"].to_numpy(float)), "network"].tolist()
    frame = frame[np.isfinite(frame["predicted_ms"].to_numpy(float))].reset_index(drop=True)
    doc = _json.loads(pq.read_schema(work / "held_validation.parquet").metadata[b"nas_latency"])
    h = frame[frame["split"] == "holdout"]
    doc["calibration"] = table.calibration.to_dict() if table.calibration else None
    doc["metrics"] = {
        "uncalibrated": accuracy_metrics(h["sum_ms"].to_numpy(float), h["measured_ms"].to_numpy(float)),
        "calibrated": accuracy_metrics(h["predicted_ms"].to_numpy(float), h["measured_ms"].to_numpy(float)),
        "evaluated_on": "holdout",
        # networks the calibration refused (a non-positive prediction) are left out of the figure's file
        "refused_by_calibration": refused,
    }
    return write_validation(frame, doc, work / "validation.parquet")


def round_tables(table_path: Path, table: Any) -> list[Any]:
    """For a table built in rounds (the cpu profile's short keys, or ``--rounds``), one table per round from the
    same build: the first round's rows with round R's rows in place of those of the keys it measured, brought to
    the table's reference speed. The first is what one pass over the keys (``--short-rounds 1``) gives; empty for
    a table built in one round."""
    import pandas as pd

    from tables.paths import rounds_dir
    from tables.steadiness import rescale_to
    from tables.store import PartStore, combine_rounds
    from tables.table import LatencyTable

    folder = rounds_dir(table_path.parent, table_path.name)
    target = (table.metadata.get("drift_reference") or {}).get("latency_ms")
    out = []
    first = None
    for r in range(1, 1 + len(list(folder.glob("round-*.parquet")))):
        rows = PartStore(folder, f"round-{r}.parquet", None).rows()
        if target:
            rows = rescale_to(rows, float(target))
        if first is None:
            first = rows
        else:
            rows = pd.concat([first[~first["key"].isin(set(rows["key"]))], rows], ignore_index=True)
        out.append(LatencyTable(combine_rounds([rows]), table.metadata))
    return out


def calibrated_or_nan(table: Any, arch: Any) -> float:
    """The calibrated prediction, or NaN where the calibration refuses the network (a non-positive figure)."""
    from tables.predictor import predict

    try:
        return float(predict(table, arch).ms_per_batch)
    except ValueError:
        return float("nan")


def report(
    work: Path, json_out: Path | None, walls: dict[str, float], table_name: str = TABLE, refit: bool = False
) -> int:
    import pandas as pd

    from profiler.enumeration import architectures_for_archs_file, architectures_for_networks
    from tables.calibration import fit
    from tables.predictor import network_features, predict
    from tables.table import LatencyTable

    table_path = work / table_name
    held = pd.read_parquet(work / "held_validation.parquet")
    fit_rows = pd.read_parquet(work / "fit_validation.parquet")
    held = held[held["status"] == "ok"]
    fit_rows = fit_rows[fit_rows["status"] == "ok"]
    table = LatencyTable.load(table_path)  # with the calibration fitted on the fit set
    by_name = {a.name: a for a in architectures_for_networks("all")}
    by_name.update({a.name: a for a in architectures_for_archs_file(work / "held.json")})
    by_name.update({a.name: a for a in architectures_for_archs_file(work / "fit.json")})
    if refit:  # the calibration this code fits on the same fit networks (profiler.validate's inputs, seed 0)
        from tables.predictor import fit_for_table

        fit_set = [by_name[n] for n in fit_rows["network"]]
        table.calibration = fit_for_table(table, fit_set, fit_rows["measured_ms"].to_numpy(float), seed=0)
        print("calibration refitted by this code on the fit networks:\n  " + "\n  ".join(table.calibration.explain()))
    names = held["network"].tolist()
    archs = [by_name[n] for n in names]
    measured = held["measured_ms"].to_numpy(float)
    now_uncal = np.asarray([predict(table, a, calibrated=False).ms_per_batch for a in archs])
    now_cal = np.asarray([calibrated_or_nan(table, a) for a in archs])
    refused = [n for n, v in zip(names, now_cal) if not np.isfinite(v)]
    if refused:
        print(
            f"the calibration refused {len(refused)} held-out network(s) (outside what it was fitted on): "
            + ", ".join(refused)
        )
    # before: the plain sum of latencies timed alone, calibrated on the fit set the way this version fits
    alone = {k: v for k, v in zip(table.keys, table.latency_array)}
    plain = np.asarray([sum(alone[str(k)] for k in a.keys) for a in archs])
    fit_archs = [by_name[n] for n in fit_rows["network"]]
    plain_fit = np.asarray([sum(alone[str(k)] for k in a.keys) for a in fit_archs])
    f = network_features(table, fit_archs)
    before_cal = fit(  # per_type left out: it would need the plain per-type sums
        plain_fit,
        fit_rows["measured_ms"].to_numpy(float),
        n_blocks=f.n_blocks,
        floor_ms=table.floor_ms,
        io_mel=f.io_mel,
    )
    h = network_features(table, archs)
    plain_cal = np.asarray(before_cal.apply(plain, h.n_blocks, {}, h.io_mel))
    per_round = {
        f"round_{r}_uncalibrated": metrics(
            np.asarray([predict(t, a, calibrated=False).ms_per_batch for a in archs]), measured, names
        )
        for r, t in enumerate(round_tables(table_path, table), start=1)
    }
    figures = {
        **per_round,
        "before_uncalibrated": metrics(plain, measured, names),
        "before_calibrated": metrics(plain_cal, measured, names),
        "now_uncalibrated": metrics(now_uncal, measured, names),
        "now_calibrated": metrics(now_cal, measured, names),
    }
    md = table.metadata
    cal = table.calibration
    write_combined(work, table, fit_rows, held, [by_name[n] for n in fit_rows["network"]], archs)
    print(
        f"\n{len(names)} held-out networks ({sum(1 for n in names if '-held-' not in n)} reference, "
        f"{sum(1 for n in names if '-held-' in n)} samples); calibration fitted on {len(fit_rows)} others: "
        f"{cal.model if cal else 'none'} (before: {before_cal.model}); boundary method "
        f"{(md.get('boundary') or {}).get('method', 'none')}; steadiness: "
        f"{(md.get('steadiness') or {}).get('reasons') or 'steady'}"
    )
    rows = [
        ("within ±5%", "within_5_pct", "{:.1f}%"),
        ("within ±10%", "within_10_pct", "{:.1f}%"),
        ("MAPE", "mape_pct", "{:.2f}%"),
        ("RMSPE", "rmspe_pct", "{:.2f}%"),
        ("max APE", "max_ape_pct", "{:.2f}%"),
        ("Kendall tau", "kendall_tau", "{:.3f}"),
        ("mobilenetv2-1.0", "error_mobilenetv2-1.0_pct", "{:+.2f}%"),
        ("efficientnet-b0", "error_efficientnet-b0_pct", "{:+.2f}%"),
    ]
    cols = ("before_uncalibrated", "now_uncalibrated", "before_calibrated", "now_calibrated")
    print("| held-out | block sum, before | **block sum, now** | calibrated, before | **calibrated, now** |")
    print("|---|---|---|---|---|")
    for label, name, fmt in rows:
        cells = []
        for c in cols:
            v = figures[c].get(name)
            cells.append(fmt.format(v) if v is not None and np.isfinite(v) else "n/a")
        print(f"| {label} | " + " | ".join(cells) + " |")
    verdicts = []
    for which, checks in TARGETS.items():
        for name, op, target in checks:
            v = figures[f"now_{which}"][name]
            ok = v >= target if op == ">=" else v <= target
            verdicts.append(f"{which} {name} {v:.3g} {op} {target:g}: {'met' if ok else 'MISSED'}")
    for w in WATCHED:
        v = figures["now_uncalibrated"].get(f"error_{w}_pct")
        if v is not None:
            verdicts.append(f"uncalibrated {w} {v:+.2f}% within ±5%: {'met' if abs(v) <= 5 else 'MISSED'}")
    if per_round:
        short = md.get("short_keys") or {}
        print(
            f"short keys (under {short.get('below_ms', 0):g} ms) measured in {short.get('rounds', 1)} rounds; the "
            "block sum of the same build with each round alone (round 1: what --short-rounds 1 gives):"
        )
        for label, figs in per_round.items():
            print(
                f"  {label.split('_uncal')[0].replace('_', ' ')}: "
                + ", ".join(
                    f"{name} " + fmt.format(figs[key])
                    for name, key, fmt in rows
                    if key in ("within_5_pct", "rmspe_pct", "error_mobilenetv2-1.0_pct", "error_efficientnet-b0_pct")
                )
            )
    print("\n".join(verdicts))
    if walls:
        print("wall: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items()))
    if json_out:
        payload = {
            "figures": figures,
            "verdicts": verdicts,
            "walls_s": walls,
            "calibration": cal.to_dict() if cal else None,
            "before_calibration": before_cal.to_dict(),
            "steadiness": md.get("steadiness"),
            "boundary": md.get("boundary"),
        }
        json_out.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpunet", type=int, default=10, help="held-out GPUNet samples (default 10)")
    p.add_argument("--genet", type=int, default=10, help="held-out GENet-normal samples (default 10)")
    p.add_argument("--fit-gpunet", type=int, default=8, help="fit GPUNet samples (default 8)")
    p.add_argument("--fit-genet", type=int, default=8, help="fit GENet-normal samples (default 8)")
    p.add_argument("--gpunet-resolution", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="device profile (default cpu; on a GPU e.g. h100)")
    p.add_argument("--backend", default="onnxruntime", help="backend (default onnxruntime; on a GPU e.g. torch)")
    p.add_argument("--precision", default="fp32", help="precision (default fp32; on a GPU e.g. fp16)")
    p.add_argument("--batch", type=int, default=1, help="batch (default 1; on a GPU e.g. 64)")
    p.add_argument("--build-flags", default="", help="extra documented profiler.build flags, e.g. '--cpus 1'")
    p.add_argument("--work", type=Path, default=_ROOT / "out" / "bench_default_accuracy")
    p.add_argument("--json", type=Path)
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--refit-calibration",
        action="store_true",
        help="with --report-only: refit the calibration with this code on the same fit networks",
    )
    args = p.parse_args(argv)
    work = args.work.resolve()
    from tables.paths import table_filename

    name = table_filename(args.device, args.backend, args.precision, args.batch)
    if args.report_only:
        return report(work, args.json, {}, name, refit=args.refit_calibration)
    fit_file, held_file, all_file = write_sets(work, args)
    py = sys.executable
    table = str(work / name)
    walls = {
        "build": run_step(
            [py, "-m", "profiler.build", "--device", args.device, "--batch", str(args.batch)]
            + ["--precision", args.precision]
            + ([] if args.device == "cpu" and args.backend == "onnxruntime" else ["--backend", args.backend])
            + ["--networks", "all", "--archs", str(all_file), "--out", str(work), "--no-validate"]
            + shlex.split(args.build_flags),
            "table build (the README's command)",
        )
    }
    walls["fit validation"] = run_step(
        [py, "-m", "profiler.validate", "--table", table, "--archs", str(fit_file), "--holdout", "0"]
        + ["--out", str(work / "fit_validation.parquet"), "--no-progress"],
        "calibration on the fit set",
    )
    walls["held-out validation"] = run_step(
        [py, "-m", "profiler.validate", "--table", table, "--networks", "all", "--archs", str(held_file)]
        + ["--holdout", "0", "--no-save-calibration", "--out", str(work / "held_validation.parquet"), "--no-progress"],
        "held-out networks end to end",
    )
    return report(work, args.json, walls, name)


if __name__ == "__main__":
    sys.exit(main())
