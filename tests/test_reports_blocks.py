"""reports.blocks: latency against width per block type, and per-stage breakdowns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_reports_common import assert_figure_files, assert_one_line_error, width_keys, write_latency_table

from profiler.networks import network_keys
from reports.blocks import ReportError, choose_slice, main, slice_points, stage_breakdown
from reports.inputs import ok_rows
from tables.key import BlockKey
from tables.schema import read_table


@pytest.fixture
def table(tmp_path: Path) -> Path:
    keys: dict[BlockKey, float | None] = dict(width_keys())
    keys[BlockKey("xx", 32, 28, 28, 64, k=3)] = 9.9  # another cin for width 64: not drawn
    keys[BlockKey("conv", 3, 224, 224, 32, k=3, s=2)] = None
    return write_latency_table(tmp_path / "t.parquet", keys)


def test_default_slice_is_the_most_populated(table: Path) -> None:
    rows = ok_rows(read_table(table)[0])
    sl = choose_slice(rows, ["xx", "bl", "dw"])
    assert (sl.h, sl.w, sl.k, sl.s) == (28, 28, 3, 1)
    assert sl.ratios == {"xx": 1.0, "bl": 0.25, "dw": 3.0}


def test_flags_pin_the_slice(table: Path) -> None:
    rows = ok_rows(read_table(table)[0])
    sl = choose_slice(rows, ["xx", "bl", "dw"], res=(14, 14), kernel=5)
    assert (sl.h, sl.k, list(sl.ratios)) == (14, 5, ["xx"])


def test_nothing_in_the_slice_is_an_error(table: Path) -> None:
    rows = ok_rows(read_table(table)[0])
    with pytest.raises(ReportError, match="k=7"):
        choose_slice(rows, ["xx"], kernel=7)


def test_one_point_per_width_preferring_cin_equal_cout(table: Path) -> None:
    rows = ok_rows(read_table(table)[0])
    points = slice_points(rows, choose_slice(rows, ["xx"]))
    xx = points["xx"]
    assert xx["cout"].tolist() == [32, 64, 96, 128]
    assert (xx["cin"] == xx["cout"]).all()


def test_width_figure(table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(table), "--out", str(tmp_path)]) == 0
    assert_figure_files(tmp_path, "blocks_width")
    assert "slice: input 28x28, kernel 3, stride 1" in capsys.readouterr().out


def test_per_block_ratio_flag(table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(table), "--ratio", "bl=0.25", "--blocks", "bl", "--per-image", "--out", str(tmp_path)]) == 0
    assert "bl e=0.25" in capsys.readouterr().out


def test_unknown_block_type_is_one_line(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(main([str(table), "--blocks", "irb"]), capsys, "'irb'")


def test_stage_breakdown_sums_the_predictor_stages() -> None:
    bd = pd.DataFrame(
        {
            "stage": [0, 1, 1, 2],
            "key": ["a", "b", "c", "d"],
            "block": ["conv", "irb", "irb", "tail"],
            "latency_ms": [1.0, 2.0, 3.0, 0.5],
        }
    )
    out = stage_breakdown(bd)
    assert out["stage"].tolist() == ["0", "1", "2"]
    assert out["latency_ms"].tolist() == [1.0, 5.0, 0.5]
    assert out["blocks"].tolist()[1] == "IRB×2"


def test_arch_breakdown_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = write_latency_table(tmp_path / "net.parquet", dict.fromkeys(network_keys("resnet-18"), 0.25))
    assert main([str(t), "--arch", "resnet-18", "--out", str(tmp_path)]) == 0
    assert_figure_files(tmp_path, "blocks_arch")
    out = capsys.readouterr().out
    assert f"resnet-18: {0.25 * len(network_keys('resnet-18')):.4g} ms per batch" in out


def test_arch_with_keys_the_table_lacks_is_one_line(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(main([str(table), "--arch", "resnet-18"]), capsys, "not in the latency table")


def test_unknown_network_is_one_line(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(main([str(table), "--arch", "nonet-3"]), capsys, "nonet-3")
