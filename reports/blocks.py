"""Where block latency comes from: latency against width per block type, and per-stage breakdowns.

Two figures from one latency table:

* default: latency against output width (``cout``) for each block type at one
  resolution, kernel, stride and ratio, as in GENet's Figure 3 (XX vs BL vs DW).
  Without flags the most populated slice of the table is chosen (most block
  types, then most points) and printed, so it can be pinned with ``--res``,
  ``--kernel``, ``--stride``, ``--ratio``, ``--act`` and ``--se``. Where a width
  was measured with several input widths, the key with ``cin == cout`` (or the
  nearest ``cin``) is shown.
* ``--arch NAME_OR_ENCODING`` (repeatable): one stacked bar per architecture,
  its predicted latency split by stage. A stage is the predictor's ``stage``
  column when it has one, else a run of consecutive blocks of one type and width.

Examples::

    python -m reports.blocks genet_v100_fp16_b64.parquet --out docs/figures
    python -m reports.blocks t.parquet --blocks xx,bl,dw --res 56 --kernel 3 --ratio bl=0.25 --ratio dw=3
    python -m reports.blocks gpunet_v100_fp16_b1.parquet --arch GPUNet-0 --arch GPUNet-1 --arch GPUNet-2

Writes ``OUT/NAME.png`` and ``OUT/NAME.svg`` (NAME: ``blocks_width`` or ``blocks_arch``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reports import style
from reports.inputs import (
    ReportError,
    add_out_argument,
    add_unit_arguments,
    load_latency_table,
    ok_rows,
    predict_architecture,
    read_latency_table,
    resolve_architecture,
    table_batch,
    table_label,
)
from tables.cli import CliParser, run_cli
from tables.key import block_names

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Block types of GENet's Figure 3, compared by default when the table has them.
GENET_BLOCKS: tuple[str, ...] = ("xx", "bl", "dw")

#: Block types that end a network (their width is a class count, not a feature map's).
CLASSIFIERS: tuple[str, ...] = block_names(classifier=True)

#: Columns that define a slice (all fixed in one width figure).
SLICE_COLUMNS: tuple[str, ...] = ("h", "w", "k", "s", "act", "se")


@dataclass(frozen=True)
class Slice:
    """A fixed resolution, kernel, stride, activation and SE flag, and a ratio per block type."""

    h: int
    w: int
    k: int
    s: int
    act: str
    se: bool
    ratios: dict[str, float]

    def describe(self) -> str:
        ratios = ", ".join(f"{b} e={e:g}" for b, e in self.ratios.items())
        se = " SE" if self.se else ""
        return f"input {self.h}x{self.w}, kernel {self.k}, stride {self.s}, {self.act}{se}; {ratios}"


def parse_ratios(items: Sequence[str]) -> tuple[float | None, dict[str, float]]:
    """``--ratio`` values: a bare number for every block type, or ``BLOCK=E`` for one."""
    common: float | None = None
    per_block: dict[str, float] = {}
    for item in items:
        block, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise ReportError(f"--ratio {item!r}: expected a number or BLOCK=NUMBER, e.g. bl=0.25") from None
        if sep:
            per_block[block.strip()] = number
        else:
            common = number
    return common, per_block


def _parse_res(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    h, _, w = text.lower().partition("x")
    try:
        return int(h), int(w or h)
    except ValueError:
        raise ReportError(f"--res {text!r}: expected a size such as 56 or 56x56") from None


def choose_slice(
    rows: pd.DataFrame,
    blocks: Sequence[str],
    *,
    res: tuple[int, int] | None = None,
    kernel: int | None = None,
    stride: int | None = None,
    act: str | None = None,
    se: bool | None = None,
    ratio: float | None = None,
    block_ratios: dict[str, float] | None = None,
) -> Slice:
    """The slice to draw: fixed fields as given, the rest the most populated choice.

    "Most populated" ranks candidate slices by the number of block types with
    at least two widths, then by the number of (block, width) points, then by
    the smallest field values (so the choice is deterministic). Raises
    ``ReportError`` when nothing matches.
    """
    block_ratios = dict(block_ratios or {})
    df = rows.loc[rows["block"].isin(list(blocks))]
    conditions = {
        "h": res[0] if res else None,
        "w": res[1] if res else None,
        "k": kernel,
        "s": stride,
        "act": act,
        "se": se,
    }
    for col, value in conditions.items():
        if value is not None:
            df = df.loc[df[col] == value]
    if ratio is not None:
        df = df.loc[np.isclose(df["e"], ratio)]
    for block, e in block_ratios.items():
        df = df.loc[(df["block"] != block) | np.isclose(df["e"], e)]
    if df.empty:
        given = ", ".join(f"{k}={v}" for k, v in conditions.items() if v is not None)
        raise ReportError(
            f"no measured {'/'.join(blocks)} keys in the table"
            + (f" with {given}" if given else "")
            + (f" and ratio {ratio:g}" if ratio is not None else "")
        )
    best: tuple[tuple[Any, ...], Slice] | None = None
    for values, part in df.groupby(list(SLICE_COLUMNS), sort=True):
        ratios: dict[str, float] = {}
        n_types = n_points = 0
        for block, bpart in part.groupby("block", sort=True):
            widths = bpart.groupby("e")["cout"].nunique()
            e = float(widths.sort_values(ascending=False, kind="stable").index[0])
            ratios[str(block)] = e
            n_points += int(widths.loc[e])
            n_types += int(widths.loc[e] >= 2)
        h, w, k, s, a, flag = values
        score = (-n_types, -n_points, h, w, k, s, str(a), bool(flag))
        if best is None or score < best[0]:
            ordered = {b: ratios[b] for b in blocks if b in ratios}
            best = (score, Slice(int(h), int(w), int(k), int(s), str(a), bool(flag), ordered))
    assert best is not None  # df is not empty, so groupby yields at least one slice
    return best[1]


def slice_points(rows: pd.DataFrame, sl: Slice) -> dict[str, pd.DataFrame]:
    """Per block type, the rows of the slice sorted by ``cout``; one row per width (``cin`` nearest ``cout``)."""
    base = rows.loc[
        (rows["h"] == sl.h)
        & (rows["w"] == sl.w)
        & (rows["k"] == sl.k)
        & (rows["s"] == sl.s)
        & (rows["act"] == sl.act)
        & (rows["se"] == sl.se)
    ]
    out = {}
    for block, e in sl.ratios.items():
        part = base.loc[(base["block"] == block) & np.isclose(base["e"], e)].copy()
        part["_gap"] = (part["cin"] - part["cout"]).abs()
        part = part.sort_values(["cout", "_gap", "cin"]).drop_duplicates("cout", keep="first")
        out[block] = part.drop(columns="_gap").reset_index(drop=True)
    return out


def draw_width(points: dict[str, pd.DataFrame], sl: Slice, scale: float, unit_per_image: bool, label: str) -> Figure:
    """Latency against output width, one line per block type."""
    fig, (ax,) = style.new_figure(width=7.2, height=4.8)
    for block, part in points.items():
        colour = style.block_color(block)
        y = part["latency_ms"].to_numpy(float) * scale
        err = part["std_ms"].to_numpy(float) * scale if "std_ms" in part else None
        ax.errorbar(
            part["cout"],
            y,
            yerr=err,
            color=colour,
            marker="o",
            ms=5,
            capsize=2.5,
            elinewidth=0.8,
            label=f"{style.block_label(block)} (ratio {sl.ratios[block]:g})",
        )
    ax.set_xlabel("output channels (cout)")
    ax.set_ylabel(style.latency_label(unit_per_image, "block latency"))
    ax.set_ylim(bottom=0)
    ax.set_title(f"Block latency vs width, input {sl.h}x{sl.w}, kernel {sl.k}, stride {sl.s}")
    ax.legend(loc="upper left")
    se = ", SE" if sl.se else ""
    style.footnote(fig, f"{label}; activation {sl.act}{se}; cin = cout where measured; error bars: ±1 std of the runs")
    return fig


# ----- per-stage breakdown ------------------------------------------------------------


def stage_breakdown(breakdown: pd.DataFrame) -> pd.DataFrame:
    """Latency per stage, in network order: columns stage, blocks (text), latency_ms.

    Uses the predictor's ``stage`` column; without one, a stage is a run of
    consecutive blocks with the same type and output width.
    """
    bd = breakdown.reset_index(drop=True)
    if "stage" in bd.columns:
        stage = bd["stage"].astype(str)
    else:
        cout = bd["key"].astype(str).str.extract(r"_o(\d+)_", expand=False)
        change = (bd["block"] != bd["block"].shift()) | (cout != cout.shift())
        stage = change.cumsum().sub(1).astype(str)
    bd = bd.assign(_stage=stage.to_numpy())
    rows = []
    for name, part in bd.groupby("_stage", sort=False):
        counts = part["block"].value_counts(sort=False)
        blocks = ", ".join(f"{style.block_label(b)}×{n}" if n > 1 else style.block_label(b) for b, n in counts.items())
        rows.append({"stage": str(name), "blocks": blocks, "latency_ms": float(part["latency_ms"].sum())})
    return pd.DataFrame(rows)


def draw_arch(results: list[tuple[str, pd.DataFrame, float]], unit_per_image: bool, label: str) -> Figure:
    """One horizontal stacked bar per architecture; segments are stages."""
    fig, (ax,) = style.new_figure(width=9.0, height=1.2 + 0.75 * len(results))
    from matplotlib import colormaps  # importable: new_figure imported matplotlib
    from matplotlib.patches import Rectangle

    n_stages = max(len(stages) for _, stages, _ in results)
    cmap = colormaps["viridis"]
    colours = [cmap(0.08 + 0.84 * i / max(1, n_stages - 1)) for i in range(n_stages)]
    names = [name if len(name) <= 28 else name[:26] + "…" for name, _, _ in results]
    widest = max(float(stages["latency_ms"].sum()) for _, stages, _ in results)
    for row, (_, stages, total) in enumerate(results):
        left = 0.0
        for i, st in stages.reset_index(drop=True).iterrows():
            width = float(st["latency_ms"])
            ax.barh(row, width, left=left, color=colours[i], edgecolor="white", lw=0.8, height=0.62)
            if width > 0.045 * widest:
                dark = i < n_stages * 0.6
                ax.text(
                    left + width / 2,
                    row,
                    str(st["stage"]),
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="white" if dark else "black",
                )
            left += width
        ax.text(left + 0.01 * widest, row, f"{_fmt_ms(total)} ms predicted", va="center", fontsize=8.5)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, widest * 1.22)
    ax.set_xlabel(style.latency_label(unit_per_image, "latency per stage (sum of block entries)"))
    ax.set_title("Where the predicted latency goes, stage by stage")
    ax.grid(axis="y", visible=False)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in colours]
    ax.legend(
        handles,
        [f"stage {s}" for s in _stage_names(results, n_stages)],
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        fontsize=8,
    )
    note = "numbers on segments: stage; total: the predictor's latency (calibrated where the table has a calibration)"
    fig.tight_layout()  # keeps the axis label inside the figure, above the footnote
    style.footnote(fig, f"{label}; {note}")
    return fig


def _fmt_ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _stage_names(results: list[tuple[str, pd.DataFrame, float]], n: int) -> list[str]:
    longest = max((stages for _, stages, _ in results), key=len)
    return [str(s) for s in longest["stage"].tolist()[:n]]


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m reports.blocks", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1]
    )
    p.add_argument("table", type=Path, help="latency table (Parquet)")
    p.add_argument(
        "--arch",
        action="append",
        default=[],
        metavar="NAME_OR_ENCODING",
        help="draw the per-stage breakdown of this architecture instead (repeatable)",
    )
    sl = p.add_argument_group("width figure: slice (default: the most populated)")
    sl.add_argument("--blocks", metavar="B[,B]", help="block types to compare (default: xx,bl,dw if present, else all)")
    sl.add_argument("--res", metavar="H[xW]", help="input resolution, e.g. 56 or 56x56")
    sl.add_argument("--kernel", type=int, metavar="K", help="kernel size")
    sl.add_argument("--stride", type=int, choices=(1, 2), help="stride")
    sl.add_argument(
        "--ratio",
        action="append",
        default=[],
        metavar="E|BLOCK=E",
        help="ratio for every block type, or for one (repeatable), e.g. --ratio bl=0.25",
    )
    sl.add_argument("--act", help="activation (relu, swish, relu6)")
    sl.add_argument("--se", type=int, choices=(0, 1), help="SE off (0) or on (1)")
    add_unit_arguments(p, default_per_image=False)
    p.add_argument("--name", help="file name stem (default: blocks_width or blocks_arch)")
    add_out_argument(p)
    return p


def _run(args: argparse.Namespace) -> int:
    style.pyplot()  # without matplotlib, refuse before reading anything
    df, meta = read_latency_table(args.table)
    label = table_label(meta, args.table.stem)
    scale = 1.0 / table_batch(meta, args.table) if args.per_image else 1.0
    if args.arch:
        table = load_latency_table(args.table)
        results = []
        for text in args.arch:
            arch = resolve_architecture(text)
            pred = predict_architecture(table, arch, text)
            stages = stage_breakdown(pred.breakdown)
            stages["latency_ms"] *= scale
            total = float(pred.ms_per_image if args.per_image else pred.ms_per_batch)
            results.append((getattr(arch, "name", text) or text, stages, total))
            print(f"{text}: {total:.4g} {'ms per image' if args.per_image else 'ms per batch'}")
            for _, st in stages.iterrows():
                print(f"  stage {st['stage']}: {st['latency_ms']:.4g} ({st['blocks']})")
        fig = draw_arch(results, args.per_image, label)
        stem = args.name or "blocks_arch"
    else:
        rows = ok_rows(df)
        present = [b for b in dict.fromkeys(rows["block"].astype(str))]
        if args.blocks:
            blocks = [b.strip() for b in args.blocks.split(",") if b.strip()]
            unknown = [b for b in blocks if b not in present]
            if unknown:
                raise ReportError(
                    f"the table has no measured {unknown[0]!r} keys (block types present: {', '.join(present)})"
                )
        else:
            blocks = [b for b in GENET_BLOCKS if b in present] or [b for b in present if b not in CLASSIFIERS]
            blocks = blocks or present
        common, per_block = parse_ratios(args.ratio)
        sl = choose_slice(
            rows,
            blocks,
            res=_parse_res(args.res),
            kernel=args.kernel,
            stride=args.stride,
            act=args.act,
            se=None if args.se is None else bool(args.se),
            ratio=common,
            block_ratios=per_block,
        )
        print(f"slice: {sl.describe()}")
        fig = draw_width(slice_points(rows, sl), sl, scale, args.per_image, label)
        stem = args.name or "blocks_width"
    for path in style.save_figure(fig, args.out, stem):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 1 failed, 2 bad input; see ``tables.cli``)."""
    return run_cli(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
