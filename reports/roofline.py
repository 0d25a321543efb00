"""Every key of a latency table on the device's roofline, coloured by block type.

Each measured key is a point: x its arithmetic intensity (FLOP per byte moved,
from the key: every layer reads its inputs and weights and writes its output
once, no fusion, no cache; ``tables.cost``), y the FLOP/s it achieved (its
FLOPs over the table's latency, ms per batch). The memory slope (peak bandwidth
x intensity) and the compute roof (peak FLOP/s of the table's precision) are
drawn from the device's peaks, and their meeting point, the ridge, is marked:
keys left of it are memory-bound, keys right of it compute-bound. The share of
memory- and compute-bound keys per block type is printed, so GPUNet's
preference for "GPU friendly operators over memory-bound operators" can be read
off any table.

Peaks, in this order: ``--peak-tflops`` / ``--peak-gbs`` (either one replaces
that figure only), the table's metadata ``peaks`` (what the build recorded: a
short measured probe on the CPU), the device profile's published figures
(dense datasheet peaks, ``profiler.devices``). A table without any is refused
in one line naming the flags.

Example::

    python -m reports.roofline tables_out/cpu_onnxruntime_fp32_b1.parquet --out docs/figures
    python -m reports.roofline v100_tensorrt_fp16_b64.parquet --label-top 5
    python -m reports.roofline my_gpu.parquet --peak-tflops 120 --peak-gbs 600

Writes ``OUT/NAME.png``, ``OUT/NAME.svg`` and ``OUT/NAME.csv`` (one row per
key: FLOPs, bytes, intensity, achieved FLOP/s and bytes/s, roof, bound, share
of the roof); NAME defaults to ``roofline``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reports import style
from reports.inputs import ReportError, add_out_argument, ok_rows, read_latency_table, table_batch, table_label
from tables.cli import CliParser, run_cli
from tables.errors import one_line
from tables.roofline import bound_summary, override_peaks, peak_figures, peaks_for, roofline

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the command line's peaks flags are called in a peaks entry's ``source``.
FLAGS = "the command line (--peak-tflops / --peak-gbs)"


def _units(peak_flops: float, precision: str) -> tuple[float, str, str]:
    """Scale and names of the y axis: (divisor, "TFLOP/s", "FLOP") or the op/s names for int8."""
    op = "op" if precision == "int8" else "FLOP"
    if peak_flops >= 1e12:
        return 1e12, f"T{op}/s", op
    return 1e9, f"G{op}/s", op


def resolve_peaks(
    meta: dict[str, Any], precision: str, peak_tflops: float | None, peak_gbs: float | None, path: Path
) -> dict[str, Any]:
    """The peaks the figure is drawn against: flags, then the metadata's ``peaks``, then the published ones.

    Raises :class:`ReportError` (one line, naming the flags) when the precision's FLOP/s or the bandwidth
    is still missing.
    """
    for flag, value in (("--peak-tflops", peak_tflops), ("--peak-gbs", peak_gbs)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ReportError(f"{flag} {value:g}: expected a positive number")
    try:
        base = peaks_for(meta, precision=precision) or peaks_for(meta)
    except ValueError as exc:
        raise ReportError(f"{str(path)!r}: {one_line(exc)}") from None
    peaks = override_peaks(
        base,
        precision,
        flops_per_s=None if peak_tflops is None else peak_tflops * 1e12,
        bytes_per_s=None if peak_gbs is None else peak_gbs * 1e9,
        given_by=FLAGS,
    )
    flops = (peaks or {}).get("flops_per_s", {}).get(precision)
    bandwidth = (peaks or {}).get("bytes_per_s")
    if flops is None or bandwidth is None:
        missing = " and ".join(
            what
            for what, value in ((f"{precision} peak FLOP/s", flops), ("peak memory bandwidth", bandwidth))
            if value is None
        )
        flags = " and ".join(
            flag
            for flag, value in (
                ("--peak-tflops X" + (" (TOPS for int8)" if precision == "int8" else ""), flops),
                ("--peak-gbs Y", bandwidth),
            )
            if value is None
        )
        profile = meta.get("device_profile", "?")
        raise ReportError(
            f"{str(path)!r}: no {missing} for device profile {profile} (neither the table's metadata peaks "
            f"nor published figures give it): pass {flags}"
        )
    assert peaks is not None
    return peaks


def draw(rf: pd.DataFrame, peaks: dict[str, Any], precision: str, label: str, footnote: str, label_top: int) -> Figure:
    """The log-log roofline: the roof, the ridge and one colour per block type."""
    peak_flops, peak_bw = peak_figures(peaks, precision)
    ridge = peak_flops / peak_bw
    scale, unit, op = _units(peak_flops, precision)
    ai = rf["arithmetic_intensity"].to_numpy(float)
    achieved = rf["achieved_flops_per_s"].to_numpy(float)
    lo, hi = min(ai.min(), ridge) / 2.5, max(ai.max(), ridge) * 2.5
    fig, (ax,) = style.new_figure(width=7.6, height=5.2)

    xs = np.geomspace(lo, hi, 256)
    ax.plot(xs, np.minimum(peak_flops, xs * peak_bw) / scale, color="#222222", lw=2.0, zorder=3)
    ax.text(
        lo * 1.15,
        lo * 1.15 * peak_bw / scale * 1.25,
        f"memory: {peak_bw / 1e9:.4g} GB/s",
        fontsize=8.5,
        color="#222222",
        va="bottom",
    )
    ax.text(
        hi / 1.1,
        peak_flops / scale * 1.12,
        f"compute: {peak_flops / scale:.4g} {unit} ({precision})",
        fontsize=8.5,
        ha="right",
    )
    ax.axvline(ridge, color="#777777", lw=0.9, ls=":", zorder=2)
    ax.plot([ridge], [peak_flops / scale], marker="o", ms=8, mfc="white", mec="#222222", mew=1.5, zorder=4)
    ax.annotate(
        f"ridge {ridge:.3g} {op}/byte",
        (ridge, peak_flops / scale),
        xytext=(6, -14),
        textcoords="offset points",
        fontsize=8.5,
        color="#444444",
    )

    order = rf.groupby("block")["latency_ms"].size().sort_values(ascending=False).index
    for block in order:
        part = rf.loc[rf["block"] == block]
        memory_pct = 100.0 * float((part["bound"] == "memory").mean())
        ax.scatter(
            part["arithmetic_intensity"],
            part["achieved_flops_per_s"] / scale,
            s=22,
            color=style.block_color(str(block)),
            alpha=0.8,
            edgecolors="white",
            linewidths=0.4,
            zorder=5,
            label=f"{style.block_label(str(block))} (n={len(part)}, {memory_pct:.0f}% memory-bound)",
        )
    if label_top > 0:
        for _, row in rf.nlargest(label_top, "latency_ms").iterrows():
            ax.annotate(
                str(row["key"]),
                (row["arithmetic_intensity"], row["achieved_flops_per_s"] / scale),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=6.5,
                color="#333333",
                zorder=6,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    bottom = min(float(achieved.min()), lo * peak_bw) / scale / 2.5
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom, peak_flops / scale * 2.5)
    ax.set_xlabel(f"arithmetic intensity ({op}/byte moved, from the key: no fusion, no cache)")
    ax.set_ylabel(f"achieved {unit} (key's {op}s / latency)")
    ax.set_title(f"Roofline: {label}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    style.footnote(fig, footnote)
    return fig


def summary_text(summary: pd.DataFrame) -> str:
    """The per-block-type bound table as printed."""
    view = pd.DataFrame(
        {
            "block": [style.block_label(str(b)) if b != "all" else "all" for b in summary.index],
            "keys": summary["keys"].to_numpy(),
            "memory-bound": [f"{n} ({p:.0f}%)" for n, p in zip(summary["memory_bound"], summary["memory_pct"])],
            "compute-bound": [f"{n} ({p:.0f}%)" for n, p in zip(summary["compute_bound"], summary["compute_pct"])],
            "time in memory-bound": [f"{p:.0f}%" for p in summary["memory_time_pct"]],
            "median share of roof": [f"{s:.3g}" for s in summary["median_share_of_roof"]],
        }
    )
    return view.to_string(index=False)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m reports.roofline", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1]
    )
    p.add_argument("table", type=Path, metavar="T.parquet", help="latency table")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        metavar="X",
        help="peak of the table's precision in TFLOP/s (TOPS for int8); replaces the recorded or published one",
    )
    p.add_argument(
        "--peak-gbs",
        type=float,
        default=None,
        metavar="Y",
        help="peak memory bandwidth in GB/s (1e9 bytes/s); replaces the recorded or published one",
    )
    p.add_argument(
        "--label-top", type=int, default=0, metavar="N", help="label the N slowest keys with their key (default 0)"
    )
    p.add_argument("--name", default="roofline", help="file name stem of the outputs (default: roofline)")
    add_out_argument(p)
    return p


def _run(args: argparse.Namespace) -> int:
    style.pyplot()  # without matplotlib, refuse before reading anything
    if args.label_top < 0:
        raise ReportError(f"--label-top {args.label_top}: expected zero or more keys")
    df, meta = read_latency_table(args.table)
    batch = table_batch(meta, args.table)
    precision = str(meta.get("precision") or "")
    peaks = resolve_peaks(meta, precision, args.peak_tflops, args.peak_gbs, args.table)
    rows = ok_rows(df)
    if rows.empty:
        raise ReportError(f"{str(args.table)!r}: no measured keys (every row failed)")
    try:
        rf = roofline(rows, batch, precision, peaks)
    except ValueError as exc:
        raise ReportError(f"{str(args.table)!r}: {one_line(exc)}") from None
    peak_flops, peak_bw = peak_figures(peaks, precision)
    scale, unit, op = _units(peak_flops, precision)
    ridge = rf.attrs["ridge_point"]
    label = table_label(meta, args.table.stem)
    device = (meta.get("device") or {}).get("name") or meta.get("device_profile", "?")
    footnote = (
        f"{device} (profile {meta.get('device_profile', '?')}), {precision}, batch {batch}; "
        f"latency: the table's ms per batch\npeaks: {peaks.get('source', 'unstated')}"
    )
    fig = draw(rf, peaks, precision, label, footnote, args.label_top)
    paths = style.save_figure(fig, args.out, args.name)
    csv_path = Path(args.out) / f"{args.name}.csv"
    rf.to_csv(csv_path, index=False, float_format="%.6g")
    print(f"{label}: {len(rf)} keys on the roofline")
    print(
        f"peaks: {peak_flops / scale:.4g} {unit} ({precision}), {peak_bw / 1e9:.4g} GB/s, "
        f"ridge {ridge:.3g} {op}/byte; {peaks.get('source', 'unstated')}"
    )
    print(summary_text(bound_summary(rf)))
    if precision == "fp32" and (meta.get("backend_settings") or {}).get("tf32"):
        print("note: built with --tf32, so fp32 convolutions may run on the TF32 tensor cores, above the fp32 roof")
    for path in [*paths, csv_path]:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 1 failed, 2 bad input; see ``tables.cli``)."""
    return run_cli(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
