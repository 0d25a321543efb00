"""One look for every report figure: fonts, colours, markers, axis labels, saving.

matplotlib is imported only when a figure is drawn, through :func:`pyplot`, so
every report's ``--help`` and input checks run on the base install; without
matplotlib a report stops with one line naming the pip extra that provides it.
:func:`pyplot` selects the headless ``Agg`` backend, so reports run on servers
without a display. Every report draws through :func:`new_figure` and saves
through :func:`save_figure`, which writes the same figure as PNG (for pages and
READMEs) and SVG (for papers).
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from kernels_bench.errors import install_hint
from tables.errors import one_line

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

#: Formats written for every figure.
FORMATS: tuple[str, ...] = ("png", "svg")

#: Resolution of PNG output (dots per inch).
PNG_DPI = 150

#: Colour-blind-safe palette (Okabe & Ito) for series: devices, engines, precisions.
SERIES_COLORS: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # green
    "#CC79A7",  # purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: weak on white)
)

#: Markers cycled with the colours, so series stay apart in grey-scale print.
SERIES_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")

#: A fixed colour per block type, the same in every report.
BLOCK_COLORS: dict[str, str] = {
    "conv": "#7F7F7F",
    "conv_pool": "#B0B0B0",
    "xx": "#0072B2",
    "bl": "#D55E00",
    "dw": "#009E73",
    "irb": "#CC79A7",
    "fused_irb": "#E69F00",
    "tail": "#56B4E9",
    "pool_fc": "#000000",
}

#: Display names of block types, as the GENet and GPUNet papers write them.
BLOCK_LABELS: dict[str, str] = {
    "conv": "Conv",
    "conv_pool": "Conv + max-pool",
    "xx": "XX",
    "bl": "BL",
    "dw": "DW",
    "irb": "IRB",
    "fused_irb": "Fused-IRB",
    "tail": "Tail (1x1 conv, pool, FC)",
    "pool_fc": "Pool + FC",
}

#: Band colours of the +-5% and +-10% error bands.
BAND_COLORS: dict[int, str] = {5: "#9ecae1", 10: "#deebf7"}

_RC = {
    "figure.dpi": 100,
    "savefig.dpi": PNG_DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.15,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.grid": True,
    "axes.axisbelow": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "grid.color": "#DDDDDD",
    "grid.linewidth": 0.6,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "lines.linewidth": 1.6,
    "lines.markersize": 6,
    # Text in SVG stays text (searchable, editable); fonts fall back on the reader's machine.
    "svg.fonttype": "none",
    "svg.hashsalt": "nas-latency",
}


class PlottingUnavailable(ImportError):
    """matplotlib does not import: the report cannot draw. Bad input (the install), exit status 2."""

    exit_status = 2


@functools.cache
def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the headless ``Agg`` backend.

    Raises :class:`PlottingUnavailable`, whose one-line message names the pip
    extra, when matplotlib is not installed or does not import.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        if exc.name == "matplotlib":
            reason = "which is not installed"
        else:
            reason = f"which does not import ({type(exc).__name__}: {one_line(exc)})"
        raise PlottingUnavailable(
            f"this report draws with matplotlib, {reason}: {install_hint('reports')}", name="matplotlib"
        ) from exc
    return plt


def apply_style() -> None:
    """Set the shared matplotlib settings (idempotent)."""
    pyplot().rcParams.update(_RC)


def series_style(index: int) -> dict[str, str]:
    """Colour and marker of the ``index``-th series (cycles after eight)."""
    return {
        "color": SERIES_COLORS[index % len(SERIES_COLORS)],
        "marker": SERIES_MARKERS[index % len(SERIES_MARKERS)],
    }


def block_color(block: str) -> str:
    """The fixed colour of a block type (grey for a type this module does not know)."""
    return BLOCK_COLORS.get(block, "#999999")


def block_label(block: str) -> str:
    """The display name of a block type."""
    return BLOCK_LABELS.get(block, block)


def latency_label(per_image: bool, what: str = "latency") -> str:
    """Axis label with its unit, e.g. ``latency (ms per image)``."""
    return f"{what} (ms per image)" if per_image else f"{what} (ms per batch)"


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 6.4, height: float = 4.4) -> tuple[Figure, list[Axes]]:
    """A styled figure with ``nrows * ncols`` axes, returned as a flat list.

    ``width`` and ``height`` are inches per panel.
    """
    apply_style()
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save_figure(fig: Figure, out_dir: Path | str, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.png`` and ``out_dir/stem.svg``; close it; return the paths.

    SVG output is deterministic: no creation date, fixed element ids.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(path, format=fmt, metadata=metadata)
        paths.append(path)
    pyplot().close(fig)
    return paths


def figure_png_base64(fig: Figure) -> str:
    """The figure as a base64-encoded PNG (for self-contained HTML); closes it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plain_log_ticks(axis: Axis) -> None:
    """Label a logarithmic axis with plain numbers (0.1, 0.2, 0.5, 1) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator  # importable: the axis exists

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 5.0)))
    axis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))


def footnote(fig: Figure, text: str) -> None:
    """Small grey provenance line at the bottom-left of a figure (data source, settings)."""
    fig.text(0.01, -0.01, text, ha="left", va="top", fontsize=7.5, color="#555555")
