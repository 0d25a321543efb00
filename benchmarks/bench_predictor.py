"""Predictor speed: ``predict_many`` against a plain Python loop, side by side in one run, on one CPU core.

Workload: ``--n`` (default 1,000,000) GPUNet encodings drawn with the space's
scrambled Sobol sampler (seed ``--seed``), predicted from a **synthetic** table
of every key of the GPUNet space (latency = 0.01 ms + 0.5 ms per GMAC of the
key, :func:`profiler.nas.synthetic_table`). The latencies are made up; only the
speed is measured.

Contenders:

- **predict_many**: :func:`tables.predictor.predict_many` on the whole (N, 41)
  array. Its first call resolves each stage configuration to a key once
  (reported as "cold"); the figure is the best of ``--repeats`` later calls
  ("warm"), as in a search loop that predicts batch after batch.
- **predict_many, io_linear calibration**: the same with a table whose
  calibration is ``io_linear`` (applied by default), which sums the blocks'
  input and output as well as their latencies: a second gather per stage.
- **predict_many, intervals**: ``interval=True`` (the 90% prediction interval of
  each encoding from its keys' sample spread): a second gather per stage, and
  the interval arithmetic.
- **loop**: per encoding, decode it into block keys (``gpunet.arch_keys``), look
  each key's string up in a ``dict`` and add the latencies. Timed on the first
  ``--loop-n`` encodings (default 20,000) and reported per prediction; the
  output says so.

Both run in this process pinned to one CPU core, with OMP/MKL/OpenBLAS limited
to one thread (set before numpy is imported). On the loop's subset the two
results are compared: the number of exactly equal predictions and the largest
relative difference (the two add the same numbers in a different order).

Targets: predict_many >= 1,000,000 predictions/s and >= 20x the loop; with
intervals >= 1,000,000 predictions/s.

Run from the repository root::

    python benchmarks/bench_predictor.py
    python benchmarks/bench_predictor.py --n 200000 --loop-n 5000 --json pred.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from tables.host import cpu_model  # noqa: E402

TARGET_RATE = 1_000_000.0
TARGET_RATIO = 20.0


def pin_one_core() -> str:
    """Restrict this process to one CPU core; returns a description."""
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[-1]})
        return f"pinned to core {cores[-1]}"
    return "not pinned (no sched_setaffinity on this OS)"


def loop_predict(encodings: np.ndarray, latency: dict[str, float]) -> np.ndarray:
    """The plain loop: decode each encoding, look its keys up in a dict, sum (ms per batch)."""
    from profiler.spaces import gpunet

    out = np.empty(len(encodings), dtype=np.float64)
    for i, row in enumerate(encodings.tolist()):
        total = 0.0
        for key in gpunet.arch_keys(row):
            total += latency[str(key)]
        out[i] = total
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="encodings for predict_many (default 1,000,000)")
    p.add_argument("--loop-n", type=int, default=20_000, help="encodings for the plain loop (default 20,000)")
    p.add_argument("--repeats", type=int, default=3, help="warm predict_many calls; the best counts (default 3)")
    p.add_argument("--seed", type=int, default=0, help="Sobol seed (default 0)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.n <= 0 or not 0 < args.loop_n <= args.n or args.repeats <= 0:
        p.error("need --n > 0, 0 < --loop-n <= --n and --repeats > 0")

    pinned = pin_one_core()
    from profiler import nas
    from profiler.spaces import gpunet
    from tables.predictor import predict_many

    t0 = time.perf_counter()
    table = nas.synthetic_table(gpunet.space_keys())
    t_table = time.perf_counter() - t0
    enc = gpunet.sample(args.n, args.seed)

    t0 = time.perf_counter()
    predict_many(table, enc, gpunet.SPACE)
    t_cold = time.perf_counter() - t0
    warm = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fast = predict_many(table, enc, gpunet.SPACE)
        warm.append(time.perf_counter() - t0)
    t_warm = min(warm)

    from tables.calibration import Calibration

    table.calibration = Calibration("io_linear", a=0.95, b=0.3, io_ms_per_mel=0.02)  # any positive result: speed only
    predict_many(table, enc, gpunet.SPACE)  # builds the block I/O grids
    warm_io = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        predict_many(table, enc, gpunet.SPACE)
        warm_io.append(time.perf_counter() - t0)
    t_io = min(warm_io)
    table.calibration = None

    predict_many(table, enc, gpunet.SPACE, interval=True)  # builds the spread grids
    warm_pi = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        with_pi = predict_many(table, enc, gpunet.SPACE, interval=True)
        warm_pi.append(time.perf_counter() - t0)
    t_pi = min(warm_pi)
    same_centre = bool(np.array_equal(with_pi.ms_per_batch, fast))

    latency = dict(zip(table.keys, table.latency_array.tolist()))
    subset = enc[: args.loop_n]
    t0 = time.perf_counter()
    slow = loop_predict(subset, latency)
    t_loop = time.perf_counter() - t0

    rate_fast = args.n / t_warm
    rate_cold = args.n / t_cold
    rate_loop = args.loop_n / t_loop
    ratio = rate_fast / rate_loop
    sub = fast[: args.loop_n]
    exact = int(np.sum(sub == slow))
    max_rel = float(np.max(np.abs(sub - slow) / slow))

    print(
        f"predictor speed, {cpu_model()}, 1 core ({pinned}), numpy {np.__version__}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    print(
        f"SYNTHETIC table of all {len(table):,} GPUNet keys (made-up latencies; speed only), built in {t_table:.1f} s"
    )
    print(f"{'contender':<34}{'encodings':>12}{'time (s)':>11}{'predictions/s':>16}")
    print(f"{'predict_many, cold (first call)':<34}{args.n:>12,}{t_cold:>11.3f}{rate_cold:>16,.0f}")
    print(
        f"{'predict_many, warm (best of ' + str(args.repeats) + ')':<34}{args.n:>12,}{t_warm:>11.3f}{rate_fast:>16,.0f}"
    )
    print(f"{'predict_many, io_linear (warm)':<34}{args.n:>12,}{t_io:>11.3f}{args.n / t_io:>16,.0f}")
    print(f"{'predict_many, intervals (warm)':<34}{args.n:>12,}{t_pi:>11.3f}{args.n / t_pi:>16,.0f}")
    print(f"{'plain Python loop (subset)':<34}{args.loop_n:>12,}{t_loop:>11.3f}{rate_loop:>16,.0f}")
    print(f"the loop was timed on the first {args.loop_n:,} encodings; rates are per prediction")
    print(f"speed-up predict_many (warm) / loop: {ratio:.1f}x  (cold: {rate_cold / rate_loop:.1f}x)")
    print(
        f"agreement on the {args.loop_n:,} shared encodings: {exact:,} bit-identical, "
        f"max relative difference {max_rel:.2e}"
    )
    print(f"speed-up predict_many with io_linear calibration / loop: {args.n / t_io / rate_loop:.1f}x")
    same = "bit-identical to" if same_centre else "DIFFERENT from"
    print(f"with intervals the predictions are {same} the plain ones")
    ok_rate = rate_fast >= TARGET_RATE
    ok_ratio = ratio >= TARGET_RATIO
    ok_pi = args.n / t_pi >= TARGET_RATE
    print(
        f"targets: >= {TARGET_RATE:,.0f}/s {'met' if ok_rate else 'MISSED'}; "
        f">= {TARGET_RATIO:.0f}x the loop {'met' if ok_ratio else 'MISSED'}; "
        f"with intervals >= {TARGET_RATE:,.0f}/s {'met' if ok_pi else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_model(),
                    "n": args.n,
                    "loop_n": args.loop_n,
                    "table_build_s": t_table,
                    "predict_many_cold_s": t_cold,
                    "predict_many_warm_s": warm,
                    "predict_many_io_linear_warm_s": warm_io,
                    "predict_many_interval_warm_s": warm_pi,
                    "interval_centre_identical": same_centre,
                    "loop_s": t_loop,
                    "rate_warm_per_s": rate_fast,
                    "rate_cold_per_s": rate_cold,
                    "rate_loop_per_s": rate_loop,
                    "ratio": ratio,
                    "bit_identical": exact,
                    "max_rel_diff": max_rel,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
