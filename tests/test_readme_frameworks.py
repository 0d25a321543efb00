"""Every snippet of README.md's "Using a table from NAS frameworks" runs, against a small synthetic table."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from profiler.nas import synthetic_table
from profiler.spaces import resolve_space
from tables.key import parse_key
from tables.schema import write_table

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Using a table from NAS frameworks"
#: The keys of the README's example module (and of its model.onnx).
MODULE_KEYS = ["conv_i3x32x32_o32_k3_s2_e1_se0_relu", "pool_fc_i32x16x16_o1000_k1_s1_e1_se0_relu"]


def snippets(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(rf"```{language}\n(.*?)```", text[start:end], flags=re.S)


PYTHON, BASH = snippets("python"), snippets("bash")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder with T.parquet (synthetic: the module's and examples/my_space.yaml's keys), model.onnx and the space."""
    tmp_path = tmp_path_factory.mktemp("readme")
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "my_space.yaml", tmp_path / "examples" / "my_space.yaml")
    keys = [parse_key(k) for k in MODULE_KEYS] + sorted(resolve_space(ROOT / "examples" / "my_space.yaml").space_keys())
    table = synthetic_table(keys)
    write_table(table.to_frame(), tmp_path / "T.parquet", table.metadata)
    module = nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 1000),
    ).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "model.onnx"), dynamo=False)
    return tmp_path


@pytest.fixture()
def workdir(folder, monkeypatch) -> Path:
    monkeypatch.chdir(folder)
    return folder


def test_the_section_has_snippets_for_each_framework() -> None:
    code = "\n".join(PYTHON)
    for name in (
        "predict_model",
        "profiler.frameworks.optuna",
        "profiler.frameworks.nni",
        "profiler.frameworks.archai",
        "ExpectedLatency",
    ):
        assert name in code


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_a_python_snippet_runs(workdir, index) -> None:
    from tables.table import LatencyTable

    namespace = {"table": LatencyTable.load(workdir / "T.parquet")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, code in enumerate(PYTHON[: index + 1]):  # a snippet may use the names of those before it
            exec(compile(code, f"README.md python snippet {i}", "exec"), namespace)


@pytest.mark.parametrize("line", [line for block in BASH for line in block.splitlines() if line.strip()])
def test_a_command_runs(workdir, line) -> None:
    argv = shlex.split(line.split("#")[0])
    assert argv[0] == "python"
    proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
