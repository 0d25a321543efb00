"""Drift correction's re-warm, or not: the raw block sum's error on the reference networks, in two trees.

With drift correction every key sample follows a sample of the drift reference,
which leaves the caches holding the reference's data. Commit 07e28a8 ran one
untimed inference of the key in between (a *re-warm*, recorded as
``drift_reference.rewarm_runs``); measured with this script it made the raw sum
worse, not better (BENCHMARKS.md, "Drift correction's re-warm"), and the code
after it no longer does. The script compares any two checkouts the same way. In
each tree, alternately (this tree first, then ``--baseline``, ``--runs`` times),
it runs exactly what a user runs::

    python -m profiler.build --device cpu --batch 1 --precision fp32 --networks all --out W --no-validate
    python -m profiler.validate --table W/cpu_onnxruntime_fp32_b1.parquet --networks all \\
        --holdout 0 --no-save-calibration

and reads each network's uncalibrated error (``error_uncal_pct`` of the
validation file: the table's default block sum, boundary included, against the
network timed end to end the same way, drift-corrected). It prints, per network
and tree, that error, and per run the share within +-5%, the MAPE and the RMSPE
on the 11 reference networks (MobileNetV2 and EfficientNet-B0 among them), with
each tree's re-warm setting as its table records it and its build and validate
times.

    git worktree add /tmp/rewarm 07e28a8
    python benchmarks/bench_rewarm.py --baseline /tmp/rewarm --runs 3 --json rewarm.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TABLE = "cpu_onnxruntime_fp32_b1.parquet"


def now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def step(cmd: list[str], cwd: Path) -> float:
    print(f"[{now()}] ({cwd}) {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, text=True, capture_output=True)
    wall = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        print((done.stdout + done.stderr)[-3000:], file=sys.stderr)
        sys.exit(f"error: the step exited {done.returncode}")
    return wall


def one_run(tree: Path, work: Path, extra: list[str]) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.parquet as pq

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    py = sys.executable
    base = ["--device", "cpu", "--batch", "1", "--precision", "fp32"]
    build_s = step(
        [py, "-m", "profiler.build", *base, "--networks", "all", "--out", str(work), "--no-validate", *extra], tree
    )
    validate_s = step(
        [py, "-m", "profiler.validate", "--table", str(work / TABLE), "--networks", "all", "--holdout", "0",
         "--no-save-calibration"],
        tree,
    )  # fmt: skip
    rows = pd.read_parquet(work / TABLE.replace(".parquet", ".validation.parquet"))
    rows = rows[rows["status"] == "ok"]
    errors = {str(n): float(e) for n, e in zip(rows["network"], rows["error_uncal_pct"])}
    md = json.loads(pq.read_metadata(work / TABLE).metadata[b"nas_latency"])
    return {
        "errors_pct": errors,
        "build_s": build_s,
        "validate_s": validate_s,
        "rewarm_runs": (md.get("drift_reference") or {}).get("rewarm_runs", 0),
    }


def summary(errors: list[float]) -> dict[str, float]:
    n = len(errors)
    return {
        "n": n,
        "within_5_pct": 100.0 * sum(abs(e) <= 5.0 for e in errors) / n,
        "mape_pct": sum(abs(e) for e in errors) / n,
        "rmspe_pct": math.sqrt(sum(e * e for e in errors) / n),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, required=True, help="the checkout to compare with (e.g. 07e28a8)")
    p.add_argument("--runs", type=int, default=1, help="runs per tree, alternating (default 1)")
    p.add_argument("--work", type=Path, default=ROOT / "out" / "bench_rewarm")
    p.add_argument("--build-flags", default="", help="extra documented profiler.build flags, e.g. '--cpus 1'")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not (args.baseline / "profiler" / "build.py").is_file():
        print(
            f"error: {args.baseline} is not a checkout of this project: pass --baseline a git worktree", file=sys.stderr
        )
        return 2
    trees = {"this tree": ROOT, "baseline": args.baseline.resolve()}
    extra = shlex.split(args.build_flags)
    started = now()
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    for r in range(args.runs):
        for i, (label, tree) in enumerate(trees.items()):
            runs[label].append(one_run(tree, args.work / f"run{r}-{i}", extra))
    names = sorted(set.intersection(*(set(run["errors_pct"]) for rs in runs.values() for run in rs)))
    print(f"\n{started} .. {now()}; {args.runs} run(s) per tree, alternating; uncalibrated block sum vs end to end")
    print(f"{'network':<28}" + "".join(f"{label:>26}" for label in trees))
    for n in names:
        cells = ["  ".join(f"{run['errors_pct'][n]:+6.2f}%" for run in runs[label]) for label in trees]
        print(f"{n:<28}" + "".join(f"{c:>26}" for c in cells))
    out: dict[str, Any] = {"started": started, "finished": now(), "networks": names, "trees": {}}
    for label in trees:
        figures = [summary([run["errors_pct"][n] for n in names]) for run in runs[label]]
        out["trees"][label] = {"runs": runs[label], "summary": figures}
        for f, run in zip(figures, runs[label]):
            print(
                f"{label:<10} re-warm {run['rewarm_runs']}: within +-5% {f['within_5_pct']:5.1f}%  "
                f"MAPE {f['mape_pct']:5.2f}%  RMSPE {f['rmspe_pct']:5.2f}%  (n={f['n']}); "
                f"build {run['build_s']:.0f} s, validate {run['validate_s']:.0f} s"
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
