"""The roofline per key: the arithmetic, the peaks (published, measured, recorded), and python -m reports.roofline."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_reports_common import (
    assert_figure_files,
    assert_one_line_error,
    timing,
    width_keys,
    write_latency_table,
)
from test_reports_without_matplotlib import NO_MATPLOTLIB, one_error_line

from kernels_bench.peaks import measure_cpu_peaks, published_peaks, table_peaks
from profiler.devices import DEVICE_PROFILES, profile_peaks
from reports.roofline import main
from tables.cost import key_cost
from tables.key import BlockKey
from tables.roofline import (
    PRECISIONS,
    PUBLISHED_PEAKS,
    ROOFLINE_COLUMNS,
    bound_summary,
    check_peaks,
    override_peaks,
    peak_figures,
    peaks_for,
    ridge_point,
    roofline,
)
from tables.schema import build_metadata, result_row, write_table
from tables.table import LatencyTable

REPO = Path(__file__).resolve().parents[1]

#: A made-up device: 100 TFLOP/s fp16, 1 TB/s, so the ridge is at 100 FLOP/byte.
PEAKS = {"flops_per_s": {"fp16": 100e12}, "bytes_per_s": 1e12, "source": "test device"}

KEYS = [
    BlockKey("xx", 32, 28, 28, 32),
    BlockKey("bl", 64, 28, 28, 64, e=0.25),
    BlockKey("dw", 32, 28, 28, 32, e=3),
    BlockKey("irb", 16, 14, 14, 24, k=5, e=6, se=True, act="swish"),
]


def hand_frame() -> pd.DataFrame:
    """Four rows with known FLOPs, bytes and latency, and a failed one."""
    return pd.DataFrame(
        {
            "key": [str(k) for k in KEYS] + [str(BlockKey("xx", 8, 8, 8, 8))],
            "block": ["xx", "bl", "dw", "irb", "xx"],
            # AI 10 (memory), 1000 (compute), 100 (exactly the ridge: compute), 1 (memory)
            "flops": [1e9, 1e12, 1e10, 1e8, 1e9],
            "bytes_moved": [1e8, 1e9, 1e8, 1e8, 1e8],
            "latency_ms": [1.0, 20.0, 0.5, 0.2, float("nan")],
            "status": ["ok", "ok", "ok", "ok", "failed"],
        }
    )


# ----- the arithmetic ----------------------------------------------------------------


def test_achieved_roof_bound_and_share_on_a_hand_built_case() -> None:
    rf = roofline(hand_frame(), 8, "fp16", PEAKS)
    assert list(rf.columns) == list(ROOFLINE_COLUMNS)
    assert len(rf) == 4  # the failed row is left out
    first = rf.iloc[0]
    assert first["arithmetic_intensity"] == pytest.approx(10.0)
    assert first["achieved_flops_per_s"] == pytest.approx(1e12)  # 1e9 FLOP in 1 ms
    assert first["achieved_bytes_per_s"] == pytest.approx(1e11)
    assert first["roof_flops_per_s"] == pytest.approx(1e13)  # 10 FLOP/byte x 1 TB/s, under the 100 TFLOP/s roof
    assert first["bound"] == "memory"
    assert first["share_of_roof"] == pytest.approx(0.1)
    assert first["roof_latency_ms"] == pytest.approx(0.1)  # 1e8 bytes at 1 TB/s
    second = rf.iloc[1]
    assert second["roof_flops_per_s"] == pytest.approx(100e12)
    assert second["bound"] == "compute"
    assert second["achieved_flops_per_s"] == pytest.approx(5e13)
    assert second["share_of_roof"] == pytest.approx(0.5)
    assert second["roof_latency_ms"] == pytest.approx(10.0)  # 1e12 FLOP at 100 TFLOP/s
    assert rf.iloc[2]["bound"] == "compute"  # AI == ridge counts as compute-bound
    assert rf.iloc[3]["bound"] == "memory"
    assert rf.attrs["ridge_point"] == pytest.approx(100.0)
    assert rf.attrs["batch"] == 8 and rf.attrs["precision"] == "fp16"


def test_missing_cost_columns_are_computed_from_the_key() -> None:
    frame = hand_frame().drop(columns=["flops", "bytes_moved"])
    rf = roofline(frame, 4, "fp16", PEAKS)
    for key, row in zip(KEYS, rf.itertuples()):
        cost = key_cost(key, 4, "fp16")
        assert row.flops == cost.flops and row.bytes_moved == cost.bytes_moved
        assert row.arithmetic_intensity == pytest.approx(cost.arithmetic_intensity)


def test_a_partly_filled_cost_column_is_completed_from_the_key() -> None:
    frame = hand_frame()
    frame.loc[1, ["flops", "bytes_moved"]] = np.nan
    rf = roofline(frame, 2, "fp16", PEAKS)
    assert rf.iloc[0]["flops"] == 1e9  # the table's own figure is kept
    assert rf.iloc[1]["flops"] == key_cost(KEYS[1], 2, "fp16").flops


def test_ridge_point_is_peak_flops_over_bandwidth() -> None:
    assert ridge_point(PEAKS, "fp16") == pytest.approx(100.0)
    assert ridge_point(published_peaks("v100"), "fp16") == pytest.approx(125e12 / 900e9)


@pytest.mark.parametrize(
    ("peaks", "precision", "needle"),
    [
        (PEAKS, "int8", "no peak FLOP/s for int8"),
        (None, "fp16", "no device peaks for fp16"),
        ({"flops_per_s": {"fp16": 1e12}, "bytes_per_s": None}, "fp16", "no peak memory bandwidth"),
        (published_peaks("a10g"), "fp16", "no peak FLOP/s for fp16"),
    ],
)
def test_missing_peaks_are_one_line_naming_how_to_give_them(peaks: dict | None, precision: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        ridge_point(peaks, precision)
    message = str(info.value)
    assert "\n" not in message and needle in message
    assert "--peak-tflops" in message and "bytes_per_s" in message


def test_a_frame_needs_batch_and_precision_and_a_measured_key() -> None:
    with pytest.raises(ValueError, match="batch and precision"):
        roofline(hand_frame(), None, "fp16", PEAKS)
    with pytest.raises(ValueError, match="no measured keys"):
        roofline(hand_frame().assign(status="failed"), 1, "fp16", PEAKS)
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        roofline(hand_frame(), 0, "fp16", PEAKS)


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"flops_per_s": {"fp16": -1.0}, "bytes_per_s": 1e12}, "positive"),
        ({"flops_per_s": {"fp64": 1e12}, "bytes_per_s": 1e12}, "unknown precision 'fp64'"),
        ({"bytes_per_s": 1e12}, "flops_per_s must be an object"),
        ({"flops_per_s": {"fp16": 1e12}, "bytes_per_s": float("inf")}, "bytes_per_s"),
    ],
)
def test_malformed_peaks_are_refused_in_one_line(bad: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        check_peaks(bad)


def test_bound_summary_counts_per_block_type_and_over_all() -> None:
    summary = bound_summary(roofline(hand_frame(), 1, "fp16", PEAKS))
    assert summary.loc["all", "keys"] == 4
    assert summary.loc["all", "memory_bound"] == 2 and summary.loc["all", "compute_pct"] == pytest.approx(50.0)
    assert summary.loc["xx", "memory_pct"] == 100.0 and summary.loc["bl", "compute_bound"] == 1
    # memory-bound keys: 1.0 + 0.2 ms of 21.7 ms in all
    assert summary.loc["all", "memory_time_pct"] == pytest.approx(100 * 1.2 / 21.7)


# ----- the peaks -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in DEVICE_PROFILES.values() if p.kind == "gpu"))
def test_every_gpu_profile_has_published_peaks_positive_or_explicitly_none(name: str) -> None:
    peaks = profile_peaks(name)
    assert peaks is not None and peaks == PUBLISHED_PEAKS[name]
    assert set(peaks["flops_per_s"]) == set(PRECISIONS)
    for value in [*peaks["flops_per_s"].values(), peaks["bytes_per_s"]]:
        assert value is None or (math.isfinite(value) and value > 0)
    assert peaks["bytes_per_s"] is not None  # every board's bandwidth is published
    assert peaks["source"].startswith("published")
    fp32, fp16 = peaks["flops_per_s"]["fp32"], peaks["flops_per_s"]["fp16"]
    if fp32 is not None and fp16 is not None:
        assert fp16 > fp32  # tensor cores
    assert check_peaks(peaks) == peaks


def test_the_cpu_profile_publishes_no_peaks_and_copies_do_not_leak() -> None:
    assert profile_peaks("cpu") is None and DEVICE_PROFILES["cpu"].peaks is None
    peaks = profile_peaks("v100")
    peaks["flops_per_s"]["fp16"] = 1.0
    assert profile_peaks("v100")["flops_per_s"]["fp16"] == 125e12
    assert published_peaks("V100") == PUBLISHED_PEAKS["v100"]
    assert published_peaks("p100") is None


def test_measured_cpu_peaks_are_positive_finite_and_record_their_probe() -> None:
    peaks = measure_cpu_peaks(seconds=0.2)
    # the probe stops once its budget is spent (each part runs at least once): a loose sanity bound only
    assert 0 < peaks["seconds"] < 10.0 and peaks["probe"]["matmul_repeats"] >= 1, peaks["probe"]
    flops, bandwidth = peak_figures(peaks, "fp32")
    assert 1e8 < flops < 1e14 and 1e8 < bandwidth < 1e13
    assert peaks["threads"] == 1 and peaks["source"].startswith("measured:")
    assert check_peaks(peaks)["flops_per_s"] == {"fp32": flops}
    json.dumps(peaks)  # fits a table's metadata


def test_measure_cpu_peaks_refuses_what_it_cannot_measure() -> None:
    with pytest.raises(ValueError, match="float32 only"):
        measure_cpu_peaks(0.1, dtype="float16")
    with pytest.raises(ValueError, match="threads"):
        measure_cpu_peaks(0.1, threads=0)
    with pytest.raises(ValueError, match="seconds"):
        measure_cpu_peaks(0.0)


def test_table_peaks_are_published_for_a_gpu_and_none_for_an_unknown_profile() -> None:
    assert table_peaks("h100") == PUBLISHED_PEAKS["h100"]
    assert table_peaks("no-such-device") is None
    measured = table_peaks("cpu", threads=1, seconds=0.1)
    assert measured is not None and measured["source"].startswith("measured:") and measured["threads"] == 1


def test_a_cpus_peaks_are_measured_once_per_process_and_each_build_gets_its_own_copy(monkeypatch) -> None:
    import kernels_bench.peaks as peaks

    calls: list[tuple[float, int]] = []

    def probe(seconds: float = 1.0, threads: int = 1, dtype: str = "float32") -> dict:
        calls.append((seconds, threads))
        return {"flops_per_s": {"fp32": 1e9 * len(calls)}, "bytes_per_s": 1e9, "source": "measured: fake"}

    monkeypatch.setattr(peaks, "measure_cpu_peaks", probe)
    monkeypatch.setattr(peaks, "_MEASURED", {})
    first = table_peaks("cpu", threads=1, seconds=0.5)
    first["source"] = "changed by one table"
    again = table_peaks("cpu", threads=1, seconds=0.5)
    assert calls == [(0.5, 1)] and again["source"] == "measured: fake"  # reused, and a copy
    assert table_peaks("cpu", threads=2, seconds=0.5)["flops_per_s"]["fp32"] == 2e9  # another thread count
    assert table_peaks("cpu", threads=1, seconds=0.5, reuse=False)["flops_per_s"]["fp32"] == 3e9
    assert len(calls) == 3
    assert table_peaks("h100") == PUBLISHED_PEAKS["h100"] and len(calls) == 3


def test_peaks_for_takes_the_metadata_first_then_the_profile() -> None:
    recorded = {"flops_per_s": {"fp16": 1e14}, "bytes_per_s": 5e11, "source": "recorded"}
    md = {"device_profile": "v100", "peaks": recorded}
    assert peaks_for(md)["source"] == "recorded"
    assert peaks_for({"device_profile": "v100"}) == PUBLISHED_PEAKS["v100"]
    assert peaks_for({"device_profile": "cpu"}) is None and peaks_for(None) is None
    assert peaks_for({"device_profile": "cpu"}, "t4") == PUBLISHED_PEAKS["t4"]
    # the recorded entry has no int8 figure: the published one is used for int8
    assert peaks_for(md, precision="int8") == PUBLISHED_PEAKS["v100"]
    assert peaks_for({"device_profile": "cpu", "peaks": recorded}, precision="int8") is None
    with pytest.raises(ValueError, match="table metadata peaks"):
        peaks_for({"peaks": {"bytes_per_s": 1.0}})


def test_override_replaces_one_figure_and_says_where_the_rest_came_from() -> None:
    peaks = override_peaks(PUBLISHED_PEAKS["v100"], "fp16", bytes_per_s=1e12, given_by="me")
    assert peaks["bytes_per_s"] == 1e12 and peaks["flops_per_s"]["fp16"] == 125e12
    assert peaks["source"].startswith("bandwidth given by me; the rest published")
    assert override_peaks(None, "int8", flops_per_s=2e12, bytes_per_s=3e11)["flops_per_s"] == {"int8": 2e12}
    assert override_peaks(None, "fp32") is None


def test_a_latency_table_brings_its_batch_precision_and_peaks(tmp_path: Path) -> None:
    path = write_latency_table(tmp_path / "t.parquet", dict.fromkeys(KEYS, 0.05), device="t4", precision="int8")
    rf = roofline(LatencyTable.load(path))
    assert rf.attrs["batch"] == 8 and rf.attrs["precision"] == "int8"
    assert rf.attrs["ridge_point"] == pytest.approx(130e12 / 320e9)
    assert dict(zip(rf["key"], rf["flops"])) == {str(k): key_cost(k, 8, "int8").flops for k in KEYS}


# ----- python -m reports.roofline ------------------------------------------------------


def write_table_with_peaks(path: Path, peaks: dict, *, device: str = "cpu", precision: str = "fp32") -> Path:
    rows = [result_row(k, timing(ms)) for k, ms in width_keys().items()]
    md = build_metadata(device_profile=device, backend="onnxruntime", precision=precision, batch=1, peaks=peaks)
    return write_table(rows, path, md)


def test_the_report_draws_the_roofline_of_a_gpu_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = write_latency_table(tmp_path / "t.parquet", width_keys(), device="v100", precision="fp16")
    out = tmp_path / "fig"
    assert main([str(table), "--out", str(out), "--label-top", "3"]) == 0
    assert_figure_files(out, "roofline")
    text = capsys.readouterr().out
    assert "memory-bound" in text and "compute-bound" in text and "published: NVIDIA V100" in text
    assert "XX" in text and "all" in text
    rows = pd.read_csv(out / "roofline.csv")
    assert list(rows.columns) == list(ROOFLINE_COLUMNS) and len(rows) == len(width_keys())


def test_the_report_uses_the_peaks_the_build_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    peaks = {"flops_per_s": {"fp32": 5e10}, "bytes_per_s": 1e10, "source": "measured: test probe"}
    table = write_table_with_peaks(tmp_path / "cpu.parquet", peaks)
    assert main([str(table), "--out", str(tmp_path), "--name", "cpu_roof"]) == 0
    assert_figure_files(tmp_path, "cpu_roof")
    text = capsys.readouterr().out
    assert "measured: test probe" in text and "ridge 5 FLOP/byte" in text


def test_flags_replace_the_recorded_peaks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    peaks = {"flops_per_s": {"fp32": 5e10}, "bytes_per_s": 1e10, "source": "measured: test probe"}
    table = write_table_with_peaks(tmp_path / "cpu.parquet", peaks)
    assert main([str(table), "--out", str(tmp_path), "--peak-gbs", "20"]) == 0
    text = capsys.readouterr().out
    assert "20 GB/s" in text and "bandwidth given by the command line" in text and "measured: test probe" in text


def test_a_table_without_peaks_is_one_line_naming_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = write_latency_table(tmp_path / "cpu.parquet", width_keys(), device="cpu", precision="int8")
    code = main([str(table), "--out", str(tmp_path)])
    line = assert_one_line_error(code, capsys, "no int8 peak FLOP/s", "--peak-tflops", "--peak-gbs")
    assert "device profile cpu" in line
    assert not (tmp_path / "roofline.png").exists()


def test_a_profile_without_a_compute_peak_names_only_that_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = write_latency_table(tmp_path / "a10g.parquet", width_keys(), device="a10g", precision="fp16")
    code = main([str(table), "--out", str(tmp_path)])
    line = assert_one_line_error(code, capsys, "--peak-tflops")
    assert "--peak-gbs" not in line
    assert main([str(table), "--out", str(tmp_path), "--peak-tflops", "70"]) == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--peak-tflops", "-1"], "--peak-tflops -1"), (["--label-top", "-2"], "--label-top -2")],
)
def test_bad_flags_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list, needle: str) -> None:
    table = write_latency_table(tmp_path / "t.parquet", width_keys(), device="v100")
    assert_one_line_error(main([str(table), "--out", str(tmp_path), *argv]), capsys, needle)


def test_a_missing_table_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(main([str(tmp_path / "none.parquet")]), capsys, "none.parquet")


def test_help_works(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m reports.roofline" in out and "--peak-tflops" in out and "--out" in out


def test_without_matplotlib_help_works_and_a_run_names_the_extra(tmp_path: Path) -> None:
    table = write_latency_table(tmp_path / "t.parquet", width_keys(), device="v100")
    cases = [["roofline", ["--help"]], ["roofline", [str(table), "--out", str(tmp_path)]]]
    proc = subprocess.run(
        [sys.executable, "-c", NO_MATPLOTLIB, json.dumps(cases)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    help_run, run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert help_run["code"] == 0 and "usage: python -m reports.roofline" in help_run["stdout"]
    assert run["code"] == 2 and "matplotlib" in one_error_line(run)


def test_a_build_records_its_peaks_and_every_row_its_roofline_quantities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from profiler import build

    archs = tmp_path / "archs.json"
    archs.write_text(
        json.dumps({"architectures": [{"name": f"a{i}", "blocks": [str(k)]} for i, k in enumerate(KEYS[:2])]})
    )
    argv = ["--device", "cpu", "--batch", "2", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    from quick import quick_flags

    assert build.main([*argv, *quick_flags(3)]) == 0
    path = tmp_path / "cpu_onnxruntime_fp32_b2.parquet"
    table = LatencyTable.load(path, calibration=False)
    assert table.metadata["peaks"]["source"].startswith("measured:") and table.metadata["peaks"]["threads"] == 1
    frame = table.to_frame().set_index("key")
    for key in KEYS[:2]:
        cost = key_cost(key, 2, "fp32")
        assert frame.loc[str(key), "flops"] == cost.flops and frame.loc[str(key), "bytes_moved"] == cost.bytes_moved
        assert frame.loc[str(key), "arithmetic_intensity"] == pytest.approx(cost.arithmetic_intensity)
    capsys.readouterr()
    assert main([str(path), "--out", str(tmp_path / "fig")]) == 0
    assert "measured:" in capsys.readouterr().out
