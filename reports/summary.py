"""One self-contained HTML page about a latency table.

The page says what the table is (device, engine and versions, precision, batch,
timing settings, how many keys, which failed), how accurate its predictions
are (when a validation file of ``python -m profiler.validate`` is given) and
where the time goes (latency share by block type). Figures are embedded as
base64 PNG, so the page is one file that opens anywhere, offline.

Example::

    python -m reports.summary v100_tensorrt_fp16_b64.parquet --validation validation.parquet --out v100.html
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reports import style, validation
from reports.inputs import (
    ReportError,
    ok_rows,
    read_latency_table,
    read_validation,
    table_label,
)
from tables.cli import CliParser, run_cli
from tables.steadiness import quality_line

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Coefficient of variation above which a key's runs count as noisy (trtexec warns above 2.5%).
NOISY_CV = 0.025

#: Failed keys listed on the page (the rest are counted).
MAX_FAILED_LISTED = 25

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.92em; } img { max-width: 100%; height: auto; } .muted { color: #666; font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        if not value:
            return "<span class='muted'>(none)</span>"
        return "<br>".join(f"<code>{_e(k)}</code> = {_e(_plain(v))}" for k, v in value.items())
    if value is None or value == "":
        return "<span class='muted'>(not recorded)</span>"
    return _e(_plain(value))


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _rows(pairs: Sequence[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_value(v)}</td></tr>" for k, v in pairs) + "</table>"


def _img(b64: str, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{b64}'>"


def block_share(df: pd.DataFrame) -> pd.DataFrame:
    """Per block type over the measured keys: keys, total and median latency (ms per batch), share (%).

    Each key counts once, so the share says where the table's measured time
    lies, not how often networks use a key. Sorted by share, largest first.
    """
    rows = ok_rows(df)
    if rows.empty:
        raise ReportError("the table has no successfully measured keys, so there is no latency to break down")
    lat = rows["latency_ms"].astype(float)
    grouped = rows.assign(latency_ms=lat).groupby("block")["latency_ms"]
    share = pd.DataFrame({"keys": grouped.size(), "total_ms": grouped.sum(), "median_ms": grouped.median()})
    share["share_pct"] = share["total_ms"] / float(lat.sum()) * 100.0
    return share.sort_values("share_pct", ascending=False).reset_index()


def draw_share(share: pd.DataFrame) -> Figure:
    """Horizontal bars of each block type's latency share (%)."""
    fig, (ax,) = style.new_figure(width=6.6, height=0.9 + 0.42 * len(share))
    blocks = share["block"].astype(str).tolist()
    ax.barh(
        range(len(share)),
        share["share_pct"],
        color=[style.block_color(b) for b in blocks],
        height=0.65,
    )
    for i, (pct, n) in enumerate(zip(share["share_pct"], share["keys"])):
        ax.text(pct + 0.8, i, f"{pct:.1f}%  ({n} keys)", va="center", fontsize=8.5)
    ax.set_yticks(range(len(share)), [style.block_label(b) for b in blocks])
    ax.invert_yaxis()
    ax.set_xlim(0, max(100.0, float(share["share_pct"].max()) * 1.25))
    ax.set_xlabel("share of the summed latency of all measured keys (%)")
    ax.set_title("Latency share by block type")
    ax.grid(axis="y", visible=False)
    return fig


def _identity_section(df: pd.DataFrame, meta: dict[str, Any], path: Path) -> str:
    engine = meta.get("engine") if isinstance(meta.get("engine"), Mapping) else {}
    floor = meta.get("floor")
    pairs = [
        ("file", path.name),
        ("device profile", meta.get("device_profile")),
        ("device", meta.get("device")),
        ("engine", f"{engine.get('name', '')} {engine.get('version', '')}".strip() or None),
        ("engine details", {k: v for k, v in engine.items() if k not in ("name", "version")}),
        ("backend", meta.get("backend")),
        ("backend settings", meta.get("backend_settings")),
        ("precision", meta.get("precision")),
        ("batch (images per inference)", meta.get("batch")),
        ("timing settings", meta.get("timing")),
        ("floor (empty graph, ms per batch)", floor.get("latency_ms") if isinstance(floor, Mapping) else floor),
        ("ONNX opset", meta.get("opset")),
        ("keys enumerated from", meta.get("source")),
        ("host", meta.get("host")),
        ("created", meta.get("created_at")),
        ("tool version / schema version", f"{meta.get('tool_version')} / {meta.get('schema_version')}"),
    ]
    status = df["status"].astype(str)
    ok = ok_rows(df)
    cv = pd.to_numeric(ok["cv"], errors="coerce") if "cv" in ok else pd.Series(dtype=float)
    counts = df.groupby("block").size().sort_values(ascending=False)
    pairs += [
        ("keys", f"{len(df)} ({int((status == 'ok').sum())} measured, {int((status == 'failed').sum())} failed)"),
        ("keys per block type", ", ".join(f"{style.block_label(b)}: {n}" for b, n in counts.items())),
        ("machine steadiness", quality_line(meta.get("steadiness"))),
        (
            "run-to-run noise",
            f"median coefficient of variation {np.nanmedian(cv) * 100:.2f}%; "
            f"{int((cv > NOISY_CV).sum())} keys above {NOISY_CV * 100:g}%"
            if cv.notna().any()
            else None,
        ),
    ]
    out = "<h2>What this table is</h2>" + _rows(pairs)
    failed = df.loc[status == "failed"]
    if len(failed):
        out += f"<h3>Failed keys ({len(failed)})</h3><table><tr><th>key</th><th>error</th></tr>"
        for _, row in failed.head(MAX_FAILED_LISTED).iterrows():
            out += f"<tr><td><code>{_e(row['key'])}</code></td><td>{_e(row.get('error') or '')}</td></tr>"
        out += "</table>"
        if len(failed) > MAX_FAILED_LISTED:
            out += f"<p class='muted'>... and {len(failed) - MAX_FAILED_LISTED} more.</p>"
    return out


