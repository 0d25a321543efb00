"""Predicted against measured end-to-end latency, before and after calibration.

Input is the Parquet file written by ``python -m profiler.validate``: one row per
network with its block sum (``sum_ms``), calibrated prediction (``predicted_ms``)
and measured latency (``measured_ms``), all in ms per batch, and its split
("fit" networks calibrate, "holdout" networks test).

The figure has three panels: predicted vs measured before calibration and after,
each with the +-5% and +-10% bands and the held-out metrics (MAPE, RMSPE, share
within +-5%/+-10%, Kendall tau); and the distribution of the errors.

Example::

    python -m reports.validation validation_v100_fp16.parquet --out docs/figures

Writes ``OUT/NAME.png`` and ``OUT/NAME.svg`` (NAME defaults to ``validation``)
and prints the metrics.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reports import style
from reports.inputs import (
    ReportError,
    add_out_argument,
    add_unit_arguments,
    read_validation,
    table_batch,
    table_label,
)
from tables.cli import CliParser, run_cli
from tables.metrics import accuracy_metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BANDS_PCT: tuple[int, ...] = (10, 5)  # drawn widest first

#: Metric lines shown in the figure: (metadata name, label, format).
METRIC_LINES: tuple[tuple[str, str, str], ...] = (
    ("mape_pct", "MAPE", "{:.1f}%"),
    ("max_ape_pct", "max APE", "{:.1f}%"),
    ("rmspe_pct", "RMSPE", "{:.1f}%"),
    ("within_5_pct", "within ±5%", "{:.0f}%"),
    ("within_10_pct", "within ±10%", "{:.0f}%"),
    ("kendall_tau", "Kendall τ", "{:.3f}"),
    ("spearman_rho", "Spearman ρ", "{:.3f}"),
)


def evaluation_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows the metrics describe: held-out networks, or all when there are none."""
    held = df.loc[df["split"].astype(str) == "holdout"]
    if len(held):
        return held, "held-out networks"
    return df, "all networks (no held-out split)"


