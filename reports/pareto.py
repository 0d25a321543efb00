"""Accuracy against latency for a set of models, with each series' Pareto front.

Input is a CSV with a model name, its ImageNet top-1 accuracy (%) and either

* an architecture column (a reference-network name, a GPUNet encoding as a JSON
  list or space-separated integers, or a file) whose latency is predicted from
  one or more latency tables (``--table``, repeatable: one series per table), or
* a measured latency column (``--latency-col``), for published numbers such as
  ``profiler/data/genet_seed_latency_ms_per_image.csv``.

Examples::

    python -m reports.pareto profiler/data/genet_seed_latency_ms_per_image.csv \\
        --latency-col latency_ms_per_image --where gpu=V100 --where batch=64 --out docs/figures
    python -m reports.pareto profiler/data/genet_seed_latency_ms_per_image.csv \\
        --latency-col latency_ms_per_image --where gpu=T4 --where batch=64 --series engine,precision
    python -m reports.pareto models.csv --arch-col arch --table v100_fp16.parquet --table a100_fp16.parquet

Writes ``OUT/NAME.png``, ``OUT/NAME.svg`` and ``OUT/NAME.csv`` (every point with
its series, latency, accuracy and whether it is on its series' front).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from reports import style
from reports.inputs import (
    ReportError,
    add_out_argument,
    add_unit_arguments,
    filter_rows,
    load_latency_table,
    parse_assignments,
    predict_architecture,
    read_csv,
    read_table_metadata,
    require_columns,
    resolve_architecture,
    table_label,
)
from tables.cli import CliParser, run_cli

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

NAME_COLUMNS = ("name", "model")
ACCURACY_COLUMNS = ("top1", "top1_pct", "accuracy", "acc")
ARCH_COLUMNS = ("arch", "architecture", "encoding", "network", "config")

#: Above this many points only the front is labelled unless ``--labels all``.
LABEL_ALL_LIMIT = 40


def pareto_front(latency: Sequence[float] | np.ndarray, accuracy: Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean mask of the points on the Pareto front (lower latency, higher accuracy).

    Rule: a point is on the front when no other point is at least as good in
    both latency and accuracy and strictly better in one. Consequences:

    * exact duplicates (same latency and same accuracy) never dominate each
      other, so they are all on the front or all off it;
    * of points with equal latency only those with the highest accuracy can be
      on the front; of points with equal accuracy only those with the lowest
      latency can.

    Raises ``ValueError`` when the lengths differ or a value is not finite.
    Runs in O(n log n).
    """
    lat = np.asarray(latency, dtype=float)
    acc = np.asarray(accuracy, dtype=float)
    if lat.shape != acc.shape or lat.ndim != 1:
        raise ValueError(f"latency and accuracy must be 1-D and of equal length, got {lat.shape} and {acc.shape}")
    bad = ~(np.isfinite(lat) & np.isfinite(acc))
    if bad.any():
        raise ValueError(f"latency and accuracy must be finite numbers; position {int(np.argmax(bad))} is not")
    mask = np.zeros(lat.shape, dtype=bool)
    if lat.size == 0:
        return mask
    order = np.lexsort((-acc, lat))  # latency ascending, then accuracy descending
    best_faster = -np.inf  # best accuracy among points strictly faster than the current group
    i = 0
    while i < order.size:
        j = i
        while j < order.size and lat[order[j]] == lat[order[i]]:
            j += 1
        group = order[i:j]
        top = acc[group[0]]  # the group's highest accuracy (sorted descending)
        if top > best_faster:
            mask[group[acc[group] == top]] = True
        best_faster = max(best_faster, top)
        i = j
    return mask


