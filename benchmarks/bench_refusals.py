"""How fast ``python -m profiler.build`` refuses bad input, and how long the test suite takes, against a baseline.

Each bad-input case runs as a whole process (interpreter start included), in
this tree and in a baseline checkout of an earlier version, alternately A, B,
A, B, ... so that a drift of the machine's speed touches both alike. For each
case it prints the median and minimum wall time of both, the exit status, the
number of stderr lines, and which engines the process imported (torch,
onnxruntime, onnx, tensorrt, cuda: read from ``sys.modules`` at exit).

With ``--suite`` it also times the whole test suite (``pytest -q``) once in each
tree, alternately, ``--suite-runs`` times, and compares the tests both trees
hold (the same test id, read from each run's JUnit XML): their summed time in
each tree, overall and for the five files whose shared tests got most faster
and most slower. Against a baseline
from before later work added tests, the whole-suite figure mixes the change with
the tests added since; the shared tests' figure does not.

    git worktree add /tmp/baseline <old commit>
    python benchmarks/bench_refusals.py --baseline /tmp/baseline --runs 5 [--suite]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tables.host import host_description  # noqa: E402

#: Bad inputs of ``profiler.build``: (label, arguments).
CASES: tuple[tuple[str, list[str]], ...] = (
    ("fp16 on the onnxruntime CPU provider", ["--device", "cpu", "--batch", "1", "--precision", "fp16"]),
    ("int8 on torch", ["--device", "cpu", "--batch", "1", "--backend", "torch", "--precision", "int8"]),
    ("tensorrt on the cpu profile", ["--device", "cpu", "--batch", "1", "--backend", "tensorrt"]),
    ("a V100 profile on a machine without one", ["--device", "v100", "--batch", "64"]),
    ("batch 0", ["--device", "cpu", "--batch", "0"]),
    ("an unknown network", ["--device", "cpu", "--batch", "1", "--networks", "resnet-1000"]),
    ("an unknown precision", ["--device", "cpu", "--batch", "1", "--precision", "fp8"]),
    ("an unknown flag", ["--device", "cpu", "--batch", "1", "--bogus"]),
    ("an unknown device profile", ["--device", "tpu9", "--batch", "1"]),
    ("a malformed CPU list", ["--device", "cpu", "--batch", "1", "--cpus", "3-1"]),
)

ENGINES = ("torch", "onnxruntime", "onnx", "tensorrt", "cuda")

#: Runs ``python -m profiler.build ARGS`` and writes the engines it imported to the file named by argv[1].
BOOTSTRAP = f"""
import atexit, json, runpy, sys
out = sys.argv[1]
def record():
    with open(out, "w") as f:
        json.dump(sorted(m for m in {ENGINES!r} if m in sys.modules), f)
atexit.register(record)
sys.argv = ["profiler.build", *sys.argv[2:]]
runpy.run_module("profiler.build", run_name="__main__")
"""


def run_case(tree: Path, args: list[str], out_dir: Path) -> tuple[float, int, int, list[str]]:
    """One process: (wall seconds, exit status, stderr lines, engines imported)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        record = f.name
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, record, *args, "--out", str(out_dir)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    try:
        engines = json.loads(Path(record).read_text() or "[]")
    except (OSError, ValueError):
        engines = ["?"]
    Path(record).unlink(missing_ok=True)
    return wall, proc.returncode, len(proc.stderr.strip().splitlines()), engines


