"""Compare two latency tables key by key: two devices, two engines, or fp16 against int8.

For every key measured in both tables the ratio B / A of their latencies is
drawn as a distribution (histogram) and by block type (box plot). The keys
where the tables disagree most, that is whose ratio is farthest (by factor)
from the median ratio, are printed and written to a CSV: they are where one
table is unusually fast or slow compared with the other (a fusion that one
engine makes and the other does not, an int8 kernel that falls back to fp16, a
noisy measurement).

Example::

    python -m reports.compare v100_tensorrt_fp16_b64.parquet v100_tensorrt_int8_b64.parquet --out docs/figures

Writes ``OUT/NAME.png``, ``OUT/NAME.svg`` and ``OUT/NAME_disagree.csv`` (NAME
defaults to ``compare``). Tables of different batch sizes are compared per
image (``--per-image``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from reports import style
from reports.inputs import (
    ReportError,
    add_out_argument,
    add_unit_arguments,
    ok_rows,
    read_latency_table,
    table_batch,
    table_label,
)
from tables.cli import CliParser, run_cli

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def key_ratios(a: pd.DataFrame, b: pd.DataFrame, scale_a: float = 1.0, scale_b: float = 1.0) -> pd.DataFrame:
    """Keys measured (status ok) in both tables with their latencies and ratio B / A.

    Columns: key, block, a_ms, b_ms, ratio, deviation (factor by which the ratio
    is off the median ratio, >= 1), sorted by deviation, largest first. Latencies
    are multiplied by ``scale_a`` / ``scale_b`` (1 / batch for ms per image).
    Raises ``ReportError`` when the tables share no measured key.
    """
    left = ok_rows(a)[["key", "block", "latency_ms"]].rename(columns={"latency_ms": "a_ms"})
    right = ok_rows(b)[["key", "latency_ms"]].rename(columns={"latency_ms": "b_ms"})
    both = left.merge(right, on="key", how="inner")
    both = both.loc[(both["a_ms"] > 0) & (both["b_ms"] > 0)].copy()
    if both.empty:
        raise ReportError(
            f"the tables have no measured keys in common (A: {len(ok_rows(a))} keys, B: {len(ok_rows(b))} keys); "
            "compare tables built for the same networks or search space"
        )
    both["a_ms"] = both["a_ms"].astype(float) * scale_a
    both["b_ms"] = both["b_ms"].astype(float) * scale_b
    both["ratio"] = both["b_ms"] / both["a_ms"]
    log_ratio = np.log(both["ratio"].to_numpy(float))
    both["deviation"] = np.exp(np.abs(log_ratio - np.median(log_ratio)))
    return both.sort_values(["deviation", "key"], ascending=[False, True]).reset_index(drop=True)


def draw(ratios: pd.DataFrame, label_a: str, label_b: str) -> Figure:
    """Histogram of the ratios and a box plot per block type."""
    r = ratios["ratio"].to_numpy(float)
    log = r.max() / r.min() > 3
    fig, (ax_h, ax_b) = style.new_figure(ncols=2, width=6.0, height=4.6)
    bins = np.geomspace(r.min() / 1.02, r.max() * 1.02, 31) if log else np.linspace(r.min() * 0.98, r.max() * 1.02, 31)
    ax_h.hist(r, bins=bins, color=style.SERIES_COLORS[0], alpha=0.8, edgecolor="white", lw=0.5)
    median = float(np.median(r))
    ax_h.axvline(1.0, color="#444444", lw=1.0, ls="--", label="equal latency (ratio 1)")
    ax_h.axvline(median, color=style.SERIES_COLORS[1], lw=1.6, label=f"median ratio {median:.3g}")
    ax_h.set_xlabel("latency ratio B / A (per key, no unit)")
    ax_h.set_ylabel("keys (count)")
    ax_h.set_title(f"Per-key ratio, {len(r)} common keys")
    ax_h.legend(loc="upper right")

    order = ratios.groupby("block")["ratio"].median().sort_values().index.tolist()
    data = [ratios.loc[ratios["block"] == b, "ratio"].to_numpy(float) for b in order]
    box = ax_b.boxplot(
        data,
        orientation="horizontal",
        patch_artist=True,
        widths=0.6,
        medianprops={"color": "black"},
        flierprops={"marker": "o", "markersize": 4, "markerfacecolor": "#555555", "markeredgecolor": "none"},
    )
    for patch, block in zip(box["boxes"], order):
        patch.set_facecolor(style.block_color(block))
        patch.set_alpha(0.75)
    ax_b.set_yticks(range(1, len(order) + 1), [f"{style.block_label(b)} (n={len(d)})" for b, d in zip(order, data)])
    ax_b.axvline(1.0, color="#444444", lw=1.0, ls="--")
    ax_b.set_xlabel("latency ratio B / A (no unit)")
    ax_b.set_title("Ratio by block type")
    ax_b.grid(axis="y", visible=False)
    for ax in (ax_h, ax_b):
        if log:
            ax.set_xscale("log")
            style.plain_log_ticks(ax.xaxis)
    fig.suptitle(f"B / A  with  A = {label_a},  B = {label_b}", fontsize=11, fontweight="bold")
    fig.tight_layout()
    style.footnote(fig, "ratio < 1: B is faster; boxes: quartiles, whiskers: 1.5 IQR, dots: outliers")
    return fig


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m reports.compare", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1]
    )
    p.add_argument("a", type=Path, metavar="A.parquet", help="reference table (denominator of the ratio)")
    p.add_argument("b", type=Path, metavar="B.parquet", help="table compared with it (numerator)")
    add_unit_arguments(p, default_per_image=False)
    p.add_argument("--top", type=int, default=15, metavar="N", help="keys listed where they disagree most (15)")
    p.add_argument("--name", default="compare", help="file name stem of the outputs (default: compare)")
    add_out_argument(p)
    return p


def _run(args: argparse.Namespace) -> int:
    style.pyplot()  # without matplotlib, refuse before reading anything
    if args.top < 0:
        raise ReportError(f"--top {args.top}: expected zero or more keys")
    df_a, meta_a = read_latency_table(args.a)
    df_b, meta_b = read_latency_table(args.b)
    batch_a, batch_b = table_batch(meta_a, args.a), table_batch(meta_b, args.b)
    if batch_a != batch_b and not args.per_image:
        raise ReportError(
            f"the tables have different batch sizes ({batch_a} and {batch_b}): compare them with --per-image"
        )
    scale_a, scale_b = (1.0 / batch_a, 1.0 / batch_b) if args.per_image else (1.0, 1.0)
    ratios = key_ratios(df_a, df_b, scale_a, scale_b)
    label_a, label_b = table_label(meta_a, args.a.stem), table_label(meta_b, args.b.stem)
    if label_a == label_b:
        label_a, label_b = args.a.stem, args.b.stem
    fig = draw(ratios, label_a, label_b)
    paths = style.save_figure(fig, args.out, args.name)
    top = ratios.head(args.top)
    csv_path = Path(args.out) / f"{args.name}_disagree.csv"
    top.to_csv(csv_path, index=False, float_format="%.6g")
    unit = "ms per image" if args.per_image else "ms per batch"
    only_a = len(set(ok_rows(df_a)["key"]) - set(ratios["key"]))
    only_b = len(set(ok_rows(df_b)["key"]) - set(ratios["key"]))
    print(f"A = {label_a}\nB = {label_b}")
    median = ratios["ratio"].median()
    print(f"{len(ratios)} common keys, {only_a} only in A, {only_b} only in B; median ratio B/A {median:.4g}")
    print(f"keys where they disagree most (latencies in {unit}):")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(top[["key", "a_ms", "b_ms", "ratio", "deviation"]].to_string(index=False, float_format="%.4g"))
    for path in [*paths, csv_path]:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 1 failed, 2 bad input; see ``tables.cli``)."""
    return run_cli(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