def front_steps(latency: np.ndarray, accuracy: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Front points sorted by latency (duplicates once), for a ``where="post"`` step line."""
    pts = sorted({(float(x), float(y)) for x, y in zip(latency[mask], accuracy[mask])})
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


# ----- label placement ---------------------------------------------------------

# (dx, dy) in points, horizontal and vertical alignment; nearest first.
_OFFSETS: tuple[tuple[float, float, str, str], ...] = (
    (6, 3, "left", "bottom"),
    (6, -3, "left", "top"),
    (-6, 3, "right", "bottom"),
    (-6, -3, "right", "top"),
    (0, 7, "center", "bottom"),
    (0, -7, "center", "top"),
    (8, 0, "left", "center"),
    (-8, 0, "right", "center"),
)
_RINGS = (1.0, 2.2, 3.4, 4.8)  # distance multipliers; outer rings get a thin leader line


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(
    ax: Axes, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], fontsize: float = 7.5
) -> int:
    """Label points greedily, trying offsets until a label overlaps no marker or label.

    Points are labelled in the order given (put the important ones first). A
    label that fits nowhere goes where it overlaps least. Returns how many
    labels overlap something. Call after the axis limits are final.
    """
    from matplotlib.transforms import Bbox  # importable: the axes exist

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ax_box = ax.get_window_extent(renderer)
    pts = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))
    r = 3.5 * fig.dpi / 72.0
    taken = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in pts]
    text_style = {"textcoords": "offset points", "fontsize": fontsize, "color": "#222222"}
    px_per_pt = fig.dpi / 72.0
    overlapping = 0
    for (x, y), (px, py), text in zip(zip(xs, ys), pts, texts):
        # Measure the text once; candidate boxes are then shifted copies of it.
        probe = ax.annotate(text, (x, y), xytext=(0, 0), ha="left", va="bottom", **text_style)
        size = probe.get_window_extent(renderer)
        probe.remove()
        tw, th = size.width, size.height
        best: tuple[float, float, tuple[float, float, str, str], Bbox] | None = None
        for ring in _RINGS:
            for dx, dy, ha, va in _OFFSETS:
                ax0 = px + dx * ring * px_per_pt - {"left": 0.0, "center": tw / 2, "right": tw}[ha]
                ay0 = py + dy * ring * px_per_pt - {"bottom": 0.0, "center": th / 2, "top": th}[va]
                box = Bbox.from_bounds(ax0, ay0, tw, th)
                outside = box.x0 < ax_box.x0 or box.x1 > ax_box.x1 or box.y0 < ax_box.y0 or box.y1 > ax_box.y1
                cost = sum(_overlap(box, t) for t in taken) + (1e9 if outside else 0.0)
                if best is None or cost < best[0]:
                    best = (cost, ring, (dx, dy, ha, va), box)
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        if best is None:
            continue
        cost, ring, (dx, dy, ha, va), box = best
        leader = {"arrowprops": {"arrowstyle": "-", "color": "#999999", "lw": 0.5}} if ring > 1 else {}
        ax.annotate(text, (x, y), xytext=(dx * ring, dy * ring), ha=ha, va=va, **text_style, **leader)
        overlapping += cost > 0
        taken.append(box)
    return overlapping


# ----- inputs --------------------------------------------------------------------


@dataclass
class Series:
    """One series of the plot: its label and its points."""

    label: str
    names: list[str]
    latency: np.ndarray
    accuracy: np.ndarray


def _pick_column(df: pd.DataFrame, given: str | None, candidates: Sequence[str], what: str, flag: str) -> str:
    if given:
        require_columns(df, [given], "the CSV")
        return given
    for c in candidates:
        if c in df.columns:
            return c
    raise ReportError(f"the CSV has no {what} column ({' or '.join(candidates)}); name it with {flag}")


def _numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce")
    if values.isna().any():
        row = int(np.argmax(values.isna().to_numpy()))
        raise ReportError(f"column {col!r} has a non-numeric or missing value {df[col].iloc[row]!r}")
    return values.to_numpy(dtype=float)


def _latency_unit(col: str, given: str | None) -> str | None:
    if given:
        return given
    lowered = col.lower()
    if lowered.endswith("per_image"):
        return "image"
    if lowered.endswith("per_batch"):
        return "batch"
    return None


def _groups(df: pd.DataFrame, series_cols: list[str]) -> list[tuple[str, pd.DataFrame]]:
    if not series_cols:
        return [("", df)]
    require_columns(df, series_cols, "the CSV")
    out = []
    for values, part in df.groupby(series_cols, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        out.append((" ".join(str(v) for v in values), part))
    return out


def _check_unique(names: pd.Series, label: str, part: pd.DataFrame) -> None:
    counts = names.value_counts()
    if (counts > 1).any():
        name = counts.index[0]
        rows = part.loc[names == name]
        differing = [c for c in part.columns if rows[c].astype(str).nunique() > 1]
        where = f" in series {label!r}" if label else ""
        hint = f" (they differ in {', '.join(differing)})" if differing else ""
        raise ReportError(
            f"model {name!r} appears {counts.iloc[0]} times{where}{hint}: add --where COL=VALUE or --series COL"
        )


def measured_series(
    df: pd.DataFrame,
    name_col: str,
    acc_col: str,
    latency_col: str,
    series_cols: list[str],
    per_image: bool,
    latency_unit: str | None,
    batch_col: str,
) -> list[Series]:
    """Series from a measured latency column, converted to ms per image or per batch."""
    require_columns(df, [latency_col], "the CSV")
    unit = _latency_unit(latency_col, latency_unit)
    want = "image" if per_image else "batch"
    needs_batch = unit != want
    if unit is None:
        if batch_col in df.columns and (pd.to_numeric(df[batch_col], errors="coerce") == 1).all():
            needs_batch = False  # batch 1: ms per image and ms per batch are the same number
        else:
            raise ReportError(
                f"is {latency_col!r} in ms per image or per batch? say --latency-unit image or --latency-unit batch"
            )
    out = []
    for label, part in _groups(df, series_cols):
        _check_unique(part[name_col].astype(str), label, part)
        lat = _numeric(part, latency_col)
        if needs_batch:
            require_columns(part, [batch_col], "the CSV (converting ms per batch and per image)")
            batch = _numeric(part, batch_col)
            lat = lat / batch if want == "image" else lat * batch
        out.append(Series(label, part[name_col].astype(str).tolist(), lat, _numeric(part, acc_col)))
    return out


def predicted_series(
    df: pd.DataFrame,
    name_col: str,
    acc_col: str,
    arch_col: str,
    tables: Sequence[Path],
    series_cols: list[str],
    per_image: bool,
    base_dir: Path,
) -> list[Series]:
    """Series whose latency is predicted from each table for each row's architecture."""
    require_columns(df, [arch_col], "the CSV")
    archs = {}
    for text in df[arch_col].astype(str).unique():
        archs[text] = resolve_architecture(text, base_dir)
    labels = [table_label(read_table_metadata(p), p.stem) for p in tables]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({p.stem})" for lab, p in zip(labels, tables)]
    out = []
    for path, tlabel in zip(tables, labels):
        table = load_latency_table(path)
        cache: dict[str, float] = {}
        for glabel, part in _groups(df, series_cols):
            label = f"{tlabel} {glabel}".strip() if len(tables) > 1 or not glabel else glabel
            _check_unique(part[name_col].astype(str), label, part)
            lat = []
            for name, text in zip(part[name_col].astype(str), part[arch_col].astype(str)):
                if text not in cache:
                    pred = predict_architecture(table, archs[text], name)
                    cache[text] = float(pred.ms_per_image if per_image else pred.ms_per_batch)
                lat.append(cache[text])
            out.append(Series(label, part[name_col].astype(str).tolist(), np.array(lat), _numeric(part, acc_col)))
    return out


# ----- figure ----------------------------------------------------------------------


def draw(
    series: list[Series], *, per_image: bool, log_x: bool, labels: str, title: str, note: str
) -> tuple[Figure, pd.DataFrame]:
    """The figure and a table of every point (series, name, latency_ms, top1, on_front)."""
    fig, (ax,) = style.new_figure(width=9.0, height=6.0)
    rows = []
    label_pts: list[tuple[bool, float, float, str]] = []
    for i, s in enumerate(series):
        st = style.series_style(i)
        mask = pareto_front(s.latency, s.accuracy)
        name = s.label or "models"
        ax.scatter(
            s.latency[~mask],
            s.accuracy[~mask],
            s=28,
            marker=st["marker"],
            facecolors="white",
            edgecolors=st["color"],
            linewidths=1.2,
            zorder=3,
        )
        ax.scatter(
            s.latency[mask],
            s.accuracy[mask],
            s=34,
            marker=st["marker"],
            color=st["color"],
            zorder=4,
            label=name,
        )
        fx, fy = front_steps(s.latency, s.accuracy, mask)
        ax.step(fx, fy, where="post", color=st["color"], alpha=0.7, lw=1.3, zorder=2)
        for n, x, y, m in zip(s.names, s.latency, s.accuracy, mask):
            rows.append({"series": s.label, "name": n, "latency_ms": x, "top1": y, "on_front": bool(m)})
            label_pts.append((bool(m), float(x), float(y), n))
    if log_x:
        ax.set_xscale("log")
        style.plain_log_ticks(ax.xaxis)
    ax.set_xlabel(style.latency_label(per_image))
    ax.set_ylabel("ImageNet top-1 accuracy (%)")
    ax.set_title(title)
    ax.margins(x=0.08, y=0.08)
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    if len(series) > 1 or series[0].label:
        ax.legend(loc="lower right")
    if labels != "none":
        chosen = [p for p in label_pts if labels == "all" or p[0]]
        chosen.sort(key=lambda p: (not p[0], p[1]))  # front first, then by latency
        place_labels(ax, [p[1] for p in chosen], [p[2] for p in chosen], [p[3] for p in chosen])
    if note:
        style.footnote(fig, note)
    return fig, pd.DataFrame(rows)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m reports.pareto", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1]
    )
    p.add_argument("csv", type=Path, help="models: name, top-1 accuracy (%%), architecture or measured latency")
    src = p.add_argument_group("latency source (one of)")
    src.add_argument(
        "--table",
        action="append",
        type=Path,
        default=[],
        metavar="T.parquet",
        help="predict latency from this table (repeatable: one series per table)",
    )
    src.add_argument("--latency-col", metavar="COL", help="use this measured latency column instead of a table")
    cols = p.add_argument_group("columns")
    cols.add_argument("--name-col", metavar="COL", help="model names (default: name or model)")
    cols.add_argument("--acc-col", metavar="COL", help="top-1 accuracy in %% (default: top1 or accuracy)")
    cols.add_argument("--arch-col", metavar="COL", help="architectures (default: arch, architecture, encoding, ...)")
    cols.add_argument("--batch-col", default="batch", metavar="COL", help="batch sizes (default: batch)")
    cols.add_argument(
        "--latency-unit",
        choices=("image", "batch"),
        help="unit of --latency-col: ms per image or per batch (default: from a *_per_image/*_per_batch name)",
    )
    sel = p.add_argument_group("selection")
    sel.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COL=VALUE",
        help="keep rows with COL equal to VALUE (repeatable), e.g. --where gpu=V100 --where batch=64",
    )
    sel.add_argument("--series", default="", metavar="COL[,COL]", help="one series per value of these columns")
    look = p.add_argument_group("figure")
    add_unit_arguments(look, default_per_image=True)
    look.add_argument("--log-x", action="store_true", help="logarithmic latency axis (default: linear)")
    look.add_argument(
        "--labels",
        choices=("auto", "all", "front", "none"),
        default="auto",
        help=f"which points get their name (auto: all up to {LABEL_ALL_LIMIT} points, else the front)",
    )
    look.add_argument("--title", help="figure title")
    look.add_argument("--name", default="pareto", help="file name stem of the outputs (default: pareto)")
    add_out_argument(look)
    return p


