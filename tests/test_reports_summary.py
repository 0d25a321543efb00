"""reports.summary: one self-contained HTML page about a table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_reports_common import assert_one_line_error, width_keys, write_latency_table, write_validation

from reports.summary import block_share, main
from tables.key import BlockKey
from tables.schema import read_table


@pytest.fixture
def table(tmp_path: Path) -> Path:
    keys: dict[BlockKey, float | None] = dict(width_keys())
    keys[BlockKey("conv", 3, 224, 224, 32, k=3, s=2)] = None
    return write_latency_table(tmp_path / "t.parquet", keys)


def test_block_share_adds_up_to_100_percent(table: Path) -> None:
    share = block_share(read_table(table)[0])
    assert share["share_pct"].sum() == pytest.approx(100.0)
    assert share.iloc[0]["block"] == "xx"
    assert "conv" not in set(share["block"])  # its only key failed


def test_page_says_what_the_table_is_and_embeds_its_figures(table: Path, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    assert main([str(table), "--validation", str(write_validation(tmp_path / "v.parquet")), "--out", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    for needle in ("Tesla V100", "tensorrt 10.3.0", "fp16", "14 (13 measured, 1 failed)", "engine build failed"):
        assert needle in text
    assert "MAPE" in text and "Kendall τ" in text
    assert "machine steadiness" in text and "unknown (table written before steadiness was recorded)" in text
    assert "linear: 0.87 x sum + 0.05 ms; its own held-out error: cross-validated MAPE 1.50% on 6 fit networks" in text
    assert len(re.findall(r"src='data:image/png;base64,", text)) == 2
    assert not re.search(r"(src|href)=['\"]https?:", text)  # nothing fetched from elsewhere


def test_page_without_validation_says_how_to_get_one(table: Path, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    assert main([str(table), "--out", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "python -m profiler.validate" in text
    assert len(re.findall(r"data:image/png;base64,", text)) == 1


def test_table_without_measured_keys_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = write_latency_table(tmp_path / "t.parquet", {BlockKey("xx", 8, 8, 8, 8): None})
    assert_one_line_error(main([str(t), "--out", str(tmp_path / "p.html")]), capsys, "no successfully measured keys")


def test_missing_table_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(main([str(tmp_path / "none.parquet")]), capsys, "none.parquet")
