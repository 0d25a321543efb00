"""A small network's block sum against its end-to-end time: where the spread and the bias come from.

For one network (default MobileNetV2, the smallest reference network and the
one whose block sum missed +-5% in the accuracy runs) this measures, in one
process pinned to one CPU, ``--passes`` times in turn:

1. every distinct key of the network the way a build measures it: the key alone
   with the drift reference interleaved, then its boundary graphs
   (``--boundary``, default the build's ``in_context``; the shared neighbour
   graphs timed again in every pass);
2. the whole network end to end, the way ``profiler.validate`` times it.

Every figure is drift-corrected to one reference speed (the drift reference
timed alone at the start, its fastest sustained speed: the 10th percentile of
its samples). It prints, per key, the spread of its alone and in-network figures
over the passes (what one build's figure of that key is worth), and for the
block sum (in-network figures plus one floor, as the predictor sums them) its
error against the end-to-end median when each key's figure is the median of 1,
3 or all passes (every combination of passes), next to the spread of the
end-to-end figure itself. A table side that moves more than the network, or a
sum biased high whatever the passes, tells which side to work on.

    python benchmarks/bench_small_network.py [--network mobilenetv2-1.0] [--passes 5] [--cpu 1] [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import datetime  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from kernels_bench.backends import create_backend
    from kernels_bench.boundary import BoundaryMeter
    from kernels_bench.config import BackendConfig
    from kernels_bench.measure import DriftReference, measure_floor, measure_keys
    from kernels_bench.timing import TimingSettings
    from profiler.networks import get_network
    from tables.schema import drift_corrected
    from tables.steadiness import fastest_sustained_ms

    arch = get_network(args.network)
    keys = list(dict.fromkeys(arch.keys))
    config = BackendConfig("onnxruntime", "cpu", threads=1, cpus=(args.cpu,) if args.cpu is not None else ())
    backend = create_backend(config)
    settings = TimingSettings()
    out: dict[str, Any] = {
        "network": arch.name,
        "keys": [str(k) for k in keys],
        "count": {str(k): list(arch.keys).count(k) for k in keys},
        "passes": [],
    }
    try:
        with DriftReference(backend, batch=1, precision="fp32") as ref:
            alone = ref.measure(TimingSettings(repeats=90))
            target = fastest_sustained_ms(alone.samples_ms)
            out["reference_ms"] = target
            floor = measure_floor(backend, (1, 128, 28, 28), 1, "fp32", settings, reference=ref)
            out["floor_ms"] = drift_corrected(floor.trimmed_mean_ms, floor.reference_ms, target)
            for p in range(args.passes):
                meter = BoundaryMeter(backend, args.boundary, settings)  # shared graphs timed again each pass
                one: dict[str, Any] = {}
                for key in keys:
                    timed = measure_keys(backend, [key], 1, "fp32", settings, reference=ref)
                    boundary = meter.measure(key, 1, "fp32", timed, reference=ref)
                    one[str(key)] = {
                        "alone": drift_corrected(timed.trimmed_mean_ms, timed.reference_ms, target),
                        "boundary": boundary * target / timed.reference_ms,  # may be negative: scaled, not corrected
                    }
                net = measure_keys(backend, list(arch.keys), 1, "fp32", settings, reference=ref)
                one["_network"] = drift_corrected(net.trimmed_mean_ms, net.reference_ms, target)
                out["passes"].append(one)
                print(f"pass {p + 1}/{args.passes}: end to end {one['_network']:.3f} ms", flush=True)
    finally:
        backend.close()
    return out


def block_sum(data: dict[str, Any], passes: tuple[int, ...]) -> float:
    """The predictor's sum with each key's figures the median over ``passes``: in-network (the boundary bounded
    to [0, alone], as the table bounds it) per block, plus one floor."""
    total = float(data["floor_ms"])
    for key in data["keys"]:
        alone = float(np.median([data["passes"][i][key]["alone"] for i in passes]))
        boundary = float(np.median([data["passes"][i][key]["boundary"] for i in passes]))
        total += data["count"][key] * (alone - min(max(boundary, 0.0), alone))
    return total


def report(data: dict[str, Any]) -> dict[str, Any]:
    n = len(data["passes"])
    network = np.asarray([p["_network"] for p in data["passes"]])
    truth = float(np.median(network))
    print(
        f"\n{data['network']}: {len(data['keys'])} distinct keys, {n} passes; end to end {truth:.3f} ms median, "
        f"spread {network.std() / network.mean() * 100:.1f}% (sd over passes); floor {data['floor_ms']:.3f} ms"
    )
    print(f"{'key':<46}{'x':>3}{'alone ms':>10}{'sd':>7}{'boundary':>10}{'sd ms':>8}{'in-net':>8}{'sd':>7}")
    for key in data["keys"]:
        alone = np.asarray([p[key]["alone"] for p in data["passes"]])
        boundary = np.asarray([p[key]["boundary"] for p in data["passes"]])
        inner = alone - np.clip(boundary, 0.0, alone)
        print(
            f"{key:<46}{data['count'][key]:>3}{alone.mean():>10.3f}{alone.std() / alone.mean() * 100:>6.1f}%"
            f"{boundary.mean():>+10.3f}{boundary.std():>8.3f}{inner.mean():>8.3f}"
            f"{inner.std() / max(inner.mean(), 1e-9) * 100:>6.1f}%"
        )
    figures: dict[str, Any] = {"network_ms": truth, "network_sd_pct": float(network.std() / network.mean() * 100)}
    for m in sorted({1, min(3, n), n}):
        errors = np.asarray([block_sum(data, c) / truth - 1.0 for c in itertools.combinations(range(n), m)]) * 100
        figures[f"sum_error_pct_{m}_passes"] = {
            "mean": float(errors.mean()),
            "sd": float(errors.std()),
            "min": float(errors.min()),
            "max": float(errors.max()),
            "within_5_pct": float(np.mean(np.abs(errors) <= 5.0) * 100),
        }
        print(
            f"block sum, each key the median of {m} pass(es): error {errors.mean():+.1f}% mean, sd {errors.std():.1f}%,"
            f" {errors.min():+.1f}..{errors.max():+.1f}%, within +-5% in {np.mean(np.abs(errors) <= 5) * 100:.0f}%"
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="mobilenetv2-1.0", help="a reference network (default mobilenetv2-1.0)")
    p.add_argument("--passes", type=int, default=5, help="passes over the keys and the network (default 5)")
    p.add_argument("--boundary", default="in_context", help="boundary method of the keys (default in_context)")
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: no pinning)")
    p.add_argument("--json", type=Path)
    p.add_argument("--from-json", type=Path, help="reprint the figures of an earlier --json file")
    args = p.parse_args(argv)
    if args.passes < 1:
        p.error("--passes must be at least 1")
    if args.from_json:
        data = json.loads(args.from_json.read_text())
    else:
        t0 = time.perf_counter()
        data = measure(args)
        data["wall_s"] = time.perf_counter() - t0
        from tables.host import cpu_model

        data["machine"] = cpu_model()
        data["date"] = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    print(f"{data.get('machine', '')}, {data.get('date', '')}")
    data["figures"] = report(data)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