def _accuracy_section(validation_path: Path | None) -> str:
    out = "<h2>How accurate its predictions are</h2>"
    if validation_path is None:
        return out + (
            "<p>No validation file given. Time whole networks with <code>python -m profiler.validate</code> "
            "and pass its output with <code>--validation</code> to see predicted against measured latency.</p>"
        )
    vdf, vmeta = read_validation(validation_path)
    metrics = validation.metrics_for(vdf, vmeta)
    _, which = validation.evaluation_rows(vdf)
    out += (
        f"<p>{len(vdf)} networks timed end to end ({_e(validation_path.name)}); metrics on {_e(which)}. "
        "Errors are (predicted &minus; measured) / measured.</p>"
    )
    out += "<table><tr><th>metric</th><th>sum of blocks</th><th>calibrated</th></tr>"
    names = [("n", "networks", "{:.0f}"), *list(validation.METRIC_LINES)]
    for name, label, fmt in names:
        cells = []
        for stage in ("uncalibrated", "calibrated"):
            value = metrics[stage].get(name)
            try:
                cells.append(fmt.format(float(value)))
            except (TypeError, ValueError):
                cells.append("&ndash;")
        out += f"<tr><th>{_e(label)}</th>" + "".join(f"<td class='num'>{_e(c)}</td>" for c in cells) + "</tr>"
    out += "</table>"
    calibration = vmeta.get("calibration")
    if isinstance(calibration, Mapping) and calibration:
        out += (
            f"<p>Calibration: {_e(validation.calibration_text(dict(calibration)))}; "
            f"{_e(validation.held_out_text(dict(calibration)))}.</p>"
        )
    fig = validation.draw(vdf, vmeta, per_image=False, log=None, path_name=str(validation_path))
    return out + _img(style.figure_png_base64(fig), "predicted against measured latency")


def _share_section(df: pd.DataFrame) -> str:
    share = block_share(df)
    out = "<h2>Where the time goes</h2>"
    out += (
        "<p>Summed latency of the measured keys by block type; each key counts once (a network's own split is "
        "drawn by <code>python -m reports.blocks TABLE --arch NAME</code>).</p>"
    )
    out += "<table><tr><th>block type</th><th>keys</th><th>total (ms per batch)</th>"
    out += "<th>median per key (ms per batch)</th><th>share</th></tr>"
    for _, r in share.iterrows():
        out += (
            f"<tr><th>{_e(style.block_label(str(r['block'])))}</th><td class='num'>{int(r['keys'])}</td>"
            f"<td class='num'>{r['total_ms']:.4g}</td><td class='num'>{r['median_ms']:.4g}</td>"
            f"<td class='num'>{r['share_pct']:.1f}%</td></tr>"
        )
    out += "</table>"
    return out + _img(style.figure_png_base64(draw_share(share)), "latency share by block type")


def render(table_path: Path, validation_path: Path | None = None) -> str:
    """The whole HTML page as a string."""
    df, meta = read_latency_table(table_path)
    label = table_label(meta, table_path.stem)
    body = (
        f"<h1>Latency table: {_e(label)}</h1>"
        f"<p class='muted'>{_e(table_path.name)}; latencies are trimmed means of the timed runs.</p>"
        + _identity_section(df, meta, table_path)
        + _accuracy_section(validation_path)
        + _share_section(df)
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(label)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m reports.summary", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1]
    )
    p.add_argument("table", type=Path, help="latency table (Parquet)")
    p.add_argument(
        "--validation", type=Path, metavar="V.parquet", help="validation file of python -m profiler.validate"
    )
    p.add_argument("--out", type=Path, default=Path("summary.html"), metavar="PAGE.html", help="output page")
    return p


def _run(args: argparse.Namespace) -> int:
    style.pyplot()  # without matplotlib, refuse before reading anything
    page = render(args.table, args.validation)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page, encoding="utf-8")
    print(args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 1 failed, 2 bad input; see ``tables.cli``)."""
    return run_cli(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
