"""Screen a million GPUNet candidates against latency budgets from a latency table.

The first stage of GPUNet's search: draw candidates of the space (scrambled
Sobol), predict every one from the table in one vectorized call
(:func:`tables.predictor.predict_many`) and count how many fit each budget,
then keep the ones under a budget for the next stage.

Needs a table with every key those candidates use, e.g. one built for the whole
space (``python -m profiler.build --device v100 --batch 1 --space gpunet``). To
run it anywhere, ``--synthetic`` makes a SYNTHETIC table instead (latency a
fixed function of each key's multiply-accumulate count, not a measurement);
the output is labelled so.

Run from the repository root::

    python examples/nas_million.py --synthetic
    python examples/nas_million.py --table tables_out/v100_tensorrt_fp16_b1.parquet --budgets 0.5,0.85,1.75
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from profiler import nas  # noqa: E402
from tables.cli import report_error  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Sample, predict, bucket and print; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--table", help="a latency table covering the GPUNet keys (.parquet or a folder)")
    src.add_argument("--synthetic", action="store_true", help="use a labelled synthetic table (speed demo only)")
    p.add_argument("--n", type=int, default=1_000_000, help="candidates (default 1,000,000)")
    p.add_argument("--seed", type=int, default=0, help="Sobol seed (default 0)")
    p.add_argument("--budgets", default="1,2,5,10,20", help="budgets in ms per batch (default 1,2,5,10,20)")
    p.add_argument("--show", type=int, default=5, help="print the N fastest candidates under the first budget")
    args = p.parse_args(argv)
    try:
        budgets = nas.parse_budgets(args.budgets)
        if args.n <= 0:
            raise ValueError(f"--n must be a positive number of candidates, got {args.n}")
        t0 = time.perf_counter()
        if args.synthetic:
            from profiler.spaces import gpunet

            table = nas.synthetic_table(gpunet.space_keys())
            label = "SYNTHETIC table (latency = 0.01 ms + 0.5 ms/GMAC; not measured)"
        else:
            from tables.table import LatencyTable

            table = LatencyTable.load(args.table)
            label = f"table {args.table}"
        t_table = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc = nas.sample_candidates("gpunet", args.n, args.seed)
        t_sample = time.perf_counter() - t0
        t0 = time.perf_counter()
        lat = nas.predict_candidates(table, enc, "gpunet")
        t_pred = time.perf_counter() - t0
    except Exception as exc:
        return report_error(exc)

    print(f"{label}: {len(table):,} keys, loaded in {t_table:.1f} s")
    print(f"{args.n:,} GPUNet candidates sampled in {t_sample:.1f} s, predicted in {t_pred:.2f} s")
    print(f"predicted latency (ms per batch of {table.batch}): min {lat.min():.4g}, median {np.median(lat):.4g}")
    print(nas.format_buckets(nas.bucket_by_budget(lat, budgets), len(lat)))
    first = min(budgets)
    under, under_lat = nas.candidates_under(enc, lat, first)
    print(f"{len(under):,} candidates within {first:g} ms; the fastest {min(args.show, len(under))}:")
    for row, ms in zip(under[: args.show], under_lat[: args.show]):
        print(f"  {ms:8.4f} ms  {row.tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
