"""Where the raw block sum's bias comes from, and which per-key boundary measurement removes it best.

A block timed alone pays for what a whole network pays once: the engine call
(session run, I/O binding) and moving its input and output across the engine's
boundary (on onnxruntime's CPU provider the NCHW <-> NCHWc reorders around its
convolutions). Summed over many small blocks that is the quarter-too-high sum
of MobileNetV2. This benchmark measures, for every key of a set of networks,
the candidates below in one pass (each key's graphs back to back, so they share
the machine's speed), then times the networks end to end, and compares each
candidate's raw prediction (no fitted parameter) with the measured latency:

- ``raw``: today's sum, ``sum_k T(k)``;
- ``floor``: ``sum_k T(k) - (n - 1) * F``, ``F`` the identity graph at the
  table's floor shape (one engine call, counted once per network);
- ``identity``: ``sum_k [T(k) - I(out_k)] + F``, ``I(s)`` the identity graph
  at shape ``s``: each block sheds the call and the move of its output, which
  the next block's input shares in a network;
- ``in_context``: ``sum_k [T(pre_k, k) - T(pre_k)] + F``, ``pre_k`` a fixed
  neighbour (a 1x1 convolution with ReLU at the key's input shape) timed before
  the key in one graph, minus the neighbour alone: the key as it runs after
  another layer, with the boundary terms telescoping over the chain;
- ``differential``: ``sum_k [T(k, k) - T(k)] + F`` for keys that can follow
  themselves (output shape = input shape), else ``T(k, post_k) - T(post_k)``
  with ``post_k`` the fixed neighbour at the key's output shape; the classifier
  (no spatial output) takes its ``in_context`` figure. This is how NVIDIA's NAS
  tooling measures a block (the block repeated, minus one copy).

It prints, per candidate, the error against end-to-end timings on every
network (the candidates fit nothing, so every network is held out), the
MobileNetV2 and EfficientNet-B0 errors, and the extra graphs each candidate
times per key (its cost in a build). A calibrated reference (``io_linear``
fitted on half of the networks, reported on the other half) is printed beside.

Run from the repository root (about 40 minutes for the default set on one
core of a 2-vCPU VM)::

    python benchmarks/bench_boundary.py --gpunet 10 --genet 10 --json boundary.json
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
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from tables.key import BLOCK_TYPES, BlockKey  # noqa: E402

CANDIDATES: tuple[str, ...] = (
    "raw",
    "floor",
    "identity",
    "in_context",
    "differential",
    "identity, bounded",
    "in_context, bounded",
    "differential, bounded",
)

#: Networks whose raw sum the accuracy issue names (+24% and +14% on the default path).
WATCHED: tuple[str, ...] = ("mobilenetv2-1.0", "efficientnet-b0")


def neighbour(shape: tuple[int, int, int]) -> BlockKey:
    """The fixed neighbour at a (c, h, w) shape: a 1x1 convolution with ReLU, c -> c channels."""
    c, h, w = shape
    return BlockKey("conv", c, h, w, c, k=1, s=1, act="relu")


def can_follow_itself(key: BlockKey) -> bool:
    """True when the key's output shape equals its input shape (so ``(key, key)`` chains)."""
    return not BLOCK_TYPES[key.block].classifier and tuple(key.output_shape) == tuple(key.input_shape)


def networks(
    n_gpunet: int, n_genet: int, seed: int, resolution: int, padded: bool = False
) -> dict[str, list[BlockKey]]:
    """Reference networks plus Sobol samples of GPUNet (moved to ``resolution`` px) and GENet-normal.

    ``padded``: GPUNet with every convolution padded (``gpunet-padded``, ``gpunet-N-padded``), as this project
    built it before 2026-12-01 (a run saved before then recorded no key lists).
    """
    from profiler import networks as reference
    from profiler.enumeration import architectures_for_networks
    from profiler.spaces import genet, gpunet, resolve_space

    out: dict[str, list[BlockKey]] = {a.name: list(a.keys) for a in architectures_for_networks("all")}
    space = resolve_space("gpunet-padded" if padded else "gpunet")
    if padded:
        for name in ("gpunet-0", "gpunet-1", "gpunet-2"):
            out[name] = list(reference.get_network(f"{name}-padded").keys)
    g = gpunet.sample(n_gpunet, seed)
    if n_gpunet:
        g[:, 0] = resolution
    for i, row in enumerate(g):
        out[f"gpunet-sample-{i:03d}"] = space.arch_keys(row)
    for i, row in enumerate(genet.sample(n_genet, seed)):
        out[f"genet-sample-{i:03d}"] = genet.arch_keys(row, base="normal")
    return out


