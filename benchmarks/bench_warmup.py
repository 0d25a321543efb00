"""Does the warm-up count change the numbers? 5 against 10 warm-up runs, side by side, with an A/A control.

60 reference-network keys, onnxruntime CPU fp32 batch 1, 1 thread, both with the
20 ms warm-up minimum, the two settings interleaved key by key (alternating
order). Prints the distribution of the trimmed-mean ratio B/A next to an A/A
control (the same settings twice on the same keys), and each setting's
efficiency (timed runs / the key's phases, warm export cache).

    python benchmarks/bench_warmup.py [--keys 60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NETWORKS = ["resnet-18", "mobilenetv2-1.0", "efficientnet-b0", "genet-light", "gpunet-0", "genet-normal"]


def deciles(values: list[float]) -> tuple[float, float, float]:
    """(10th percentile, median, 90th percentile)."""
    q = statistics.quantiles(values, n=10)
    return q[0], statistics.median(values), q[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=60)
    args = parser.parse_args()

    from kernels_bench.backends import get_backend
    from kernels_bench.measure import measure_keys
    from kernels_bench.timing import TimingSettings
    from profiler.enumeration import keys_for_networks

    keys = keys_for_networks(NETWORKS)[: args.keys]
    backend = get_backend("onnxruntime", device="cpu", threads=1)
    settings = {"a": TimingSettings(warmup_runs=10, warmup_min_ms=20.0), "b": TimingSettings(warmup_runs=5)}
    ratios, control = [], []
    timed = {"a": 0.0, "b": 0.0}
    wall = {"a": 0.0, "b": 0.0}
    for i, key in enumerate(keys):
        results = {}
        for name in ("a", "b") if i % 2 == 0 else ("b", "a"):
            results[name] = measure_keys(backend, [key], 1, "fp32", settings[name])
            timed[name] += results[name].phases["timed_s"]
            wall[name] += sum(results[name].phases.values())
        ratios.append(results["b"].trimmed_mean_ms / results["a"].trimmed_mean_ms)
    for key in keys:
        first = measure_keys(backend, [key], 1, "fp32", settings["a"])
        second = measure_keys(backend, [key], 1, "fp32", settings["a"])
        control.append(second.trimmed_mean_ms / first.trimmed_mean_ms)
    backend.close()
    print(f"{len(keys)} keys, onnxruntime CPU fp32 b1, 1 thread; A = 10 warm-up runs, B = 5 (both >= 20 ms)")
    print("| ratio of trimmed means | p10 | median | p90 |")
    print("|---|---|---|---|")
    for label, values in (("B / A", ratios), ("A / A (control)", control)):
        p10, med, p90 = deciles(values)
        print(f"| {label} | {p10:.3f} | {med:.4f} | {p90:.3f} |")
    print(f"efficiency: A {timed['a'] / wall['a']:.1%}, B {timed['b'] / wall['b']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
