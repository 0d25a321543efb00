"""The roofline of every key: FLOPs, bytes moved and arithmetic intensity against the device's peaks.

A key's work and traffic come from the key alone (:func:`tables.cost.key_cost`:
FLOPs, and bytes moved when every layer reads its inputs and weights and writes
its output once, no fusion, no cache) at the table's batch and precision; its
time is the table's ``latency_ms`` (ms per batch). Against a device's peaks
(peak FLOP/s of the precision ``P``, peak memory bandwidth ``B`` in bytes/s):

- arithmetic intensity ``AI = flops / bytes_moved`` (FLOP per byte);
- achieved FLOP/s ``flops / t`` and bytes/s ``bytes_moved / t``, ``t`` the latency in seconds;
- the roof ``min(P, AI * B)``: the most FLOP/s a kernel of that intensity can reach;
- the bound: ``"compute"`` when ``AI >= P / B`` (the ridge point), else ``"memory"``;
- the share of the roof, achieved / roof (1 on the roof; a fused graph or one served
  from cache can beat the no-fusion byte count and exceed 1).

**Peaks.** A peaks entry (what a table's metadata ``peaks`` holds, what
:func:`published_peaks` and ``kernels_bench.peaks.measure_cpu_peaks`` return)::

    {"flops_per_s": {"fp32": 1.57e13, "fp16": 1.25e14, "bf16": None, "int8": 6.28e13},
     "bytes_per_s": 9.0e11,
     "source": "published: ..."}

``flops_per_s`` per precision (for ``int8`` integer operations per second);
``None`` where the figure is unknown. :data:`PUBLISHED_PEAKS` holds the dense
(no structured sparsity) datasheet figures of the GPU profiles; the cpu profile
has none (a build measures a short peak instead, ``kernels_bench.peaks``).
:func:`peaks_for` takes a table's metadata ``peaks`` first, then the profile's
published figures.

pandas is imported when a frame is built, so the peaks (and the device profiles
that carry them) import with numpy alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from tables.cost import ELEMENT_BYTES, costs
from tables.key import parse_key

if TYPE_CHECKING:
    import pandas as pd

#: The precisions a peaks entry may give figures for (those a table may be built in).
PRECISIONS: tuple[str, ...] = tuple(ELEMENT_BYTES)

#: Columns of :func:`roofline`'s frame, in order.
ROOFLINE_COLUMNS: tuple[str, ...] = (
    "key",
    "block",
    "flops",
    "bytes_moved",
    "arithmetic_intensity",
    "latency_ms",
    "achieved_flops_per_s",
    "achieved_bytes_per_s",
    "roof_flops_per_s",
    "roof_latency_ms",
    "bound",
    "share_of_roof",
)

T = 1e12  # tera
G = 1e9  # giga


def _published(
    fp32: float | None, fp16: float | None, bf16: float | None, int8: float | None, gbs: float | None, source: str
) -> dict[str, Any]:
    """A peaks entry from datasheet units: TFLOP/s (TOPS for int8) and GB/s."""
    return {
        "flops_per_s": {
            "fp32": None if fp32 is None else fp32 * T,
            "fp16": None if fp16 is None else fp16 * T,
            "bf16": None if bf16 is None else bf16 * T,
            "int8": None if int8 is None else int8 * T,
        },
        "bytes_per_s": None if gbs is None else gbs * G,
        "source": source,
    }


#: Published peaks of the GPU profiles: dense (no 2:4 sparsity), fp32 on the CUDA cores (no TF32), fp16/bf16
#: and int8 on the tensor cores, memory bandwidth of the board's DRAM. ``None``: no figure could be confirmed.
#: Where one profile covers several boards (SXM and PCIe, memory sizes) the figures are those of the board
#: named in ``source``; a slower variant reaches less.
PUBLISHED_PEAKS: dict[str, dict[str, Any]] = {
    # NVIDIA Tesla V100 datasheet (SXM2): 15.7 TFLOPS fp32, 125 TFLOPS tensor (fp16), 900 GB/s HBM2.
    # Volta has no int8 tensor cores: int8 is dp4a on the CUDA cores, 4x the fp32 rate (derived, not on the
    # datasheet). No bf16. V100 PCIe: 14 / 112 TFLOPS.
    "v100": _published(
        15.7,
        125.0,
        None,
        62.8,
        900.0,
        "published: NVIDIA V100 datasheet, SXM2 (PCIe: 14 / 112 TFLOPS); int8 = dp4a at 4x fp32 (derived)",
    ),
    # NVIDIA T4 datasheet: 8.1 TFLOPS fp32, 65 TFLOPS fp16 (mixed precision), 130 TOPS int8, 320 GB/s GDDR6.
    "t4": _published(8.1, 65.0, None, 130.0, 320.0, "published: NVIDIA T4 datasheet"),
    # NVIDIA A10 datasheet: 31.2 TFLOPS fp32, 125 TFLOPS bf16/fp16 tensor, 250 TOPS int8 (dense; sparsity
    # doubles the tensor figures), 600 GB/s GDDR6.
    "a10": _published(31.2, 125.0, 125.0, 250.0, 600.0, "published: NVIDIA A10 datasheet (dense)"),
    # A10G (AWS g5): NVIDIA publishes no datasheet. 600 GB/s GDDR6 as AWS and third parties state; the
    # compute peaks differ from the A10's (less tensor throughput, third-party reports disagree): not confirmed.
    "a10g": _published(
        None,
        None,
        None,
        None,
        600.0,
        "published: 600 GB/s (AWS g5, A10G has no NVIDIA datasheet); compute peaks unconfirmed, give them",
    ),
    # NVIDIA A100 datasheet, SXM4 80GB: 19.5 TFLOPS fp32, 312 TFLOPS bf16/fp16 tensor, 624 TOPS int8 (dense),
    # 2039 GB/s HBM2e. 40GB: 1555 GB/s; PCIe 80GB: 1935 GB/s.
    "a100": _published(
        19.5,
        312.0,
        312.0,
        624.0,
        2039.0,
        "published: NVIDIA A100 datasheet, SXM4 80GB, dense (40GB: 1555 GB/s; PCIe 80GB: 1935 GB/s)",
    ),
    # NVIDIA H100 datasheet, SXM: 67 TFLOPS fp32, 989 TFLOPS bf16/fp16 tensor, 1979 TOPS int8 (dense: half the
    # sparse figures printed), 3.35 TB/s HBM3. PCIe: 51 / 756 / 1513, 2 TB/s.
    "h100": _published(
        67.0,
        989.0,
        989.0,
        1979.0,
        3350.0,
        "published: NVIDIA H100 datasheet, SXM, dense (PCIe: 51 / 756 / 1513 TFLOPS, 2000 GB/s)",
    ),
    # NVIDIA H200 datasheet, SXM: 67 TFLOPS fp32, 989 TFLOPS bf16/fp16 tensor, 1979 TOPS int8 (dense), 4.8 TB/s
    # HBM3e. NVL: 60 / 835 / 1671.
    "h200": _published(
        67.0,
        989.0,
        989.0,
        1979.0,
        4800.0,
        "published: NVIDIA H200 datasheet, SXM, dense (NVL: 60 / 835 / 1671 TFLOPS)",
    ),
    # NVIDIA L4 datasheet: 30.3 TFLOPS fp32; 242 TFLOPS bf16/fp16 and 485 TOPS int8 with sparsity, so 121 and
    # 242.5 dense; 300 GB/s GDDR6.
    "l4": _published(30.3, 121.0, 121.0, 242.5, 300.0, "published: NVIDIA L4 datasheet, dense (half the sparse)"),
    # NVIDIA L40S datasheet: 91.6 TFLOPS fp32, 362.05 TFLOPS bf16/fp16 tensor, 733 TOPS int8 (dense), 864 GB/s.
    "l40s": _published(91.6, 362.05, 362.05, 733.0, 864.0, "published: NVIDIA L40S datasheet, dense"),
    # NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090: 82.6 TFLOPS fp32; fp16/bf16 tensor 165.2
    # TFLOPS dense with fp32 accumulate (330.3 with fp16 accumulate); 660.6 TOPS int8 dense; 1008 GB/s GDDR6X.
    "rtx4090": _published(
        82.6,
        165.2,
        165.2,
        660.6,
        1008.0,
        "published: NVIDIA Ada whitepaper, RTX 4090, dense; fp16 with fp32 accumulate (fp16 accumulate: 330.3)",
    ),
    # NVIDIA Jetson AGX Orin technical brief, 64GB module, GPU only (the DLAs excluded): 5.3 TFLOPS fp32,
    # 170 TOPS int8 with sparsity, so 85 dense, and fp16 at half the int8 rate, 42.5 dense (derived);
    # 204.8 GB/s LPDDR5 shared with the CPU. Approximate; the 32GB, NX and Nano modules are slower.
    "orin": _published(
        5.3,
        42.5,
        42.5,
        85.0,
        204.8,
        "published, approximate: Jetson AGX Orin 64GB technical brief, GPU only, dense (half the sparse)",
    ),
    # NVIDIA Jetson AGX Xavier: GPU only (the DLAs excluded; the 32 TOPS total includes them): 11 TFLOPS fp16,
    # 22 TOPS int8 on the tensor cores; fp32 1.41 TFLOPS derived (512 cores x 2 x 1.377 GHz); 136.5 GB/s
    # LPDDR4x shared with the CPU. No bf16. Approximate; the NX module is slower.
    "xavier": _published(
        1.41,
        11.0,
        None,
        22.0,
        136.5,
        "published, approximate: Jetson AGX Xavier, GPU only; fp32 derived from cores x clock",
    ),
}


def published_peaks(profile_name: str | None) -> dict[str, Any] | None:
    """A copy of the published peaks of a device profile (:data:`PUBLISHED_PEAKS`); ``None`` when it has none.

    The cpu profile, an unknown name and ``None`` have none.
    """
    if profile_name is None:
        return None
    entry = PUBLISHED_PEAKS.get(str(profile_name).strip().lower())
    return copy.deepcopy(entry) if entry is not None else None


def _positive_or_none(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a positive number or null; got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{what} must be a positive finite number or null; got {value!r}")
    return number


def check_peaks(peaks: Mapping[str, Any], where: str = "peaks") -> dict[str, Any]:
    """A validated copy of a peaks entry (module docstring); a one-line ``ValueError`` names what is wrong.

    Figures must be positive finite numbers or ``None``; keys of ``flops_per_s`` must be precisions
    (:data:`PRECISIONS`); other entries (``source``, ``threads``, ...) are kept as they are.
    """
    if not isinstance(peaks, Mapping):
        raise ValueError(f"{where} must be an object with flops_per_s and bytes_per_s; got {type(peaks).__name__}")
    flops = peaks.get("flops_per_s")
    if not isinstance(flops, Mapping):
        raise ValueError(f"{where}.flops_per_s must be an object: precision -> FLOP/s (e.g. {{'fp16': 1.25e14}})")
    out = copy.deepcopy(dict(peaks))
    checked: dict[str, float | None] = {}
    for precision, value in flops.items():
        if precision not in PRECISIONS:
            raise ValueError(f"{where}.flops_per_s has an unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
        checked[str(precision)] = _positive_or_none(value, f"{where}.flops_per_s.{precision}")
    out["flops_per_s"] = checked
    out["bytes_per_s"] = _positive_or_none(peaks.get("bytes_per_s"), f"{where}.bytes_per_s")
    out["source"] = str(peaks.get("source") or "unstated")
    return out


def has_peaks(peaks: Mapping[str, Any] | None, precision: str) -> bool:
    """True when ``peaks`` gives both a FLOP/s figure for ``precision`` and a bandwidth."""
    if not isinstance(peaks, Mapping):
        return False
    flops = peaks.get("flops_per_s")
    return isinstance(flops, Mapping) and flops.get(precision) is not None and peaks.get("bytes_per_s") is not None


def _no_peaks_message(precision: str, what: str, source: str | None) -> str:
    where = f" ({source})" if source else ""
    return (
        f"no {what} for {precision}{where}: give the device's peaks, e.g. "
        "python -m reports.roofline T.parquet --peak-tflops X --peak-gbs Y, or in code "
        f"peaks={{'flops_per_s': {{'{precision}': FLOP_PER_S}}, 'bytes_per_s': BYTES_PER_S}}"
    )


def peak_figures(peaks: Mapping[str, Any] | None, precision: str) -> tuple[float, float]:
    """``(peak FLOP/s of precision, peak bytes/s)``; a one-line ``ValueError`` naming how to give them if missing."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if peaks is None:
        raise ValueError(_no_peaks_message(precision, "device peaks", None))
    checked = check_peaks(peaks)
    flops = checked["flops_per_s"].get(precision)
    bandwidth = checked["bytes_per_s"]
    if flops is None and bandwidth is None:
        raise ValueError(_no_peaks_message(precision, "peak FLOP/s and no bandwidth", checked["source"]))
    if flops is None:
        raise ValueError(_no_peaks_message(precision, "peak FLOP/s", checked["source"]))
    if bandwidth is None:
        raise ValueError(_no_peaks_message(precision, "peak memory bandwidth", checked["source"]))
    return float(flops), float(bandwidth)