class Timer:
    """Times graphs on one backend with one protocol; caches by what the graph is.

    With a drift reference every figure is brought to the reference's speed at
    the start (``base_ms``), as ``profiler.build --drift-correct`` does.
    """

    def __init__(self, backend: Any, settings: Any, reference: Any = None, base_ms: float | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.reference = reference
        self.base_ms = base_ms
        self.cache: dict[str, float] = {}
        self.timed = 0
        self.seconds = 0.0

    def _corrected(self, result: Any) -> float:
        from tables.schema import drift_corrected

        if self.reference is None or self.base_ms is None:
            return float(result.trimmed_mean_ms)
        return float(drift_corrected(result.trimmed_mean_ms, result.reference_ms, self.base_ms))

    def chain(self, keys: list[BlockKey]) -> float:
        from kernels_bench.measure import measure_keys

        name = "|".join(str(k) for k in keys)
        if name not in self.cache:
            t0 = time.perf_counter()
            result = measure_keys(self.backend, keys, 1, "fp32", self.settings, reference=self.reference)
            self.cache[name] = self._corrected(result)
            self.seconds += time.perf_counter() - t0
            self.timed += 1
        return self.cache[name]

    def identity(self, shape: tuple[int, ...]) -> float:
        from kernels_bench.measure import measure_floor

        name = "identity:" + "x".join(str(d) for d in shape)
        if name not in self.cache:
            t0 = time.perf_counter()
            result = measure_floor(self.backend, (1, *shape), 1, "fp32", self.settings, reference=self.reference)
            self.cache[name] = self._corrected(result)
            self.seconds += time.perf_counter() - t0
            self.timed += 1
        return self.cache[name]


def measure_key(timer: Timer, key: BlockKey) -> dict[str, float]:
    """Every candidate's quantities of one key, its graphs timed back to back."""
    t = timer.chain([key])
    row = {"T": t, "I_out": timer.identity(tuple(key.output_shape))}
    pre = neighbour(tuple(key.input_shape))
    row["in_context"] = timer.chain([pre, key]) - timer.chain([pre])
    if BLOCK_TYPES[key.block].classifier:
        row["differential"] = row["in_context"]
    elif can_follow_itself(key):
        row["differential"] = timer.chain([key, key]) - t
    else:
        post = neighbour(tuple(key.output_shape))
        row["differential"] = timer.chain([key, post]) - timer.chain([post])
    return row


def in_network(candidate: str, row: dict[str, float]) -> float:
    """A key's in-network latency by a candidate; ``, bounded`` keeps its boundary within [0, T(key)]."""
    method, _, bounded = candidate.partition(", ")
    value = row["T"] - row["I_out"] if method == "identity" else row[method]
    return min(max(value, 0.0), row["T"]) if bounded else value


def predict(candidate: str, keys: list[BlockKey], per_key: dict[str, dict[str, float]], floor_ms: float) -> float:
    """A candidate's raw prediction of one network, ms."""
    rows = [per_key[str(k)] for k in keys]
    if candidate == "raw":
        return sum(r["T"] for r in rows)
    if candidate == "floor":
        return sum(r["T"] for r in rows) - (len(rows) - 1) * floor_ms
    return sum(in_network(candidate, r) for r in rows) + floor_ms


def metrics(errors: np.ndarray, predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    from scipy.stats import kendalltau

    tau = float(kendalltau(predicted, measured).statistic) if len(measured) > 1 else float("nan")
    return {
        "within_5_pct": float(np.mean(np.abs(errors) <= 5.0) * 100),
        "within_10_pct": float(np.mean(np.abs(errors) <= 10.0) * 100),
        "mape_pct": float(np.mean(np.abs(errors))),
        "rmspe_pct": float(np.sqrt(np.mean(errors**2))),
        "mean_error_pct": float(np.mean(errors)),
        "max_ape_pct": float(np.max(np.abs(errors))),
        "kendall_tau": tau,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpunet", type=int, default=10, help="GPUNet samples (default 10)")
    parser.add_argument("--genet", type=int, default=10, help="GENet-normal samples (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpunet-resolution", type=int, default=224)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the spare one)")
    parser.add_argument("--min-sample-ms", type=float, default=20.0, help="blocks' minimum sample (default 20)")
    parser.add_argument("--network-min-sample-ms", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=2, help="end-to-end rounds per network (median kept)")
    parser.add_argument("--no-drift-correct", action="store_true", help="raw figures, no drift reference")
    parser.add_argument("--drift-ratio", type=float, default=0.5, help="reference sample over measured sample")
    parser.add_argument("--cache-dir", type=Path, default=None, help="exported graphs (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--from-json", type=Path, default=None, help="measure nothing: report a saved run")
    args = parser.parse_args(argv)
    if args.from_json:
        report(json.loads(args.from_json.read_text(encoding="utf-8")))
        return 0

    import tempfile

    from kernels_bench.backends import get_backend
    from kernels_bench.timing import TimingSettings
    from tables.host import host_description, spare_cpu

    cpu = args.cpu if args.cpu is not None else spare_cpu()
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    nets = networks(args.gpunet, args.genet, args.seed, args.gpunet_resolution)
    keys = list(dict.fromkeys(k for ks in nets.values() for k in ks))
    random.Random(args.seed).shuffle(keys)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"{host_description()}, CPU {cpu}; {len(nets)} networks, {len(keys)} keys; {started:%Y-%m-%d %H:%M} UTC")

    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench_boundary_"))
    backend = get_backend("onnxruntime", device="cpu", threads=1, cache_dir=cache)
    block_settings = TimingSettings(min_sample_ms=args.min_sample_ms)
    reference = base_ms = None
    if not args.no_drift_correct:
        from kernels_bench.measure import DriftReference

        reference = DriftReference(backend, batch=1, precision="fp32", ratio=args.drift_ratio)
        base_ms = float(reference.measure(TimingSettings(repeats=90, min_sample_ms=args.min_sample_ms)).trimmed_mean_ms)
        print(f"drift reference {reference.key}: {base_ms:.4f} ms at the start (every figure brought to it)")
    timer = Timer(backend, block_settings, reference, base_ms)
    floor_shape = (40, 28, 28)  # the build's floor shape (profiler.tablebuild)
    floor_ms = timer.identity(floor_shape)
    per_key: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        per_key[str(key)] = measure_key(timer, key)
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(keys)} keys, {time.perf_counter() - t0:.0f} s", flush=True)
    keys_s = time.perf_counter() - t0

    network_timer = Timer(backend, TimingSettings(min_sample_ms=args.network_min_sample_ms), reference, base_ms)
    measured: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.rounds):
        for name, ks in nets.items():
            network_timer.cache.clear()
            measured[name].append(network_timer.chain(ks))
    measured_ms = {name: float(np.median(v)) for name, v in measured.items()}
    timer.cache.pop("identity:" + "x".join(str(d) for d in floor_shape))
    floor_end_ms = timer.identity(floor_shape)  # the machine's speed at the end, against the start

    payload = {
        "machine": host_description(),
        "started_utc": started.isoformat(),
        "cpu": cpu,
        "networks": len(nets),
        "network_keys": {name: [str(k) for k in ks] for name, ks in nets.items()},
        "keys": len(keys),
        "floor_ms": floor_ms,
        "floor_end_ms": floor_end_ms,
        "drift_reference_ms": base_ms,
        "keys_minutes": keys_s / 60,
        "networks_minutes": network_timer.seconds / 60,
        "graphs_timed": timer.timed,
        "measured_ms": measured_ms,
        "measured_rounds_ms": measured,
        "per_key": per_key,
        "seed": args.seed,
    }
    payload["results"] = report(payload)
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


