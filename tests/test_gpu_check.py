"""The prepared GPU check (``benchmarks/gpu_check.sh`` and ``benchmarks/gpu_check.py``) on the CPU.

The check's sections need a CUDA GPU; here run what any machine can: the dry run through the shell
script (every section skipped, four result files, exit 0, no torch imported), the harness's own
self-test sections (a failing and a hanging section do not stop the rest; a hanging one is killed with
what it started), the one-line refusals of bad arguments, and the pure helpers (budget allocation,
report, registry, junit and nvidia-smi parsing, the GENet ordering, repeatability, clock settle).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"

EXPECTED_SECTIONS = ["env", "pytest", "timer", "trt_runner", "hold_bias", "l2_clock", "build_validate", "compile"]
DEFAULT_LIMITS = {
    "env": 15,
    "pytest": 75,
    "timer": 20,
    "trt_runner": 25,
    "hold_bias": 30,
    "l2_clock": 30,
    "build_validate": 150,
    "compile": 45,
}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


gc = _load()


def run_script(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 120):
    """``bash benchmarks/gpu_check.sh ARGS`` with this interpreter; returns (completed process, seconds)."""
    full = {k: v for k, v in os.environ.items() if k != "OUT"}
    full["PYTHON"] = sys.executable
    full.update(env or {})
    t0 = time.monotonic()
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=full, timeout=timeout
    )
    return done, time.monotonic() - t0


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# ----- the dry run through the shell script ------------------------------------------------------


def test_cpu_dry_run_reports_every_section_skipped_in_four_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done, seconds = run_script(str(out), "--no-gpu")
    assert done.returncode == 0, done.stderr
    assert seconds < 30
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(gc.RESULT_FILES) and len(files) <= 8
    doc = results(out)
    assert list(doc["sections"]) == EXPECTED_SECTIONS
    for name, entry in doc["sections"].items():
        assert entry["status"] == "skipped", name
        assert entry["error"].startswith("no CUDA GPU"), entry["error"]
    assert doc["exit_status"] == 0
    report = (out / "report.md").read_text(encoding="utf-8").splitlines()
    table = report[-len(EXPECTED_SECTIONS) :]
    assert [row.split("|")[1].strip() for row in table] == EXPECTED_SECTIONS
    assert all(row.split("|")[2].strip() == "skipped" and "no CUDA GPU" in row for row in table)
    assert report[-len(EXPECTED_SECTIONS) - 4] == "## Summary"
    assert done.stdout.rstrip().splitlines()[-1] == report[-1]  # the report is printed last
    header = (out / "clock_trace.csv").read_text(encoding="utf-8").splitlines()
    assert header == [",".join(gc.TRACE_COLUMNS)]


def test_without_a_gpu_the_dry_run_needs_no_flag_and_imports_no_engine(tmp_path: Path) -> None:
    if gc.detect_gpu()["available"]:
        pytest.skip("this machine has a CUDA GPU: the unforced run would start the real check")
    out = tmp_path / "out"
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('gpu_check', {str(ROOT / 'benchmarks' / 'gpu_check.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['gpu_check'] = m; spec.loader.exec_module(m)\n"
        f"rc = m.main(['--out', {str(out)!r}])\n"
        "heavy = [n for n in ('torch', 'onnx', 'onnxruntime', 'cuda', 'tensorrt', 'pandas') if n in sys.modules]\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer == {"rc": 0, "heavy": []}
    doc = results(out)
    assert {e["status"] for e in doc["sections"].values()} == {"skipped"}
    assert all(e["error"].startswith("no CUDA GPU") for e in doc["sections"].values())
    assert doc["gpu"]["available"] is False


def test_the_result_folder_defaults_to_out_then_gpu_check_out(tmp_path: Path) -> None:
    done, _ = run_script("--no-gpu", env={"OUT": str(tmp_path / "from_env")})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "from_env" / "results.json").is_file()
    done, _ = run_script("--no-gpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gpu_check_out" / "report.md").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["--budget-s", "-5"],
        ["--budget-s", "abc"],
        ["--budget-s", "nan"],
        ["--only", "env,nosuch"],
        ["--skip", ""],
        ["--limit", "env=0"],
        ["--limit", "nosuch=5"],
        ["--limit", "env"],
        ["--frobnicate"],
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out"
    done, _ = run_script(str(out), "--no-gpu", *args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_a_file_as_the_result_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    done, _ = run_script(str(target), "--no-gpu")
    assert done.returncode == 2
    assert "is a file" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ----- the harness with its self-test sections --------------------------------------------------


def test_a_failing_and_a_hanging_section_do_not_stop_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done, seconds = run_script(str(out), "--self-test")
    assert done.returncode == 1, done.stdout + done.stderr
    doc = results(out)
    statuses = {name: entry["status"] for name, entry in doc["sections"].items()}
    assert statuses == {
        "selftest_ok": "ok",
        "selftest_fail": "failed",
        "selftest_timeout": "timeout",
        "selftest_after": "ok",
    }
    assert "deliberate failure" in doc["sections"]["selftest_fail"]["error"]
    assert doc["sections"]["selftest_fail"]["figures"] == {"before_failure": "recorded"}
    hung = doc["sections"]["selftest_timeout"]
    assert hung["figures"]["partial"] == "recorded before the hang"  # figures written before the kill survive
    assert "time limit" in hung["error"]
    assert hung["seconds"] < hung["limit_s"] + gc.KILL_GRACE_S + 2
    deadline = time.monotonic() + 3
    while _alive(hung["figures"]["child_pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(hung["figures"]["child_pid"]), "the hanging section's child outlived it"
    assert seconds < 25
    log = (out / "log.txt").read_text(encoding="utf-8").splitlines()
    assert any(line.startswith("[selftest_fail] Traceback") for line in log)
    assert any(line.startswith("[selftest_after] check PASS") for line in log)
    assert len(list(out.iterdir())) <= 8
    summary = (out / "report.md").read_text(encoding="utf-8").splitlines()[-4:]
    assert [row.split("|")[2].strip() for row in summary] == ["ok", "failed", "timeout", "ok"]


# ----- the registry and the budget ----------------------------------------------------------------


def test_the_registry_lists_every_section_in_order_with_its_limit() -> None:
    assert [s.name for s in gc.SECTIONS] == EXPECTED_SECTIONS
    assert {s.name: s.limit_s for s in gc.SECTIONS} == DEFAULT_LIMITS
    for section in gc.SECTIONS:
        assert 0 < section.min_s <= section.limit_s
        assert callable(section.run) and section.what
        assert isinstance(gc.headline_of(section, {}), str)
        assert gc.section_by_name(section.name) is section
    assert gc.DEFAULT_BUDGET_S <= 360
    # every section can still start when each one before it runs to its minimum
    assert sum(s.min_s for s in gc.SECTIONS) + gc.REPORT_RESERVE_S <= gc.DEFAULT_BUDGET_S
    with pytest.raises(ValueError, match="unknown section 'nosuch'"):
        gc.section_by_name("nosuch")


def test_allocate_limit_cuts_a_section_to_what_the_later_ones_leave() -> None:
    assert gc.allocate_limit(30, 300, 100, 10) == 30
    assert gc.allocate_limit(150, 120, 25, 60) == 95
    assert gc.allocate_limit(150, 80, 25, 60) is None
    assert gc.allocate_limit(15, 14, 0, 5) == 14


def test_the_default_budget_holds_when_every_section_runs_to_its_limit() -> None:
    remaining = gc.DEFAULT_BUDGET_S - gc.REPORT_RESERVE_S
    used, limits = 0.0, {}
    for i, section in enumerate(gc.SECTIONS):
        later = sum(s.min_s for s in gc.SECTIONS[i + 1 :])
        limit = gc.allocate_limit(section.limit_s, remaining - used, later, section.min_s)
        assert limit is not None, section.name
        limits[section.name] = limit
        used += limit
    assert used <= gc.DEFAULT_BUDGET_S - gc.REPORT_RESERVE_S
    assert limits["compile"] >= 25 and limits["env"] == 15  # the last one keeps its minimum
    assert limits["build_validate"] < 150  # cut for the sections after it


def test_section_outcome_from_the_result_file_and_the_exit() -> None:
    partial = {"status": "running", "figures": {"a": 1}, "checks": [], "error": None}
    entry = gc.section_outcome(partial, None, True, 31.0, 30.0, "")
    assert entry["status"] == "timeout" and entry["figures"] == {"a": 1} and "30 s time limit" in entry["error"]
    entry = gc.section_outcome(None, 1, False, 2.0, 30.0, "Segmentation fault")
    assert entry["status"] == "failed" and "Segmentation fault" in entry["error"]
    entry = gc.section_outcome({"status": "ok", "figures": {}}, 1, False, 2.0, 30.0, "boom")
    assert entry["status"] == "failed"
    entry = gc.section_outcome({"status": "skipped", "error": "no cuda-bindings"}, 3, False, 1.0, 30.0, "")
    assert entry["status"] == "skipped" and entry["error"] == "no cuda-bindings"


# ----- the report ---------------------------------------------------------------------------------


def test_the_report_lists_failed_checks_and_ends_with_the_summary_table() -> None:
    doc = {
        "started_utc": "2026-01-01T00:00:00Z",
        "elapsed_s": 12.3,
        "budget_s": 330,
        "exit_status": 1,
        "gpu": {"available": True, "name": "NVIDIA H200"},
        "sections": {
            "env": {
                "status": "ok",
                "seconds": 3.0,
                "limit_s": 15,
                "figures": {"gpu": {"name": "NVIDIA H200", "sm_count": 132}},
                "checks": [{"name": "NVML", "ok": True, "detail": "", "fatal": True}],
                "headline": "NVIDIA H200 | 132 SMs",
            },
            "timer": {
                "status": "failed",
                "seconds": 5.0,
                "limit_s": 20,
                "error": "check failed: n=512",
                "figures": {"n512": {"median_diff_pct": 3.5, "samples": list(range(20))}},
                "checks": [{"name": "n=512: agree", "ok": False, "detail": "3.5%", "fatal": True}],
                "headline": "median diff n=512: 3.50%",
                "clock": {"sm_mhz_min": 345, "sm_mhz_median": 1980, "sm_mhz_max": 1980, "throttle_reasons": {}},
            },
            "compile": {"status": "skipped", "seconds": 0.0, "limit_s": None, "error": "budget exhausted"},
        },
        "clock_trace": {"rows": 40},
    }
    text = gc.format_report(doc)
    lines = text.splitlines()
    assert lines[0] == "# GPU check: NVIDIA H200"
    assert "  - FAILED: n=512: agree: 3.5%" in lines
    assert "- n512.samples: [0, 1, 2, 3, 4, 5, 6, 7, ...] (20 items)" in lines
    assert any(line.startswith("- SM clock 345/1980/1980 MHz") for line in lines)
    assert lines[-5:-3] == ["| section | status | seconds | limit s | headline |", "|---|---|---:|---:|---|"]
    assert lines[-3] == "| env | ok | 3.0 | 15 | NVIDIA H200 / 132 SMs |"  # a | in a headline cannot break the table
    assert lines[-2].startswith("| timer | failed | 5.0 | 20 | median diff n=512: 3.50%; check failed")
    assert lines[-1] == "| compile | skipped | 0.0 | - | budget exhausted |"


def test_jsonable_makes_plain_json() -> None:
    np = pytest.importorskip("numpy")
    data = {"a": float("nan"), "b": np.float32(1.5), "c": (1, 2), "d": Path("/x"), "e": np.arange(3), 5: 1 / 3}
    assert gc.jsonable(data) == {"a": None, "b": 1.5, "c": [1, 2], "d": "/x", "e": [0, 1, 2], "5": 0.333333}
    json.dumps(gc.jsonable(data), allow_nan=False)


# ----- parsers and figures --------------------------------------------------------------------------


def test_parse_junit_counts_and_names_the_failures(tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="5">'
        '<testcase classname="tests.test_gpu" name="test_a" time="0.1"/>'
        '<testcase classname="tests.test_gpu" name="test_b"><failure message="assert 1 == 2">x</failure></testcase>'
        '<testcase classname="tests.test_gpu" name="test_c"><error message="fixture">x</error></testcase>'
        '<testcase classname="tests.test_trt" name="test_d"><skipped message="needs TensorRT">x</skipped></testcase>'
        '<testcase classname="tests.test_trt" name="test_e"><skipped message="needs TensorRT">x</skipped></testcase>'
        "</testsuite></testsuites>",
        encoding="utf-8",
    )
    counts = gc.parse_junit(xml)
    assert {k: counts[k] for k in ("tests", "passed", "failed", "errors", "skipped")} == {
        "tests": 5,
        "passed": 1,
        "failed": 1,
        "errors": 1,
        "skipped": 2,
    }
    assert counts["failing"] == ["tests.test_gpu::test_b", "tests.test_gpu::test_c"]
    assert counts["skip_reasons"] == {"needs TensorRT": 2}


SMI_TEXT = """
==============NVSMI LOG==============

