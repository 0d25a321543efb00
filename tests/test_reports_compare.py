"""reports.compare: two tables key by key."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_reports_common import assert_figure_files, assert_one_line_error, width_keys, write_latency_table

from reports.compare import key_ratios, main
from tables.key import BlockKey
from tables.schema import read_table


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = width_keys()
    b = {k: v * 0.5 for k, v in a.items()}
    odd = BlockKey("xx", 64, 28, 28, 64, k=3)
    b[odd] = a[odd] * 2.0  # the one key where B is slower
    b[BlockKey("dw", 8, 8, 8, 8, k=3, e=3)] = 1.0  # only in B
    return (
        write_latency_table(tmp_path / "fp16.parquet", a, precision="fp16"),
        write_latency_table(tmp_path / "int8.parquet", b, precision="int8"),
    )


def test_ratios_are_b_over_a_and_the_odd_key_comes_first(pair: tuple[Path, Path]) -> None:
    (a, _), (b, _) = read_table(pair[0]), read_table(pair[1])
    r = key_ratios(a, b)
    assert len(r) == len(width_keys())
    assert r.iloc[0]["key"] == "xx_i64x28x28_o64_k3_s1_e1_se0_relu"
    assert r.iloc[0]["ratio"] == pytest.approx(2.0)
    assert r.iloc[0]["deviation"] == pytest.approx(4.0)
    assert r["ratio"].median() == pytest.approx(0.5)


def test_figure_and_disagreement_csv(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(pair[0]), str(pair[1]), "--top", "3", "--out", str(out)]) == 0
    assert_figure_files(out, "compare")
    top = pd.read_csv(out / "compare_disagree.csv")
    assert len(top) == 3
    assert top.iloc[0]["key"] == "xx_i64x28x28_o64_k3_s1_e1_se0_relu"


def test_tables_without_common_keys_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_latency_table(tmp_path / "a.parquet", {BlockKey("xx", 8, 8, 8, 8): 1.0})
    b = write_latency_table(tmp_path / "b.parquet", {BlockKey("bl", 8, 8, 8, 8, e=0.25): 1.0})
    assert_one_line_error(main([str(a), str(b)]), capsys, "no measured keys in common")


def test_different_batches_need_per_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = {BlockKey("xx", 8, 8, 8, 8): 1.0}
    a = write_latency_table(tmp_path / "a.parquet", key, batch=1)
    b = write_latency_table(tmp_path / "b.parquet", key, batch=8)
    assert_one_line_error(main([str(a), str(b)]), capsys, "--per-image")
    assert main([str(a), str(b), "--per-image", "--out", str(tmp_path)]) == 0
    assert pd.read_csv(tmp_path / "compare_disagree.csv")["ratio"].tolist() == [pytest.approx(1 / 8)]


def test_a_file_that_is_not_a_table_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    assert_one_line_error(main([str(junk), str(junk)]), capsys, "junk.parquet")