def report(payload: dict[str, Any]) -> dict[str, Any]:
    """Print the comparison of a run (a fresh one, or one read back with ``--from-json``); returns its figures."""
    from tables.calibration import fit
    from tables.key import parse_key

    per_key, floor_ms = payload["per_key"], float(payload["floor_ms"])
    if "network_keys" in payload:
        nets = {name: [parse_key(k) for k in ks] for name, ks in payload["network_keys"].items()}
    else:  # a run saved before the key lists were recorded: GPUNet was padded then
        n_gpunet = sum(1 for n in payload["measured_ms"] if n.startswith("gpunet-sample-"))
        n_genet = sum(1 for n in payload["measured_ms"] if n.startswith("genet-sample-"))
        nets = networks(n_gpunet, n_genet, int(payload.get("seed", 0)), 224, padded=True)
    names = [n for n in nets if n in payload["measured_ms"]]
    y = np.asarray([payload["measured_ms"][n] for n in names])
    results: dict[str, Any] = {}
    for cand in CANDIDATES:
        pred = np.asarray([predict(cand, nets[n], per_key, floor_ms) for n in names])
        err = (pred / y - 1.0) * 100.0
        results[cand] = {
            **metrics(err, pred, y),
            **{f"error_{w}_pct": float(err[names.index(w)]) for w in WATCHED if w in names},
            "errors_pct": {n: float(e) for n, e in zip(names, err)},
        }

    # a calibrated reference: the calibration this version fits on the plain sums of half, on the other half
    rng = np.random.default_rng(int(payload.get("seed", 0)))
    order = rng.permutation(len(names))
    fit_idx, held_idx = np.sort(order[: len(names) // 2]), np.sort(order[len(names) // 2 :])
    raw = np.asarray([predict("raw", nets[n], per_key, floor_ms) for n in names])
    n_blocks = np.asarray([len(nets[n]) for n in names])
    io = np.asarray([sum(k.io_elements for k in nets[n]) / 1e6 for n in names])
    cal = fit(raw[fit_idx], y[fit_idx], n_blocks=n_blocks[fit_idx], floor_ms=floor_ms, io_mel=io[fit_idx])
    cal_pred = np.asarray(cal.apply(raw[held_idx], n_blocks[held_idx], {}, io[held_idx]))
    cal_err = (cal_pred / y[held_idx] - 1.0) * 100.0
    results["calibrated (held-out half)"] = {"model": cal.model, **metrics(cal_err, cal_pred, y[held_idx])}
    for cand in CANDIDATES:
        err = np.asarray([results[cand]["errors_pct"][names[i]] for i in held_idx])
        pred = np.asarray([predict(cand, nets[names[i]], per_key, floor_ms) for i in held_idx])
        results[cand]["held_out_half"] = metrics(err, pred, y[held_idx])

    #: graphs a build would time per key beyond the key itself (identity: one per unique output shape)
    extra = {"raw": "0", "floor": "0", "identity": "0 (+1 per shape)", "in_context": "1 (+1 per shape)"}
    extra["differential"] = "1-2"
    print(
        f"\n{payload['machine']}, CPU {payload['cpu']}, {payload['started_utc'][:16]} UTC: {len(names)} networks, "
        f"{payload['keys']} keys ({payload['graphs_timed']} graphs) in {payload['keys_minutes']:.1f} min; floor "
        f"{floor_ms:.4f} ms at the start, {float(payload['floor_end_ms']):.4f} at the end\n"
    )
    print(
        "| candidate | within ±5% | within ±10% | MAPE | RMSPE | mean error | max APE | Kendall tau "
        "| mobilenetv2-1.0 | efficientnet-b0 | extra graphs per key |"
    )
    print("|---" * 11 + "|")
    for cand in CANDIDATES:
        r = results[cand]
        watched = " | ".join(f"{r.get(f'error_{w}_pct', float('nan')):+.2f}%" for w in WATCHED)
        print(
            f"| {cand} | {r['within_5_pct']:.1f}% | {r['within_10_pct']:.1f}% | {r['mape_pct']:.2f}% | "
            f"{r['rmspe_pct']:.2f}% | {r['mean_error_pct']:+.2f}% | {r['max_ape_pct']:.2f}% | "
            f"{r['kendall_tau']:.3f} | {watched} | {extra[cand.partition(', ')[0]]} |"
        )
    c = results["calibrated (held-out half)"]
    print(
        f"\ncalibrated plain sum ({c['model']}, fitted on {len(fit_idx)}, held out {len(held_idx)}): within ±5% "
        f"{c['within_5_pct']:.1f}%, RMSPE {c['rmspe_pct']:.2f}%, tau {c['kendall_tau']:.3f}"
    )
    for cand in CANDIDATES:
        h = results[cand]["held_out_half"]
        print(f"  {cand} on the same held-out half: within ±5% {h['within_5_pct']:.1f}%, RMSPE {h['rmspe_pct']:.2f}%")
    return results


if __name__ == "__main__":
    sys.exit(main())