Timestamp                                 : Mon Jan  1 00:00:00 2026
Driver Version                            : 570.86.15
CUDA Version                              : 12.8

Attached GPUs                             : 1
GPU 00000000:19:00.0
    Performance State                     : P0
    Clocks Event Reasons
        Idle                              : Active
        Applications Clocks Setting       : Not Active
        SW Power Cap                      : Not Active
    Clocks
        Graphics                          : 345 MHz
        SM                                : 345 MHz
        Memory                            : 3201 MHz
    Max Clocks
        SM                                : 1980 MHz
"""


def test_parse_smi_nests_by_indentation_and_finds_active_reasons() -> None:
    parsed = gc.parse_smi(SMI_TEXT)
    assert parsed["Driver Version"] == "570.86.15"
    assert parsed["GPU 00000000:19:00.0/Clocks/SM"] == "345 MHz"
    assert parsed["GPU 00000000:19:00.0/Max Clocks/SM"] == "1980 MHz"
    assert parsed["GPU 00000000:19:00.0/Performance State"] == "P0"
    summary = gc.smi_summary(parsed)
    assert summary["active_reasons"] == ["Idle"]
    assert "Timestamp" not in summary["entries"]


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 NVL", "h100"),
        ("NVIDIA H200", "h200"),
        ("Tesla V100-SXM2-16GB", "v100"),
        ("NVIDIA A10G", "a10g"),
        ("Some Other GPU", None),
        (None, None),
    ],
)
def test_pick_profile_from_the_gpu_name(name: str | None, profile: str | None) -> None:
    assert gc.pick_profile(name) == profile


def test_the_genet_paper_ordering_matches_eight_reference_networks() -> None:
    paper = gc.genet_reference()
    assert set(paper) == {
        "genet-light",
        "genet-normal",
        "genet-large",
        "resnet-18",
        "resnet-34",
        "resnet-50",
        "mobilenetv2-1.0",
        "efficientnet-b0",
    }
    assert paper["genet-light"] == pytest.approx(0.09) and paper["resnet-50"] == pytest.approx(0.40)
    same = gc.rank_correlation({n: 2 * v for n, v in paper.items()}, paper)
    assert same["n"] == 8 and same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0)
    reverse = {n: -v for n, v in paper.items()}
    assert gc.rank_correlation(reverse, paper)["spearman"] == pytest.approx(-1.0)
    few = gc.rank_correlation({"genet-light": 1.0, "gpunet-0": 2.0}, paper)
    assert few["n"] == 1 and few["spearman"] is None


def test_repeatability_and_the_block_sum_error_from_frames() -> None:
    pd = pytest.importorskip("pandas")
    first = pd.DataFrame({"key": ["a", "b", "c", "d"], "latency_ms": [1.0, 2.0, 4.0, 1.0], "status": ["ok"] * 4})
    second = pd.DataFrame(
        {"key": ["a", "b", "c", "e"], "latency_ms": [1.01, 1.9, 4.0, 9.0], "status": ["ok", "ok", "failed", "ok"]}
    )
    rep = gc.repeatability(first, second)
    assert rep["n"] == 2  # c failed in the second table, d and e are in one table only
    assert rep["median_pct"] == pytest.approx(3.0)
    assert rep["max_pct"] == pytest.approx(5.0) and rep["worst_key"] == "b"
    frame = pd.DataFrame(
        {
            "network": ["n1", "n2", "n3", "n4"],
            "sum_ms": [1.04, 2.2, 0.5, 1.0],
            "measured_ms": [1.0, 2.0, 1.0, math.nan],
            "error_uncal_pct": [4.0, 10.0, -50.0, math.nan],
            "status": ["ok", "ok", "ok", "failed"],
        }
    )
    val = gc.validation_summary(frame)
    assert val["ok"] == 3 and val["failed"] == ["n4"]
    assert val["error_median_pct"] == pytest.approx(4.0) and val["abs_error_max_pct"] == pytest.approx(50.0)
    assert val["within_5_pct_share"] == pytest.approx(100 / 3) and val["within_10_pct_share"] == pytest.approx(200 / 3)


def test_second_build_limit_from_the_first_builds_rate() -> None:
    assert gc.second_build_limit(111, 0.5, 8.0, 100.0) == 111
    assert gc.second_build_limit(111, 0.5, 8.0, 38.0) == 50
    assert gc.second_build_limit(111, 0.5, 8.0, 12.0) is None  # fewer than 8 keys
    assert gc.second_build_limit(111, 0.0, 8.0, 100.0) is None


def test_clock_settle_finds_when_the_sm_clock_reaches_95_percent() -> None:
    idle = [(0.01 * i, 345.0) for i in range(100)]  # 0 .. 0.99 s idle
    ramp = [(1.0 + 0.01 * i, min(1980.0, 345.0 + 150.0 * i)) for i in range(80)]  # 1.0 .. 1.79 s
    settle = gc.clock_settle(idle + ramp, work_start_s=1.0, warmup_end_s=1.2)
    assert settle["idle_mhz"] == 345.0 and settle["final_mhz"] == 1980.0
    assert settle["settle_ms"] == pytest.approx(110.0)  # 345 + 150 * 11 = 1995 >= 0.95 * 1980
    assert settle["settled_by_warmup_end"] is True and settle["warmup_ms"] == pytest.approx(200.0)
    late = gc.clock_settle(idle + ramp, work_start_s=1.0, warmup_end_s=1.05)
    assert late["settled_by_warmup_end"] is False
    assert gc.clock_settle(idle, 1.0, 1.2)["final_mhz"] is None


def test_trace_summary_per_section() -> None:
    rows = [
        {
            "section": "timer",
            "sm_clock_mhz": "345",
            "temperature_c": "30",
            "power_w": "70.0",
            "throttle_reasons": "gpu_idle",
        },
        {"section": "timer", "sm_clock_mhz": "1980", "temperature_c": "41", "power_w": "400.5", "throttle_reasons": ""},
        {"section": "env", "sm_clock_mhz": "", "temperature_c": "30", "power_w": "", "throttle_reasons": ""},
    ]
    summary = gc.trace_summary(rows)
    assert summary["timer"]["sm_mhz_min"] == 345 and summary["timer"]["sm_mhz_max"] == 1980
    assert summary["timer"]["power_w_max"] == pytest.approx(400.5)
    assert summary["timer"]["throttle_reasons"] == {"gpu_idle": 1}
    assert summary["env"]["sm_mhz_median"] is None and summary["env"]["samples"] == 1


# ----- the sections' own inputs -----------------------------------------------------------------------


def test_every_key_a_section_times_is_valid_and_builds_as_a_torch_module() -> None:
    pytest.importorskip("torch")
    from kernels_bench.backends import get_backend
    from tables.key import parse_key

    settle = parse_key(gc.SETTLE_KEY)
    assert str(settle) == gc.SETTLE_KEY
    keys = [(key, batch) for _, key, batch, _ in gc.hold_cases()]
    keys += [(key, gc.L2_BATCH) for key in gc.l2_keys()] + list(gc.compile_keys()) + [(settle, gc.L2_BATCH)]
    with get_backend("torch", device="cpu") as backend:
        for key, batch in keys:
            prepared = backend.prepare(key, 1, "fp32")
            assert prepared.input_shape == (1, *key.input_shape)
            assert batch >= 1


def test_the_stand_in_engine_offers_what_the_tensorrt_fakes_offer() -> None:
    import test_tensorrt_backend as fakes  # the stand-ins the runner's CPU tests use

    def members(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}

    assert members(fakes.FakeEngine) <= members(gc.StandInEngine)
    assert {"set_tensor_address", "execute_async_v3"} <= members(gc.StandInContext)
    fake = fakes.fake_runtime_trt(fakes.FakeContext())
    ours = gc.stand_in_trt(object.__new__(gc.StandInContext))
    assert set(vars(fake)) == set(vars(ours))
    assert ours.nptype("float32") is fake.nptype("float32")


def test_a_section_whose_orchestrator_is_killed_ends_with_everything_it_started(tmp_path: Path) -> None:
    result = tmp_path / "hang.json"
    section = [str(ROOT / "benchmarks" / "gpu_check.py"), "section", "selftest_timeout", "--result", str(result)]
    section += ["--tmp", str(tmp_path / "t"), "--limit", "60", "--watchdog"]
    parent_code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, *{section!r}], start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        section_pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 20
        child_pid = None
        while child_pid is None and time.monotonic() < deadline:
            child_pid = (gc.read_json(result) or {}).get("figures", {}).get("child_pid")
            time.sleep(0.1)
        assert child_pid is not None, "the section never started its child"
        assert _alive(section_pid) and _alive(child_pid)
    finally:
        parent.kill()  # the orchestrator dies without cleaning up
        parent.wait()
    deadline = time.monotonic() + 5
    while (_alive(section_pid) or _alive(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(section_pid) and not _alive(child_pid)
