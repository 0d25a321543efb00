"""Profiling pipeline benchmark: this project's pipeline against a naive one, side by side in one run.

Workload: the first ``--keys`` unique block keys of the reference networks
(:mod:`profiler.networks`, in the order resnet-18, mobilenetv2-1.0,
efficientnet-b0, genet-light, gpunet-0, then the others), batch 1, fp32,
onnxruntime on the CPU with one intra-op thread, the default timing protocol
(:class:`kernels_bench.timing.TimingSettings`).

Pipelines:

- **ours, cold**: :func:`kernels_bench.measure.measure_keys` on the project's
  onnxruntime backend with a fresh, empty export cache (TorchScript export,
  BN folded, one session with I/O binding, the timing protocol).
- **ours, warm**: a second pass over the same keys with the cache now filled.
- **naive**: per key, ``torch.onnx.export(..., dynamo=True)`` of the same block
  module to a temporary file (nothing cached), a fresh
  ``onnxruntime.InferenceSession`` with default session options except
  ``intra_op_num_threads=1`` (the same thread count as ours, so both time the
  same work), then as many warm-up runs and timed samples (each of the same
  inner loop) as ours did on that key, every run a ``session.run`` on a numpy
  input (host copies included).

The cold pass and the naive pipeline are interleaved key by key (ours, then
naive on the same key); the warm pass follows. With ``--naive-keys M`` below
``--keys`` the naive pipeline runs on M evenly spaced keys of the list and its
per-key cost is extrapolated (the output says so). One untimed key is run
through each pipeline first so that one-time start-up costs (imports, the
dynamo exporter's first call) are reported apart and not charged to any key.

Per key, each step is timed with ``time.perf_counter`` and the wall time is
measured around the whole key; "other" is wall minus the four steps.
Efficiency is the sum of the timed-run phases over the sum of the walls.
Keys per hour is 3600 over the mean wall per key.

Run from the repository root::

    python benchmarks/bench_pipeline.py                 # 60 keys, both pipelines on all of them
    python benchmarks/bench_pipeline.py --keys 100 --naive-keys 25 --json out.json
    python benchmarks/bench_pipeline.py --skip-naive --warmup-min-ms 10   # what-if runs of ours
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

from tables.key import BlockKey  # noqa: E402

#: Networks whose keys come first (the issue's reference set), then every other registered network.
PREFERRED_NETWORKS: tuple[str, ...] = ("resnet-18", "mobilenetv2-1.0", "efficientnet-b0", "genet-light", "gpunet-0")

#: A key outside every reference network, used to pay one-time start-up costs before measuring.
PRIMER_KEY = BlockKey("conv", 3, 24, 24, 8, k=3, s=1, act="relu")

STEPS: tuple[str, ...] = ("export_s", "compile_s", "warmup_s", "timed_s")
STEP_LABELS: dict[str, str] = {
    "export_s": "export",
    "compile_s": "compile",
    "warmup_s": "warm-up",
    "timed_s": "timed runs",
    "other_s": "other (wall - steps)",
    "wall_s": "wall",
}

TARGET_SPEEDUP = 10.0
TARGET_EFFICIENCY = 0.5


# ----- workload ------------------------------------------------------------------


def reference_keys(count: int) -> tuple[list[BlockKey], dict[str, str]]:
    """The first ``count`` unique keys of the reference networks and the network each came from."""
    from profiler.networks import NETWORKS, network_keys

    order = [n for n in PREFERRED_NETWORKS if n in NETWORKS] + [n for n in NETWORKS if n not in PREFERRED_NETWORKS]
    keys: list[BlockKey] = []
    source: dict[str, str] = {}
    for name in order:
        for key in network_keys(name):
            if str(key) not in source:
                source[str(key)] = name
                keys.append(key)
    if count > len(keys):
        raise SystemExit(f"--keys {count}: the reference networks have only {len(keys)} unique keys")
    keys = keys[:count]
    return keys, {str(k): source[str(k)] for k in keys}


def spaced_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first one included."""
    count = max(0, min(count, total))
    return sorted({(i * total) // count for i in range(count)}) if count else []


# ----- the two pipelines ------------------------------------------------------------


def run_ours(backend: Any, key: BlockKey, settings: Any) -> dict[str, Any]:
    """One key through ``measure_keys``; phases, wall and the protocol's choices."""
    from kernels_bench.measure import measure_keys

    start = time.perf_counter()
    result = measure_keys(backend, [key], 1, "fp32", settings)
    wall = time.perf_counter() - start
    row: dict[str, Any] = {k: float(result.phases[k]) for k in STEPS}
    row["wall_s"] = wall
    row["other_s"] = wall - sum(row[k] for k in STEPS)
    row.update(
        median_ms=result.median_ms,
        trimmed_mean_ms=result.trimmed_mean_ms,
        warmup_runs=result.warmup_runs,
        inner_loop=result.inner_loop,
        repeats=len(result.samples_ms),
    )
    return row


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the dynamo exporter's progress prints, warnings and log lines."""
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def run_naive(key: BlockKey, workdir: Path, warmup_runs: int, repeats: int, inner: int) -> dict[str, Any]:
    """One key the naive way: dynamo export, fresh default session, ``session.run`` on numpy input."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from kernels_bench.blocks import build_block

    path = workdir / f"naive_{os.getpid()}_{time.perf_counter_ns()}.onnx"
    start = time.perf_counter()
    module = build_block(key)
    example = torch.zeros((1, *key.input_shape), dtype=torch.float32)
    with _quiet():
        torch.onnx.export(module, (example,), str(path), dynamo=True, verbose=False)
    t_export = time.perf_counter()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    t_compile = time.perf_counter()

    spec = session.get_inputs()[0]
    feed = {spec.name: np.random.default_rng(0).standard_normal(tuple(spec.shape)).astype(np.float32)}
    for _ in range(warmup_runs):
        session.run(None, feed)
    t_warm = time.perf_counter()

    samples = []
    for _ in range(repeats):
        s0 = time.perf_counter()
        for _ in range(inner):
            session.run(None, feed)
        samples.append((time.perf_counter() - s0) * 1e3 / inner)
    t_timed = time.perf_counter()
    del session
    path.unlink(missing_ok=True)
    wall = time.perf_counter() - start
    row: dict[str, Any] = {
        "export_s": t_export - start,
        "compile_s": t_compile - t_export,
        "warmup_s": t_warm - t_compile,
        "timed_s": t_timed - t_warm,
        "wall_s": wall,
    }
    row["other_s"] = wall - sum(row[k] for k in STEPS)
    row["median_ms"] = float(statistics.median(samples))
    return row


# ----- summary and output ------------------------------------------------------------


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median cost of each step per key (ms), mean wall, keys per hour and efficiency."""
    if not rows:
        return {}
    out: dict[str, Any] = {"keys": len(rows)}
    for step in (*STEPS, "other_s", "wall_s"):
        out[f"median_{step[:-2]}_ms"] = 1e3 * statistics.median(r[step] for r in rows)
    total_wall = sum(r["wall_s"] for r in rows)
    out["mean_wall_ms"] = 1e3 * total_wall / len(rows)
    out["total_wall_s"] = total_wall
    out["total_timed_s"] = sum(r["timed_s"] for r in rows)
    out["keys_per_hour"] = 3600.0 * len(rows) / total_wall
    out["efficiency"] = out["total_timed_s"] / total_wall
    return out


def machine_facts() -> dict[str, Any]:
    """CPU model, cores, OS, date and library versions."""
    import onnxruntime
    import torch

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    if cpu == "unknown":
        cpu = platform.processor() or platform.machine() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count() or 0,
        "usable_cpus": usable,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown_report(report: dict[str, Any]) -> str:
    """The table and the facts around it, as markdown."""
    m, s = report["machine"], report["summary"]
    cols = [c for c in ("ours_cold", "ours_warm", "naive") if s.get(c)]
    names = {"ours_cold": "ours, cold cache", "ours_warm": "ours, warm cache", "naive": "naive"}
    lines = [
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable); {m['os']}; "
        f"Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}; {m['date_utc']}.",
        "",
        f"Workload: {report['workload']['keys']} unique keys of {', '.join(report['workload']['networks'])}; "
        f"batch 1, fp32, onnxruntime CPU, 1 intra-op thread; timing settings {report['workload']['settings']}.",
    ]
    naive = s.get("naive")
    if naive:
        lines.append(
            f"Naive pipeline: {naive['keys']} of the {report['workload']['keys']} keys (evenly spaced)"
            + (", per-key cost extrapolated to all keys" if naive["keys"] < report["workload"]["keys"] else "")
            + "; interleaved key by key with the cold pass of ours; the warm pass ran afterwards."
        )
    lines += [
        "",
        "| per key (median, ms) | " + " | ".join(names[c] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for step in (*STEPS, "other_s", "wall_s"):
        lines.append(
            f"| {STEP_LABELS[step]} | " + " | ".join(_fmt(s[c][f"median_{step[:-2]}_ms"]) for c in cols) + " |"
        )
    lines.append("| mean wall per key | " + " | ".join(_fmt(s[c]["mean_wall_ms"]) for c in cols) + " |")
    lines.append("| keys per hour | " + " | ".join(_fmt(s[c]["keys_per_hour"], 0) for c in cols) + " |")
    lines.append("| efficiency (timed / wall) | " + " | ".join(f"{100 * s[c]['efficiency']:.1f}%" for c in cols) + " |")
    lines.append("")
    ratios = report.get("ratios", {})
    for name, value in ratios.items():
        lines.append(f"- {name}: {value:.1f}x")
    if "ours_cold" in s:
        eff = s["ours_cold"]["efficiency"]
        lines.append(
            f"- target keys/hour >= {TARGET_SPEEDUP:.0f}x naive: "
            + (
                "met"
                if ratios and ratios.get("keys/hour ours (cold) / naive", 0) >= TARGET_SPEEDUP
                else "not met or not measured"
            )
        )
        verdict = "met" if eff >= TARGET_EFFICIENCY else "not met"
        lines.append(f"- target efficiency >= {100 * TARGET_EFFICIENCY:.0f}% (ours, cold): {100 * eff:.1f}%, {verdict}")
        if "ours_warm" in s:
            lines.append(f"- efficiency, ours with a warm cache: {100 * s['ours_warm']['efficiency']:.1f}%")
    if report.get("latency_agreement") is not None:
        lines.append(
            f"- measured latency, naive / ours (median over shared keys): {report['latency_agreement']:.2f} "
            "(naive includes host copies of input and output)"
        )
    start = report.get("startup_s", {})
    if start:
        lines.append(
            "- one-time start-up, not charged to keys: " + ", ".join(f"{k} {v:.1f} s" for k, v in start.items())
        )
    return "\n".join(lines)


# ----- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--keys", type=int, default=60, help="unique reference-network keys to profile (default 60)")
    p.add_argument(
        "--naive-keys",
        type=int,
        help="run the naive pipeline on this many evenly spaced keys only and extrapolate its per-key cost "
        "(default: all keys)",
    )
    p.add_argument("--skip-naive", action="store_true", help="run only our pipeline")
    p.add_argument("--no-warm", action="store_true", help="skip the second (warm-cache) pass of ours")
    p.add_argument("--json", type=Path, help="also write the report as JSON to this path")
    p.add_argument("--repeats", type=int, help="override TimingSettings.repeats (what-if runs)")
    p.add_argument("--warmup-runs", type=int, help="override TimingSettings.warmup_runs")
    p.add_argument("--warmup-min-ms", type=float, help="override TimingSettings.warmup_min_ms")
    p.add_argument("--min-sample-ms", type=float, help="override TimingSettings.min_sample_ms")
    args = p.parse_args(argv)
    if args.keys < 1:
        p.error("--keys must be >= 1")
    if args.naive_keys is None:
        args.naive_keys = args.keys
    if args.naive_keys < 1 and not args.skip_naive:
        p.error("--naive-keys must be >= 1 (or use --skip-naive)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from kernels_bench.backends import get_backend
    from kernels_bench.timing import TimingSettings

    overrides = {
        name: value
        for name, value in (
            ("repeats", args.repeats),
            ("warmup_runs", args.warmup_runs),
            ("warmup_min_ms", args.warmup_min_ms),
            ("min_sample_ms", args.min_sample_ms),
        )
        if value is not None
    }
    settings = TimingSettings(**overrides)
    keys, source = reference_keys(args.keys)
    naive_idx = set() if args.skip_naive else set(spaced_indices(len(keys), args.naive_keys))
    networks = list(dict.fromkeys(source.values()))
    print(f"{len(keys)} keys from {', '.join(networks)}; naive on {len(naive_idx)} of them", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    cache_dir = workdir / "onnx_cache"
    startup: dict[str, float] = {}
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    naive: list[dict[str, Any]] = []
    t_run = time.perf_counter()
    try:
        t0 = time.perf_counter()
        backend = get_backend("onnxruntime", device="cpu", threads=1, cache_dir=workdir / "primer_cache")
        run_ours(backend, PRIMER_KEY, settings)
        backend.close()
        startup["ours (backend + primer key)"] = time.perf_counter() - t0
        if naive_idx:
            t0 = time.perf_counter()
            run_naive(PRIMER_KEY, workdir, settings.warmup_runs, settings.repeats, 1)
            startup["naive (dynamo exporter + primer key)"] = time.perf_counter() - t0

        backend = get_backend("onnxruntime", device="cpu", threads=1, cache_dir=cache_dir)
        for i, key in enumerate(keys):
            row = run_ours(backend, key, settings)
            row.update(index=i, key=str(key), network=source[str(key)])
            cold.append(row)
            line = f"[{i + 1:3d}/{len(keys)}] {key}  ours {1e3 * row['wall_s']:7.1f} ms"
            if i in naive_idx:
                nrow = run_naive(key, workdir, row["warmup_runs"], row["repeats"], row["inner_loop"])
                nrow.update(index=i, key=str(key), network=source[str(key)])
                naive.append(nrow)
                line += f"  naive {1e3 * nrow['wall_s']:8.1f} ms"
            print(line, flush=True)
        if not args.no_warm:
            for i, key in enumerate(keys):
                row = run_ours(backend, key, settings)
                row.update(index=i, key=str(key), network=source[str(key)])
                warm.append(row)
            print(f"warm pass: {len(warm)} keys in {sum(r['wall_s'] for r in warm):.1f} s", flush=True)
        environment = backend.environment()
        backend.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = {"ours_cold": summarize_rows(cold), "ours_warm": summarize_rows(warm), "naive": summarize_rows(naive)}
    ratios: dict[str, float] = {}
    if naive:
        shared = {r["index"] for r in naive}
        matched = summarize_rows([r for r in cold if r["index"] in shared])
        summary["ours_cold_on_naive_keys"] = matched
        ratios["keys/hour ours (cold) / naive"] = (
            summary["ours_cold"]["keys_per_hour"] / summary["naive"]["keys_per_hour"]
        )
        ratios["keys/hour ours (cold) / naive, same keys only"] = (
            matched["keys_per_hour"] / summary["naive"]["keys_per_hour"]
        )
        if warm:
            ratios["keys/hour ours (warm) / naive"] = (
                summary["ours_warm"]["keys_per_hour"] / summary["naive"]["keys_per_hour"]
            )
    by_index = {r["index"]: r for r in cold}
    agreement = statistics.median(r["median_ms"] / by_index[r["index"]]["median_ms"] for r in naive) if naive else None
    report: dict[str, Any] = {
        "machine": machine_facts(),
        "backend_environment": environment,
        "workload": {
            "keys": len(keys),
            "networks": networks,
            "batch": 1,
            "precision": "fp32",
            "threads": 1,
            "settings": settings.to_dict(),
            "naive_keys": len(naive),
            "naive_session_options": "defaults except intra_op_num_threads=1",
            "order": "cold pass of ours and naive interleaved key by key; warm pass afterwards",
        },
        "summary": summary,
        "ratios": ratios,
        "latency_agreement": agreement,
        "startup_s": startup,
        "run_wall_s": time.perf_counter() - t_run,
        "per_key": {"ours_cold": cold, "ours_warm": warm, "naive": naive},
    }
    text = markdown_report(report)
    print()
    print(text)
    print(f"\n(whole run: {report['run_wall_s']:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