def time_suite(tree: Path, junit: Path) -> float:
    """Wall seconds of ``pytest -q`` in ``tree``; per-test times go to ``junit`` (JUnit XML)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    subprocess.run(command, cwd=tree, env=env, check=False, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def test_times(junit: Path) -> tuple[dict[str, float], int]:
    """Test id (``module::name``) -> seconds, and how many tests failed or errored, from a JUnit XML file
    (a suite timed while failing is not a figure)."""
    import xml.etree.ElementTree as ET

    out: dict[str, float] = {}
    failed = 0
    for case in ET.parse(junit).getroot().iter("testcase"):
        out[f"{case.get('classname', '')}::{case.get('name', '')}"] = float(case.get("time") or 0.0)
        failed += case.find("failure") is not None or case.find("error") is not None
    return out, failed


def change(a: float, b: float) -> str:
    """``"24% less"`` or ``"25% more"``: ``a`` against ``b``."""
    pct = (1 - a / b) * 100 if b else 0.0
    return f"{pct:.0f}% less" if pct >= 0 else f"{-pct:.0f}% more"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the version to compare with")
    parser.add_argument("--runs", type=int, default=5, help="processes per case and tree (default 5)")
    parser.add_argument("--suite", action="store_true", help="also time the whole test suite in both trees")
    parser.add_argument("--suite-runs", type=int, default=1, help="suite runs per tree (default 1)")
    args = parser.parse_args()
    trees = {"this tree": ROOT, "baseline": args.baseline.resolve()}
    started = datetime.now(timezone.utc)
    print(f"{host_description()}, Python {sys.version.split()[0]}, {started:%Y-%m-%d %H:%M} UTC")
    print(f"baseline: {trees['baseline']}; {args.runs} processes per case and tree, alternating")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, case in CASES:
            walls: dict[str, list[float]] = {name: [] for name in trees}
            facts: dict[str, tuple[int, int, list[str]]] = {}
            for _ in range(args.runs):
                for name, tree in trees.items():
                    wall, code, lines, engines = run_case(tree, case, Path(tmp) / "out")
                    walls[name].append(wall)
                    facts[name] = (code, lines, engines)
            rows.append((label, walls, facts))
    head = f"{'case':<42}{'this tree':>22}{'baseline':>22}"
    print(head + "\n" + "-" * len(head))
    for label, walls, facts in rows:
        cells = []
        for name in trees:
            code, lines, engines = facts[name]
            med, low = statistics.median(walls[name]), min(walls[name])
            cells.append(f"{med:6.2f} s ({low:.2f}) rc{code}")
        print(f"{label:<42}{cells[0]:>22}{cells[1]:>22}")
        for name in trees:
            code, lines, engines = facts[name]
            note = f"{lines} stderr line(s), engines imported: {', '.join(engines) or 'none'}"
            print(f"{'':<4}{name}: {note}")
    worst = max(statistics.median(w["this tree"]) for _, w, _ in rows)
    print(f"slowest refusal in this tree: {worst:.2f} s (median)")
    if args.suite:
        times: dict[str, list[float]] = {name: [] for name in trees}
        per_test: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        failed: dict[str, list[int]] = {name: [] for name in trees}
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.suite_runs):
                for j, (name, tree) in enumerate(trees.items()):
                    junit = Path(tmp) / f"{i}-{j}.xml"
                    times[name].append(time_suite(tree, junit))
                    run_times, run_failed = test_times(junit)
                    per_test[name].append(run_times)
                    failed[name].append(run_failed)
        for name in trees:
            counts = ", ".join(str(len(t)) for t in per_test[name])
            bad = ", ".join(str(n) for n in failed[name])
            print(
                f"test suite, {name}: " + ", ".join(f"{t:.0f} s" for t in times[name]) + f" ({counts} tests; "
                f"failed or errored: {bad})"
            )
        a, b = statistics.median(times["this tree"]), statistics.median(times["baseline"])
        print(f"test suite: {a:.0f} s against {b:.0f} s ({change(a, b)})")

        def median_times(runs: list[dict[str, float]], ids: set[str]) -> dict[str, float]:
            return {t: statistics.median(run[t] for run in runs) for t in ids}

        shared = set.intersection(*(set(run) for name in trees for run in per_test[name]))
        mine, theirs = median_times(per_test["this tree"], shared), median_times(per_test["baseline"], shared)
        sa, sb = sum(mine.values()), sum(theirs.values())
        print(
            f"the {len(shared)} tests both trees hold: {sa:.0f} s against {sb:.0f} s ({change(sa, sb)}; "
            "summed test times, collection and start-up not included)"
        )
        if args.suite_runs > 1:  # the spread from run to run, which a single pair cannot show
            for i in range(args.suite_runs):
                ra = sum(per_test["this tree"][i][t] for t in shared)
                rb = sum(per_test["baseline"][i][t] for t in shared)
                print(f"  run {i + 1}: {ra:.0f} s against {rb:.0f} s ({change(ra, rb)})")
        files: dict[str, list[float]] = {}
        for t in shared:
            entry = files.setdefault(t.split("::")[0], [0.0, 0.0])
            entry[0] += mine[t]
            entry[1] += theirs[t]
        ranked = sorted(files.items(), key=lambda kv: kv[1][0] - kv[1][1])
        for title, part in (("faster", ranked[:5]), ("slower", ranked[::-1][:5])):
            print(f"  the five files whose shared tests got most {title}:")
            for module, (fa, fb) in part:
                print(f"    {module}: {fa:.1f} s against {fb:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
