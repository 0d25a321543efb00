"""A build killed (SIGKILL) at each named write point resumes to the right table, row by row.

The write points (``tables.atomic.FAULT_ENV``): ``lock`` (the build lock just
taken), ``part`` (a part written but not renamed), ``compact`` (the compacted
table written but not renamed), ``rename`` (the table renamed, its parts not yet
deleted). After each kill the same command, run again, must end with exactly one
ok row per key whose trimmed mean recomputes from its raw samples, must measure
again only what was not stored, and must keep every stored row as it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from quick import quick_flags

from kernels_bench.timing import trimmed_mean
from profiler import build
from tables.atomic import FAULT_ENV
from tables.key import BlockKey
from tables.schema import read_table
from tables.store import PartStore

ROOT = Path(__file__).resolve().parents[1]
NAME = "cpu_onnxruntime_fp32_b1.parquet"
KEYS = [BlockKey("irb", 8, 8, 8, 8 * (1 + i % 3), k=3, s=1 + i // 3, e=2) for i in range(6)]
FAST = quick_flags(5, "--order", "given")


def args_for(tmp_path: Path) -> list[str]:
    archs = tmp_path / "archs.json"
    archs.write_text(json.dumps({"architectures": [{"name": f"a{i}", "blocks": [str(k)]} for i, k in enumerate(KEYS)]}))
    return [
        "--device",
        "cpu",
        "--batch",
        "1",
        "--precision",
        "fp32",
        "--archs",
        str(archs),
        "--out",
        str(tmp_path / "o"),
    ]


def killed_build(tmp_path: Path, point: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{FAULT_ENV: point})
    cmd = [sys.executable, "-m", "profiler.build", *args_for(tmp_path), *FAST]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def stored_rows(out: Path) -> pd.DataFrame:
    """Every row stored so far (table and parts), one per key, as the resumed build will see them."""
    return PartStore(out, NAME, None).rows() if out.is_dir() else pd.DataFrame(columns=["key"])


@pytest.mark.parametrize(
    ("point", "stored_before"),
    [("lock", 0), ("part:3", 2), ("compact", len(KEYS)), ("rename", len(KEYS))],
)
def test_a_build_killed_at_each_write_point_resumes_row_by_row(tmp_path, capsys, point, stored_before):
    killed = killed_build(tmp_path, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    out = tmp_path / "o"
    before = stored_rows(out)
    assert len(before) == stored_before
    assert build.main([*args_for(tmp_path), *FAST]) == 0
    printed = capsys.readouterr().out
    assert f"measured {len(KEYS) - stored_before} now" in printed  # nothing stored is measured again
    frame, md = read_table(out / NAME)
    assert sorted(frame["key"]) == sorted(str(k) for k in KEYS)  # one row per key
    assert (frame["status"] == "ok").all()
    trim = md["timing"]["trim"]
    for row in frame.itertuples():
        assert row.raw_latency_ms == pytest.approx(trimmed_mean(row.samples_ms, trim), rel=1e-12)
    kept = frame.set_index("key")
    for row in before.itertuples():  # what was stored before the kill is kept as it was
        assert kept.loc[row.key, "latency_ms"] == row.latency_ms
        assert kept.loc[row.key, "measured_at"] == row.measured_at
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".parts")]
    assert leftovers == [] and not (out / f"{NAME}.lock").exists()


def test_a_truncated_part_is_one_warning_line_and_its_key_is_measured_again(tmp_path, capsys):
    killed = killed_build(tmp_path, "compact")  # every part written, the table not yet
    assert killed.returncode == -signal.SIGKILL
    parts = sorted((tmp_path / "o" / f"{NAME}.parts").glob("part-*.parquet"))
    lost = pq.read_metadata(parts[0]).num_rows  # the keys of that part
    parts[0].write_bytes(parts[0].read_bytes()[:100])  # truncated, as a full disk or a lost node leaves it
    assert build.main([*args_for(tmp_path), *FAST]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "unreadable part" in line]
    assert len(warnings) >= 1 and all(line.startswith("warning: ") for line in warnings)
    assert lost >= 1 and f"measured {lost} now" in captured.out
    frame, _ = read_table(tmp_path / "o" / NAME)
    assert sorted(frame["key"]) == sorted(str(k) for k in KEYS)
