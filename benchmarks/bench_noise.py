"""How repeatable is a measurement? Unpinned against pinned to one CPU, and longer samples, side by side.

onnxruntime CPU fp32 batch 1, 1 thread. Each item (two whole reference networks
and three of their blocks) is measured ``--rounds`` times under each setting;
the settings take turns inside every round (the order rotates from round to
round), so a slow drift of the machine touches all of them alike:

- ``A`` unpinned, the default protocol (30 runs, trimmed mean);
- ``B`` the process pinned to one CPU (``CpuPinning``: the last CPU this process
  may use), the default protocol;
- ``C`` pinned, and each timed sample at least ``--min-sample-ms`` long.

For each item and setting it prints the coefficient of variation of the
``rounds`` trimmed means (the spread a user sees when measuring twice), and the
ratio of each setting's CV to A's. Needs Linux and two or more usable CPUs.

    python benchmarks/bench_noise.py [--rounds 15] [--min-sample-ms 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NETWORKS = ["resnet-18", "mobilenetv2-1.0"]


def cv_pct(values: list[float]) -> float:
    """Coefficient of variation, %."""
    return statistics.stdev(values) / statistics.fmean(values) * 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="measurements per item and setting (default 15)")
    parser.add_argument("--min-sample-ms", type=float, default=100.0, help="setting C's minimum sample (100 ms)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench_noise needs Linux and at least two usable CPUs")
    from kernels_bench.backends import get_backend
    from kernels_bench.backends.base import CpuPinning
    from kernels_bench.measure import measure_keys
    from kernels_bench.timing import TimingSettings
    from profiler.networks import get_network
    from tables.host import cpu_model

    cpu = max(os.sched_getaffinity(0))
    items: dict[str, list] = {}
    for name in NETWORKS:
        keys = list(get_network(name).keys)
        items[name] = keys
        if name == "resnet-18":
            for i in (1, 5, 9):
                items[f"{name} block {i}: {keys[i]}"] = [keys[i]]
    settings = {
        "A": (None, TimingSettings()),
        "B": ([cpu], TimingSettings()),
        "C": ([cpu], TimingSettings(min_sample_ms=args.min_sample_ms)),
    }
    figures: dict[str, dict[str, list[float]]] = {item: {s: [] for s in settings} for item in items}
    backend = get_backend("onnxruntime", device="cpu", threads=1)
    order = list(settings)
    started = datetime.datetime.now(datetime.timezone.utc)
    for r in range(args.rounds):
        rotated = order[r % len(order) :] + order[: r % len(order)]
        for name in rotated:
            cpus, timing = settings[name]
            pin = CpuPinning(cpus)
            try:
                for item, keys in items.items():
                    figures[item][name].append(measure_keys(backend, keys, 1, "fp32", timing).trimmed_mean_ms)
            finally:
                pin.restore()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    backend.close()

    print(
        f"{cpu_model()} ({os.cpu_count()} logical CPUs), {started:%Y-%m-%d %H:%M} UTC; onnxruntime CPU fp32 b1, "
        f"1 thread; {args.rounds} rounds; B and C pinned to CPU {cpu}; C: samples >= {args.min_sample_ms:g} ms"
    )
    print("| item | median ms | CV A unpinned | CV B pinned | CV C pinned + long samples | B/A | C/A |")
    print("|---|---|---|---|---|---|---|")
    out = {}
    for item, per in figures.items():
        cvs = {s: cv_pct(v) for s, v in per.items()}
        med = statistics.median(per["A"])
        print(
            f"| {item} | {med:.3f} | {cvs['A']:.2f}% | {cvs['B']:.2f}% | {cvs['C']:.2f}% | "
            f"{cvs['B'] / cvs['A']:.2f} | {cvs['C'] / cvs['A']:.2f} |"
        )
        out[item] = {"median_ms": med, "cv_pct": cvs, "figures_ms": per}
    ratios_b = [out[i]["cv_pct"]["B"] / out[i]["cv_pct"]["A"] for i in out]
    ratios_c = [out[i]["cv_pct"]["C"] / out[i]["cv_pct"]["A"] for i in out]
    med_b, med_c = statistics.median(ratios_b), statistics.median(ratios_c)
    print(f"median CV ratio over the items: B/A {med_b:.2f}, C/A {med_c:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"started": str(started), "cpu": cpu, "items": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