def _run(args: argparse.Namespace) -> int:
    style.pyplot()  # without matplotlib, refuse before reading anything
    if bool(args.table) == bool(args.latency_col):
        raise ReportError("give either --table T.parquet (predicted latency) or --latency-col COL (measured)")
    df = read_csv(args.csv)
    name_col = _pick_column(df, args.name_col, NAME_COLUMNS, "model-name", "--name-col")
    acc_col = _pick_column(df, args.acc_col, ACCURACY_COLUMNS, "accuracy", "--acc-col")
    df = filter_rows(df, parse_assignments(args.where, "--where"), "the CSV")
    series_cols = [c.strip() for c in args.series.split(",") if c.strip()]
    if args.latency_col:
        series = measured_series(
            df, name_col, acc_col, args.latency_col, series_cols, args.per_image, args.latency_unit, args.batch_col
        )
        source = f"measured: {args.csv.name}"
    else:
        arch_col = _pick_column(df, args.arch_col, ARCH_COLUMNS, "architecture", "--arch-col")
        series = predicted_series(
            df, name_col, acc_col, arch_col, args.table, series_cols, args.per_image, args.csv.resolve().parent
        )
        source = "predicted from " + ", ".join(p.name for p in args.table)
    where = ", ".join(args.where)
    title = args.title or "Accuracy vs latency" + (f" ({where})" if where else "")
    n = sum(len(s.names) for s in series)
    labels = args.labels if args.labels != "auto" else ("all" if n <= LABEL_ALL_LIMIT else "front")
    note = f"{source}; filled markers and step line: Pareto front (no other model both faster and more accurate)"
    fig, points = draw(series, per_image=args.per_image, log_x=args.log_x, labels=labels, title=title, note=note)
    paths = style.save_figure(fig, args.out, args.name)
    csv_path = Path(args.out) / f"{args.name}.csv"
    points.to_csv(csv_path, index=False)
    for path in [*paths, csv_path]:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 1 failed, 2 bad input; see ``tables.cli``)."""
    return run_cli(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
