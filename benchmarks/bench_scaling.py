"""Scale-out benchmark: keys per hour of one build, serial against 2 workers, side by side in one run.

Workload: the first ``--keys`` unique block keys of the reference networks
(``python -m profiler.build --limit N``), batch 1, fp32, onnxruntime on the CPU
with one intra-op thread per worker (``--threads 1``, ``OMP_NUM_THREADS=1``),
the default timing protocol unless told otherwise.

Configurations, each a fresh ``python -m profiler.build`` process with its own
empty output and export cache (so no run profits from another's ONNX files):

- ``serial``: ``--executor serial`` (one backend in the build process);
- ``local x2``: ``--executor local --workers 2`` (two spawned worker processes);
- ``ray x2``: ``--executor ray --workers 2`` (a local Ray with two actors), when Ray is installed.

Reported per configuration:

- ``table wall``: what the build itself reports for the table ("measured N now in
  X s"): from the first floor measurement to the compacted table, workers already started;
- ``e2e wall``: the whole process, interpreter and worker start-up included;
- keys per hour from each wall, and the speed-up over serial;
- ``keys/h steady``: rows between the first and the last ``measured_at`` of the
  table, so interpreter, import, worker start-up and floor costs are left out
  alike for every executor (the rate a long build settles at);
- ``backend s/key``: mean of the rows' own ``export_s + compile_s + warmup_s + timed_s``;
- ``overhead s/key``: ``(table wall x workers - sum of backend phases) / keys``, the
  worker time per key not spent in the backend (driver, transport, parts, floor, idle tails).

Before the builds, a probe times a pure-Python loop in one process and in two at
once; ``cores free`` = 2 x (one alone) / (two together). On a machine shared
with other work it falls below 2, and no executor can beat it; read the
speed-ups against it. With ``--rounds R`` the configurations run R times,
interleaved, and the median of each figure is reported.

Run from the repository root::

    python benchmarks/bench_scaling.py                        # 80 keys, default protocol
    python benchmarks/bench_scaling.py --keys 40 --json scaling.json
    python benchmarks/bench_scaling.py --skip-ray --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_MEASURED_RE = re.compile(r"measured (\d+) now in ([\d.]+) (s|min|h)")
_UNIT_S = {"s": 1.0, "min": 60.0, "h": 3600.0}


def _run_build(config: str, workers: int, args: argparse.Namespace, work: Path) -> dict:
    out = work / config.replace(" ", "-")
    cmd = [sys.executable, "-m", "profiler.build", "--device", "cpu", "--batch", "1", "--precision", "fp32"]
    cmd += ["--limit", str(args.keys), "--threads", "1", "--out", str(out), "--cache-dir", str(out / "onnx-cache")]
    cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--warmup-ms", str(args.warmup_ms)]
    cmd += ["--no-progress", "--no-validate"]
    if config != "serial":
        cmd += ["--executor", config.split()[0], "--workers", str(workers), "--chunk-size", str(args.chunk_size)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(_ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=_ROOT, env=env, capture_output=True, text=True)
    e2e = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{config}: build failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    m = _MEASURED_RE.search(proc.stdout)
    if m is None:
        raise SystemExit(f"{config}: no 'measured N now in' line in the build's output:\n{proc.stdout}")
    keys, table_wall = int(m.group(1)), float(m.group(2)) * _UNIT_S[m.group(3)]
    sys.path.insert(0, str(_ROOT))
    from tables.schema import read_table

    frame, _ = read_table(out / "cpu_onnxruntime_fp32_b1.parquet")
    phases = (frame["export_s"] + frame["compile_s"] + frame["warmup_s"] + frame["timed_s"]).sum()
    stamps = frame["measured_at"].sort_values()
    span = (stamps.iloc[-1] - stamps.iloc[0]).total_seconds()
    return {
        # rows between the first and the last one written: start-up, imports and the floor excluded alike
        "keys_per_hour_steady": (len(frame) - 1) / span * 3600 if span > 0 else float("nan"),
        "config": config,
        "workers": workers,
        "keys": keys,
        "rows": len(frame),
        "ok": int((frame["status"] == "ok").sum()),
        "table_wall_s": table_wall,
        "e2e_wall_s": e2e,
        "keys_per_hour": keys / table_wall * 3600,
        "keys_per_hour_e2e": keys / e2e * 3600,
        "backend_s_per_key": float(phases) / len(frame),
        "overhead_s_per_key": (table_wall * workers - float(phases)) / keys,
    }


def _spin(n: int) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i
    return time.perf_counter() - t0


def cores_free(n: int = 5_000_000) -> float:
    """2 x (time of a loop alone) / (time of the same loop in two processes at once): ~2.0 on 2 idle cores."""
    import multiprocessing

    alone = _spin(n)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        together = max(pool.map(_spin, [n, n]))
    return 2.0 * alone / together


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=80, help="reference-network keys to measure (80)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per key (30)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up runs per key (5)")
    p.add_argument("--warmup-ms", type=float, default=20.0, help="minimum warm-up per key, ms (20)")
    p.add_argument("--chunk-size", type=int, default=4, help="keys per chunk (4)")
    p.add_argument("--skip-ray", action="store_true", help="leave out the Ray configuration")
    p.add_argument("--rounds", type=int, default=1, help="run every configuration this many times, interleaved (1)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)

    configs = [("serial", 1), ("local x2", 2)]
    if not args.skip_ray:
        try:
            import ray  # noqa: F401

            configs.append(("ray x2", 2))
        except ImportError:
            print("ray is not installed: leaving out the ray configuration (pip install -e '.[ray]')")
    probes = [cores_free()]
    runs: dict[str, list[dict]] = {c: [] for c, _ in configs}
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for r in range(args.rounds):
            for config, workers in configs:
                print(f"round {r + 1}: running {config} ...", flush=True)
                runs[config].append(_run_build(config, workers, args, Path(tmp) / f"round{r}"))
            probes.append(cores_free())
    results = []
    for config, _ in configs:
        merged = dict(runs[config][0])
        for name in (
            "table_wall_s",
            "e2e_wall_s",
            "keys_per_hour",
            "keys_per_hour_e2e",
            "keys_per_hour_steady",
            "backend_s_per_key",
            "overhead_s_per_key",
        ):
            merged[name] = _median([x[name] for x in runs[config]])
        merged["rounds"] = len(runs[config])
        results.append(merged)
    print(f"cores free (probe before and after each round): {', '.join(f'{c:.2f}' for c in probes)}")
    base = results[0]
    print(
        f"\n{args.keys} reference-network keys, onnxruntime CPU fp32 b1, 1 thread per worker, "
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
    )
    header = (
        f"{'config':<10}{'table wall':>12}{'keys/h':>9}{'speed-up':>10}{'e2e wall':>10}{'keys/h e2e':>12}"
        f"{'speed-up':>10}{'keys/h steady':>15}{'speed-up':>10}{'backend s/key':>15}{'overhead s/key':>16}"
    )
    print(header)
    for r in results:
        r["speedup"] = r["keys_per_hour"] / base["keys_per_hour"]
        r["speedup_e2e"] = r["keys_per_hour_e2e"] / base["keys_per_hour_e2e"]
        r["speedup_steady"] = r["keys_per_hour_steady"] / base["keys_per_hour_steady"]
        print(
            f"{r['config']:<10}{r['table_wall_s']:>11.1f}s{r['keys_per_hour']:>9.0f}{r['speedup']:>9.2f}x"
            f"{r['e2e_wall_s']:>9.1f}s{r['keys_per_hour_e2e']:>12.0f}{r['speedup_e2e']:>9.2f}x"
            f"{r['keys_per_hour_steady']:>15.0f}{r['speedup_steady']:>9.2f}x"
            f"{r['backend_s_per_key']:>15.3f}{r['overhead_s_per_key']:>16.3f}"
        )
        if r["rows"] != r["keys"] or r["ok"] != r["keys"]:
            print(f"  warning: {r['config']} wrote {r['rows']} rows, {r['ok']} ok, for {r['keys']} keys")
    if args.json:
        doc = {"settings": vars(args), "cores_free": probes, "results": results, "runs": runs}
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
