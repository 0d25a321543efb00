"""reports.pareto: the front on known points, the figure from CSVs and tables, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_reports_common import assert_figure_files, assert_one_line_error, write_latency_table

from profiler.networks import network_keys
from reports import style
from reports.pareto import main, pareto_front, place_labels

REPO = Path(__file__).resolve().parents[1]
GENET_CSV = REPO / "profiler" / "data" / "genet_seed_latency_ms_per_image.csv"
GPUNET_CSV = REPO / "reports" / "data" / "gpunet_published.csv"


def front(lat: list[float], acc: list[float]) -> list[int]:
    return np.flatnonzero(pareto_front(lat, acc)).tolist()


# ----- the front -------------------------------------------------------------------


def test_front_keeps_exactly_the_non_dominated_points() -> None:
    #          0     1     2     3     4
    lat = [1.0, 2.0, 3.0, 2.5, 4.0]
    acc = [70.0, 75.0, 74.0, 78.0, 77.0]
    assert front(lat, acc) == [0, 1, 3]


def test_equal_latency_keeps_only_the_most_accurate() -> None:
    assert front([1.0, 1.0, 2.0], [70.0, 72.0, 73.0]) == [1, 2]


def test_equal_accuracy_keeps_only_the_fastest() -> None:
    assert front([1.0, 2.0, 3.0], [75.0, 75.0, 76.0]) == [0, 2]


def test_exact_duplicates_on_the_front_are_all_kept() -> None:
    assert front([1.0, 1.0, 2.0, 2.0], [70.0, 70.0, 75.0, 75.0]) == [0, 1, 2, 3]


def test_exact_duplicates_off_the_front_are_all_dropped() -> None:
    assert front([0.5, 1.0, 1.0], [80.0, 70.0, 70.0]) == [0]


def test_a_single_point_is_its_own_front_and_no_points_give_an_empty_mask() -> None:
    assert front([3.0], [50.0]) == [0]
    assert pareto_front([], []).tolist() == []


def test_front_matches_the_definition_on_random_points_with_ties() -> None:
    rng = np.random.default_rng(3)
    lat = rng.integers(1, 8, 300).astype(float)
    acc = rng.integers(60, 70, 300).astype(float)
    brute = [not np.any((lat <= lat[i]) & (acc >= acc[i]) & ((lat < lat[i]) | (acc > acc[i]))) for i in range(len(lat))]
    assert pareto_front(lat, acc).tolist() == brute


def test_front_refuses_nan_and_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="finite"):
        pareto_front([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="equal length"):
        pareto_front([1.0], [1.0, 2.0])


def test_labels_of_spread_points_do_not_overlap() -> None:
    _fig, (ax,) = style.new_figure()
    xs, ys = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    ax.scatter(xs, ys)
    ax.set_xlim(0, 5)
    ax.set_ylim(0, 5)
    assert place_labels(ax, xs, ys, ["a-model", "b-model", "c-model", "d-model"]) == 0
    assert len(ax.texts) == 4


# ----- the command -------------------------------------------------------------------


def test_genet_csv_filtered_to_one_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(GENET_CSV), "--latency-col", "latency_ms_per_image", "--where", "gpu=V100", "--where", "batch=64"]
    assert main([*args, "--out", str(tmp_path), "--log-x"]) == 0
    assert_figure_files(tmp_path, "pareto")
    points = pd.read_csv(tmp_path / "pareto.csv")
    assert len(points) == 34
    on_front = set(points.loc[points["on_front"], "name"])
    assert {"GENet-light", "GENet-normal", "GENet-large", "DFNet-1"} <= on_front
    assert "ResNet-50" not in on_front


def test_series_by_engine_and_precision(tmp_path: Path) -> None:
    args = [str(GENET_CSV), "--latency-col", "latency_ms_per_image", "--where", "gpu=T4", "--where", "batch=8"]
    assert main([*args, "--series", "engine,precision", "--out", str(tmp_path)]) == 0
    points = pd.read_csv(tmp_path / "pareto.csv")
    assert sorted(points["series"].unique()) == ["TensorRT fp16", "TensorRT int8"]


def test_per_batch_multiplies_per_image_latency_by_the_batch(tmp_path: Path) -> None:
    args = [str(GENET_CSV), "--latency-col", "latency_ms_per_image", "--where", "gpu=V100", "--where", "batch=64"]
    assert main([*args, "--per-batch", "--out", str(tmp_path)]) == 0
    points = pd.read_csv(tmp_path / "pareto.csv").set_index("name")
    assert points.loc["ResNet-50", "latency_ms"] == pytest.approx(0.40 * 64)


def test_published_gpunet_latencies_one_series_per_gpu(tmp_path: Path) -> None:
    assert main([str(GPUNET_CSV), "--latency-col", "latency_ms", "--series", "gpu", "--out", str(tmp_path)]) == 0
    points = pd.read_csv(tmp_path / "pareto.csv")
    assert set(points["series"]) == {"A100", "V100"}
    assert points["on_front"].all()


def test_latency_predicted_from_two_tables_gives_two_series(tmp_path: Path) -> None:
    keys = dict.fromkeys(network_keys("resnet-18") + network_keys("resnet-50"), 0.1)
    write_latency_table(tmp_path / "v100.parquet", keys, device="v100")
    write_latency_table(tmp_path / "a100.parquet", {k: v / 2 for k, v in keys.items()}, device="a100")
    csv = tmp_path / "models.csv"
    csv.write_text("name,top1,arch\nResNet-18,70.9,resnet-18\nResNet-50,77.4,resnet-50\n")
    tables = ["--table", str(tmp_path / "v100.parquet"), "--table", str(tmp_path / "a100.parquet")]
    code = main([str(csv), *tables, "--per-batch", "--out", str(tmp_path)])
    assert code == 0
    points = pd.read_csv(tmp_path / "pareto.csv")
    assert len(set(points["series"])) == 2
    r18 = points.loc[points["name"] == "ResNet-18"].sort_values("latency_ms")["latency_ms"].tolist()
    n18 = len(network_keys("resnet-18"))
    assert r18 == pytest.approx([0.05 * n18, 0.1 * n18])


def test_missing_column_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(GENET_CSV), "--latency-col", "latency_ms", "--out", str(tmp_path)])
    assert_one_line_error(code, capsys, "no column 'latency_ms'")


def test_unknown_model_name_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_latency_table(tmp_path / "t.parquet", dict.fromkeys(network_keys("resnet-18"), 0.1))
    csv = tmp_path / "models.csv"
    csv.write_text("name,top1,arch\nMystery,70.0,mysterynet-9\n")
    code = main([str(csv), "--table", str(tmp_path / "t.parquet"), "--out", str(tmp_path)])
    assert_one_line_error(code, capsys, "mysterynet-9")


def test_key_the_table_lacks_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_latency_table(tmp_path / "t.parquet", dict.fromkeys(network_keys("resnet-18"), 0.1))
    csv = tmp_path / "models.csv"
    csv.write_text("name,top1,arch\nResNet-50,77.4,resnet-50\n")
    code = main([str(csv), "--table", str(tmp_path / "t.parquet"), "--out", str(tmp_path)])
    assert_one_line_error(code, capsys, "ResNet-50", "not in the latency table")


def test_empty_csv_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "empty.csv"
    csv.write_text("")
    assert_one_line_error(main([str(csv), "--latency-col", "x"]), capsys, "empty")
    csv.write_text("name,top1,latency_ms_per_image\n")
    assert_one_line_error(main([str(csv), "--latency-col", "latency_ms_per_image"]), capsys, "no rows")


def test_several_rows_per_model_ask_for_a_filter(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(GENET_CSV), "--latency-col", "latency_ms_per_image", "--where", "gpu=V100"])
    assert_one_line_error(code, capsys, "appears 7 times", "batch", "--where")


def test_neither_table_nor_latency_column_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(main([str(GENET_CSV)]), capsys, "--table", "--latency-col")
