"""Specification of the accuracy metrics of a predictor, on hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from tables.metrics import accuracy_metrics, format_metrics


def test_percentage_errors_on_hand_computed_numbers():
    m = accuracy_metrics([110.0, 95.0, 100.0, 80.0], [100.0, 100.0, 100.0, 100.0])
    assert m["n"] == 4
    assert m["mape_pct"] == pytest.approx(8.75)  # (10 + 5 + 0 + 20) / 4
    assert m["max_ape_pct"] == pytest.approx(20.0)
    assert m["rmspe_pct"] == pytest.approx(100 * math.sqrt((0.01 + 0.0025 + 0.04) / 4))
    assert m["within_5_pct"] == pytest.approx(50.0)  # 5% exactly counts as within
    assert m["within_10_pct"] == pytest.approx(75.0)


def test_errors_are_relative_to_the_measurement():
    m = accuracy_metrics([2.0], [1.0])
    assert m["mape_pct"] == pytest.approx(100.0)


def test_rank_correlations_on_a_known_ranking():
    # one swapped pair out of six: tau = (5 - 1) / 6; rho = 1 - 6 * 2 / (4 * 15)
    m = accuracy_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert m["kendall_tau"] == pytest.approx(2 / 3)
    assert m["spearman_rho"] == pytest.approx(0.8)


def test_a_perfect_prediction():
    m = accuracy_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert m["mape_pct"] == 0.0 and m["within_5_pct"] == 100.0
    assert m["kendall_tau"] == pytest.approx(1.0) and m["spearman_rho"] == pytest.approx(1.0)


def test_correlation_of_a_single_network_is_nan():
    m = accuracy_metrics([1.0], [1.0])
    assert math.isnan(m["kendall_tau"]) and math.isnan(m["spearman_rho"])


@pytest.mark.parametrize(
    ("predicted", "measured", "message"),
    [
        ([1.0, 2.0], [1.0], "same length"),
        ([], [], "no latencies"),
        ([1.0], [0.0], "must be positive"),
        ([float("nan")], [1.0], "NaN"),
    ],
)
def test_bad_inputs_are_refused(predicted, measured, message):
    with pytest.raises(ValueError, match=message):
        accuracy_metrics(predicted, measured)


def test_format_metrics_is_one_line():
    line = format_metrics(accuracy_metrics([1.0, 2.0], [1.0, 2.1]))
    assert line.startswith("n=2 MAPE") and "\n" not in line