def metrics_for(df: pd.DataFrame, meta: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"uncalibrated": {...}, "calibrated": {...}}`` from the metadata, else computed on the held-out rows."""
    stored = meta.get("metrics")
    if (
        isinstance(stored, dict)
        and isinstance(stored.get("uncalibrated"), dict)
        and isinstance(stored.get("calibrated"), dict)
    ):
        return {"uncalibrated": stored["uncalibrated"], "calibrated": stored["calibrated"]}
    rows, _ = evaluation_rows(df)
    return {
        "uncalibrated": accuracy_metrics(rows["sum_ms"].to_numpy(float), rows["measured_ms"].to_numpy(float)),
        "calibrated": accuracy_metrics(rows["predicted_ms"].to_numpy(float), rows["measured_ms"].to_numpy(float)),
    }


def metrics_text(metrics: dict[str, Any]) -> str:
    """Metric block printed in a panel, one metric per line."""
    lines = []
    if "n" in metrics:
        lines.append(f"n = {int(metrics['n'])}")
    for name, label, fmt in METRIC_LINES:
        value = metrics.get(name)
        if value is None:
            continue
        try:
            text = fmt.format(float(value))
        except (TypeError, ValueError):
            continue
        lines.append(f"{label} = {text}" if "within" not in name else f"{label}: {text}")
    return "\n".join(lines)


def _bands(ax: Axes, lo: float, hi: float, log: bool) -> None:
    xs = np.geomspace(lo, hi, 200) if log else np.linspace(lo, hi, 200)
    for pct in BANDS_PCT:
        ax.fill_between(
            xs,
            xs * (1 - pct / 100),
            xs * (1 + pct / 100),
            color=style.BAND_COLORS[pct],
            lw=0,
            zorder=1,
            label=f"±{pct}%",
        )
    ax.plot(xs, xs, color="#444444", lw=0.9, ls="--", zorder=2, label="predicted = measured")


def _scatter_panel(
    ax: Axes,
    df: pd.DataFrame,
    col: str,
    scale: float,
    log: bool,
    lims: tuple[float, float],
    title: str,
    text: str,
    unit: str,
) -> None:
    _bands(ax, lims[0], lims[1], log)
    looks = {
        "fit": {"facecolors": "white", "edgecolors": "#777777", "label": "calibration fit"},
        "holdout": {"color": style.SERIES_COLORS[0], "label": "held out"},
    }
    for split, look in looks.items():
        part = df.loc[df["split"].astype(str) == split]
        if len(part):
            ax.scatter(part["measured_ms"] * scale, part[col] * scale, s=22, zorder=3, **look)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        style.plain_log_ticks(ax.xaxis)
        style.plain_log_ticks(ax.yaxis)
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"measured end-to-end latency ({unit})")
    ax.set_ylabel(f"predicted latency ({unit})")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.text(
        0.03,
        0.97,
        text,
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=8.5,
        family="monospace",
        bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": "#BBBBBB", "alpha": 0.9},
        zorder=5,
    )


def _histogram(ax: Axes, rows: pd.DataFrame, which: str) -> None:
    uncal = rows["error_uncal_pct"].to_numpy(float)
    cal = rows["error_pct"].to_numpy(float)
    both = np.concatenate([uncal, cal])
    both = both[np.isfinite(both)]
    lo, hi = min(float(both.min()), -10.0), max(float(both.max()), 10.0)
    bins = np.linspace(lo - 1, hi + 1, max(10, min(40, int(np.sqrt(len(rows)) * 3))))
    ax.hist(uncal, bins=bins, color=style.SERIES_COLORS[1], alpha=0.45, label="before calibration (block sum)")
    ax.hist(cal, bins=bins, histtype="step", lw=1.8, color=style.SERIES_COLORS[0], label="after calibration")
    for pct in (5, 10):
        for sign in (-1, 1):
            ax.axvline(sign * pct, color="#666666", lw=0.8, ls=":" if pct == 10 else "--", zorder=1)
    ax.axvline(0, color="#444444", lw=0.9)
    ax.set_xlabel("prediction error (%) = (predicted − measured) / measured")
    ax.set_ylabel("networks (count)")
    ax.set_title(f"Error distribution, {which}")
    ax.legend(loc="upper right", fontsize=8)


def draw(df: pd.DataFrame, meta: dict[str, Any], per_image: bool, log: bool | None, path_name: str) -> Figure:
    """The three-panel validation figure."""
    scale = 1.0
    if per_image:
        scale = 1.0 / table_batch(meta, path_name)
    unit = "ms per image" if per_image else "ms per batch"
    values = df[["sum_ms", "predicted_ms", "measured_ms"]].to_numpy(float) * scale
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size == 0:
        raise ReportError(f"validation file {path_name!r} has no positive latencies to plot")
    vmin, vmax = float(finite.min()), float(finite.max())
    if log is None:
        log = vmax / vmin > 20
    lims = (vmin / 1.15, vmax * 1.15) if log else (max(0.0, vmin - 0.08 * (vmax - vmin)), vmax + 0.08 * (vmax - vmin))
    if lims[0] == lims[1]:
        lims = (lims[0] * 0.9, lims[1] * 1.1)
    metrics = metrics_for(df, meta)
    rows, which = evaluation_rows(df)
    fig, axes = style.new_figure(ncols=3, width=5.0, height=5.0)
    _scatter_panel(
        axes[0],
        df,
        "sum_ms",
        scale,
        log,
        lims,
        "Before calibration (sum of blocks)",
        metrics_text(metrics["uncalibrated"]),
        unit,
    )
    _scatter_panel(
        axes[1], df, "predicted_ms", scale, log, lims, "After calibration", metrics_text(metrics["calibrated"]), unit
    )
    _histogram(axes[2], rows, which)
    fig.suptitle(f"Predicted vs measured latency: {table_label(meta, path_name)}", fontsize=12, fontweight="bold")
    fig.tight_layout()
    note = f"metrics on {which}; bands: ±5% (dark), ±10% (light)"
    calibration = meta.get("calibration")
    if isinstance(calibration, dict) and calibration:
        note += f"; calibration: {calibration_text(calibration)}; {held_out_text(calibration)}"
    style.footnote(fig, note)
    return fig


def held_out_text(calibration: dict) -> str:
    """The calibration's own held-out error and what could not be fitted, e.g.
    ``its own held-out error: cross-validated MAPE 1.16% on 25 fit networks``."""
    cv = (calibration.get("accuracy") or {}).get("calibrated_cv") or {}
    n = calibration.get("n_fit")
    try:
        text = f"its own held-out error: cross-validated MAPE {float(cv['mape_pct']):.2f}% on {int(n)} fit networks"
    except (KeyError, TypeError, ValueError):
        text = "its own held-out error: not recorded (fitted by an older version)"
    missing = calibration.get("not_fitted") or {}
    if isinstance(missing, dict) and missing:
        text += "; not fitted: " + "; ".join(f"{m} ({why})" for m, why in missing.items())
    return text


def calibration_text(calibration: dict) -> str:
    """The calibration's model and coefficients in words, e.g. ``linear: 0.947 x sum - 0.334 ms``."""
    model = calibration.get("model", "?")
    a, b = calibration.get("a"), calibration.get("b")
    floor = calibration.get("floor_ms")
    scales = calibration.get("type_scales") or {}
    if model in ("linear", "floor_linear") and a is not None and b is not None:
        x = "sum" if model == "linear" else f"(sum - blocks x {floor:.3g} ms floor)"
        return f"{model}: {a:.4g} x {x} {'+' if b >= 0 else '-'} {abs(b):.3g} ms"
    io = calibration.get("io_ms_per_mel")
    if model == "io_linear" and a is not None and b is not None and io is not None:
        return (
            f"{model}: {a:.4g} x sum {'+' if io >= 0 else '-'} {abs(io):.3g} ms x block I/O (M elements) "
            f"{'+' if b >= 0 else '-'} {abs(b):.3g} ms"
        )
    if model == "per_type" and scales:
        parts = ", ".join(f"{t} x{v:.3g}" for t, v in sorted(scales.items()))
        return f"per block type: {parts}, {'+' if (b or 0) >= 0 else '-'} {abs(b or 0):.3g} ms"
    return str(model)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m reports.validation", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1]
    )
    p.add_argument("validation", type=Path, help="validation Parquet file from python -m profiler.validate")
    add_unit_arguments(p, default_per_image=False)
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--log", dest="log", action="store_true", default=None, help="logarithmic axes")
    scale.add_argument("--linear", dest="log", action="store_false", help="linear axes")
    p.add_argument("--name", default="validation", help="file name stem of the outputs (default: validation)")
    add_out_argument(p)
    return p


def _run(args: argparse.Namespace) -> int:
    style.pyplot()  # without matplotlib, refuse before reading anything
    df, meta = read_validation(args.validation)
    fig = draw(df, meta, args.per_image, args.log, str(args.validation))
    metrics = metrics_for(df, meta)
    for path in style.save_figure(fig, args.out, args.name):
        print(path)
    for stage in ("uncalibrated", "calibrated"):
        print(f"{stage}: " + metrics_text(metrics[stage]).replace("\n", ", "))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 1 failed, 2 bad input; see ``tables.cli``)."""
    return run_cli(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
