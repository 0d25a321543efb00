"""Reliability: bad inputs, kills, resumes, merges, locks, calibrations and damaged tables, counted.

Every case is tried as a user would (the commands' ``main(argv)``, or a real
process for the kills) and checked for the one right outcome:

- bad input: exit status 2, exactly one line on stderr, no traceback;
- a kill (SIGKILL at a random moment, or at each named write point): the same
  command run again ends with exactly one ok row per key, trimmed means that
  recompute from the raw samples, and no row that was stored measured again;
- a resume or merge with another setting: refused in one line naming it (a
  forced merge keeps each row's settings id);
- a lock file nobody holds (another host, a reused or live unrelated pid): taken
  over; a live holder: refused;
- a damaged calibration or table: a one-line ``ValueError``, nothing applied.

Prints a table of cases tried and handled per class (and every case that was
not handled), for BENCHMARKS.md::

    python benchmarks/bench_reliability.py [--kills 12] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))

from quick import quick_flags  # noqa: E402

from kernels_bench.timing import trimmed_mean  # noqa: E402
from tables.host import host_description  # noqa: E402
from tables.key import BlockKey  # noqa: E402

NAME = "cpu_onnxruntime_fp32_b1.parquet"
KEYS = [BlockKey("irb", 8, 8, 8, 8 * (1 + i % 4), k=3 if i % 2 else 5, s=1 + (i // 4) % 2, e=2) for i in range(8)]
FAST = quick_flags(5)  # the test suite's quick build (tests/quick.py)


class Tally:
    """Cases tried and handled, per class; the cases not handled, with why."""

    def __init__(self) -> None:
        self.tried: dict[str, int] = {}
        self.handled: dict[str, int] = {}
        self.misses: list[str] = []

    def record(self, klass: str, label: str, ok: bool, why: str = "") -> None:
        self.tried[klass] = self.tried.get(klass, 0) + 1
        if ok:
            self.handled[klass] = self.handled.get(klass, 0) + 1
        else:
            self.misses.append(f"{klass}: {label}: {why}")


def call(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in this process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # an escaping exception is a miss, not a crash of this script
            return -1, f"Traceback: {type(exc).__name__}: {exc}"
    return int(code), err.getvalue()


def one_line_refusal(code: int, err: str) -> tuple[bool, str]:
    lines = err.strip().splitlines()
    if "Traceback" in err:
        return False, "traceback"
    if code != 2:
        return False, f"exit status {code}"
    if len(lines) != 1:
        return False, f"{len(lines)} stderr lines"
    return True, ""


# --------------------------------------------------------------------------- bad input
def bad_inputs(tmp: Path) -> list[tuple[str, Callable[[list[str]], int], list[str]]]:
    """(label, main, argv) of bad inputs of every command."""
    from profiler import build, merge, nas, validate
    from reports import blocks, compare, pareto, summary
    from reports import validation as rvalidation

    d = ["--device", "cpu", "--batch", "1", "--out", str(tmp / "o")]
    missing = str(tmp / "missing.parquet")
    folder = tmp / "a-folder"
    folder.mkdir(exist_ok=True)
    text = tmp / "text.parquet"
    text.write_text("not parquet")
    bad_json = tmp / "bad.json"
    bad_json.write_text("{not json")
    cases: list[tuple[str, Callable[[list[str]], int], list[str]]] = []
    numeric = {
        "--batch": ["0", "-1", "99999999", "x", "1.5"],
        "--repeats": ["0", "-5", "1000000000", "x", "nan"],
        "--warmup": ["-1", "1000000000", "x"],
        "--warmup-ms": ["-1", "nan", "inf", "1e12", "x"],
        "--trim": ["-0.1", "0.5", "1", "nan", "x"],
        "--min-sample-ms": ["-1", "inf", "1e9", "x"],
        "--rounds": ["0", "-1", "1000000000", "x"],
        "--threads": ["0", "-1", "100000", "x"],
        "--sample": ["0", "-3", "1000000000000", "x"],
        "--limit": ["0", "-1", "x"],
        "--seed": ["-1", "99999999999999999999", "x"],
        "--workers": ["0", "100000", "x"],
        "--chunk-size": ["0", "100000000", "x"],
    }
    for flag, values in numeric.items():
        for value in values:
            base = [a for a in d if a != "--batch" and a != "1"] if flag == "--batch" else d
            extra = ["--executor", "local"] if flag == "--workers" else []
            argv = [*base, flag, value, *extra] if flag != "--batch" else ["--device", "cpu", "--batch", value]
            cases.append((f"build {flag} {value}", build.main, [*argv, "--dry-run"]))
    words = {
        "--device": ["tpu9", "", "V100X"],
        "--precision": ["fp8", "", ",", "fp32,fp9"],
        "--backend": ["tflite", ""],
        "--networks": ["", "resnet-1000", ",,", "all,nope"],
        "--space": ["nasbench", "", str(bad_json), str(tmp / "no-space.yaml")],
        "--archs": ["", missing, str(bad_json), str(folder)],
        "--cpus": ["", "3-1", "x", "0-1000000000000", "99999"],
        "--opt-level": ["9", "-1", "x"],
        "--shard": ["0/4", "5/4", "x", "1/0"],
        "--drift-reference": ["lstm_i8x8x8_o8_k3_s1_e1_se0_relu", "x"],
        "--out": [""],
        "--executor": ["slurm"],
        "--gpus": ["0,0", "x"],
        "--address": ["auto"],
    }
    for flag, values in words.items():
        for value in values:
            extra: list[str] = []
            if flag == "--drift-reference":
                extra = ["--drift-correct"]
            if flag == "--opt-level":
                extra = []  # onnxruntime takes no --opt-level at all
            argv = [*d, flag, value, *extra]
            cases.append((f"build {flag} {value!r}", build.main, argv))
    combos = [
        ["--precision", "fp16"],
        ["--backend", "torch", "--precision", "int8"],
        ["--backend", "tensorrt"],
        ["--cuda-graphs"],
        ["--strongly-typed"],
        ["--compile"],
        ["--drift-reference", "xx_i128x28x28_o128_k3_s1_e1_se0_relu"],
        ["--bogus"],
        ["--executor", "ray", "--cpus", "0"],
        ["--gpus", "0,1"],
        ["--executor", "local", "--workers", "3", "--cpus", "0,1"],
    ]
    for extra in combos:
        cases.append((f"build {' '.join(extra)}", build.main, [*d, *extra]))
    cases.append(("build --device v100 (no V100 here)", build.main, ["--device", "v100", "--batch", "1"]))
    for argv in (["--table", missing], ["--table", str(text)], ["--table", str(folder)], ["--table", ""]):
        cases.append((f"validate {' '.join(argv)}", validate.main, argv))
        cases.append((f"nas {' '.join(argv)}", nas.main, [*argv, "--sample", "10", "--budgets", "1"]))
    table = built_table(tmp)
    for flag, values in {
        "--holdout": ["-0.1", "1", "2", "nan", "x"],
        "--rounds": ["0", "-1", "x"],
        "--sample": ["0", "-1", "x"],
        "--repeats": ["0", "x", "1000000000"],
        "--warmup-ms": ["-1", "nan"],
        "--min-sample-ms": ["-1", "x"],
        "--trim": ["0.7", "x"],
        "--cpus": ["3-1", "", "0-1000000000000"],
        "--networks": ["", "resnet-1000"],
        "--archs": ["", missing, str(bad_json)],
        "--space": ["gpunet"],  # without --sample
        "--out": ["", str(folder)],
    }.items():
        for value in values:
            cases.append((f"validate {flag} {value!r}", validate.main, ["--table", str(table), flag, value]))
    for flag, values in {
        "--sample": ["0", "-1", "x", "1000000000000"],
        "--budgets": ["", "x", "-1", "nan", "1,,2"],
        "--space": ["nasbench", ""],
        "--seed": ["x"],
    }.items():
        for value in values:
            argv = ["--table", str(table), "--sample", "10", "--budgets", "1", flag, value]
            cases.append((f"nas {flag} {value!r}", nas.main, argv))
    cases.append(("merge nothing readable", merge.main, [missing, "--out", str(tmp / "m.parquet")]))
    cases.append(("merge a folder without parts", merge.main, [str(folder), "--out", str(tmp / "m.parquet")]))
    cases.append(("merge --out a folder", merge.main, [str(table), "--out", str(folder)]))
    cases.append(("merge --out an existing file", merge.main, [str(table), "--out", str(text)]))
    cases.append(("merge --out ''", merge.main, [missing, "--out", ""]))
    cases.append(("merge text", merge.main, [str(text), "--out", str(tmp / "m.parquet")]))
    for name, module_main in (
        ("blocks", blocks.main),
        ("compare", compare.main),
        ("pareto", pareto.main),
        ("summary", summary.main),
        ("validation", rvalidation.main),
    ):
        cases.append((f"reports.{name} missing file", module_main, [missing]))
        cases.append((f"reports.{name} not parquet", module_main, [str(text)]))
        cases.append((f"reports.{name} --bogus", module_main, [missing, "--bogus"]))
    return cases


def built_table(tmp: Path) -> Path:
    """A small real table to point validate and nas at."""
    from profiler import build

    out = tmp / "valid"
    archs = archs_file(tmp)
    call(
        build.main,
        [
            "--device",
            "cpu",
            "--batch",
            "1",
            "--precision",
            "fp32",
            "--archs",
            str(archs),
            "--out",
            str(out),
            *FAST,
            "--limit",
            "2",
        ],
    )
    return out / NAME


# --------------------------------------------------------------------------- kills
def archs_file(tmp: Path) -> Path:
    path = tmp / "archs.json"
    path.write_text(json.dumps({"architectures": [{"name": f"a{i}", "blocks": [str(k)]} for i, k in enumerate(KEYS)]}))
    return path


def check_resumed(out: Path, before_rows: object, printed: str) -> tuple[bool, str]:
    from tables.schema import read_table

    frame, md = read_table(out / NAME)
    if sorted(frame["key"]) != sorted(str(k) for k in KEYS) or not (frame["status"] == "ok").all():
        return False, "not one ok row per key"
    for row in frame.itertuples():
        if abs(row.raw_latency_ms - trimmed_mean(row.samples_ms, md["timing"]["trim"])) > 1e-9 * row.raw_latency_ms:
            return False, f"{row.key}: trimmed mean does not recompute"
    kept = frame.set_index("key")
    for row in before_rows.itertuples():  # type: ignore[attr-defined]
        if kept.loc[row.key, "measured_at"] != row.measured_at:
            return False, f"{row.key} was measured again"
    if f"measured {len(KEYS) - len(before_rows)} now" not in printed:  # type: ignore[arg-type]
        return False, "measured what was stored again"
    return True, ""


def kill_cases(tmp: Path, n_random: int, rng: random.Random, tally: Tally) -> None:
    from profiler import build
    from tables.atomic import FAULT_ENV
    from tables.store import PartStore

    points = ["lock", "part:1", "part:4", "compact", "rename"]
    runs = [("point", p) for p in points] + [("random", None) for _ in range(n_random)]
    for i, (kind, point) in enumerate(runs):
        case = tmp / f"kill-{i}"
        case.mkdir()
        argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs_file(case))]
        argv += ["--out", str(case / "o"), *FAST]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if point:
            env[FAULT_ENV] = point
        proc = subprocess.Popen(
            [sys.executable, "-m", "profiler.build", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if kind == "random":
            time.sleep(rng.uniform(0.3, 4.0))
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        out = case / "o"
        before = PartStore(out, NAME, None).rows() if out.is_dir() else None
        import pandas as pd

        before = before if before is not None else pd.DataFrame({"key": [], "measured_at": []})
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
            code = build.main(argv)
        label = f"SIGKILL at {point}" if point else f"SIGKILL at random ({proc.returncode})"
        if code != 0:
            tally.record("kills", label, False, f"resume exited {code}")
            continue
        ok, why = check_resumed(out, before, printed.getvalue())
        tally.record("kills", label, ok, why)


# --------------------------------------------------------------------------- resume, merge, lock, calibration, rows
def settings_cases(tmp: Path, tally: Tally) -> None:
    from profiler import build, merge
    from tables.schema import read_table

    base = tmp / "settings"
    base.mkdir()
    archs = archs_file(base)
    common = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs)]
    out = ["--out", str(base / "o")]
    first = ["--repeats", "10", "--warmup", "1", "--warmup-ms", "0", "--no-progress", "--limit", "3"]
    call(build.main, [*common, *out, *first])
    table = base / "o" / NAME
    original = table.read_bytes()
    changes = [
        ["--repeats", "20"],
        ["--trim", "0.2"],
        ["--warmup", "3"],
        ["--warmup-ms", "5"],
        ["--min-sample-ms", "2"],
        ["--threads", "2"],
        ["--cpus", "0"],
        ["--rounds", "2"],
        ["--drift-correct"],
    ]
    for change in changes:
        argv = [*common, *out, *first, *change]
        argv = [a for j, a in enumerate(argv) if not (a == "--limit" or (j > 0 and argv[j - 1] == "--limit"))]
        flags = {a for a in change if a.startswith("--")}
        args = list(argv)
        for flag in flags:  # the changed flag replaces the first run's value
            idx = [j for j, a in enumerate(args) if a == flag]
            if len(idx) == 2 and flag != "--drift-correct":
                del args[idx[0] : idx[0] + 2]
        code, err = call(build.main, args)
        ok, why = one_line_refusal(code, err)
        named = any(flag.replace("--drift-correct", "--drift-reference") in err for flag in flags)
        unchanged = table.read_bytes() == original
        tally.record(
            "resume with other settings",
            " ".join(change),
            ok and named and unchanged,
            why or ("setting not named" if not named else "table changed"),
        )
    # merges
    _, md = read_table(table)
    from tables.schema import write_table

    rest = base / "rest.json"  # other keys, measured once more, for the second input of each merge
    rest.write_text(
        json.dumps({"architectures": [{"name": f"b{i}", "blocks": [str(k)]} for i, k in enumerate(KEYS[3:6])]})
    )
    call(
        build.main,
        [
            "--device",
            "cpu",
            "--batch",
            "1",
            "--precision",
            "fp32",
            "--archs",
            str(rest),
            "--out",
            str(base / "rest"),
            *first,
        ],
    )
    frame, _ = read_table(base / "rest" / NAME)
    frame["settings_id"] = None  # a table built with other settings: its rows carry its own settings id
    for label, change in (
        ("threads 8", {"backend_settings": {**md["backend_settings"], "threads": 8}}),
        ("engine version", {"engine": {"name": "onnxruntime", "version": "0.0.1"}}),
        ("repeats", {"timing": {**md["timing"], "repeats": 99}}),
        ("precision", {"precision": "int8"}),
        ("device model", {"device": {**md["device"], "cpu_model": "another CPU"}}),
    ):
        other = write_table(frame, base / f"other-{label.replace(' ', '-')}.parquet", {**md, **change})
        code, err = call(merge.main, [str(table), str(other), "--out", str(base / "m.parquet")])
        ok, why = one_line_refusal(code, err)
        tally.record("merge of other settings", label, ok and not (base / "m.parquet").exists(), why)
        code, _ = call(merge.main, [str(table), str(other), "--out", str(base / "f.parquet"), "--force"])
        forced, _ = read_table(base / "f.parquet") if code == 0 else (None, None)
        visible = forced is not None and forced["settings_id"].nunique() == 2
        tally.record("forced merge keeps provenance", label, code == 0 and visible, "ids not kept")
        (base / "f.parquet").unlink(missing_ok=True)


def lock_cases(tmp: Path, tally: Tally) -> None:
    import socket

    from tables.store import BuildLock, BuildLockedError

    path = tmp / "x.parquet.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for label, holder in (
        ("another host's leftover", {"pid": 1, "host": "elsewhere"}),
        ("a live unrelated pid", {"pid": 1, "host": socket.gethostname()}),
        ("the parent's pid (reused)", {"pid": os.getppid(), "host": socket.gethostname()}),
        ("a dead pid", {"pid": dead.pid, "host": socket.gethostname()}),
        ("garbage", None),
    ):
        path.write_text(json.dumps(holder) if holder else "\x00garbage")
        try:
            with BuildLock(path) as lock:
                ok = lock.held
        except BuildLockedError:
            ok = False
        tally.record("locks", f"{label}: taken over", ok, "refused")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from tables.store import BuildLock; import time; BuildLock({str(path)!r}).acquire(); "
            "print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    child.stdout.readline()  # type: ignore[union-attr]
    try:
        BuildLock(path).acquire()
        refused = False
    except BuildLockedError as exc:
        refused = f"pid {child.pid}" in str(exc)
    tally.record("locks", "a live holder: refused, named", refused, "not refused")
    child.kill()
    child.wait()
    try:
        with BuildLock(path):
            freed = True
    except BuildLockedError:
        freed = False
    tally.record("locks", "a killed holder: taken over at once", freed, "still locked")


def file_cases(tmp: Path, tally: Tally) -> None:
    import math

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tables.calibration import Calibration
    from tables.paths import calibration_path
    from tables.schema import build_metadata, result_row, rows_to_arrow, write_table
    from tables.settings import settings_id
    from tables.table import LatencyTable

    class T:  # a timing result
        samples_ms = [1.0, 1.0, 1.0]
        trimmed_mean_ms = median_ms = min_ms = max_ms = 1.0
        std_ms = cv = 0.0
        inner_loop = warmup_runs = 1
        phases: dict = {}

    md = build_metadata(
        device_profile="cpu",
        backend="onnxruntime",
        precision="fp32",
        batch=1,
        backend_settings={"backend": "onnxruntime", "device": "cpu", "threads": 1},
    )
    rows = [result_row(KEYS[0], T()), result_row(KEYS[1], T())]
    path = write_table(rows, tmp / NAME, md)
    link = {
        "device_profile": "cpu",
        "backend": "onnxruntime",
        "precision": "fp32",
        "batch": 1,
        "settings_id": settings_id(md),
    }
    good = Calibration("linear", a=1.0, b=0.1, table=link).to_dict()
    cal = calibration_path(path)
    damaged = {
        "a NaN slope": {**good, "a": math.nan},
        "a negative slope": {**good, "a": -1.0},
        "an absurd intercept": {**good, "b": 1e12},
        "a negative type scale": {**good, "model": "per_type", "type_scales": {"irb": -3.0}},
        "an unknown model": {**good, "model": "cubic"},
        "no link to its table": {**good, "table": {k: v for k, v in link.items() if k != "settings_id"}},
        "another table's link": {**good, "table": {**link, "settings_id": "000000000000"}},
        "another batch": {**good, "table": {**link, "batch": 64}},
        "type_scales not an object": {**good, "type_scales": [1]},
        "a list": [1, 2],
        "not JSON": "{oops",
        "empty": "",
    }
    for label, doc in damaged.items():
        cal.unlink(missing_ok=True)
        cal.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        try:
            LatencyTable.load(path)
            ok, why = False, "applied"
        except ValueError as exc:
            ok, why = "\n" not in str(exc), "more than one line"
        except Exception as exc:
            ok, why = False, f"{type(exc).__name__}"
        tally.record("calibration files", label, ok, why)
    cal.unlink()
    cal.mkdir()
    try:
        LatencyTable.load(path)
        tally.record("calibration files", "a folder", False, "applied")
    except ValueError:
        tally.record("calibration files", "a folder", True)
    cal.rmdir()
    arrow = rows_to_arrow(rows, md)
    for label, column, value in (
        ("NaN ok latency", "latency_ms", math.nan),
        ("inf ok latency", "latency_ms", math.inf),
        ("negative ok latency", "latency_ms", -1.0),
        ("zero ok latency", "latency_ms", 0.0),
        ("a key that does not parse", "key", "not a key"),
        ("a key that contradicts its columns", "key", str(KEYS[2])),
        ("an unknown block", "block", "lstm"),
        ("an unknown status", "status", "maybe"),
    ):
        frame = arrow.to_pandas()
        frame.loc[1, column] = value
        bad = pa.Table.from_pandas(frame, schema=arrow.schema, preserve_index=False)
        pq.write_table(bad.replace_schema_metadata(arrow.schema.metadata), tmp / "bad.parquet")
        try:
            LatencyTable.load(tmp / "bad.parquet")
            tally.record("table rows", label, False, "loaded")
        except ValueError as exc:
            tally.record("table rows", label, "\n" not in str(exc), "more than one line")
    i = arrow.schema.get_field_index("latency_ms")
    text = arrow.set_column(i, pa.field("latency_ms", pa.string()), pa.array(["1.0", "1.0"]))
    pq.write_table(text.replace_schema_metadata(arrow.schema.metadata), tmp / "text.parquet")
    try:
        LatencyTable.load(tmp / "text.parquet")
        tally.record("table rows", "latency stored as text", False, "loaded")
    except ValueError:
        tally.record("table rows", "latency stored as text", True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12, help="kills at random moments (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = datetime.now(timezone.utc)
    tally = Tally()
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        for label, main_fn, argv in bad_inputs(tmp):
            ok, why = one_line_refusal(*call(main_fn, argv))
            tally.record("bad CLI input", label, ok, why)
        settings_cases(tmp, tally)
        lock_cases(tmp, tally)
        file_cases(tmp, tally)
        kill_cases(tmp, args.kills, random.Random(args.seed), tally)
    print(f"{host_description()}, Python {sys.version.split()[0]}, {started:%Y-%m-%d %H:%M} UTC")
    print("| class | tried | handled |\n|---|---|---|")
    for klass in tally.tried:
        print(f"| {klass} | {tally.tried[klass]} | {tally.handled.get(klass, 0)} |")
    print(f"| all | {sum(tally.tried.values())} | {sum(tally.handled.values())} |")
    for miss in tally.misses:
        print(f"not handled: {miss}")
    return 0 if not tally.misses else 1


if __name__ == "__main__":
    sys.exit(main())
