"""Which drift reference follows which network? Several references timed at the same moments.

Drift correction (``profiler.build --drift-correct``) divides a graph's timing by
that of a reference graph timed right before it. It can only remove the part of
the machine's slow-downs that the reference feels too. This benchmark measures
how well each candidate reference follows whole networks on this machine:

- every network and every reference is loaded once (onnxruntime CPU, fp32,
  batch 1, one thread, pinned to ``--cpus``);
- for ``--duration`` seconds, round-robin over the networks: one sample of each
  reference, then one sample of the network (each sample about ``--sample-ms``
  long), so each network sample has every reference's sample of the same moment;
- per network and window size w (1, 10 and 30 consecutive samples, each window
  reduced to its 10%-trimmed mean, as the timing protocol does): the std of the
  log figure, raw and divided by each reference's figure of the same window.

The lower the std after division, the better that reference follows the
network. ``--json`` keeps every sample.

    python benchmarks/bench_drift_reference.py [--duration 360] [--reference KEY ...] [--networks a,b]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_NETWORKS = "resnet-34,resnet-18,gpunet-1,mobilenetv2-1.0,efficientnet-b0"
WINDOWS = (1, 10, 30)


def main() -> int:
    from tables.host import spare_cpu

    cpu = spare_cpu()
    spare = "" if cpu is None else str(cpu)  # default --cpus: the last CPU, when there are two or more
    from kernels_bench.measure import DEFAULT_DRIFT_REFERENCE, INVERTED_RESIDUAL_REFERENCE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=360.0, help="seconds of sampling (default 360)")
    parser.add_argument("--sample-ms", type=float, default=100.0, help="length of one sample, ms (default 100)")
    parser.add_argument(
        "--reference",
        action="append",
        help=f"a reference key (repeatable; default {INVERTED_RESIDUAL_REFERENCE} and {DEFAULT_DRIFT_REFERENCE})",
    )
    parser.add_argument("--networks", default=DEFAULT_NETWORKS, help="comma-separated reference networks")
    parser.add_argument("--cpus", default=spare, help="CPUs to pin to, '' for none (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write every sample and the figures here")
    args = parser.parse_args()

    import numpy as np
    from scipy import stats

    from kernels_bench.backends import get_backend
    from kernels_bench.config import parse_cpus
    from profiler.enumeration import architectures_for_networks
    from tables import parse_key
    from tables.host import cpu_model

    references = args.reference or [INVERTED_RESIDUAL_REFERENCE, DEFAULT_DRIFT_REFERENCE]
    nets = [n.strip() for n in args.networks.split(",") if n.strip()]
    cpus = parse_cpus(args.cpus) if args.cpus else None
    backend = get_backend("onnxruntime", threads=1, cpus=cpus)
    runners = {a.name: backend.load(backend.prepare(list(a.keys), 1, "fp32")) for a in architectures_for_networks(nets)}
    for key in references:
        runners[key] = backend.load(backend.prepare([parse_key(key)], 1, "fp32"))
    inner = {}
    for name, runner in runners.items():
        for _ in range(3):
            runner.timed(1)
        inner[name] = max(1, round(args.sample_ms / (runner.timed(3) / 3)))

    started = datetime.datetime.now(datetime.timezone.utc)
    samples: dict[str, dict[str, list[float]]] = {n: {k: [] for k in [n, *references]} for n in nets}
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.duration:
        for net in nets:
            for key in references:
                samples[net][key].append(runners[key].timed(inner[key]) / inner[key])
            samples[net][net].append(runners[net].timed(inner[net]) / inner[net])
    backend.close()

    def windows(values: list[float], w: int) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        m = len(v) // w
        return np.log([stats.trim_mean(v[i * w : (i + 1) * w], 0.1) for i in range(m)])

    figures: dict[str, dict[str, dict[str, float]]] = {}
    for net in nets:
        figures[net] = {}
        for w in WINDOWS:
            x = windows(samples[net][net], w)
            row = {"raw": float(np.std(x, ddof=1) * 100)}
            for key in references:
                row[key] = float(np.std(x - windows(samples[net][key], w), ddof=1) * 100)
            figures[net][f"window {w}"] = row

    print(
        f"{cpu_model()} ({os.cpu_count()} logical CPUs), {started:%Y-%m-%d %H:%M} UTC; onnxruntime CPU fp32 b1, "
        f"1 thread, pinned to {args.cpus or 'no CPU'}; {args.duration:g} s, samples of ~{args.sample_ms:g} ms, "
        f"{len(samples[nets[0]][nets[0]])} samples per network"
    )
    print("std of the log figure over windows of w samples (%), raw and divided by each reference:")
    print("| network | w | raw | " + " | ".join(f"/ `{k}`" for k in references) + " |")
    print("|---|---|---|" + "---|" * len(references))
    for net in nets:
        for w in WINDOWS:
            row = figures[net][f"window {w}"]
            cells = " | ".join(f"{row[k]:.2f}" for k in references)
            print(f"| {net} | {w} | {row['raw']:.2f} | {cells} |")
    if args.json:
        args.json.write_text(
            json.dumps({"started": str(started), "inner": inner, "figures": figures, "samples": samples}) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
