"""Accuracy of predicted against measured latencies: relative errors and rank correlations.

NAS needs the ranking of candidates as much as their values, so the report has
both: percentage errors (MAPE, max APE, RMSPE, share within +-5% and +-10%) and
Kendall tau and Spearman rho between predicted and measured latencies.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: Names of the values returned by :func:`accuracy_metrics`, in report order.
METRIC_NAMES: tuple[str, ...] = (
    "n",
    "mape_pct",
    "max_ape_pct",
    "rmspe_pct",
    "within_5_pct",
    "within_10_pct",
    "kendall_tau",
    "spearman_rho",
)

# absolute slack so that an error of exactly 5% counts as within 5% despite rounding
_EPS_PCT = 1e-9


def _as_vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of latencies; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite latencies; drop those networks first")
    return arr


def _correlation(fn, x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan  # a ranking of one value, or of ties only, has no correlation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = fn(x, y)[0]
    return float(value)


def accuracy_metrics(
    predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Compare predicted with measured latencies (same unit, e.g. ms per batch), network by network.

    Returns a dict with ``n`` (networks compared), ``mape_pct`` (mean absolute
    percentage error, %), ``max_ape_pct`` (largest absolute percentage error, %),
    ``rmspe_pct`` (root mean squared percentage error, %), ``within_5_pct`` and
    ``within_10_pct`` (share of networks whose error is at most 5% / 10%, in %),
    ``kendall_tau`` (tau-b) and ``spearman_rho`` of the two rankings (NaN for
    fewer than two networks or constant values).

    Raises ``ValueError`` for sequences of different lengths, no values, or
    measured latencies that are not positive.
    """
    p = _as_vector(predicted, "predicted")
    m = _as_vector(measured, "measured")
    if p.shape != m.shape:
        raise ValueError(f"predicted and measured must have the same length; got {len(p)} and {len(m)}")
    if len(m) == 0:
        raise ValueError("no latencies to compare: give at least one predicted/measured pair")
    if np.any(m <= 0):
        raise ValueError("measured latencies must be positive; drop networks whose measurement failed")
    rel = (p - m) / m
    ape = np.abs(rel) * 100.0
    return {
        "n": len(m),
        "mape_pct": float(np.mean(ape)),
        "max_ape_pct": float(np.max(ape)),
        "rmspe_pct": float(np.sqrt(np.mean(rel**2)) * 100.0),
        "within_5_pct": float(np.mean(ape <= 5.0 + _EPS_PCT) * 100.0),
        "within_10_pct": float(np.mean(ape <= 10.0 + _EPS_PCT) * 100.0),
        "kendall_tau": _correlation(stats.kendalltau, p, m),
        "spearman_rho": _correlation(stats.spearmanr, p, m),
    }


def format_metrics(metrics: dict[str, float]) -> str:
    """One line for a report, e.g. ``n=40 MAPE 3.1% max 9.8% RMSPE 3.9% <=5% 80% <=10% 100% tau 0.91 rho 0.98``."""
    return (
        f"n={metrics['n']} MAPE {metrics['mape_pct']:.1f}% max {metrics['max_ape_pct']:.1f}% "
        f"RMSPE {metrics['rmspe_pct']:.1f}% <=5% {metrics['within_5_pct']:.0f}% "
        f"<=10% {metrics['within_10_pct']:.0f}% tau {metrics['kendall_tau']:.3f} rho {metrics['spearman_rho']:.3f}"
    )
