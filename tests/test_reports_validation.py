"""reports.validation: the predicted-vs-measured figure and its metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_reports_common import assert_figure_files, assert_one_line_error, write_validation

from reports.validation import evaluation_rows, main, metrics_for, metrics_text


def test_figure_files_and_stored_metrics_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v = write_validation(tmp_path / "v.parquet")
    assert main([str(v), "--out", str(tmp_path / "fig")]) == 0
    assert_figure_files(tmp_path / "fig", "validation")
    out = capsys.readouterr().out
    assert "uncalibrated: n = 6, MAPE = 17.0%" in out
    assert "calibrated: n = 6, MAPE = 2.5%" in out


def test_metrics_are_computed_on_held_out_rows_when_not_stored(tmp_path: Path) -> None:
    v = write_validation(tmp_path / "v.parquet", metrics=False)
    df = pd.read_parquet(v)
    metrics = metrics_for(df, {})
    assert metrics["calibrated"]["n"] == 6
    held = df.loc[df["split"] == "holdout"]
    expected = ((held["sum_ms"] - held["measured_ms"]).abs() / held["measured_ms"]).mean() * 100
    assert metrics["uncalibrated"]["mape_pct"] == pytest.approx(expected)


def test_without_a_holdout_split_all_rows_are_evaluated() -> None:
    df = pd.DataFrame({"split": ["fit", "fit"]})
    rows, which = evaluation_rows(df)
    assert len(rows) == 2
    assert "all networks" in which


def test_metrics_text_shows_percentages_and_kendall_tau() -> None:
    text = metrics_text({"n": 4, "mape_pct": 3.14159, "within_5_pct": 75.0, "kendall_tau": 0.5})
    assert text.splitlines() == ["n = 4", "MAPE = 3.1%", "within ±5%: 75%", "Kendall τ = 0.500"]


def test_per_image_and_log_axes_are_accepted(tmp_path: Path) -> None:
    v = write_validation(tmp_path / "v.parquet")
    assert main([str(v), "--per-image", "--log", "--name", "v_img", "--out", str(tmp_path)]) == 0
    assert_figure_files(tmp_path, "v_img")


def test_missing_column_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = pd.read_parquet(write_validation(tmp_path / "v.parquet")).drop(columns=["predicted_ms"])
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "bad.parquet")
    assert_one_line_error(main([str(tmp_path / "bad.parquet")]), capsys, "predicted_ms")


def test_empty_validation_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = pd.read_parquet(write_validation(tmp_path / "v.parquet")).iloc[:0]
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "empty.parquet")
    assert_one_line_error(main([str(tmp_path / "empty.parquet")]), capsys, "no rows")


def test_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(main([str(tmp_path / "nope.parquet")]), capsys, "does not exist")


def test_calibration_text_names_every_model_in_words() -> None:
    from reports.validation import calibration_text

    assert calibration_text({"model": "linear", "a": 0.95, "b": -0.3}) == "linear: 0.95 x sum - 0.3 ms"
    io = calibration_text({"model": "io_linear", "a": 1.03, "b": 0.5, "io_ms_per_mel": -0.26})
    assert io == "io_linear: 1.03 x sum - 0.26 ms x block I/O (M elements) + 0.5 ms"
    assert "irb x0.9" in calibration_text({"model": "per_type", "b": 0.1, "type_scales": {"irb": 0.9}})
