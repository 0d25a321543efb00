"""One prepared GPU check: every GPU path of this project that runs on a bare lent NVIDIA machine, in one run.

Usage (from the source tree)::

    PYTHONPATH=. bash benchmarks/gpu_check.sh [OUTDIR] [--budget-s 330] [--only a,b] [--skip a,b]
                                             [--limit NAME=SECONDS] [--no-gpu] [--self-test] [--keep-tmp]
    python benchmarks/gpu_check.py --out OUTDIR [the same options]

``OUTDIR`` defaults to ``$OUT``, else ``./gpu_check_out``. Sections, in order (default time limit):

1. ``env`` (15 s): versions, GPU, driver, SM count, L2, NVML, ``nvidia-smi -q -d CLOCK,PERFORMANCE``,
   ``check_driver``.
2. ``pytest`` (75 s): ``pytest -m "gpu or tensorrt"``: passed/failed/skipped counts and failing ids.
3. ``timer`` (20 s): the cuda-python event timer against ``torch.cuda.Event`` on the same matmuls.
4. ``trt_runner`` (25 s): ``TensorRTRunner`` on the real CUDA runtime with a stand-in engine whose
   ``execute_async_v3`` enqueues real torch kernels: plain, CUDA graph, capture refused, capture
   invalidated; outputs, launch counts and the memory freed by ``close()`` checked.
5. ``hold_bias`` (30 s): the launch-offset bias the GPU-side hold removes, tiny and large block.
6. ``l2_clock`` (30 s): L2-warm against cold-L2 trimmed means; the SM clock's settle through the warm-up.
7. ``build_validate`` (150 s): a torch fp16 batch-64 build of the reference networks' keys, then
   ``profiler.validate`` (block-sum error, rank correlation against the GENet paper's V100 ordering),
   then a second (key-limited) build for the run-to-run repeatability of the trimmed means.
8. ``compile`` (45 s): ``torch.compile`` against eager, compile seconds.

Every section runs in its own process (``gpu_check.py section NAME``, a process group of its own) under
its own time limit, cut to what the total budget (``--budget-s``, default 330 s) leaves for it and the
sections after it; a failing or timed-out section does not stop the rest. Without a CUDA GPU every
section is reported as ``skipped: no CUDA GPU`` within seconds and nothing imports torch.
``--self-test`` runs the harness with four tiny built-in sections (ok, failing, hanging, ok) instead.

Files written into OUTDIR (4): ``report.md`` (per-section figures, the summary table last; also printed
at the end), ``results.json`` (every figure: per section status, seconds, figures, checks, error line),
``clock_trace.csv`` (SM and memory clock, temperature, power, throttle reasons every 250 ms through the
run) and ``log.txt`` (every section's output, each line prefixed with its section). Big intermediates
(tables, junit XML, caches) go to a temporary folder that is removed at the end (``--keep-tmp``).

Exit status: 0 every section ok or skipped, 1 some section failed or timed out, 2 bad arguments,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tables.cli import CliParser, UsageError, run_cli, text_arg  # noqa: E402
from tables.errors import error_text, one_line  # noqa: E402

#: Default total budget of one run, s (the lent machine's command limit is 6 minutes).
DEFAULT_BUDGET_S = 330.0
MAX_BUDGET_S = 3600.0
#: Kept back from the budget for detection, stopping the sampler and writing the reports, s.
REPORT_RESERVE_S = 8.0
#: A section stops its own work this long before its limit, so it can write its figures, s.
SECTION_MARGIN_S = 3.0
#: Between SIGTERM and SIGKILL of a timed-out process group, s.
KILL_GRACE_S = 2.0
#: Period of the clock sampler, s.
SAMPLE_INTERVAL_S = 0.25
#: The reason every section gets on a machine without a usable CUDA GPU.
NO_GPU = "no CUDA GPU"
#: Everything written into OUTDIR.
RESULT_FILES: tuple[str, ...] = ("report.md", "results.json", "clock_trace.csv", "log.txt")
TRACE_COLUMNS: tuple[str, ...] = (
    "t_s",
    "section",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "temperature_c",
    "power_w",
    "throttle_reasons",
)
STATUSES: tuple[str, ...] = ("ok", "failed", "timeout", "skipped")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Exit status of a section process that skipped itself.
CHILD_SKIPPED = 3
#: Lines of flattened figures per section in report.md (results.json has them all).
REPORT_FIGURE_LINES = 30

#: Batch and precision of the build_validate section (the GENet paper's own setting).
BUILD_BATCH = 64
BUILD_PRECISION = "fp16"
#: The GENet paper's latencies (ms per image) and the rows that match the build's setting.
GENET_CSV = ROOT / "profiler" / "data" / "genet_seed_latency_ms_per_image.csv"
GENET_FILTER = {"gpu": "V100", "precision": "fp16", "batch": 64}

VERSION_DISTS: tuple[str, ...] = (
    "torch",
    "triton",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "pandas",
    "pyarrow",
    "scipy",
    "nvidia-ml-py",
    "pytest",
)


# ===================================================================== small helpers


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: floats to 6 significant digits, NaN/inf as None, numpy scalars unwrapped."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    for name in ("tolist", "item"):  # numpy arrays and scalars
        method = getattr(value, name, None)
        if callable(method):
            with contextlib.suppress(Exception):
                return jsonable(method())
    return str(value)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return float(statistics.median(values)) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation), or None for no values."""
    if not values:
        return None
    ordered = sorted(float(v) for v in values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _fmt(value: Any, spec: str = ".3g") -> str:
    """A number formatted with ``spec`` (an int with ``d`` when ``spec`` is a float format), ``?`` for None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?" if value is None else str(value)
    if isinstance(value, int) and spec.endswith("g"):
        return str(value)
    return format(value, spec)


def _get(data: Mapping[str, Any] | None, *path: str) -> Any:
    """``data[p0][p1]...`` or None where a step is missing."""
    cur: Any = data
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur:
            return None
        cur = cur[p]
    return cur


def child_env() -> dict[str, str]:
    """The environment of every process this check starts: the source tree first on PYTHONPATH, unbuffered."""
    env = dict(os.environ)
    parts = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _terminate(proc: subprocess.Popen, group: bool) -> None:
    """SIGTERM the process (its whole group when ``group``), SIGKILL after :data:`KILL_GRACE_S`."""
    if group:
        _kill_group(proc.pid, signal.SIGTERM)
    else:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        if group:
            _kill_group(proc.pid)
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait()


def run_process(
    cmd: Sequence[str], *, timeout: float, stdout: Any = None, new_group: bool = False
) -> tuple[int | None, bool, float]:
    """Run ``cmd`` in the source tree with stdout and stderr to ``stdout`` (None: inherited).

    With ``new_group`` the process leads a process group of its own, and the whole group is killed on a
    timeout and once the leader has exited (nothing it started outlives it).

    Returns:
        ``(exit status or None when killed, timed out, seconds)``.
    """
    sys.stdout.flush()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        stdout=stdout,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=child_env(),
        start_new_session=new_group,
    )
    rc: int | None = None
    timed_out = False
    try:
        rc = proc.wait(timeout=max(0.1, float(timeout)))
    except subprocess.TimeoutExpired:
        timed_out = True
        _terminate(proc, new_group)
    except BaseException:  # Ctrl-C or SIGTERM of this process: never leave the work running
        _terminate(proc, new_group)
        raise
    finally:
        if new_group:
            _kill_group(proc.pid)
    return rc, timed_out, time.monotonic() - t0


# ===================================================================== a section's recorder


class SectionSkipped(Exception):
    """Raised by a section that cannot run here (a missing optional piece): its status becomes ``skipped``."""


class Recorder:
    """Figures, checks and errors of one section, written to its result file after every change.

    A section that is killed at its time limit still leaves every figure recorded until then.

    Args:
        name: the section.
        path: its result file (None: kept in memory only).
        limit_s: the section's time limit; :meth:`left` counts down to it less :data:`SECTION_MARGIN_S`.
        tmp: a scratch folder of the section's own (big intermediates go here, never to OUTDIR).
    """

    def __init__(self, name: str, path: Path | None, limit_s: float, tmp: Path) -> None:
        self.name = name
        self.path = path
        self.limit_s = float(limit_s)
        self.tmp = tmp
        self.deadline = time.monotonic() + max(0.0, self.limit_s - SECTION_MARGIN_S)
        self.figures: dict[str, Any] = {}
        self.checks: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.status = "running"
        self.error: str | None = None
        self.save()

    def left(self) -> float:
        """Seconds left before the section should stop its work."""
        return self.deadline - time.monotonic()

    def set(self, key: str, value: Any) -> Any:
        """Record figure ``key``; returns ``value``."""
        self.figures[key] = jsonable(value)
        self.save()
        return value

    def update(self, key: str, **values: Any) -> None:
        """Merge ``values`` into the dict figure ``key``."""
        current = self.figures.get(key)
        merged = dict(current) if isinstance(current, dict) else {}
        merged.update(jsonable(values))
        self.figures[key] = merged
        self.save()

    def check(self, name: str, ok: bool, detail: Any = "", *, fatal: bool = True) -> bool:
        """Record a check; a failed ``fatal`` one fails the section (others are expectations, reported only)."""
        ok = bool(ok)
        text = one_line(str(detail), 300) if detail not in (None, "") else ""
        self.checks.append({"name": name, "ok": ok, "detail": text, "fatal": fatal})
        print(f"check {'PASS' if ok else ('FAIL' if fatal else 'MISS')}: {name}{': ' + text if text else ''}")
        self.save()
        return ok

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run a sub-step: an exception is printed with its traceback, recorded as an error, and swallowed."""
        try:
            yield
        except SectionSkipped:
            raise
        except Exception as exc:
            print(f"step {name} failed:")
            traceback.print_exc(file=sys.stdout)
            self.errors.append(f"{name}: {error_text(exc, 400)}")
            self.save()

    def need(self, seconds: float, what: str) -> bool:
        """True when ``seconds`` are left; else records ``what`` under ``skipped_steps`` and returns False."""
        if self.left() >= seconds:
            return True
        self.skip_step(f"{what}: needs {seconds:.0f} s, {max(0.0, self.left()):.0f} s left")
        return False

    def skip_step(self, text: str) -> None:
        """Record a sub-step left out (for want of time) under ``skipped_steps``."""
        skipped = list(self.figures.get("skipped_steps") or [])
        skipped.append(text)
        print(f"step skipped: {text}")
        self.set("skipped_steps", skipped)

    def failed(self) -> bool:
        """Whether an error or a failed fatal check was recorded."""
        return bool(self.errors) or any(not c["ok"] and c["fatal"] for c in self.checks)

    def summary_error(self) -> str | None:
        """The error line of a failed section: its first error, else its failed checks."""
        if self.errors:
            more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            return self.errors[0] + more
        bad = [c for c in self.checks if not c["ok"] and c["fatal"]]
        if not bad:
            return None
        return "check failed: " + "; ".join(f"{c['name']} ({c['detail']})" if c["detail"] else c["name"] for c in bad)

    def finish(self, status: str, error: str | None = None) -> None:
        """Set the final status and error line and write the result file."""
        self.status = status
        self.error = error
        self.save()

    def document(self) -> dict[str, Any]:
        """What the result file holds."""
        return {
            "section": self.name,
            "status": self.status,
            "error": self.error,
            "errors": list(self.errors),
            "checks": list(self.checks),
            "figures": dict(self.figures),
        }

    def save(self) -> None:
        """Write the result file (atomically)."""
        if self.path is not None:
            write_atomic(self.path, json.dumps(self.document(), indent=1, sort_keys=False))


# ===================================================================== pure helpers of the sections


def parse_junit(path: Path) -> dict[str, Any]:
    """Counts and failing test ids of a pytest junit XML file."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failing: list[str] = []
    reasons: dict[str, int] = {}
    for case in root.iter("testcase"):
        counts["tests"] += 1
        ident = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            counts["failed"] += 1
            failing.append(ident)
        elif "error" in kinds:
            counts["errors"] += 1
            failing.append(ident)
        elif "skipped" in kinds:
            counts["skipped"] += 1
            skipped = case.find("skipped")
            reason = one_line((skipped.get("message") if skipped is not None else "") or "?", 120)
            reasons[reason] = reasons.get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return {**counts, "failing": failing, "skip_reasons": reasons}


def parse_smi(text: str) -> dict[str, str]:
    """``nvidia-smi -q`` text as ``{"Header/Sub/Key": value}`` (nesting from the indentation)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.strip().startswith("="):
            continue
        indent = len(raw) - len(raw.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        line = raw.strip()
        pair = re.match(r"^(.*?)\s+:(?:\s+(.*))?$", line)  # "Key   : value" (a bus id like 00:19:00.0 is a header)
        if pair:
            key, value = pair.group(1).strip(), (pair.group(2) or "").strip()
            if value:
                out["/".join([s for _, s in stack] + [key])] = value
            else:
                stack.append((indent, key))
        else:
            stack.append((indent, line))
    return out


def smi_summary(parsed: Mapping[str, str], limit: int = 60) -> dict[str, Any]:
    """The clock and performance entries of :func:`parse_smi`, with the clock-event reasons that are active."""
    keep = {k: v for k, v in parsed.items() if not k.startswith(("Timestamp", "Attached GPUs"))}
    active = [k.rsplit("/", 1)[-1] for k, v in parsed.items() if ("Reasons/" in k) and v.strip().lower() == "active"]
    entries = dict(list(keep.items())[:limit])
    return {"active_reasons": active, "entries": entries, "entries_total": len(keep)}


def pick_profile(gpu_name: str | None) -> str | None:
    """The device profile (``profiler.devices``) of a GPU name, e.g. ``h100`` for "NVIDIA H100 80GB HBM3"."""
    if not gpu_name:
        return None
    from profiler.devices import DEVICE_PROFILES

    for profile in DEVICE_PROFILES.values():
        if profile.kind == "gpu" and profile.matches(gpu_name):
            return profile.name
    return None


def genet_reference(path: Path = GENET_CSV, filters: Mapping[str, Any] = GENET_FILTER) -> dict[str, float]:
    """The GENet paper's latency (ms per image) of each reference network it lists, for the given setting.

    The CSV's model names match the project's network names case-insensitively (``GENet-light`` is
    ``genet-light``, ``MobileNetV2-1.0`` is ``mobilenetv2-1.0``); models the project does not have are
    left out.
    """
    from profiler.networks import NETWORKS

    names = {n.lower(): n for n in NETWORKS}
    out: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if str(row.get("gpu")) != str(filters["gpu"]) or str(row.get("precision")) != str(filters["precision"]):
                continue
            try:
                if int(float(row["batch"])) != int(filters["batch"]):
                    continue
                latency = float(row["latency_ms_per_image"])
            except (KeyError, TypeError, ValueError):
                continue
            name = names.get(str(row.get("model", "")).strip().lower())
            if name is not None:
                out[name] = latency
    return out


def rank_correlation(measured: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, Any]:
    """Spearman rho and Kendall tau between two latency orderings over the networks both have."""
    common = sorted(n for n in measured if n in reference and measured[n] is not None and math.isfinite(measured[n]))
    out: dict[str, Any] = {"n": len(common), "networks": common, "spearman": None, "kendall": None}
    if len(common) < 3:
        return out
    from scipy import stats

    x = [float(measured[n]) for n in common]
    y = [float(reference[n]) for n in common]
    out["spearman"] = float(stats.spearmanr(x, y)[0])
    out["kendall"] = float(stats.kendalltau(x, y)[0])
    return out


def repeatability(first: Any, second: Any) -> dict[str, Any]:
    """Run-to-run change of the trimmed means of two tables' frames: ``|a-b|/a`` over the keys ok in both, %."""
    a = first[first["status"] == "ok"].set_index("key")["latency_ms"]
    b = second[second["status"] == "ok"].set_index("key")["latency_ms"]
    common = [k for k in a.index if k in b.index]
    rel = {k: abs(float(a[k]) - float(b[k])) / float(a[k]) * 100.0 for k in common if float(a[k]) > 0}
    values = list(rel.values())
    worst = max(rel, key=rel.get) if rel else None
    return {
        "n": len(values),
        "median_pct": median(values),
        "p90_pct": percentile(values, 90),
        "max_pct": max(values) if values else None,
        "worst_key": worst,
        "within_1_pct_share": (sum(v <= 1.0 for v in values) / len(values) * 100.0) if values else None,
    }


def validation_summary(frame: Any) -> dict[str, Any]:
    """The block sum's error against the measured end-to-end latency (``error_uncal_pct``) over the ok rows."""
    ok = frame[frame["status"] == "ok"]
    errors = [float(e) for e in ok["error_uncal_pct"] if e is not None and math.isfinite(float(e))]
    absolute = [abs(e) for e in errors]
    share = (lambda bound: sum(v <= bound for v in absolute) / len(absolute) * 100.0) if absolute else None
    return {
        "networks": len(frame),
        "ok": len(ok),
        "failed": [str(n) for n in frame.loc[frame["status"] != "ok", "network"]],
        "error_median_pct": median(errors),
        "abs_error_median_pct": median(absolute),
        "abs_error_max_pct": max(absolute) if absolute else None,
        "within_5_pct_share": share(5.0) if share else None,
        "within_10_pct_share": share(10.0) if share else None,
        "per_network": {
            str(r.network): {"sum_ms": float(r.sum_ms), "measured_ms": float(r.measured_ms), "error_pct": float(e)}
            for r, e in zip(ok.itertuples(), ok["error_uncal_pct"])
        },
    }


def second_build_limit(total_keys: int, per_key_s: float, startup_s: float, available_s: float) -> int | None:
    """How many keys a second build can measure in ``available_s``: all (``total_keys``), fewer, or None (< 8).

    Uses the first build's seconds per key and its fixed start-up cost, with a 20% margin.
    """
    if per_key_s <= 0 or available_s <= startup_s:
        return None
    n = int((available_s - startup_s) / (per_key_s * 1.2))
    if n < 8:
        return None
    return min(n, int(total_keys))


def clock_settle(
    samples: Sequence[tuple[float, float]], work_start_s: float, warmup_end_s: float, final_window_s: float = 0.15
) -> dict[str, Any]:
    """How fast the SM clock rises once back-to-back work starts.

    Args:
        samples: ``(time s, SM clock MHz)``, one clock: idle before ``work_start_s``, under work after.
        work_start_s: when the work started.
        warmup_end_s: when the default warm-up ended (work went on after it).
        final_window_s: the final clock is the median of the last ``final_window_s`` of samples.

    Returns:
        ``idle_mhz`` (the lowest clock before the work), ``idle_last_mhz`` (the last one), ``final_mhz``,
        ``settle_ms`` (from the work's start to the first sample at >= 95% of the final clock),
        ``at_warmup_end_mhz`` and ``settled_by_warmup_end``.
    """
    idle = [mhz for t, mhz in samples if t < work_start_s]
    work = [(t, mhz) for t, mhz in samples if t >= work_start_s]
    out: dict[str, Any] = {
        "samples": len(samples),
        "idle_mhz": min(idle) if idle else None,
        "idle_last_mhz": idle[-1] if idle else None,
        "final_mhz": None,
        "settle_ms": None,
        "at_warmup_end_mhz": None,
        "settled_by_warmup_end": None,
        "warmup_ms": (warmup_end_s - work_start_s) * 1e3,
    }
    if not work:
        return out
    end = work[-1][0]
    final = median([mhz for t, mhz in work if t >= end - final_window_s])
    out["final_mhz"] = final
    settle = next((t for t, mhz in work if final is not None and mhz >= 0.95 * final), None)
    out["settle_ms"] = (settle - work_start_s) * 1e3 if settle is not None else None
    before_end = [mhz for t, mhz in work if t <= warmup_end_s]
    out["at_warmup_end_mhz"] = before_end[-1] if before_end else None
    if settle is not None:
        out["settled_by_warmup_end"] = settle <= warmup_end_s
    return out


def trace_summary(rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Per section of the clock trace: SM clock min/median/max, memory clock, temperature and power peaks,
    and how many samples each throttle reason was active in."""

    def num(row: Mapping[str, str], key: str) -> float | None:
        try:
            return float(row.get(key) or "")
        except ValueError:
            return None

    groups: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("section") or "-"), []).append(row)
    out: dict[str, Any] = {}
    for section, group in groups.items():
        sm = [v for v in (num(r, "sm_clock_mhz") for r in group) if v is not None]
        mem = [v for v in (num(r, "mem_clock_mhz") for r in group) if v is not None]
        temp = [v for v in (num(r, "temperature_c") for r in group) if v is not None]
        power = [v for v in (num(r, "power_w") for r in group) if v is not None]
        reasons: dict[str, int] = {}
        for r in group:
            for name in filter(None, str(r.get("throttle_reasons") or "").split("|")):
                reasons[name] = reasons.get(name, 0) + 1
        out[section] = {
            "samples": len(group),
            "sm_mhz_min": min(sm) if sm else None,
            "sm_mhz_median": median(sm),
            "sm_mhz_max": max(sm) if sm else None,
            "mem_mhz_median": median(mem),
            "temperature_c_max": max(temp) if temp else None,
            "power_w_max": max(power) if power else None,
            "throttle_reasons": reasons,
        }
    return out


def allocate_limit(default_s: float, remaining_s: float, later_min_s: float, min_s: float) -> float | None:
    """A section's time limit: its default, cut to what the budget leaves after the later sections' minimums.

    Returns None when that is under the section's own minimum (the section is skipped: budget exhausted).
    """
    limit = min(float(default_s), float(remaining_s) - float(later_min_s))
    return limit if limit >= min_s else None


def section_outcome(
    doc: Mapping[str, Any] | None, rc: int | None, timed_out: bool, seconds: float, limit_s: float, log_tail: str
) -> dict[str, Any]:
    """A section's entry in results.json from its result file and how its process ended."""
    doc = doc or {}
    status = str(doc.get("status") or "")
    error = doc.get("error")
    if timed_out:
        status = "timeout"
        reached = f"killed at its {limit_s:.0f} s time limit"
        error = f"{reached}; {error}" if error else reached
    elif status not in STATUSES:
        status = "failed"
        error = error or f"exited with status {rc}: {one_line(log_tail, 300) or 'no output'}"
    elif status == "ok" and rc not in (0, None):
        status = "failed"
        error = f"exited with status {rc}: {one_line(log_tail, 300) or 'no output'}"
    return {
        "status": status,
        "seconds": round(float(seconds), 2),
        "limit_s": round(float(limit_s), 1),
        "error": error,
        "figures": dict(doc.get("figures") or {}),
        "checks": list(doc.get("checks") or []),
        "errors": list(doc.get("errors") or []),
    }


def flatten(data: Any, prefix: str = "") -> list[str]:
    """Nested figures as ``a.b: value`` lines (long lists shortened)."""
    lines: list[str] = []
    if isinstance(data, Mapping):
        if not data and prefix:
            lines.append(f"{prefix}: {{}}")
        for k, v in data.items():
            lines += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return lines
    if isinstance(data, list):
        if len(data) > 8:
            shown = ", ".join(_fmt(v, ".4g") if isinstance(v, (int, float)) else str(v) for v in data[:8])
            return [f"{prefix}: [{shown}, ...] ({len(data)} items)"]
        shown = ", ".join(_fmt(v, ".4g") if isinstance(v, (int, float)) else str(v) for v in data)
        return [f"{prefix}: [{shown}]"]
    text = _fmt(data, ".4g") if isinstance(data, (int, float)) and not isinstance(data, bool) else str(data)
    return [f"{prefix}: {one_line(text, 160)}"]


def format_report(doc: Mapping[str, Any]) -> str:
    """report.md: the run, each section's figures and checks, the clock trace, and the summary table last."""
    gpu = doc.get("gpu") or {}
    sections: Mapping[str, Any] = doc.get("sections") or {}
    env = _get(sections, "env", "figures") or {}
    name = _get(env, "gpu", "name") or gpu.get("name")
    name = name or ("self-test" if gpu.get("self_test") else "no GPU" if not gpu.get("available") else "GPU")
    lines = [f"# GPU check: {name}", ""]
    lines.append(
        f"- started {doc.get('started_utc', '?')}; {_fmt(doc.get('elapsed_s'), '.0f')} s of a "
        f"{_fmt(doc.get('budget_s'), '.0f')} s budget; exit status {doc.get('exit_status', '?')}"
    )
    driver = _get(env, "gpu_environment", "driver_version")
    torch_v = _get(env, "torch", "version") or gpu.get("torch")
    if driver or torch_v:
        cuda = _get(env, "torch", "cuda") or gpu.get("torch_cuda") or "?"
        bindings = _get(env, "versions", "cuda_bindings_version") or "?"
        lines.append(f"- driver {driver or '?'}, torch {torch_v or '?'} (CUDA {cuda}), cuda-bindings {bindings}")
    if not gpu.get("available"):
        lines.append(f"- {gpu.get('reason') or NO_GPU}")
    host = doc.get("host") or {}
    if host:
        lines.append(
            f"- host {host.get('host_cpu', '?')}, python {host.get('python_version', platform.python_version())}"
        )
    lines.append("")
    for sec_name, sec in sections.items():
        status = sec.get("status", "?")
        took = (
            f" ({_fmt(sec.get('seconds'), '.1f')} s of {_fmt(sec.get('limit_s'), '.0f')} s)"
            if sec.get("limit_s")
            else ""
        )
        lines.append(f"## {sec_name}: {status}{took}")
        lines.append("")
        if sec.get("error"):
            lines.append(f"- error: {one_line(str(sec['error']), 400)}")
        checks = sec.get("checks") or []
        if checks:
            passed = sum(1 for c in checks if c.get("ok"))
            lines.append(f"- checks: {passed} of {len(checks)} passed")
            for c in checks:
                if not c.get("ok"):
                    kind = "FAILED" if c.get("fatal", True) else "missed (expectation)"
                    lines.append(f"  - {kind}: {c.get('name')}{': ' + c['detail'] if c.get('detail') else ''}")
        figure_lines = flatten(sec.get("figures") or {})
        for line in figure_lines[:REPORT_FIGURE_LINES]:
            lines.append(f"- {line}")
        if len(figure_lines) > REPORT_FIGURE_LINES:
            lines.append(f"- ... {len(figure_lines) - REPORT_FIGURE_LINES} more figures in results.json")
        clock = sec.get("clock")
        if clock:
            reasons = ", ".join(f"{k} x{v}" for k, v in (clock.get("throttle_reasons") or {}).items()) or "none"
            sm = "/".join(_fmt(clock.get(k), ".0f") for k in ("sm_mhz_min", "sm_mhz_median", "sm_mhz_max"))
            lines.append(
                f"- SM clock {sm} MHz (min/median/max), max {_fmt(clock.get('temperature_c_max'), '.0f')} C, "
                f"max {_fmt(clock.get('power_w_max'), '.0f')} W, throttle reasons: {reasons}"
            )
        lines.append("")
    trace = doc.get("clock_trace") or {}
    every = f"{SAMPLE_INTERVAL_S * 1e3:.0f} ms"
    lines.append(f"Clock trace: {trace.get('rows', 0)} samples every {every} ({trace.get('note', 'clock_trace.csv')}).")
    lines.append("")
    lines.append("## Summary")
    lines.append("")
    lines.append("| section | status | seconds | limit s | headline |")
    lines.append("|---|---|---:|---:|---|")
    for sec_name, sec in sections.items():
        status = sec.get("status", "?")
        note = sec.get("headline") or ""
        if status != "ok" and sec.get("error"):
            note = f"{note}; {sec['error']}" if note else str(sec["error"])
        note = one_line(note, 200).replace("|", "/")
        seconds = _fmt(sec.get("seconds"), ".1f")
        limit = _fmt(sec.get("limit_s"), ".0f") if sec.get("limit_s") is not None else "-"
        lines.append(f"| {sec_name} | {status} | {seconds} | {limit} | {note} |")
    return "\n".join(lines) + "\n"


# ===================================================================== NVML extras


_NVML_LIB: Any = None


def nvml_extras(cuda_index: int = 0) -> dict[str, Any]:
    """Memory clock (MHz) and board power (W) through NVML (``libnvidia-ml``), which ``device_state`` lacks."""
    import ctypes

    from kernels_bench.gpu_timing import nvml_index

    global _NVML_LIB
    if _NVML_LIB is None:
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            _NVML_LIB = lib if lib.nvmlInit_v2() == 0 else False
        except (OSError, AttributeError):
            _NVML_LIB = False
    if not _NVML_LIB:
        return {}
    lib = _NVML_LIB
    handle = ctypes.c_void_p()
    if lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(nvml_index(cuda_index)), ctypes.byref(handle)) != 0:
        return {}
    out: dict[str, Any] = {}
    clock, power = ctypes.c_uint(), ctypes.c_uint()
    if lib.nvmlDeviceGetClockInfo(handle, 2, ctypes.byref(clock)) == 0:  # NVML_CLOCK_MEM
        out["mem_clock_mhz"] = int(clock.value)
    if lib.nvmlDeviceGetPowerUsage(handle, ctypes.byref(power)) == 0:  # milliwatts
        out["power_w"] = power.value / 1000.0
    return out


# ===================================================================== sections: shared pieces


def _torch_cuda() -> Any:
    """torch with a usable CUDA device; :class:`SectionSkipped` otherwise."""
    try:
        import torch
    except ImportError as exc:
        raise SectionSkipped(f"torch is not installed ({one_line(exc)})") from None
    if not torch.cuda.is_available():
        raise SectionSkipped(f"{NO_GPU} (torch {torch.__version__} sees none)")
    return torch


def _cudart() -> Any:
    """cuda-python's runtime module; :class:`SectionSkipped` when it is not installed."""
    try:
        from kernels_bench.cuda_timer import load_cudart

        return load_cudart()
    except Exception as exc:
        raise SectionSkipped(f"cuda-python (cuda-bindings) is not usable: {one_line(exc)}") from None


# ----- 1. env ---------------------------------------------------------------------------------------


def section_env(rec: Recorder) -> None:
    """Versions, the GPU and its driver, SM count and L2, NVML, nvidia-smi's clocks, check_driver."""
    from importlib import metadata

    from kernels_bench.cuda_timer import cuda_python_versions

    versions: dict[str, Any] = {"python": platform.python_version()}
    for dist in VERSION_DISTS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    versions.update(cuda_python_versions())
    rec.set("versions", versions)
    torch = _torch_cuda()
    props = torch.cuda.get_device_properties(0)
    rec.set(
        "torch",
        {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "device_count": torch.cuda.device_count(),
            "has_cuda_sleep": hasattr(torch.cuda, "_sleep"),
        },
    )
    rec.set(
        "gpu",
        {
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "l2_bytes": getattr(props, "L2_cache_size", None),
            "memory_gib": props.total_memory / 2**30,
        },
    )
    with rec.step("gpu_environment"):
        from kernels_bench.gpu import detect_gpus, gpu_environment

        env = rec.set("gpu_environment", gpu_environment(0))
        rec.check("gpu_environment names the device", bool(env.get("device_name")), env.get("device_name"))
        rec.check(
            "gpu_environment reads the driver", bool(env.get("driver_version")), env.get("driver_version"), fatal=False
        )
        rec.set("detect_gpus", detect_gpus())
    with rec.step("device profile"):
        profile = rec.set("device_profile", pick_profile(props.name))
        rec.check("a device profile matches the GPU", profile is not None, props.name, fatal=False)
    with rec.step("cuda-python"):
        from kernels_bench.cuda_timer import check, check_driver

        rt = _cudart()
        try:
            check_driver(rt)
            verdict = "ok"
        except Exception as exc:
            verdict = error_text(exc, 400)
        rec.set("check_driver", verdict)
        rec.check("check_driver accepts this driver and these bindings", verdict == "ok", verdict)
        attr = rt.cudaDeviceAttr
        sm = int(check(rt, rt.cudaDeviceGetAttribute(attr.cudaDevAttrMultiProcessorCount, 0), "SM count"))
        l2 = int(check(rt, rt.cudaDeviceGetAttribute(attr.cudaDevAttrL2CacheSize, 0), "L2 size"))
        rec.set("cudart", {"sm_count": sm, "l2_bytes": l2})
        rec.check("cuda-python and torch agree on the SM count", sm == props.multi_processor_count, f"{sm}")
    with rec.step("nvml"):
        from kernels_bench.gpu_timing import device_state

        state = rec.set("device_state", device_state(0))
        rec.set("nvml_extras", nvml_extras(0))
        rec.check("NVML reads the SM clock (kernels_bench.gpu_timing.device_state)", bool(state), state)
    with rec.step("nvidia-smi"):
        smi = shutil.which("nvidia-smi")
        if smi is None:
            rec.set("nvidia_smi", "not on PATH")
        else:
            done = subprocess.run(
                [smi, "-q", "-d", "CLOCK,PERFORMANCE"],
                capture_output=True,
                text=True,
                timeout=max(1.0, min(15.0, rec.left())),
            )
            print(done.stdout)
            rec.set("nvidia_smi", smi_summary(parse_smi(done.stdout)))
    with rec.step("onnxruntime"):
        import onnxruntime as ort

        rec.set("onnxruntime_providers", ort.get_available_providers())


def headline_env(f: Mapping[str, Any]) -> str:
    """GPU, compute capability, driver, torch and its CUDA."""
    return (
        f"{_get(f, 'gpu', 'name') or '?'} (sm {_get(f, 'gpu', 'compute_capability') or '?'}, "
        f"{_get(f, 'gpu', 'sm_count') or '?'} SMs), driver {_get(f, 'gpu_environment', 'driver_version') or '?'}, "
        f"torch {_get(f, 'torch', 'version') or '?'}/CUDA {_get(f, 'torch', 'cuda') or '?'}, "
        f"check_driver {f.get('check_driver') or '?'}"
    )


# ----- 2. pytest ------------------------------------------------------------------------------------


def section_pytest(rec: Recorder) -> None:
    """``pytest -m "gpu or tensorrt"``: counts, failing ids and skip reasons from its junit XML."""
    junit = rec.tmp / "junit.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "gpu or tensorrt",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "tests",
    ]
    rc, timed_out, seconds = run_process(cmd, timeout=max(1.0, rec.left() - 1.0))
    rec.set("returncode", rc)
    rec.set("pytest_seconds", seconds)
    rec.check("pytest finished within the section's limit", not timed_out)
    if not junit.exists():
        rec.check("pytest wrote its junit XML", False, f"exit status {rc}")
        return
    counts = parse_junit(junit)
    for key, value in counts.items():
        rec.set(key, value)
    rec.check(
        "no GPU or TensorRT test failed",
        counts["failed"] + counts["errors"] == 0,
        ", ".join(counts["failing"][:8]),
    )
    rec.check("some GPU test ran and passed", counts["passed"] > 0, f"{counts['passed']} passed")


def headline_pytest(f: Mapping[str, Any]) -> str:
    """Passed, failed, errors, skipped."""
    return (
        f"{_fmt(f.get('passed'), 'd')} passed, {_fmt(f.get('failed'), 'd')} failed, "
        f"{_fmt(f.get('errors'), 'd')} errors, {_fmt(f.get('skipped'), 'd')} skipped"
    )


# ----- 3. timer -------------------------------------------------------------------------------------

#: (matrix size, matmuls per sample) of the timer comparison: samples of about 1 ms.
TIMER_SIZES: tuple[tuple[int, int], ...] = ((512, 200), (2048, 25), (4096, 4))
TIMER_PAIRS = 50


def section_timer(rec: Recorder) -> None:
    """``CudaEventTimer`` (cuda-python events) against ``torch.cuda.Event`` around the same matmuls, one stream.

    The four events are recorded as start(ours), start(torch), work, stop(ours), stop(torch), so each
    interval spans one foreign event record: neither timer is favoured.
    """
    torch = _torch_cuda()
    rt = _cudart()
    from kernels_bench.cuda_timer import CudaEventTimer

    stream = torch.cuda.Stream()
    t_start = torch.cuda.Event(enable_timing=True)
    t_end = torch.cuda.Event(enable_timing=True)
    with CudaEventTimer(rt) as timer:
        for n, reps in TIMER_SIZES:
            if not rec.need(2.0, f"n={n}"):
                break
            with rec.step(f"n={n}"):
                a = torch.randn(n, n, device="cuda", dtype=torch.float16)
                b = torch.randn(n, n, device="cuda", dtype=torch.float16)
                torch.cuda.synchronize()
                ours: list[float] = []
                theirs: list[float] = []
                with torch.cuda.stream(stream):
                    for _ in range(10):
                        torch.mm(a, b)
                    for _ in range(TIMER_PAIRS):
                        timer.start(stream)
                        t_start.record(stream)
                        for _ in range(reps):
                            torch.mm(a, b)
                        timer.stop(stream)
                        t_end.record(stream)
                        ours.append(timer.elapsed_ms())
                        t_end.synchronize()
                        theirs.append(float(t_start.elapsed_time(t_end)))
                m_ours, m_theirs = median(ours), median(theirs)
                diff = abs(m_ours - m_theirs) / m_theirs * 100.0 if m_theirs else None
                ratios = [o / t for o, t in zip(ours, theirs) if t > 0]
                rec.set(
                    f"n{n}",
                    {
                        "matmuls_per_sample": reps,
                        "pairs": len(ours),
                        "cuda_python_median_ms": m_ours,
                        "torch_median_ms": m_theirs,
                        "median_diff_pct": diff,
                        "ratio_median": median(ratios),
                        "ratio_min": min(ratios) if ratios else None,
                        "ratio_max": max(ratios) if ratios else None,
                        "ms_per_matmul": m_theirs / reps if m_theirs else None,
                    },
                )
                rec.check(f"n={n}: the medians agree within 2%", diff is not None and diff < 2.0, f"{_fmt(diff)}%")


def headline_timer(f: Mapping[str, Any]) -> str:
    """The medians' difference per size."""
    parts = [f"n={n}: {_fmt(_get(f, f'n{n}', 'median_diff_pct'), '.2f')}%" for n, _ in TIMER_SIZES if f"n{n}" in f]
    return "median diff " + ", ".join(parts) if parts else ""


# ----- 4. trt_runner --------------------------------------------------------------------------------

#: Shape of the stand-in engine's input and output (float32) and its function: output = SCALE * input.
TRT_SHAPE: tuple[int, ...] = (4, 32, 32, 32)
TRT_SCALE = 3.0
#: Device memory a closed runner may leave behind (driver bookkeeping), MiB.
TRT_LEAK_TOLERANCE_MIB = 16.0


class _DeviceArray:
    """A device pointer that torch can view without copying (``__cuda_array_interface__``, float32, C order)."""

    def __init__(self, ptr: int, shape: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {
            "shape": tuple(shape),
            "typestr": "<f4",
            "data": (int(ptr), False),
            "version": 3,
            "strides": None,
        }


class StandInContext:
    """A TensorRT execution context whose ``execute_async_v3`` enqueues real GPU work on the given stream.

    Each enqueue writes ``output = TRT_SCALE * input`` into the bound buffers (a torch kernel on the stream,
    through a view of the raw pointers) and adds 1 to :attr:`counter` (a device tensor), so a CUDA graph
    captured from it replays both. ``mode``: ``plain``; ``refuse`` (returns False while the stream is being
    captured, enqueueing nothing); ``invalidate`` (calls ``cudaDeviceSynchronize`` and ``cudaStreamSynchronize``
    of the captured stream during the capture, both illegal there: they invalidate it); ``unjoined`` (forks
    the capture onto a second stream and never joins it back).
    """

    def __init__(self, torch: Any, cudart: Any, mode: str = "plain") -> None:
        self.torch = torch
        self.rt = cudart
        self.mode = mode
        self.addresses: dict[str, int] = {}
        self.calls = 0
        self.captured_calls = 0
        self.capture_call_error: str | None = None
        self.counter = torch.zeros(1, dtype=torch.int64, device="cuda")
        self._views: tuple[Any, Any] | None = None
        self._streams: dict[int, Any] = {}
        self._side: Any = None
        self._event: Any = None

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        """Bind a device address (the runner's ``cudaMalloc`` buffer)."""
        self.addresses[name] = int(ptr)
        self._views = None
        return True

    def _capturing(self, stream: int) -> bool:
        from kernels_bench.cuda_timer import check

        status = check(self.rt, self.rt.cudaStreamIsCapturing(stream), "cudaStreamIsCapturing")
        enum = getattr(self.rt, "cudaStreamCaptureStatus", None)
        active = getattr(enum, "cudaStreamCaptureStatusActive", None)
        if active is not None:
            return bool(status == active)
        return int(getattr(status, "value", status)) == 1

    def execute_async_v3(self, stream: int) -> bool:
        """Enqueue one inference on ``stream`` (see the class docstring for the modes)."""
        torch = self.torch
        self.calls += 1
        capturing = self._capturing(stream)
        if capturing:
            self.captured_calls += 1
            if self.mode == "refuse":
                return False
        if self._views is None:  # made on the first (plain) enqueue, never during a capture
            x = torch.as_tensor(_DeviceArray(self.addresses["input"], TRT_SHAPE))
            y = torch.as_tensor(_DeviceArray(self.addresses["output"], TRT_SHAPE))
            for view, name in ((x, "input"), (y, "output")):
                if view.data_ptr() != self.addresses[name] or not view.is_cuda:
                    raise RuntimeError(f"torch copied the {name} buffer instead of viewing it")
            self._views = (x, y)
        if stream not in self._streams:
            self._streams[stream] = torch.cuda.ExternalStream(stream)
        x, y = self._views
        with torch.cuda.stream(self._streams[stream]):
            torch.mul(x, TRT_SCALE, out=y)
            self.counter.add_(1)
        if capturing and self.mode == "invalidate":  # both are illegal while the stream is captured
            from kernels_bench.cuda_timer import error_name

            device = error_name(self.rt, self.rt.cudaDeviceSynchronize()[0])
            own = error_name(self.rt, self.rt.cudaStreamSynchronize(stream)[0])
            self.capture_call_error = f"cudaDeviceSynchronize: {device}; cudaStreamSynchronize: {own}"
        if capturing and self.mode == "unjoined":
            self._fork_unjoined(stream)
        return True

    def _fork_unjoined(self, stream: int) -> None:
        from kernels_bench.cuda_timer import Stream, check, error_name

        rt = self.rt
        self._side = Stream(rt)
        self._event = check(rt, rt.cudaEventCreate(), "cudaEventCreate")
        check(rt, rt.cudaEventRecord(self._event, stream), "cudaEventRecord")
        check(rt, rt.cudaStreamWaitEvent(self._side.handle, self._event, 0), "cudaStreamWaitEvent")
        err = rt.cudaMemsetAsync(self.addresses["output"], 0, 4, self._side.handle)[0]
        self.capture_call_error = error_name(rt, err)

    def close(self) -> None:
        """Free the side stream and event of the ``unjoined`` mode."""
        if self._event is not None:
            self.rt.cudaEventDestroy(self._event)
            self._event = None
        if self._side is not None:
            with contextlib.suppress(Exception):
                self._side.close()
            self._side = None


class StandInEngine:
    """The engine interface ``TensorRTRunner`` uses: one float32 input and one output of :data:`TRT_SHAPE`."""

    tensors: dict[str, str] = {"input": "INPUT", "output": "OUTPUT"}

    def __init__(self, context: StandInContext) -> None:
        self.context = context
        self.num_io_tensors = len(self.tensors)

    def create_execution_context(self) -> StandInContext:
        """The stand-in context."""
        return self.context

    def get_tensor_name(self, i: int) -> str:
        """Name of I/O tensor ``i``."""
        return list(self.tensors)[i]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        """Shape of a tensor (fixed)."""
        return TRT_SHAPE

    def get_tensor_dtype(self, name: str) -> str:
        """Type of a tensor (``trt.nptype`` maps it to float32)."""
        return "float32"

    def get_tensor_mode(self, name: str) -> str:
        """INPUT or OUTPUT."""
        return self.tensors[name]


def stand_in_trt(context: StandInContext) -> Any:
    """A ``trt`` namespace with what the runner calls: ``Runtime``, ``TensorIOMode``, ``nptype``."""
    from types import SimpleNamespace

    import numpy as np

    engine = StandInEngine(context)
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda plan: engine)
    return SimpleNamespace(
        Runtime=lambda logger: runtime,
        TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
        nptype=lambda dtype: np.float32,
    )


def _host_copy(rt: Any, ptr: int) -> Any:
    """The float32 contents of a :data:`TRT_SHAPE` device buffer (after a device synchronize)."""
    import numpy as np

    from kernels_bench.cuda_timer import check

    check(rt, rt.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
    host = np.empty(TRT_SHAPE, dtype=np.float32)
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(rt, rt.cudaMemcpy(host.ctypes.data, ptr, host.nbytes, kind), "cudaMemcpy to host")
    return host


def _zero(rt: Any, ptr: int) -> None:
    from kernels_bench.cuda_timer import check

    check(rt, rt.cudaMemset(ptr, 0, math.prod(TRT_SHAPE) * 4), "cudaMemset")
    check(rt, rt.cudaDeviceSynchronize(), "cudaDeviceSynchronize")


def _free_bytes(rt: Any) -> int:
    from kernels_bench.cuda_timer import check

    free, _total = check(rt, rt.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free)


def _output_right(rt: Any, context: StandInContext) -> tuple[bool, str]:
    """Whether the output buffer holds TRT_SCALE x the input buffer (and the input is not all zeros)."""
    import numpy as np

    x = _host_copy(rt, context.addresses["input"])
    y = _host_copy(rt, context.addresses["output"])
    ok = bool(np.abs(x).sum() > 0 and np.allclose(y, TRT_SCALE * x, rtol=1e-6, atol=1e-6))
    return ok, f"max |out - {TRT_SCALE:g}*in| = {float(np.max(np.abs(y - TRT_SCALE * x))):.3g}"


def _counter(torch: Any, context: StandInContext) -> int:
    torch.cuda.synchronize()
    return int(context.counter.item())


def _timed_enqueues(
    rec: Recorder, case: str, torch: Any, rt: Any, runner: Any, context: StandInContext, n: int, fatal: bool = True
) -> None:
    """Time ``n`` runs after zeroing the output; check the count of kernels run and Python enqueues, and the output."""
    _zero(rt, context.addresses["output"])
    count0, calls0 = _counter(torch, context), context.calls
    ms = runner.timed(n)
    ran, enqueued = _counter(torch, context) - count0, context.calls - calls0
    ok, detail = _output_right(rt, context)
    graph = runner.info.get("cuda_graph") == "used"
    rec.update(case, timed_ms=ms, runs=n, kernels_run=ran, python_enqueues=enqueued, output_ok=ok)
    rec.check(f"{case}: timed({n}) > 0 ms", ms > 0, f"{ms:.4g} ms", fatal=fatal)
    rec.check(f"{case}: {n} runs executed on the GPU", ran == n, f"{ran}", fatal=fatal)
    expected = 0 if graph else n
    rec.check(
        f"{case}: {expected} execute_async_v3 calls ({'graph launches' if graph else 'plain'})",
        enqueued == expected,
        f"{enqueued}",
        fatal=fatal,
    )
    rec.check(f"{case}: output = {TRT_SCALE:g} x input", ok, detail, fatal=fatal)


def section_trt_runner(rec: Recorder) -> None:
    """``TensorRTRunner`` on the real CUDA runtime with a stand-in engine: plain, graph, refused, invalidated."""
    torch = _torch_cuda()
    rt = _cudart()
    from types import SimpleNamespace

    from kernels_bench.backends.tensorrt_backend import TensorRTRunner
    from kernels_bench.cuda_timer import check
    from kernels_bench.gpu_timing import flush_bytes

    # Load every kernel the stand-in and the hold launch, so lazy module loading does not count as a leak.
    warm_x = torch.randn(TRT_SHAPE, device="cuda")
    warm_y = torch.empty_like(warm_x)
    warm_c = torch.zeros(1, dtype=torch.int64, device="cuda")
    torch.mul(warm_x, TRT_SCALE, out=warm_y)
    warm_c.add_(1)
    torch.cuda._sleep(1000)
    torch.cuda.synchronize()
    l2 = int(check(rt, rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrL2CacheSize, 0), "L2 size"))
    logger = SimpleNamespace(errors=[])

    def make(mode: str, graphs: bool) -> tuple[Any, StandInContext]:
        context = StandInContext(torch, rt, mode)
        torch.cuda.synchronize()
        return TensorRTRunner(stand_in_trt(context), b"plan", logger, cuda_graphs=graphs, cudart=rt), context

    with rec.step("plain"):
        context = StandInContext(torch, rt, "plain")
        torch.cuda.synchronize()
        free0 = _free_bytes(rt)
        runner = TensorRTRunner(stand_in_trt(context), b"plan", logger, cuda_graphs=False, cudart=rt)
        try:
            rec.update("plain", info=runner.info)
            rec.check("plain: cuda_graph off", runner.info.get("cuda_graph") == "off", runner.info.get("cuda_graph"))
            rec.check(
                "plain: GPU hold engaged (torch spin kernel)",
                "spin" in str(runner.info.get("gpu_hold")),
                runner.info.get("gpu_hold"),
            )
            ok, detail = _output_right(rt, context)
            rec.check("plain: the set-up enqueue wrote output = scale x input", ok, detail)
            _timed_enqueues(rec, "plain", torch, rt, runner, context, 10)
            cold = runner.timed(10, cold_l2=True)
            rec.update("plain", cold_l2_timed_ms=cold)
            rec.check("plain: timed(10, cold_l2=True) > 0 ms", cold > 0, f"{cold:.4g} ms")
            free1 = _free_bytes(rt)
        finally:
            runner.close()
            runner.close()  # idempotent
        free2 = _free_bytes(rt)
        held, left = (free0 - free1) / 2**20, (free0 - free2) / 2**20
        scratch = flush_bytes(l2) / 2**20
        rec.update(
            "plain",
            held_mib=held,
            left_after_close_mib=left,
            l2_flush_mib=scratch,
            hold_short=runner.info.get("hold_short"),
        )
        rec.check(
            "plain: the cold-L2 scratch buffer was allocated",
            held >= 0.95 * scratch,
            f"{held:.1f} of {scratch:.1f} MiB",
        )
        rec.check("plain: close() gave the device memory back", left <= TRT_LEAK_TOLERANCE_MIB, f"{left:.1f} MiB left")
        try:
            runner.timed(1)
            refused = False
        except RuntimeError:
            refused = True
        rec.check("plain: a closed runner refuses to time", refused)

    with rec.step("graph"):
        runner, context = make("plain", True)
        try:
            rec.update("graph", info=runner.info, captured_calls=context.captured_calls)
            rec.check("graph: cuda_graph used", runner.info.get("cuda_graph") == "used", runner.info.get("cuda_graph"))
            rec.check("graph: one enqueue captured", context.captured_calls == 1, f"{context.captured_calls}")
            _timed_enqueues(rec, "graph", torch, rt, runner, context, 8)
        finally:
            runner.close()

    for case, mode in (("refused", "refuse"), ("invalidated", "invalidate"), ("unjoined", "unjoined")):
        fatal = case != "unjoined"  # the unjoined fork is an extra; its result is reported, not required
        with rec.step(case) if fatal else _reported(rec, case):
            runner, context = make(mode, True)
            try:
                info = str(runner.info.get("cuda_graph"))
                rec.update(
                    case,
                    info=runner.info,
                    captured_calls=context.captured_calls,
                    capture_call_error=context.capture_call_error,
                )
                rec.check(
                    f"{case}: capture falls back to plain enqueues", info.startswith("fallback"), info, fatal=fatal
                )
                _timed_enqueues(rec, case, torch, rt, runner, context, 4, fatal=fatal)
            finally:
                runner.close()
                context.close()


@contextlib.contextmanager
def _reported(rec: Recorder, name: str) -> Iterator[None]:
    """Like :meth:`Recorder.step`, but an exception is only reported (a missed expectation), never a failure."""
    try:
        yield
    except Exception as exc:
        print(f"step {name} raised (reported only):")
        traceback.print_exc(file=sys.stdout)
        rec.check(f"{name}: ran without an exception", False, error_text(exc, 300), fatal=False)


def headline_trt_runner(f: Mapping[str, Any]) -> str:
    """Each case's CUDA-graph state and output check; memory left after close."""
    parts = []
    for case in ("plain", "graph", "refused", "invalidated", "unjoined"):
        data = f.get(case)
        if isinstance(data, Mapping):
            state = str(_get(data, "info", "cuda_graph") or "?").split(":", 1)[0]
            parts.append(
                f"{case} {state}{'' if data.get('output_ok') else ' (output WRONG)' if 'output_ok' in data else ''}"
            )
    left = _get(f, "plain", "left_after_close_mib")
    return ", ".join(parts) + (f"; {_fmt(left, '.1f')} MiB left after close" if left is not None else "")


# ----- 5. hold_bias ---------------------------------------------------------------------------------


def hold_cases() -> list[tuple[str, Any, int, int]]:
    """(label, key, batch, back-to-back runs per sample) of the hold_bias section."""
    from tables.key import BlockKey

    return [
        ("tiny", BlockKey("conv", 16, 8, 8, 16, k=1, s=1), 1, 200),
        ("large", BlockKey("conv", 128, 56, 56, 128, k=3, s=1), 64, 20),
    ]


HOLD_PAIRS = 30


def _hold_sample(
    torch: Any, stream: Any, module: Any, x: Any, hold: Any, start: Any, end: Any, iters: int, use_hold: bool
) -> tuple[float, float]:
    """One sample of ``iters`` back-to-back runs between events, with or without the spin hold first.

    Returns:
        (GPU ms per run, host enqueue ms per run).
    """
    with torch.inference_mode(), torch.cuda.stream(stream):
        if use_hold:
            hold.engage(iters)
        start.record(stream)
        t0 = time.perf_counter()
        for _ in range(iters):
            module(x)
        end.record(stream)
        host_ms = (time.perf_counter() - t0) * 1e3
        if use_hold:
            hold.note_enqueue(host_ms, iters)
    end.synchronize()
    return float(start.elapsed_time(end)) / iters, host_ms / iters


def section_hold_bias(rec: Recorder) -> None:
    """Per-run GPU time of ``iters`` back-to-back runs between events, without and with the spin hold.

    Timed directly with torch events around the block's module (as the torch runner does), alternating
    the two ways sample by sample; and through the torch backend's own runner (which always holds).
    """
    torch = _torch_cuda()
    from kernels_bench.backends import get_backend
    from kernels_bench.gpu_timing import SpinHold

    with get_backend("torch", device="cuda") as backend:
        for label, key, batch, iters in hold_cases():
            if not rec.need(5.0, label):
                break
            with rec.step(label):
                prepared = backend.prepare(key, batch, "fp16")
                module = prepared.module.to(device="cuda", dtype=torch.float16).eval()
                x = torch.randn(prepared.input_shape, device="cuda", dtype=torch.float16)
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.inference_mode(), torch.cuda.stream(stream):
                    for _ in range(20):
                        module(x)
                stream.synchronize()
                hold = SpinHold(torch, stream)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

                timing = (torch, stream, module, x, hold, start, end, iters)
                _hold_sample(*timing, True)  # learns the spin length
                hold.short = 0
                with_hold: list[float] = []
                without: list[float] = []
                host: list[float] = []
                for i in range(HOLD_PAIRS):
                    for use in (True, False) if i % 2 == 0 else (False, True):
                        gpu_ms, host_ms = _hold_sample(*timing, use)
                        (with_hold if use else without).append(gpu_ms)
                        host.append(host_ms)
                m_with, m_without = median(with_hold), median(without)
                bias = (m_without - m_with) / m_with * 100.0 if m_with else None
                runner_ms = None
                runner_short = None
                with backend.load(backend.prepare(key, batch, "fp16")) as runner:
                    runner_samples = [runner.timed(iters) / iters for _ in range(HOLD_PAIRS)]
                    runner_ms = median(runner_samples)
                    runner_short = runner.info.get("hold_short")
                rec.set(
                    label,
                    {
                        "key": str(key),
                        "batch": batch,
                        "iters": iters,
                        "with_hold_ms": m_with,
                        "without_hold_ms": m_without,
                        "bias_without_hold_pct": bias,
                        "host_enqueue_ms_per_run": median(host),
                        "hold_short": hold.short,
                        "samples_with_hold": len(with_hold),
                        "spin_cycles_per_ms": hold.cycles_per_ms,
                        "runner_ms": runner_ms,
                        "runner_hold_short": runner_short,
                    },
                )
                rec.check(
                    f"{label}: both ways timed > 0",
                    bool(m_with and m_without and m_with > 0),
                    f"{m_with} / {m_without}",
                )
                rec.check(
                    f"{label}: the hold does not make a run slower (within 3%)",
                    m_with is not None and m_without is not None and m_with <= 1.03 * m_without,
                    f"{_fmt(m_with, '.4g')} vs {_fmt(m_without, '.4g')} ms",
                    fatal=False,
                )
                rec.check(
                    f"{label}: the backend's runner agrees with the direct hold timing (within 10%)",
                    runner_ms is not None and m_with is not None and abs(runner_ms - m_with) <= 0.10 * m_with,
                    f"{_fmt(runner_ms, '.4g')} vs {_fmt(m_with, '.4g')} ms",
                    fatal=False,
                )


def headline_hold_bias(f: Mapping[str, Any]) -> str:
    """The bias without the hold per block."""
    parts = [
        f"{label} {_fmt(_get(f, label, 'bias_without_hold_pct'), '.1f')}% "
        f"({_fmt(_get(f, label, 'with_hold_ms'), '.3g')} vs {_fmt(_get(f, label, 'without_hold_ms'), '.3g')} ms)"
        for label in ("tiny", "large")
        if label in f
    ]
    return "slower without the hold: " + ", ".join(parts) if parts else ""


# ----- 6. l2_clock ----------------------------------------------------------------------------------


def l2_keys() -> list[Any]:
    """Keys of the L2-warm against cold-L2 comparison (batch :data:`L2_BATCH`, fp16)."""
    from tables.key import BlockKey

    return [
        BlockKey("conv", 64, 28, 28, 64, k=3, s=1),
        BlockKey("irb", 64, 28, 28, 64, k=5, s=1, e=6, se=True, act="swish"),
        BlockKey("xx", 128, 14, 14, 128, k=3, s=1),
        BlockKey("bl", 256, 14, 14, 256, k=3, s=1, e=0.25),
    ]


L2_BATCH = 64
#: Key of the clock-settle run, and how long the work goes on after the default warm-up, s.
SETTLE_KEY = "conv_i64x56x56_o64_k3_s1_e1_se0_relu"
SETTLE_IDLE_S = 2.0
SETTLE_AFTER_S = 0.5


def _sample_clock(stop: Any, out: list[tuple[float, float]], period_s: float = 0.01) -> None:
    from kernels_bench.gpu_timing import device_state

    while not stop.is_set():
        t = time.perf_counter()
        state = device_state(0)
        if state and "sm_clock_mhz" in state:
            out.append((t, float(state["sm_clock_mhz"])))
        time.sleep(max(0.0, period_s - (time.perf_counter() - t)))


def section_l2_clock(rec: Recorder) -> None:
    """The SM clock from idle through the default GPU warm-up; then L2-warm against cold-L2 trimmed means."""
    import threading

    torch = _torch_cuda()
    from kernels_bench.backends import get_backend
    from kernels_bench.gpu_timing import device_state
    from kernels_bench.measure import measure_keys
    from kernels_bench.timing import GPU_WARMUP_MS, TimingSettings
    from tables.key import parse_key

    with get_backend("torch", device="cuda") as backend:
        with rec.step("clock_settle"):
            if device_state(0) is None:
                rec.set("clock_settle", "no NVML: not measured")
            else:
                from kernels_bench import timing

                with backend.load(backend.prepare(parse_key(SETTLE_KEY), L2_BATCH, "fp16")) as runner:
                    one = max(runner.timed(1), 1e-3)
                    torch.cuda.synchronize()
                    stop, trace = threading.Event(), []
                    sampler = threading.Thread(target=_sample_clock, args=(stop, trace), daemon=True)
                    sampler.start()
                    try:
                        time.sleep(SETTLE_IDLE_S)
                        work_start = time.perf_counter()
                        warm = getattr(timing, "warm_up", None)
                        if warm is not None:  # the protocol's own warm-up, as a build does it
                            warm(runner, TimingSettings(warmup_min_ms=GPU_WARMUP_MS), None)
                        else:
                            while (time.perf_counter() - work_start) * 1e3 < GPU_WARMUP_MS:
                                runner.timed(max(1, math.ceil(10.0 / one)))
                        warm_end = time.perf_counter()
                        while time.perf_counter() - warm_end < SETTLE_AFTER_S:
                            runner.timed(max(1, math.ceil(10.0 / one)))
                    finally:
                        stop.set()
                        sampler.join(timeout=2)
                settle = clock_settle(trace, work_start, warm_end)
                rec.set(
                    "clock_settle", {**settle, "key": SETTLE_KEY, "batch": L2_BATCH, "gpu_warmup_ms": GPU_WARMUP_MS}
                )
                rec.check(
                    "the clock trace has samples under work",
                    settle["final_mhz"] is not None,
                    f"{settle['samples']} samples",
                )
                rec.check(
                    f"the SM clock reaches 95% of its final value within the {GPU_WARMUP_MS:.0f} ms warm-up",
                    bool(settle["settled_by_warmup_end"]),
                    f"settle {_fmt(settle['settle_ms'], '.0f')} ms, idle {_fmt(settle['idle_mhz'], '.0f')} -> "
                    f"{_fmt(settle['final_mhz'], '.0f')} MHz",
                    fatal=False,
                )
        ratios = []
        for key in l2_keys():
            if not rec.need(4.0, f"l2 {key}"):
                break
            with rec.step(f"l2 {key}"):
                figures: dict[str, Any] = {}
                for mode in (False, True):
                    settings = TimingSettings(repeats=30, cold_l2=mode, warmup_min_ms=GPU_WARMUP_MS)
                    result = measure_keys(backend, key, L2_BATCH, "fp16", settings)
                    name = "cold" if mode else "warm"
                    figures[f"{name}_ms"] = result.trimmed_mean_ms
                    figures[f"{name}_cv"] = result.cv
                    figures[f"{name}_inner_loop"] = result.inner_loop
                    figures[f"{name}_setting"] = result.settings.get("l2")
                    figures[f"{name}_device_state"] = result.settings.get("device_state")
                    rec.check(
                        f"{key} {name}: recorded l2={name}",
                        result.settings.get("l2") == name,
                        result.settings.get("l2"),
                    )
                figures["cold_over_warm"] = figures["cold_ms"] / figures["warm_ms"] if figures["warm_ms"] else None
                ratios.append(figures["cold_over_warm"])
                rec.set(str(key), figures)
        rec.set("cold_over_warm_median", median([r for r in ratios if r is not None]))


def headline_l2_clock(f: Mapping[str, Any]) -> str:
    """Median cold/warm ratio and the clock settle time."""
    settle = f.get("clock_settle")
    clock = ""
    if isinstance(settle, Mapping):
        clock = (
            f"; SM clock {_fmt(settle.get('idle_mhz'), '.0f')} -> {_fmt(settle.get('final_mhz'), '.0f')} MHz, "
            f"95% after {_fmt(settle.get('settle_ms'), '.0f')} ms (warm-up {_fmt(settle.get('warmup_ms'), '.0f')} ms)"
        )
    return f"cold/warm L2 {_fmt(f.get('cold_over_warm_median'), '.3g')}x (median){clock}"


# ----- 7. build_validate ----------------------------------------------------------------------------


def _read_table_dir(folder: Path) -> tuple[Any, dict[str, Any], Path] | None:
    """(frame, metadata, path) of the one table a build wrote into ``folder``, or None."""
    from tables.schema import read_table

    found = sorted(p for p in folder.glob("*.parquet") if p.is_file())
    if not found:
        return None
    frame, md = read_table(found[0])
    return frame, md, found[0]


def build_figures(folder: Path, rc: int | None, timed_out: bool, seconds: float) -> dict[str, Any]:
    """What a build left in ``folder``: keys ok/failed, seconds per key, start-up seconds (or parts so far)."""
    out: dict[str, Any] = {"returncode": rc, "timed_out": timed_out, "seconds": seconds}
    read = _read_table_dir(folder) if folder.exists() else None
    if read is None:
        out["table"] = None
        out["parts_written"] = len([p for p in folder.glob("*.parts/*") if p.is_file()]) if folder.exists() else 0
        return out
    frame, md, path = read
    ok = frame[frame["status"] == "ok"]
    phase_cols = [c for c in ("export_s", "compile_s", "warmup_s", "timed_s") if c in frame.columns]
    per_key = frame[phase_cols].fillna(0.0).sum(axis=1) if phase_cols else None
    failed = frame[frame["status"] != "ok"]
    out.update(
        {
            "table": path.name,
            "keys": len(frame),
            "ok": len(ok),
            "failed": len(failed),
            "first_failures": [f"{r.key}: {one_line(str(r.error), 160)}" for r in failed.head(3).itertuples()],
            "per_key_s": float(per_key.mean()) if per_key is not None and len(per_key) else None,
            "startup_s": float(seconds - per_key.sum()) if per_key is not None else None,
            "latency_ms_median": median([float(v) for v in ok["latency_ms"]]),
            "floor_ms": _get(md, "floor", "latency_ms"),
        }
    )
    return out


def validation_figures(path: Path) -> dict[str, Any]:
    """The validation Parquet file: block-sum error, calibrated metrics, and the rank correlation against
    the GENet paper's V100 fp16 batch-64 latencies."""
    import pandas as pd
    import pyarrow.parquet as pq

    frame = pd.read_parquet(path)
    out = validation_summary(frame)
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(b"nas_latency")
    if raw:
        md = json.loads(raw)
        out["calibrated_metrics"] = _get(md, "metrics", "calibrated")
        out["uncalibrated_metrics"] = _get(md, "metrics", "uncalibrated")
        out["metrics_evaluated_on"] = _get(md, "metrics", "evaluated_on")
    ok = frame[frame["status"] == "ok"]
    per_image = {str(r.network): float(r.measured_ms) / BUILD_BATCH for r in ok.itertuples()}
    summed = {str(r.network): float(r.sum_ms) / BUILD_BATCH for r in ok.itertuples()}
    paper = genet_reference()
    out["genet_rank_measured"] = rank_correlation(per_image, paper)
    out["genet_rank_block_sum"] = rank_correlation(summed, paper)
    out["measured_ms_per_image"] = per_image
    out["genet_paper_ms_per_image"] = {n: paper[n] for n in sorted(paper)}
    return out


def build_and_validate(
    rec: Recorder,
    profile: str,
    *,
    backend: str = "torch",
    precision: str = BUILD_PRECISION,
    batch: int = BUILD_BATCH,
    networks: str = "all",
    extra: Sequence[str] = (),
) -> None:
    """Build one table, validate its networks, build a second table (key-limited to the time left), compare.

    Shares of the section's time: the first build up to 62% (nothing else can run without its table),
    validation up to 70% of what is left, the second build the rest with ``--limit`` set from the first
    build's seconds per key. Each step's figures are recorded as soon as it ends.
    """
    from profiler.enumeration import keys_for_networks, network_names

    total = len(keys_for_networks(network_names(networks)))
    rec.set("keys_total", total)
    common = ["--batch", str(batch), "--backend", backend, "--precision", precision, "--no-progress", "--no-validate"]
    cache = ["--cache-dir", str(rec.tmp / "cache")]
    common += [*cache, *extra]
    build = [sys.executable, "-m", "profiler.build", "--device", profile, "--networks", networks, *common]
    first_dir, second_dir = rec.tmp / "build1", rec.tmp / "build2"
    limit = rec.left()

    rc, timed_out, seconds = run_process(
        [*build, "--out", str(first_dir)], timeout=max(5.0, min(0.62 * limit, rec.left() - 5))
    )
    first = rec.set("build1", build_figures(first_dir, rc, timed_out, seconds))
    if not rec.check(
        "the first build wrote its table", first.get("table") is not None, f"exit status {rc}, timed out {timed_out}"
    ):
        return
    rec.check(
        "every key of the first build measured", first.get("failed") == 0, "; ".join(first.get("first_failures") or [])
    )
    table_path = first_dir / str(first["table"])

    if rec.need(20.0, "validate"):
        out = rec.tmp / "validation.parquet"
        budget = max(15.0, min(rec.left() - 2.0, 0.7 * rec.left()))
        cmd = [sys.executable, "-m", "profiler.validate", "--table", str(table_path), "--networks", networks]
        cmd += ["--out", str(out), "--no-progress", "--no-save-calibration", *cache]
        cmd += [a for a in extra if a == "--force-device"]
        rc, timed_out, seconds = run_process(cmd, timeout=budget)
        rec.set("validate_run", {"returncode": rc, "timed_out": timed_out, "seconds": seconds})
        if rec.check("validation wrote its Parquet file", out.exists(), f"exit status {rc}, timed out {timed_out}"):
            with rec.step("validation figures"):
                figures = rec.set("validate", validation_figures(out))
                rec.check("every network validated", not figures["failed"], ", ".join(figures["failed"]))
                rank = figures["genet_rank_measured"]
                rec.check(
                    "measured order follows the GENet paper's V100 order (Spearman >= 0.8)",
                    rank["spearman"] is not None and rank["spearman"] >= 0.8,
                    f"rho {_fmt(rank['spearman'])} over {rank['n']} networks",
                    fatal=False,
                )

    n = second_build_limit(
        total, float(first.get("per_key_s") or 0), float(first.get("startup_s") or 0), rec.left() - 3
    )
    if n is None:
        rec.skip_step(f"second build: {max(0.0, rec.left()):.0f} s left, too little for 8 keys")
        return
    cmd = [*build, "--out", str(second_dir)] + (["--limit", str(n)] if n < total else [])
    rc, timed_out, seconds = run_process(cmd, timeout=max(5.0, rec.left() - 2))
    second = rec.set("build2", {**build_figures(second_dir, rc, timed_out, seconds), "limit": n})
    if second.get("table") is None:
        rec.check("the second build wrote its table", False, f"exit status {rc}, timed out {timed_out}", fatal=False)
        return
    with rec.step("repeatability"):
        a, b = _read_table_dir(first_dir), _read_table_dir(second_dir)
        rep = rec.set("repeatability", repeatability(a[0], b[0]))
        rec.check(
            "run-to-run change of the trimmed means: median under 2%",
            rep["median_pct"] is not None and rep["median_pct"] < 2.0,
            f"median {_fmt(rep['median_pct'])}%, p90 {_fmt(rep['p90_pct'])}% over {rep['n']} keys",
            fatal=False,
        )


def section_build_validate(rec: Recorder) -> None:
    """A torch fp16 batch-64 build of the reference networks' keys, validate, a second build, compare.

    This process imports no torch: the builds and the validation are processes of their own.
    """
    from kernels_bench.gpu import detect_gpus

    name = str(detect_gpus().get("gpu_name") or "")
    profile = pick_profile(name)
    rec.set("device_profile", {"gpu_name": name, "profile": profile or "h100", "forced": profile is None})
    build_and_validate(rec, profile or "h100", extra=() if profile else ("--force-device",))


def headline_build_validate(f: Mapping[str, Any]) -> str:
    """Repeatability, block-sum error and rank correlation."""
    parts = []
    b1 = f.get("build1")
    if isinstance(b1, Mapping):
        keys = f"{_fmt(b1.get('ok'), 'd')}/{_fmt(f.get('keys_total'), 'd')}"
        parts.append(f"build {keys} keys in {_fmt(b1.get('seconds'), '.0f')} s")
    rep = f.get("repeatability")
    if isinstance(rep, Mapping):
        med, p90 = _fmt(rep.get("median_pct"), ".2f"), _fmt(rep.get("p90_pct"), ".2f")
        parts.append(f"repeat |d| median {med}% p90 {p90}% ({rep.get('n')} keys)")
    val = f.get("validate")
    if isinstance(val, Mapping):
        err, worst = _fmt(val.get("error_median_pct"), ".1f"), _fmt(val.get("abs_error_max_pct"), ".1f")
        parts.append(f"block sum err median {err}%, max |err| {worst}%")
        rank = val.get("genet_rank_measured") or {}
        rho, tau = _fmt(rank.get("spearman"), ".2f"), _fmt(rank.get("kendall"), ".2f")
        parts.append(f"GENet order rho {rho} tau {tau} (n={rank.get('n')})")
    return "; ".join(parts)


# ----- 8. compile -----------------------------------------------------------------------------------


def compile_keys() -> list[tuple[Any, int]]:
    """(key, batch) of the torch.compile section, in order (the second only when time is left)."""
    from tables.key import BlockKey

    return [
        (BlockKey("conv", 64, 56, 56, 64, k=3, s=1), 32),
        (BlockKey("irb", 64, 28, 28, 64, k=5, s=1, e=6, se=True, act="swish"), 32),
    ]


def section_compile(rec: Recorder) -> None:
    """``torch.compile`` (the torch backend's ``compile=True``) against eager: trimmed means and compile seconds."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(rec.tmp / "inductor"))  # a cold cache: honest seconds
    _torch_cuda()
    from kernels_bench.backends import get_backend
    from kernels_bench.measure import measure_keys
    from kernels_bench.timing import GPU_WARMUP_MS, TimingSettings

    settings = TimingSettings(repeats=30, warmup_min_ms=GPU_WARMUP_MS)
    first_compile: float | None = None
    for i, (key, batch) in enumerate(compile_keys()):
        if i > 0 and not rec.need(1.5 * (first_compile or 30.0) + 5.0, f"second key {key}"):
            break
        with rec.step(str(key)):
            with get_backend("torch", device="cuda") as eager:
                e = measure_keys(eager, key, batch, "fp16", settings)
            rec.set(str(key), {"batch": batch, "eager_ms": e.trimmed_mean_ms, "eager_compile_s": e.phases["compile_s"]})
            with get_backend("torch", device="cuda", compile=True) as compiled:
                c = measure_keys(compiled, key, batch, "fp16", settings)
            first_compile = first_compile or c.phases["compile_s"]
            rec.update(
                str(key),
                compiled_ms=c.trimmed_mean_ms,
                compile_s=c.phases["compile_s"],
                speedup=e.trimmed_mean_ms / c.trimmed_mean_ms if c.trimmed_mean_ms else None,
                compiled_setting=c.settings.get("compile"),
                compiled_cv=c.cv,
            )
            rec.check(
                f"{key}: the compiled runner is recorded as compiled",
                bool(c.settings.get("compile")),
                c.settings.get("compile"),
            )
            rec.check(f"{key}: compiled timing > 0", c.trimmed_mean_ms > 0, f"{c.trimmed_mean_ms:.4g} ms")


def headline_compile(f: Mapping[str, Any]) -> str:
    """Compile seconds and eager/compiled times of the first key."""
    for key, value in f.items():
        if isinstance(value, Mapping) and "eager_ms" in value:
            eager, compiled = _fmt(value.get("eager_ms"), ".4g"), _fmt(value.get("compiled_ms"), ".4g")
            return (
                f"{key}: compile {_fmt(value.get('compile_s'), '.0f')} s, eager {eager} ms "
                f"-> compiled {compiled} ms (x{_fmt(value.get('speedup'), '.2f')})"
            )
    return ""


# ----- the harness's own self-test sections ---------------------------------------------------------


def _selftest_ok(rec: Recorder) -> None:
    rec.set("value", 1.5)
    rec.check("one is one", 1 == 1)


def _selftest_fail(rec: Recorder) -> None:
    rec.set("before_failure", "recorded")
    raise RuntimeError("deliberate failure of the self-test")


def _selftest_timeout(rec: Recorder) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    rec.set("child_pid", child.pid)
    rec.set("partial", "recorded before the hang")
    time.sleep(120)


# ===================================================================== the registry


@dataclass(frozen=True)
class Section:
    """One section of the check.

    Attributes:
        name: its name (``gpu_check.py section NAME``).
        limit_s: its default time limit, s.
        min_s: the least time it is started with (else skipped: budget exhausted), s.
        run: the work, recording into a :class:`Recorder`.
        headline: its figures in one line for the summary table.
        what: one line of what it does.
    """

    name: str
    limit_s: float
    min_s: float
    run: Callable[[Recorder], None]
    headline: Callable[[Mapping[str, Any]], str]
    what: str


SECTIONS: tuple[Section, ...] = (
    Section("env", 15, 5, section_env, headline_env, "versions, GPU, driver, SM count, L2, NVML, nvidia-smi clocks"),
    Section("pytest", 75, 20, section_pytest, headline_pytest, 'pytest -m "gpu or tensorrt"'),
    Section("timer", 20, 8, section_timer, headline_timer, "cuda-python events against torch events"),
    Section("trt_runner", 25, 10, section_trt_runner, headline_trt_runner, "TensorRTRunner with a stand-in engine"),
    Section("hold_bias", 30, 10, section_hold_bias, headline_hold_bias, "launch-offset bias with/without the hold"),
    Section("l2_clock", 30, 12, section_l2_clock, headline_l2_clock, "L2-warm against cold; SM clock settle"),
    Section(
        "build_validate",
        150,
        60,
        section_build_validate,
        headline_build_validate,
        "torch fp16 b64 build, validate, second build",
    ),
    Section("compile", 45, 25, section_compile, headline_compile, "torch.compile against eager"),
)

SELF_TEST_SECTIONS: tuple[Section, ...] = (
    Section("selftest_ok", 20, 1, _selftest_ok, lambda f: f"value {f.get('value')}", "records a figure"),
    Section("selftest_fail", 20, 1, _selftest_fail, lambda f: "", "raises"),
    Section("selftest_timeout", 3, 1, _selftest_timeout, lambda f: "", "hangs with a child process"),
    Section("selftest_after", 20, 1, _selftest_ok, lambda f: f"value {f.get('value')}", "runs after the others"),
)


def section_by_name(name: str) -> Section:
    """The section (real or self-test) called ``name``."""
    for section in (*SECTIONS, *SELF_TEST_SECTIONS):
        if section.name == name:
            return section
    raise UsageError(f"unknown section {name!r}: use one of {', '.join(s.name for s in SECTIONS)}")


def headline_of(section: Section, figures: Mapping[str, Any]) -> str:
    """The section's headline, never raising."""
    try:
        return section.headline(figures or {})
    except Exception as exc:
        return f"(headline failed: {one_line(exc, 80)})"


# ===================================================================== GPU detection, sampler


_PROBE = (
    "import json, torch\n"
    "ok = bool(torch.cuda.is_available())\n"
    "d = {'cuda': ok, 'torch': torch.__version__, 'torch_cuda': torch.version.cuda}\n"
    "if ok:\n"
    "    d.update(name=torch.cuda.get_device_name(0), count=torch.cuda.device_count())\n"
    "print(json.dumps(d))\n"
)


def detect_gpu(no_gpu: bool = False) -> dict[str, Any]:
    """Whether this machine has a CUDA GPU torch can use; decided once, cheaply.

    Without a sign of an NVIDIA device (``nvidia-smi -L``, the driver's ``/proc`` entry or a device node)
    the answer comes at once and nothing imports torch; otherwise a subprocess asks torch.
    """
    if no_gpu:
        return {"available": False, "reason": f"{NO_GPU} (--no-gpu)"}
    from kernels_bench.gpu import nvidia_device_present

    listing = ""
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15).stdout.strip()
    if not listing and not nvidia_device_present():
        return {"available": False, "reason": f"{NO_GPU} (no NVIDIA driver or device on this machine)"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT, env=child_env()
        )
        info = (
            json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else None
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        info, done = None, None
    if not isinstance(info, dict):
        detail = one_line((done.stderr if done is not None else "") or "no answer", 200).rsplit("; ", 1)[-1]
        return {"available": False, "reason": f"{NO_GPU} (torch could not be asked: {detail})", "nvidia_smi": listing}
    if not info.get("cuda"):
        return {
            "available": False,
            "reason": f"{NO_GPU} (torch {info.get('torch')} sees none)",
            "nvidia_smi": listing,
            **info,
        }
    return {"available": True, "reason": None, "nvidia_smi": listing, **info}


def run_sampler(csv_path: Path, phase_file: Path, interval_s: float, t0: float) -> int:
    """Append a row of clocks, temperature, power and throttle reasons to ``csv_path`` every ``interval_s``.

    The section column comes from ``phase_file`` (written by the orchestrator). Stops on SIGTERM; exits at
    once when NVML cannot be read.
    """
    from kernels_bench.gpu_timing import device_state

    stop = {"flag": False}

    def on_term(signum: int, frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with open(csv_path, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        parent = os.getppid()
        while not stop["flag"] and os.getppid() == parent:  # ends with the orchestrator, even a killed one
            tick = time.time()
            state = device_state(0)
            if state is None:
                print("sampler: NVML cannot be read: no clock trace", flush=True)
                return 0
            extras = nvml_extras(0)
            try:
                section = phase_file.read_text(encoding="utf-8").strip() or "-"
            except OSError:
                section = "-"
            writer.writerow(
                [
                    f"{tick - t0:.3f}",
                    section,
                    state.get("sm_clock_mhz", ""),
                    extras.get("mem_clock_mhz", ""),
                    state.get("temperature_c", ""),
                    f"{extras['power_w']:.1f}" if "power_w" in extras else "",
                    "|".join(state.get("throttle_reasons") or []),
                ]
            )
            f.flush()
            while not stop["flag"] and time.time() < tick + interval_s:
                time.sleep(0.02)
    return 0


# ===================================================================== the orchestrator


def _parse_names(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = [s.name for s in SECTIONS]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise UsageError(
            f"{flag} {text!r}: unknown section(s) {', '.join(unknown) or '(none given)'}; use {', '.join(known)}"
        )
    return names


def _positive_seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_BUDGET_S:
        raise UsageError(f"{what} {text!r}: use a number of seconds above 0 and at most {MAX_BUDGET_S:.0f}")
    return value


def parse_limits(items: Sequence[str], sections: Sequence[Section]) -> dict[str, float]:
    """``--limit NAME=SECONDS`` overrides of the sections' default limits."""
    known = {s.name for s in sections}
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in known:
            raise UsageError(f"--limit {item!r}: use NAME=SECONDS with NAME one of {', '.join(sorted(known))}")
        out[name.strip()] = _positive_seconds(value.strip(), f"--limit {name.strip()}")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The orchestrator's command line."""
    parser = CliParser(
        prog="gpu_check",
        description="One prepared GPU check of every GPU path that runs on a bare lent NVIDIA machine.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--out", type=text_arg, help="result folder (default: $OUT, else ./gpu_check_out)")
    parser.add_argument(
        "--budget-s", default=str(DEFAULT_BUDGET_S), help=f"total budget, s (default {DEFAULT_BUDGET_S:.0f})"
    )
    parser.add_argument("--only", help="comma-separated sections to run (the others are reported as skipped)")
    parser.add_argument("--skip", help="comma-separated sections not to run")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=SECONDS", help="a section's time limit")
    parser.add_argument("--no-gpu", action="store_true", help="run the harness as on a machine without a GPU")
    parser.add_argument("--self-test", action="store_true", help="run the harness with its built-in test sections")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (its path is logged)")
    return parser


def _append_log(log_path: Path, prefix: str, text: str) -> None:
    with open(log_path, "a", encoding="utf-8") as f:
        for line in text.splitlines():
            f.write(f"[{prefix}] {line}\n")


def _write_results(out: Path, doc: dict[str, Any]) -> None:
    write_atomic(out / "results.json", json.dumps(jsonable(doc), indent=1))


def _read_trace(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


class _Terminated(Exception):
    """SIGTERM of the orchestrator (handled like Ctrl-C: partial results are written)."""


def run(args: argparse.Namespace) -> int:
    """The orchestrator: detect, run every section in its own process group, write the four result files."""
    budget = _positive_seconds(str(args.budget_s), "--budget-s")
    registry = SELF_TEST_SECTIONS if args.self_test else SECTIONS
    only = _parse_names(args.only, "--only") if not args.self_test else None
    skip = set(_parse_names(args.skip, "--skip") or []) if not args.self_test else set()
    limits = parse_limits(args.limit, registry)
    out = Path(args.out or os.environ.get("OUT") or "gpu_check_out").expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the result folder {out}: {one_line(exc)}") from None

    t0 = time.monotonic()
    wall0 = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    log_path = out / "log.txt"
    log_path.write_text("", encoding="utf-8")
    trace_path = out / "clock_trace.csv"
    trace_path.write_text(",".join(TRACE_COLUMNS) + "\n", encoding="utf-8")
    phase = tmp / "phase.txt"
    phase.write_text("start", encoding="utf-8")
    from tables.host import host_environment

    doc: dict[str, Any] = {
        "tool": "benchmarks/gpu_check.py",
        "started_utc": utc_now(),
        "budget_s": budget,
        "argv": sys.argv[1:],
        "host": host_environment(),
        "gpu": None,
        "sections": {},
        "clock_trace": {"rows": 0},
        "exit_status": None,
    }
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, on_term)
    sampler: subprocess.Popen | None = None
    sampler_log: Any = None
    interrupted: str | None = None
    try:
        gpu = {"available": True, "reason": None, "self_test": True} if args.self_test else detect_gpu(args.no_gpu)
        doc["gpu"] = gpu
        _append_log(log_path, "run", f"gpu: {json.dumps(gpu)}; temporary folder {tmp}")
        print(f"gpu_check: {gpu.get('name') or gpu.get('reason') or 'self-test'}; results in {out}", flush=True)
        if gpu["available"] and not args.self_test:
            sampler_log = open(tmp / "sampler.log", "wb")  # noqa: SIM115 (closed once the sampler stops)
            sampler = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "sampler", "--csv", str(trace_path)]
                + ["--phase-file", str(phase), "--interval", str(SAMPLE_INTERVAL_S), "--t0", repr(wall0)],
                stdout=sampler_log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=child_env(),
                start_new_session=True,
            )
        selected = [s for s in registry if (only is None or s.name in only) and s.name not in skip]
        for section in registry:
            entry: dict[str, Any]
            if section not in selected:
                entry = {"status": "skipped", "seconds": 0.0, "limit_s": None, "error": "not selected (--only/--skip)"}
            elif not gpu["available"]:
                entry = {"status": "skipped", "seconds": 0.0, "limit_s": None, "error": gpu["reason"]}
            else:
                later = selected[selected.index(section) + 1 :]
                remaining = budget - (time.monotonic() - t0) - REPORT_RESERVE_S
                limit = allocate_limit(
                    limits.get(section.name, section.limit_s),
                    remaining,
                    sum(s.min_s for s in later),
                    section.min_s,
                )
                if limit is None:
                    entry = {
                        "status": "skipped",
                        "seconds": 0.0,
                        "limit_s": None,
                        "error": f"budget exhausted ({max(0.0, remaining):.0f} s left for it and {len(later)} more)",
                    }
                else:
                    entry = _run_child(section, limit, tmp, phase, log_path, t0)
            entry.setdefault("figures", {})
            entry.setdefault("checks", [])
            entry["headline"] = headline_of(section, entry["figures"]) if entry["figures"] else ""
            doc["sections"][section.name] = entry
            print(
                f"[{time.monotonic() - t0:6.1f} s] {section.name}: {entry['status']}"
                + (f" ({entry['seconds']:.1f} s)" if entry.get("seconds") else "")
                + (f": {one_line(str(entry['error']), 200)}" if entry.get("error") else ""),
                flush=True,
            )
            _write_results(out, doc)
    except (KeyboardInterrupt, _Terminated) as exc:
        interrupted = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if sampler is not None:
            _terminate(sampler, True)
            _kill_group(sampler.pid)
        if sampler_log is not None:
            sampler_log.close()
            text = (tmp / "sampler.log").read_text(encoding="utf-8", errors="replace")
            if text.strip():
                _append_log(log_path, "sampler", text)
        rows = _read_trace(trace_path)
        per_section = trace_summary(rows)
        doc["clock_trace"] = {
            "rows": len(rows),
            "note": "clock_trace.csv"
            if rows
            else ("no GPU" if not (doc.get("gpu") or {}).get("available") else "no samples"),
            "summary": per_section,
        }
        for name, entry in doc["sections"].items():
            if name in per_section:
                entry["clock"] = per_section[name]
        for section in registry:  # sections never reached (interrupted)
            doc["sections"].setdefault(
                section.name, {"status": "skipped", "seconds": 0.0, "limit_s": None, "error": interrupted or "not run"}
            )
        statuses = [e["status"] for e in doc["sections"].values()]
        status = 130 if interrupted else (EXIT_FAILED if any(s in ("failed", "timeout") for s in statuses) else EXIT_OK)
        doc["exit_status"] = status
        doc["elapsed_s"] = time.monotonic() - t0
        doc["finished_utc"] = utc_now()
        _write_results(out, doc)
        report = format_report(doc)
        write_atomic(out / "report.md", report)
        if args.keep_tmp:
            _append_log(log_path, "run", f"temporary folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print()
        print(report, end="", flush=True)
    return status


def _run_child(section: Section, limit: float, tmp: Path, phase: Path, log_path: Path, t0: float) -> dict[str, Any]:
    """Run one section in its own process group under ``limit`` seconds; its entry of results.json."""
    result = tmp / f"{section.name}.json"
    log = tmp / f"{section.name}.log"
    phase.write_text(section.name, encoding="utf-8")
    started = time.monotonic() - t0
    cmd = [sys.executable, str(Path(__file__).resolve()), "section", section.name]
    cmd += ["--result", str(result), "--tmp", str(tmp / section.name), "--limit", f"{limit:.1f}", "--watchdog"]
    with open(log, "wb") as f:
        rc, timed_out, seconds = run_process(cmd, timeout=limit, stdout=f, new_group=True)
    phase.write_text("idle", encoding="utf-8")
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    _append_log(log_path, section.name, text or "(no output)")
    tail = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    entry = section_outcome(read_json(result), rc, timed_out, seconds, limit, tail)
    entry["started_s"] = round(started, 2)
    return entry


def start_watchdog(hard_limit_s: float) -> None:
    """End this process and everything it started when its parent dies or ``hard_limit_s`` pass.

    A section runs in a process session of its own (so a timeout can kill its whole group); if the
    orchestrator is killed outright, nothing else would stop it holding the GPU. Kills the process group
    when this process leads it, else only this process.
    """
    import threading

    parent, t0 = os.getppid(), time.monotonic()

    def watch() -> None:
        while os.getppid() == parent and time.monotonic() - t0 < hard_limit_s:
            time.sleep(0.5)
        print(f"watchdog: {'orphaned' if os.getppid() != parent else 'past the hard limit'}: ending", flush=True)
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os._exit(EXIT_FAILED)

    threading.Thread(target=watch, daemon=True, name="gpu_check-watchdog").start()


def _section_command(args: argparse.Namespace) -> int:
    """``gpu_check.py section NAME``: run one section, writing its result file as it goes."""
    section = section_by_name(args.name)
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    limit = _positive_seconds(str(args.limit), "--limit")
    rec = Recorder(section.name, Path(args.result) if args.result else None, limit, tmp)
    print(f"section {section.name}: {section.what}; limit {limit:.0f} s; started {utc_now()}", flush=True)
    if args.watchdog:
        start_watchdog(limit + 2 * KILL_GRACE_S + 5.0)
    try:
        section.run(rec)
    except SectionSkipped as exc:
        rec.finish("skipped", one_line(exc))
        print(f"skipped: {one_line(exc)}")
        return CHILD_SKIPPED
    except Exception as exc:
        traceback.print_exc(file=sys.stdout)
        rec.errors.append(error_text(exc, 400))
    status = "failed" if rec.failed() else "ok"
    rec.finish(status, rec.summary_error() if status == "failed" else None)
    print(f"section {section.name}: {status}{': ' + str(rec.error) if rec.error else ''}")
    return EXIT_OK if status == "ok" else EXIT_FAILED


def _section_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="gpu_check section", description="Run one section of the GPU check.")
    parser.add_argument("name")
    parser.add_argument("--result", help="the section's result file (JSON, rewritten as it goes)")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="scratch folder")
    parser.add_argument("--limit", default="60", help="the section's time limit, s")
    parser.add_argument(
        "--watchdog", action="store_true", help="end this process group when orphaned or well past the limit"
    )
    return parser


def _sampler_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="gpu_check sampler", description="Trace the GPU's clocks into a CSV file.")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--phase-file", required=True)
    parser.add_argument("--interval", type=float, default=SAMPLE_INTERVAL_S)
    parser.add_argument("--t0", type=float, default=0.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the orchestrator, or the internal ``section`` and ``sampler`` commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["section"]:
        return run_cli(_section_command, _section_parser(), argv[1:])
    if argv[:1] == ["sampler"]:
        return run_cli(
            lambda a: run_sampler(Path(a.csv), Path(a.phase_file), a.interval, a.t0 or time.time()),
            _sampler_parser(),
            argv[1:],
        )
    return run_cli(run, build_parser(), argv, interrupted="interrupted")


if __name__ == "__main__":
    sys.exit(main())
