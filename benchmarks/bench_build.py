"""Keys per hour of a CPU build of the reference networks, and the full GPUNet space's cost.

Runs ``python -m profiler.build --device cpu --batch 1`` on every key of the
reference networks (cold export cache, fresh output), reads the per-step costs
back from the table, then prices the full GPUNet space at the measured per-key
cost (the same figure ``--dry-run`` uses). Prints a markdown table.

    python benchmarks/bench_build.py [--precision fp32,int8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fp32,int8")
    parser.add_argument("--json", help="also write the figures as JSON here")
    args = parser.parse_args()

    import pandas as pd

    from profiler.spaces import gpunet
    from tables.host import cpu_model
    from tables.paths import table_filename

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tables"
        env = dict(os.environ, PYTHONPATH=str(ROOT), LATENCY_CACHE_DIR=str(Path(tmp) / "graphs"))
        cmd = [sys.executable, "-m", "profiler.build", "--device", "cpu", "--batch", "1"]
        cmd += ["--precision", args.precision, "--out", str(out), "--no-progress", "--no-validate"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        for precision in args.precision.split(","):
            frame = pd.read_parquet(out / table_filename("cpu", "onnxruntime", precision, 1))
            ok = frame[frame["status"] == "ok"]
            per_key = ok["export_s"] + ok["compile_s"] + ok["warmup_s"] + ok["timed_s"]
            rows.append(
                {
                    "precision": precision,
                    "keys": len(frame),
                    "failed": int((frame["status"] != "ok").sum()),
                    "export_ms": 1e3 * ok["export_s"].median(),
                    "compile_ms": 1e3 * ok["compile_s"].median(),
                    "warmup_ms": 1e3 * ok["warmup_s"].median(),
                    "timed_ms": 1e3 * ok["timed_s"].median(),
                    "per_key_s_mean": float(per_key.mean()),
                    "efficiency_pct": 100 * float(ok["timed_s"].sum() / per_key.sum()),
                }
            )
    total_keys = sum(r["keys"] for r in rows)
    space_keys = gpunet.count_keys()
    result = {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs",
        "command_wall_s": wall,
        "keys_per_hour_end_to_end": total_keys / wall * 3600,
        "tables": rows,
        "gpunet_space_keys": space_keys,
    }
    print(f"# CPU build of the reference networks — {result['machine']}, {result['date_utc']} UTC")
    print(f"`python -m profiler.build --device cpu --batch 1 --precision {args.precision}` (cold export cache)\n")
    print("| precision | keys | failed | export ms | compile ms | warm-up ms | timed ms | s/key | timed share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['precision']} | {r['keys']} | {r['failed']} | {r['export_ms']:.1f} | {r['compile_ms']:.1f} "
            f"| {r['warmup_ms']:.1f} | {r['timed_ms']:.1f} | {r['per_key_s_mean']:.3f} | {r['efficiency_pct']:.0f}% |"
        )
    print(
        f"\nwhole command (start-up, floor, {total_keys} keys, compaction): {wall:.1f} s = "
        f"{result['keys_per_hour_end_to_end']:.0f} keys/hour"
    )
    print(f"\nfull GPUNet space: {space_keys} unique keys")
    for r in rows:
        hours = space_keys * r["per_key_s_mean"] / 3600
        print(f"- at the measured {r['precision']} CPU cost ({r['per_key_s_mean']:.3f} s/key): {hours:.1f} h")
        r["gpunet_space_hours"] = hours
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