def ridge_point(peaks: Mapping[str, Any] | None, precision: str) -> float:
    """The arithmetic intensity (FLOP/byte) where the memory slope meets the compute roof: peak FLOP/s / bytes/s."""
    flops, bandwidth = peak_figures(peaks, precision)
    return flops / bandwidth


def peaks_for(
    metadata: Mapping[str, Any] | None, profile_name: str | None = None, *, precision: str | None = None
) -> dict[str, Any] | None:
    """The peaks to draw a table's roofline against, or ``None`` when there are none.

    The table metadata's ``peaks`` entry first (what the build measured or recorded), then the published
    peaks of ``profile_name`` (default: the metadata's ``device_profile``). With ``precision`` a source
    that lacks a FLOP/s figure for it or a bandwidth is passed over. A malformed metadata entry is a
    one-line ``ValueError``.
    """
    md = metadata if isinstance(metadata, Mapping) else {}
    candidates: list[dict[str, Any]] = []
    if md.get("peaks") is not None:
        candidates.append(check_peaks(md["peaks"], "table metadata peaks"))
    name = profile_name if profile_name is not None else md.get("device_profile")
    published = published_peaks(name if isinstance(name, str) else None)
    if published is not None:
        candidates.append(published)
    for entry in candidates:
        if precision is None or has_peaks(entry, precision):
            return entry
    return None


