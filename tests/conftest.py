"""Shared fixtures.

``fresh_imports``: what a fresh interpreter has imported after each step of a
fixed sequence (light modules first, then the direct ONNX export), from one
subprocess for the whole session. A test of "X imports no engine" asserts on
its step; the steps only add imports, so a step that pulled an engine in would
show it there and in every later step.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Engines and heavy libraries whose import a step records.
WATCHED = ("torch", "onnx", "onnxruntime", "tensorrt", "cuda", "ray", "matplotlib")

#: (step name, Python statements) in the order they run in one interpreter.
STEPS: tuple[tuple[str, str], ...] = (
    ("tables.key", "import tables, tables.key"),
    ("tables", "import tables.table, tables.predictor, tables.cli, tables.store, tables.calibration, tables.paths"),
    ("tables.cost", "import tables.structure, tables.cost"),
    ("spaces", "import profiler.spaces, profiler.networks"),
    ("kernels_bench.weights", "import kernels_bench.weights"),
    (
        "kernels_bench light",
        "import kernels_bench.backends, kernels_bench.timing, kernels_bench.measure, kernels_bench.cuda_timer, "
        "kernels_bench.config, kernels_bench.errors",
    ),
    ("detect cpu", "from profiler.devices import detect_for; detect_for('cpu')"),
    ("profiler.build", "import profiler.build, profiler.validate, profiler.merge"),
    (
        "direct export",
        "from kernels_bench.export import export_keys\n"
        "for precision, target in [('fp32', 'onnxruntime'), ('fp16', 'tensorrt'), ('int8', 'onnxruntime'),"
        " ('int8', 'tensorrt')]:\n"
        "    export_keys('irb_i16x8x8_o16_k3_s1_e4_se1_swish', 1, precision, target=target, cache_dir=CACHE)",
    ),
)

_RUNNER = """
import json, sys
CACHE = sys.argv[1]
out = {}
for name, code in json.loads(sys.argv[2]):
    exec(compile(code, name, "exec"))
    out[name] = sorted(m for m in %r if m in sys.modules)
print(json.dumps(out))
""" % (WATCHED,)  # noqa: UP031


@pytest.fixture(scope="session")
def fresh_imports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Step name -> watched modules imported after it; ``"cache"`` -> the export cache folder of the last step."""
    cache = tmp_path_factory.mktemp("fresh-export-cache")
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(cache), json.dumps(STEPS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["cache"] = cache
    return result
