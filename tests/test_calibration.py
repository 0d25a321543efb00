"""Specification of calibration: fitting, model choice, JSON storage and application."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tables.calibration import Calibration, fit
from tables.paths import calibration_path


def test_linear_fit_recovers_a_known_slope_and_intercept():
    rng = np.random.default_rng(0)
    sums = rng.uniform(0.5, 5.0, 40)
    cal = fit(sums, 0.8 * sums + 0.3, models=["linear"])
    assert cal.model == "linear"
    assert cal.a == pytest.approx(0.8) and cal.b == pytest.approx(0.3)
    assert cal.accuracy["calibrated"]["mape_pct"] < 1e-6
    # cross-validation applies each fold's calibration as it is applied: faded on the few test networks
    # outside the fold's fit range, exact inside it
    assert cal.accuracy["calibrated_cv"]["mape_pct"] < 0.5
    assert cal.accuracy["uncalibrated"]["mape_pct"] > 5


def test_a_calibration_is_applied_in_full_within_its_fit_range_and_fades_beyond():
    sums = np.linspace(50.0, 800.0, 16)
    cal = fit(sums, 1.0 * sums + 2.0, models=["linear"])
    assert cal.fit_sum_ms == pytest.approx((50.0, 800.0))
    assert cal.apply(100.0) == pytest.approx(102.0)  # inside: the fitted map
    # half the smallest fit network's sum: half the correction; a fifth: a fifth; twice the largest: half
    assert cal.apply(25.0) == pytest.approx(25.0 + 0.5 * 2.0)
    assert cal.apply(10.0) == pytest.approx(10.0 + 0.2 * 2.0)
    assert cal.apply(1600.0) == pytest.approx(1600.0 + 0.5 * 2.0)
    assert cal.apply(10.0, extrapolate=True) == pytest.approx(12.0)  # the map itself, everywhere
    weights = cal.weight(np.array([10.0, 50.0, 400.0, 800.0, 1600.0]))
    assert np.allclose(weights, [0.2, 1.0, 1.0, 1.0, 0.5])
    # arrays and scalars agree, and the range survives the JSON round trip
    assert np.allclose(cal.apply(np.array([10.0, 100.0])), [cal.apply(10.0), cal.apply(100.0)])
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.fit_sum_ms == cal.fit_sum_ms and back.apply(25.0) == pytest.approx(cal.apply(25.0))
    assert "in full for block sums 50-800 ms, fading beyond" in cal.summary()


def test_a_calibration_without_a_fit_range_is_applied_in_full_everywhere():
    # made by hand, or fitted by an older version (no fit_sum_ms in its file)
    cal = Calibration("linear", a=1.0, b=2.0)
    assert cal.fit_sum_ms is None and cal.apply(10.0) == pytest.approx(12.0)
    doc = cal.to_dict()
    doc.pop("fit_sum_ms")
    assert Calibration.from_dict(doc).apply(10.0) == pytest.approx(12.0)


@pytest.mark.parametrize("bad", [(0.0, 10.0), (20.0, 10.0), (1.0, float("nan")), "wide", (1.0,)])
def test_a_malformed_fit_range_is_refused(bad):
    with pytest.raises(ValueError, match="fit_sum_ms"):
        Calibration("linear", a=1.0, b=2.0, fit_sum_ms=bad)


def test_model_choice_prefers_the_raw_sum_when_it_is_already_exact():
    sums = np.linspace(1.0, 4.0, 12)
    assert fit(sums, sums).model == "none"


def test_floor_model_removes_the_per_block_call_overhead():
    rng = np.random.default_rng(1)
    n_blocks = rng.integers(10, 40, 60)
    true_work = rng.uniform(1.0, 6.0, 60)
    floor = 0.02
    sums = true_work + n_blocks * floor  # every block measured alone paid the floor once
    measured = 1.1 * true_work + 0.05
    cal = fit(sums, measured, n_blocks=n_blocks, floor_ms=floor)
    assert cal.model == "floor_linear"
    assert cal.a == pytest.approx(1.1) and cal.b == pytest.approx(0.05)
    assert cal.apply(float(sums[0]), int(n_blocks[0])) == pytest.approx(measured[0])


def test_per_type_scales_are_fitted_non_negative():
    rng = np.random.default_rng(2)
    irb, conv = rng.uniform(1, 5, 50), rng.uniform(0.1, 1, 50)
    measured = 0.7 * irb + 1.2 * conv + 0.1
    cal = fit(irb + conv, measured, type_sums={"irb": irb, "conv": conv})
    assert cal.model == "per_type"
    assert cal.type_scales["irb"] == pytest.approx(0.7, rel=1e-6)
    assert cal.type_scales["conv"] == pytest.approx(1.2, rel=1e-6)
    assert all(v >= 0 for v in cal.type_scales.values())


def test_apply_works_on_arrays():
    cal = Calibration("linear", a=2.0, b=1.0)
    assert cal.apply(np.array([1.0, 2.0])).tolist() == [3.0, 5.0]
    assert cal.apply(1.0) == 3.0


def test_json_round_trip_next_to_the_table(tmp_path):
    cal = fit(np.linspace(1, 3, 10), 1.5 * np.linspace(1, 3, 10), table={"batch": 8, "precision": "fp16"})
    path = cal.save(calibration_path(tmp_path / "cpu_onnxruntime_fp32_b8.parquet"))
    assert path.name == "cpu_onnxruntime_fp32_b8.calibration.json"
    assert json.loads(path.read_text())["model"] == "linear"
    again = Calibration.load(path)
    assert again.a == pytest.approx(cal.a) and again.table == {"batch": 8, "precision": "fp16"}


def test_too_few_networks_for_any_fitted_model_is_refused():
    with pytest.raises(ValueError, match="can be fitted on 2 networks"):
        fit([1.0, 2.0], [1.1, 2.2], models=["linear"])


def test_malformed_calibration_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "x.calibration.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Calibration.load(path)


def test_io_model_recovers_the_boundary_cost_of_blocks_timed_alone():
    rng = np.random.default_rng(3)
    work = rng.uniform(2.0, 20.0, 50)
    io = rng.uniform(0.5, 8.0, 50)  # M elements moved across the blocks' boundaries
    sums = work + 0.3 * io  # each block timed alone also moved its input and output
    measured = 1.05 * work + 0.2
    cal = fit(sums, measured, io_mel=io)
    assert cal.model == "io_linear"
    assert cal.a == pytest.approx(1.05) and cal.b == pytest.approx(0.2)
    assert cal.io_ms_per_mel == pytest.approx(-1.05 * 0.3)
    assert cal.apply(float(sums[0]), io_mel=float(io[0])) == pytest.approx(measured[0])
    assert "ms per M elements" in cal.summary()
    with pytest.raises(ValueError, match="io_mel"):
        cal.apply(float(sums[0]))
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.io_ms_per_mel == cal.io_ms_per_mel and back.model == "io_linear"


def test_io_model_is_only_tried_with_the_io_of_every_network():
    sums = np.linspace(1.0, 5.0, 20)
    assert "io_linear" not in fit(sums, 1.1 * sums).cv_mape_pct
    with pytest.raises(ValueError, match="io_mel"):
        fit(sums, 1.1 * sums, io_mel=np.ones(19))


def test_a_calibration_file_written_before_the_io_model_still_loads():
    old = Calibration("linear", a=2.0, b=1.0).to_dict()
    del old["io_ms_per_mel"]
    assert Calibration.from_dict(old).io_ms_per_mel == 0.0


def test_too_few_networks_never_falls_back_silently():
    cal = fit([1.0, 2.0, 3.0], [0.9, 1.8, 2.7], n_blocks=[3, 5, 7], floor_ms=0.05, io_mel=[0.1, 0.2, 0.3])
    assert cal.model == "none"
    assert cal.not_fitted["linear"] == (
        "needs at least 4 fit networks, 3 given: measure 1 more network end to end (or hold fewer out)"
    )
    assert "measure 3 more networks" in cal.not_fitted["io_linear"]
    assert "per-type" in cal.not_fitted["per_type"]
    lines = cal.explain()
    assert (
        lines[0]
        == "no calibration: only the raw block sum could be fitted on 3 networks, so predictions are the raw sum"
    )
    assert any(line.strip().startswith("not fitted: linear: needs at least 4") for line in lines)
    again = Calibration.from_dict(cal.to_dict())
    assert again.not_fitted == cal.not_fitted


def test_the_explanation_names_the_choice_and_the_errors_it_beat():
    rng = np.random.default_rng(3)
    sums = rng.uniform(1.0, 5.0, 12)
    cal = fit(sums, 0.8 * sums + 0.3, models=["none", "linear"])
    first = cal.explain()[0]
    assert first.startswith("calibration linear chosen by cross-validated MAPE on 12 networks (linear 0.")
    assert f"linear {cal.cv_mape_pct['linear']:.2f}%, none {cal.cv_mape_pct['none']:.2f}%" in first
    assert cal.held_out_mape_pct() == pytest.approx(cal.accuracy["calibrated_cv"]["mape_pct"])
    exact = fit(sums, sums, models=["none", "linear"])
    assert exact.explain()[0].startswith("no calibration: no model beat the raw block sum in cross-validation")


def test_a_calibration_that_leaves_its_domain_is_not_kept_and_says_why():
    # fitted on large networks only, the best cross-validated line has an intercept that turns a small
    # network's prediction negative: it is not kept, and the explanation says so
    rng = np.random.default_rng(0)
    sums = np.geomspace(50.0, 1000.0, 16)
    measured = (1.02 * sums - 13.0) * (1 + 0.002 * rng.standard_normal(16))
    cal = fit(sums, measured, models=["none", "linear"])
    assert cal.model == "none" and "linear" in cal.excluded
    assert cal.cv_mape_pct["linear"] < cal.cv_mape_pct["none"]  # it was better where it was fitted
    text = "\n".join(cal.explain())
    assert "not kept: linear" in text and "extrapolates past its fit networks" in text
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))).excluded == cal.excluded


def test_a_calibration_fitted_over_the_whole_range_is_kept():
    rng = np.random.default_rng(1)
    sums = np.geomspace(5.0, 1000.0, 16)
    measured = (1.05 * sums + 0.3) * (1 + 0.002 * rng.standard_normal(16))
    cal = fit(sums, measured, models=["none", "linear"])
    assert cal.model == "linear" and not cal.excluded


def test_a_model_that_beats_the_raw_sum_only_within_noise_is_not_kept_and_says_why():
    # 8 fit networks whose measurements scatter 6% around their block sums, 3% below them: a line
    # fits the noise a little better in cross-validation, by much less than one standard error, and
    # would be applied to every prediction; the simpler raw sum is kept and the explanation says why
    rng = np.random.default_rng(4)
    sums = np.geomspace(10.0, 400.0, 8)
    measured = 0.97 * sums * (1 + 0.06 * rng.standard_normal(8))
    cal = fit(sums, measured, models=["none", "linear"])
    assert cal.cv_mape_pct["linear"] < cal.cv_mape_pct["none"]
    assert cal.cv_mape_pct["none"] - cal.cv_mape_pct["linear"] < cal.cv_se_pct["linear"]
    assert cal.model == "none" and "linear" in cal.not_better and not cal.excluded
    lines = cal.explain()
    assert lines[0].startswith("no calibration: no model beat the raw block sum by more than one standard error")
    assert any(line.startswith("  not kept: linear: its cross-validated MAPE") for line in lines)
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.not_better == cal.not_better and back.cv_se_pct == pytest.approx(cal.cv_se_pct)


def test_a_model_that_beats_the_raw_sum_by_more_than_the_noise_is_kept():
    rng = np.random.default_rng(4)
    sums = np.geomspace(10.0, 400.0, 8)
    measured = (0.75 * sums + 1.0) * (1 + 0.01 * rng.standard_normal(8))  # the raw sum is a third too high
    cal = fit(sums, measured, models=["none", "linear"])
    assert cal.model == "linear" and not cal.not_better
    assert cal.cv_mape_pct["none"] - cal.cv_mape_pct["linear"] > cal.cv_se_pct["linear"]