def override_peaks(
    peaks: Mapping[str, Any] | None,
    precision: str,
    *,
    flops_per_s: float | None = None,
    bytes_per_s: float | None = None,
    given_by: str = "the caller",
) -> dict[str, Any] | None:
    """``peaks`` with the figure of ``precision`` and/or the bandwidth replaced by given ones.

    The ``source`` says which figures were given and where the others came from. With nothing given,
    ``peaks`` is returned unchanged (``None`` stays ``None``).
    """
    if flops_per_s is None and bytes_per_s is None:
        return None if peaks is None else check_peaks(peaks)
    flops = _positive_or_none(flops_per_s, "the peak FLOP/s")
    bandwidth = _positive_or_none(bytes_per_s, "the peak bandwidth")
    base = check_peaks(peaks) if peaks is not None else {"flops_per_s": {}, "bytes_per_s": None, "source": ""}
    out = copy.deepcopy(base)
    given = []
    if flops is not None:
        out["flops_per_s"][precision] = flops
        given.append(f"{precision} FLOP/s")
    if bandwidth is not None:
        out["bytes_per_s"] = bandwidth
        given.append("bandwidth")
    source = f"{' and '.join(given)} given by {given_by}"
    if flops is None or bandwidth is None:
        source += f"; the rest {base['source'] or 'unknown'}"
    out["source"] = source
    return out


