"""Reports on the base install: without matplotlib, ``--help`` works and a run is one line naming the extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_reports_common import width_keys, write_latency_table, write_validation

from profiler.networks import network_keys

REPO = Path(__file__).resolve().parents[1]
GENET_CSV = REPO / "profiler" / "data" / "genet_seed_latency_ms_per_image.csv"
REPORTS = ("blocks", "compare", "pareto", "summary", "validation")
V100_BATCH_64 = ("--where", "gpu=V100", "--where", "batch=64")

# ``python -c NO_MATPLOTLIB CASES_JSON`` runs each report's ``main(argv)`` in one interpreter where importing
# matplotlib fails as it does when the package is not installed, and prints each run's exit status and output.
NO_MATPLOTLIB = """
import contextlib, importlib, importlib.abc, io, json, runpy, sys, traceback

class NoMatplotlib(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoMatplotlib())
results = []
for name, argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if argv == ["--help"]:  # as python -m reports.NAME --help runs it
                sys.argv = [f"reports.{name}", *argv]
                runpy.run_module(f"reports.{name}", run_name="__main__", alter_sys=True)
                code = 0
            else:
                code = importlib.import_module(f"reports.{name}").main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            code = None
            traceback.print_exc()
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def one_error_line(result: dict) -> str:
    assert "Traceback" not in result["stderr"], result["stderr"]
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1, result["stderr"]
    return lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Valid arguments for each report: without matplotlib only the drawing is missing."""
    tmp = tmp_path_factory.mktemp("inputs")
    widths = write_latency_table(tmp / "widths.parquet", width_keys())
    half = write_latency_table(tmp / "half.parquet", {k: v / 2 for k, v in width_keys().items()}, precision="int8")
    net = write_latency_table(tmp / "net.parquet", dict.fromkeys(network_keys("resnet-18"), 0.25))
    validation = write_validation(tmp / "v.parquet")
    out = str(tmp / "out")
    return {
        "blocks": [str(net), "--arch", "resnet-18", "--out", out],
        "compare": [str(widths), str(half), "--out", out],
        "pareto": [str(GENET_CSV), "--latency-col", "latency_ms_per_image", *V100_BATCH_64, "--out", out],
        "summary": [str(widths), "--validation", str(validation), "--out", str(tmp / "page.html")],
        "validation": [str(validation), "--out", out],
    }


@pytest.fixture(scope="module")
def runs(inputs: dict[str, list[str]]) -> dict[tuple[str, str], dict]:
    """Every report run three ways (as a module with --help, valid inputs, a bad flag) in one interpreter
    without matplotlib."""
    cases = {}
    for name in REPORTS:
        cases[(name, "help")] = ["--help"]
        cases[(name, "run")] = inputs[name]
        cases[(name, "bad flag")] = [*inputs[name], "--no-such-flag"]
    order = list(cases)
    payload = json.dumps([[name, cases[(name, what)]] for name, what in order])
    proc = subprocess.run(
        [sys.executable, "-c", NO_MATPLOTLIB, payload], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return dict(zip(order, json.loads(proc.stdout.strip().splitlines()[-1])))


@pytest.mark.parametrize("name", REPORTS)
def test_help_works_without_matplotlib(name: str, runs: dict) -> None:
    result = runs[(name, "help")]
    assert result["code"] == 0, result["stderr"]
    assert "Traceback" not in result["stderr"]
    assert f"usage: python -m reports.{name}" in result["stdout"]


@pytest.mark.parametrize("name", REPORTS)
def test_a_run_without_matplotlib_is_one_line_naming_the_extra_with_exit_status_2(name: str, runs: dict) -> None:
    result = runs[(name, "run")]
    line = one_error_line(result)
    assert result["code"] == 2, result["stderr"]
    assert line == "error: this report draws with matplotlib, which is not installed: pip install -e '.[reports]'"


@pytest.mark.parametrize("name", REPORTS)
def test_a_bad_flag_without_matplotlib_is_one_line_with_exit_status_2(name: str, runs: dict) -> None:
    result = runs[(name, "bad flag")]
    line = one_error_line(result)
    assert result["code"] == 2, result["stderr"]
    assert "--no-such-flag" in line and "matplotlib" not in line