def _cost_columns(frame: pd.DataFrame, batch: int, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and bytes moved per batch: the table's columns where present and usable, else from the key."""
    n = len(frame)
    flops = np.full(n, np.nan)
    moved = np.full(n, np.nan)
    for name, out in (("flops", flops), ("bytes_moved", moved)):
        if name in frame.columns:
            out[:] = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
    missing = ~(np.isfinite(flops) & (flops > 0) & np.isfinite(moved) & (moved > 0))
    if missing.any():
        keys = [parse_key(str(k)) for k in frame["key"].to_numpy()[missing]]
        computed = costs(keys, batch, precision)
        flops[missing] = computed["flops"].astype(np.float64)
        moved[missing] = computed["bytes_moved"].astype(np.float64)
    return flops, moved


def _positive_batch(batch: Any) -> int:
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or int(batch) <= 0:
        raise ValueError(f"batch must be a positive integer (images per inference); got {batch!r}")
    return int(batch)


def roofline(
    table_or_frame: Any,
    batch: int | None = None,
    precision: str | None = None,
    peaks: Mapping[str, Any] | None = None,
    *,
    latency_column: str = "latency_ms",
) -> pd.DataFrame:
    """One row per measured key (status ok, finite positive latency) on the roofline; columns :data:`ROOFLINE_COLUMNS`.

    ``table_or_frame``: a :class:`tables.table.LatencyTable` (its batch, precision and metadata peaks, via
    :func:`peaks_for`, are the defaults) or a frame of table rows (``key``, ``latency_ms`` in ms per batch,
    optionally ``block``, ``status``, ``flops``, ``bytes_moved``; then ``batch`` and ``precision`` are
    needed). FLOPs and bytes moved are the frame's columns where present, else
    :func:`tables.cost.key_cost` of the key at ``batch`` and ``precision``; ``arithmetic_intensity`` is
    their ratio. ``roof_latency_ms`` is the roofline's lower bound on the latency, max(flops / P,
    bytes / B). The frame's ``attrs`` hold ``peaks``, ``precision``, ``batch`` and ``ridge_point``.

    Raises a one-line ``ValueError`` when there are no peaks for the precision (naming how to give them),
    for a missing batch or precision, or when no key is measured.
    """
    import pandas as pd

    metadata: Mapping[str, Any] = {}
    if isinstance(table_or_frame, pd.DataFrame):
        frame = table_or_frame
    elif hasattr(table_or_frame, "to_frame") and hasattr(table_or_frame, "metadata"):
        frame = table_or_frame.to_frame()
        metadata = table_or_frame.metadata
        batch = table_or_frame.batch if batch is None else batch
        precision = table_or_frame.precision if precision is None else precision
    else:
        what = type(table_or_frame).__name__
        raise ValueError(f"roofline needs a LatencyTable or a DataFrame of table rows; got {what}")
    if batch is None or precision is None:
        raise ValueError(
            "roofline of a frame needs the table's batch and precision (roofline(frame, batch, precision))"
        )
    batch = _positive_batch(batch)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if peaks is None:
        peaks = peaks_for(metadata, precision=precision)
    peak_flops, peak_bw = peak_figures(peaks, precision)
    assert peaks is not None  # peak_figures refuses None
    for column in ("key", latency_column):
        if column not in frame.columns:
            raise ValueError(f"the table rows have no column {column!r}")
    latency = pd.to_numeric(frame[latency_column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    usable = np.isfinite(latency) & (latency > 0)
    if "status" in frame.columns:
        usable &= (frame["status"].astype(str) == "ok").to_numpy()
    rows = frame.loc[usable]
    if rows.empty:
        raise ValueError(f"no measured keys (status ok with a positive {latency_column}) to put on the roofline")
    latency = latency[usable]
    flops, moved = _cost_columns(rows, batch, precision)
    seconds = latency / 1e3
    intensity = flops / moved
    roof = np.minimum(peak_flops, intensity * peak_bw)
    achieved = flops / seconds
    if "block" in rows.columns:
        block = rows["block"].astype(str).to_numpy()
    else:
        block = np.array([parse_key(str(k)).block for k in rows["key"]], dtype=object)
    out = pd.DataFrame(
        {
            "key": rows["key"].astype(str).to_numpy(),
            "block": block,
            "flops": flops,
            "bytes_moved": moved,
            "arithmetic_intensity": intensity,
            "latency_ms": latency,
            "achieved_flops_per_s": achieved,
            "achieved_bytes_per_s": moved / seconds,
            "roof_flops_per_s": roof,
            "roof_latency_ms": np.maximum(flops / peak_flops, moved / peak_bw) * 1e3,
            "bound": np.where(intensity >= peak_flops / peak_bw, "compute", "memory"),
            "share_of_roof": achieved / roof,
        }
    )
    out.attrs.update(
        {
            "peaks": check_peaks(peaks),
            "precision": precision,
            "batch": batch,
            "ridge_point": peak_flops / peak_bw,
        }
    )
    return out


def bound_summary(rf: pd.DataFrame) -> pd.DataFrame:
    """Per block type (and ``all``): keys, memory- and compute-bound counts and percentages, the share of the
    latency spent in memory-bound keys, and the median share of the roof. ``rf`` is :func:`roofline`'s frame.
    """
    import pandas as pd

    def one(part: pd.DataFrame) -> dict[str, Any]:
        n = len(part)
        memory = part["bound"] == "memory"
        time = float(part["latency_ms"].sum())
        return {
            "keys": n,
            "memory_bound": int(memory.sum()),
            "compute_bound": int(n - memory.sum()),
            "memory_pct": 100.0 * float(memory.mean()),
            "compute_pct": 100.0 * float(1 - memory.mean()),
            "memory_time_pct": 100.0 * float(part.loc[memory, "latency_ms"].sum()) / time if time > 0 else math.nan,
            "median_share_of_roof": float(part["share_of_roof"].median()),
        }

    rows = {str(block): one(part) for block, part in rf.groupby("block", sort=True)}
    rows["all"] = one(rf)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("block")


__all__ = [
    "PRECISIONS",
    "PUBLISHED_PEAKS",
    "ROOFLINE_COLUMNS",
    "bound_summary",
    "check_peaks",
    "has_peaks",
    "override_peaks",
    "peak_figures",
    "peaks_for",
    "published_peaks",
    "ridge_point",
    "roofline",
]
