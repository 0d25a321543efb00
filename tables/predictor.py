"""Predict network latency from a LatencyTable: one architecture, or a million encodings at once.

A network's predicted latency is the sum of its blocks' entries (ms per batch),
mapped through the table's calibration when it has one (see
:mod:`tables.calibration`). In a table whose build measured every key's
boundary (``boundary_ms``: what a block timed alone pays that a network pays
once) a block's entry is its in-network latency (``table.block_array``) and the
network adds the table's floor once (``table.network_ms``). :func:`predict` explains one architecture block by
block; :func:`predict_many` evaluates an (N, L) integer-encoding array of a
staged search space (GPUNet, GENet, a user's staged space) with numpy gathers
and no Python loop over architectures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tables.calibration import Calibration, fit
from tables.key import BLOCK_TYPES, BlockKey
from tables.space_grid import space_lookup
from tables.table import LatencyTable, MissingKeysError, arch_keys, write_archs_file

__all__ = [
    "MissingKeysError",
    "NetworkFeatures",
    "Prediction",
    "block_sums",
    "check_space",
    "fit_for_table",
    "network_features",
    "predict",
    "predict_many",
    "write_archs_file",
]


@dataclass
class Prediction:
    """The predicted latency of one network.

    Attributes:
        ms_per_batch: predicted end-to-end latency of one inference of a whole
            batch (calibrated when ``calibrated``), ms.
        ms_per_image: ``ms_per_batch / batch``, ms.
        sum_ms: the raw (uncalibrated) sum, ms per batch: the blocks' in-network latencies plus what a network
            pays once (``table.network_ms``) for a boundary-corrected table, else the plain sum of the blocks'
            latencies as measured alone.
        breakdown: one row per block: ``position``, ``stage``, ``key``, ``block``,
            ``latency_ms`` (what is summed: the in-network latency of a boundary-corrected table) and
            ``alone_ms`` (the key's latency timed alone), ms per batch.
        calibrated: whether a calibration was applied.
        batch: the table's batch size.
        io_mel: the blocks' input plus output, millions of elements per batch
            (what the ``io_linear`` calibration charges).
        low_ms, high_ms: the prediction interval at ``level`` (ms per batch): ``ms_per_batch +- z * sigma``
            with ``sigma`` (``sigma_ms``) combining, in quadrature, the spread of each measured key (its
            samples or rounds), the estimator's error for estimated keys, and the table's own whole-network
            error (:meth:`tables.table.LatencyTable.model_sigma_rel`, from its validation).
        level: the interval's nominal coverage.
        interval_basis: what the interval holds (``"validated"``, or ``"measurement only"`` for a table
            never validated: too narrow, say so rather than pretend).
        n_estimated: blocks whose entry is an estimate (``estimate_missing=True``), repeats counted.
        estimated_keys: those keys, each once.
        calibration_weight: the share of the calibration's correction applied (1 for a network the size of
            the calibration's fit networks, less for one far smaller or larger:
            :meth:`tables.calibration.Calibration.weight`; 0 when no calibration was applied).
    """

    ms_per_batch: float
    ms_per_image: float
    sum_ms: float
    breakdown: pd.DataFrame = field(repr=False)
    calibrated: bool = False
    batch: int = 1
    io_mel: float = 0.0
    sigma_ms: float = 0.0
    low_ms: float = 0.0
    high_ms: float = 0.0
    level: float = 0.9
    interval_basis: str = "measurement only"
    n_estimated: int = 0
    estimated_keys: list[str] = field(default_factory=list)
    calibration_weight: float = 0.0

    @property
    def n_blocks(self) -> int:
        """Number of blocks summed."""
        return len(self.breakdown)

    def type_sums(self) -> dict[str, float]:
        """Summed latency per block type, ms per batch."""
        return {str(k): float(v) for k, v in self.breakdown.groupby("block", sort=True)["latency_ms"].sum().items()}


def _repeat_of(prev: BlockKey, key: BlockKey) -> bool:
    """True when ``key`` is a repeated layer of the stage that ``prev`` belongs to."""
    if key == prev:
        return True
    if key.block != prev.block or BLOCK_TYPES[prev.block].classifier:
        return False
    oh, ow = prev.out_hw
    return (key.cin, key.h, key.w, key.s) == (prev.cout, oh, ow, 1) and (
        key.cout,
        key.k,
        key.e,
        key.se,
        key.act,
    ) == (prev.cout, prev.k, prev.e, prev.se, prev.act)


def _stages(keys: Sequence[BlockKey]) -> list[int]:
    # a stage is a first layer followed by its repeated layers (same config, stride 1, cin == cout)
    out: list[int] = []
    stage = -1
    for i, key in enumerate(keys):
        if i == 0 or not _repeat_of(keys[i - 1], key):
            stage += 1
        out.append(stage)
    return out


def _run_sum(pos: np.ndarray, lat: np.ndarray) -> float:
    """Sum of block latencies: each run of equal consecutive keys adds count x latency, in order.

    This fixes the rounding: :func:`predict_many` adds a stage's first layer and
    then (layers - 1) x its repeated layer in the same order, so both agree bit
    for bit.
    """
    starts = np.flatnonzero(np.concatenate([[True], pos[1:] != pos[:-1]]))
    counts = np.diff(np.append(starts, len(pos)))
    total = 0.0
    for s, c in zip(starts.tolist(), counts.tolist()):
        total = total + c * float(lat[s])
    return total


def _calibrate(
    table: LatencyTable,
    sums: float | np.ndarray,
    n_blocks: int | np.ndarray,
    type_sums: Mapping[str, Any],
    calibrated: bool,
    io_mel: float | np.ndarray | None = None,
) -> tuple[float | np.ndarray, bool]:
    cal = table.calibration
    if not calibrated or cal is None:
        return sums, False
    out = cal.apply(sums, n_blocks, type_sums, io_mel)
    values = np.atleast_1d(np.asarray(out, dtype=np.float64))
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raw = float(np.atleast_1d(np.asarray(sums, dtype=np.float64))[i])
        if np.ndim(out) == 0:
            what = f"{values[i]:.4g} ms for this network (block sum {raw:.4g} ms)"
        else:
            what = (
                f"{values[i]:.4g} ms for {int(bad.sum())} of {len(values)} networks (first: row {i}, sum {raw:.4g} ms)"
            )
        raise ValueError(
            f"the table's calibration ({cal.model}) gives {what}: such networks lie outside what it was fitted on; "
            "use calibrated=False for the raw block sum, or fit the calibration again on networks like them "
            "(python -m profiler.validate)"
        )
    return out, True


def _sigma(table: LatencyTable, total: Any, sums: Any, spread: Any, calibrated: bool) -> tuple[Any, str]:
    """1-sigma of predictions ``total`` (calibrated or not) whose raw sums are ``sums`` and whose blocks' spreads
    (1 sigma each) add to ``spread``: the blocks' spread, scaled as the calibration scales the sum, and the
    table's whole-network error in quadrature. The blocks' spreads add linearly (one machine measured them
    all: their errors move together), which also makes a stage's repeated layers count fully."""
    t = np.asarray(total, dtype=np.float64)
    s = np.asarray(sums, dtype=np.float64)
    scale = np.divide(t, s, out=np.ones_like(t), where=s > 0)
    blocks = np.asarray(spread, dtype=np.float64) * np.abs(scale)
    model = table.model_sigma_rel(calibrated)
    if model is None:
        return blocks, "measurement only"
    return np.sqrt(blocks**2 + (np.asarray(total, dtype=np.float64) * model) ** 2), "validated"


def predict(
    table: LatencyTable,
    arch: Any,
    *,
    calibrated: bool = True,
    estimate_missing: bool = False,
    level: float = 0.9,
) -> Prediction:
    """Predict one network's latency from ``table``, with a prediction interval.

    ``arch``: a sequence of :class:`BlockKey` or key strings, or any object with a
    ``keys`` attribute (``profiler.spaces.Architecture``). With ``calibrated``
    (default) the table's calibration, if any, maps the raw sum to the
    prediction. Raises :class:`MissingKeysError` listing every key the table lacks,
    unless ``estimate_missing``: those keys are then estimated from the table's
    measured keys (:meth:`LatencyTable.estimator`), counted in ``n_estimated``, and
    their error widens the interval. ``level``: the interval's nominal coverage.
    """
    from tables.estimator import interval, z_for

    keys = arch_keys(arch)
    if not keys:
        raise ValueError("architecture has no blocks: give at least one block key")
    z = z_for(level)
    if estimate_missing:
        table = table.with_estimates(keys)
    pos = table.indices(keys)
    lat = table.block_array[pos]
    sum_ms = _run_sum(pos, lat) + table.network_ms
    breakdown = pd.DataFrame(
        {
            "position": np.arange(len(keys), dtype=np.int64),
            "stage": np.asarray(_stages(keys), dtype=np.int64),
            "key": [str(k) for k in keys],
            "block": [k.block for k in keys],
            "latency_ms": lat,
            "alone_ms": table.latency_array[pos],
        }
    )
    type_sums = {str(k): float(v) for k, v in breakdown.groupby("block", sort=True)["latency_ms"].sum().items()}
    io_mel = _run_sum(pos, table.io_array[pos])  # summed as predict_many sums it
    total, done = _calibrate(table, sum_ms, len(keys), type_sums, calibrated, io_mel)
    total = float(total)
    sigma, basis = _sigma(table, total, sum_ms, _run_sum(pos, table.sigma_array[pos]), done)
    sigma = float(sigma)
    low, high = interval(total, sigma, z)
    est = table.estimated_mask[pos]
    return Prediction(
        total,
        total / table.batch,
        sum_ms,
        breakdown,
        done,
        table.batch,
        io_mel,
        sigma,
        low,
        high,
        level,
        basis,
        int(est.sum()),
        list(dict.fromkeys(str(k) for k, e in zip(keys, est) if e)),
        float(table.calibration.weight(sum_ms)) if done and table.calibration is not None else 0.0,
    )


@dataclass
class NetworkFeatures:
    """What a calibration is fitted on, one entry per network (see :func:`network_features`).

    Attributes:
        sum_ms: raw block sums, ms per batch.
        n_blocks: blocks per network.
        type_sums: block type -> summed latency of that type, ms per batch.
        io_mel: the blocks' input plus output, millions of elements per batch.
    """

    sum_ms: np.ndarray
    n_blocks: np.ndarray
    type_sums: dict[str, np.ndarray]
    io_mel: np.ndarray


def network_features(table: LatencyTable, archs: Sequence[Any]) -> NetworkFeatures:
    """Block sums, block counts, per-type sums and block I/O of several architectures.

    Used to fit a calibration. Raises :class:`MissingKeysError` listing every
    missing key of all architectures together.
    """
    key_lists = [arch_keys(a) for a in archs]
    flat = [k for keys in key_lists for k in keys]
    pos = table.indices(flat)
    lat = table.block_array[pos]
    owner = np.repeat(np.arange(len(key_lists)), [len(k) for k in key_lists])
    n = len(key_lists)
    sums = np.bincount(owner, weights=lat, minlength=n).astype(np.float64) + table.network_ms
    n_blocks = np.asarray([len(k) for k in key_lists], dtype=np.int64)
    blocks = np.asarray([k.block for k in flat], dtype=object)
    type_sums = {
        str(t): np.bincount(owner[blocks == t], weights=lat[blocks == t], minlength=n).astype(np.float64)
        for t in sorted(set(blocks.tolist()))
    }
    io_mel = np.bincount(owner, weights=table.io_array[pos], minlength=n).astype(np.float64)
    return NetworkFeatures(sums, n_blocks, type_sums, io_mel)


def block_sums(table: LatencyTable, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Raw block sums of several architectures: (sum_ms, n_blocks, per-type sums), ms per batch.

    :func:`network_features` without the block I/O. Raises :class:`MissingKeysError`
    listing every missing key of all architectures together.
    """
    f = network_features(table, archs)
    return f.sum_ms, f.n_blocks, f.type_sums


def fit_for_table(
    table: LatencyTable,
    archs: Sequence[Any],
    measured_ms: Sequence[float] | np.ndarray,
    **options: Any,
) -> Calibration:
    """Fit a calibration for ``table`` from architectures and their measured latencies (ms per batch).

    ``archs``: architectures as :func:`predict` accepts them; ``measured_ms``: their
    end-to-end latencies, same order. ``options`` go to :func:`tables.calibration.fit`.
    Save the result with ``cal.save(calibration_path(table.path))`` to have
    ``LatencyTable.load`` apply it.
    """
    f = network_features(table, archs)
    return fit(
        f.sum_ms,
        measured_ms,
        n_blocks=f.n_blocks,
        type_sums=f.type_sums,
        floor_ms=table.floor_ms,
        io_mel=f.io_mel,
        table=table.metadata,
        **options,
    )


# --------------------------------------------------------------------------- vectorized
#: What :func:`predict_many` needs of a staged search space object.
SPACE_ATTRIBUTES: tuple[str, ...] = (
    "stages",
    "length",
    "positions",
    "resolutions",
    "stage_layer_keys",
    "validate_many",
)


def check_space(space: Any) -> Any:
    """``space`` when it is a staged search space object (``ValueError`` otherwise, saying how to get one).

    The table layer takes space objects, never names: ``profiler.spaces.resolve_space``
    turns ``"gpunet"``, ``"genet"`` or a space file into one
    (``profiler.spaces.gpunet.SPACE`` is GPUNet's).
    """
    if all(hasattr(space, a) for a in SPACE_ATTRIBUTES):
        return space
    what = repr(space) if isinstance(space, str) else type(space).__name__
    raise ValueError(
        f"{what} is not a staged search space (it needs {', '.join(SPACE_ATTRIBUTES)}): pass a space object, "
        "e.g. profiler.spaces.gpunet.SPACE or profiler.spaces.resolve_space('genet')"
    )


def _many_sums(
    table: LatencyTable,
    encodings: Any,
    space: Any,
    want_blocks: bool = True,
    want_types: bool = True,
    want_io: bool = False,
    want_spread: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray] | None, np.ndarray | None, np.ndarray | None]:
    """Raw sums (with the table's once-per-network part), blocks per network, per-type sums, block I/O and the
    blocks' summed spread (1 sigma each) of N encodings; what is not wanted is ``None``. The spreads (else the
    block I/O) come from the latencies' own pass (:func:`space_lookup` ``latency+sigma`` / ``latency+io``), the
    latencies bit for bit as without."""
    sp = check_space(space)
    length = int(sp.length)
    arr = np.asarray(encodings)
    if arr.ndim != 2 or arr.shape[1] != length or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"encodings must be an (N, {length}) integer array; got shape {arr.shape} {arr.dtype}")
    spread = io = None
    second = "sigma" if want_spread else "io" if want_io else None  # carried through the latencies' pass
    if second is not None:
        both, n_blocks, both_types = space_lookup(table, sp, f"latency+{second}").sums(arr, want_blocks, want_types)
        total = both.real.copy()
        if second == "sigma":
            spread = both.imag.copy()
        else:
            io = both.imag.copy()
        types = None if both_types is None else {t: v.real.copy() for t, v in both_types.items()}
    else:
        total, n_blocks, types = space_lookup(table, sp).sums(arr, want_blocks, want_types)
    total = total + table.network_ms
    if want_io and io is None:
        io = space_lookup(table, sp, "io").sums(arr, False, False)[0]
    return total, n_blocks, types, io, spread


@dataclass
class ManyPredictions:
    """What :func:`predict_many` returns with ``interval=True`` or ``estimate_missing=True``.

    Attributes:
        ms_per_batch: the predictions (float64, N), as :func:`predict_many` returns them plainly.
        low_ms, high_ms: the prediction interval at ``level`` (``None`` without ``interval=True``).
        level: the interval's nominal coverage.
        interval_basis: ``"validated"`` or ``"measurement only"`` (see :class:`Prediction`).
        n_estimated: estimated blocks per architecture, repeats counted (``None`` without
            ``estimate_missing=True``).
    """

    ms_per_batch: np.ndarray
    low_ms: np.ndarray | None = None
    high_ms: np.ndarray | None = None
    level: float = 0.9
    interval_basis: str = "measurement only"
    n_estimated: np.ndarray | None = None


def _with_estimates(table: LatencyTable, encodings: Any, space: Any, sums: Any) -> tuple[LatencyTable, Any]:
    """(the table the sums were taken from, ``sums(table)``): ``table`` itself when it holds every key of
    ``encodings``, else a view of it with the keys they lack estimated. The view is kept on ``table`` and
    grows with the keys later calls lack, so a search's repeated calls estimate each key once."""
    view = table.__dict__.get("_estimated_view", table)
    if view is not table:
        view._calibration = table._calibration  # a calibration set on the table since holds for its view
    try:
        return view, sums(view)
    except MissingKeysError as missing:
        before = [k for k, e in zip(view.keys, view.estimated_mask) if e]
        view = table.with_estimates([*before, *missing.keys])
        table.__dict__["_estimated_view"] = view
        return view, sums(view)


def predict_many(
    table: LatencyTable,
    encodings: np.ndarray | Sequence[Sequence[int]],
    space: Any,
    *,
    calibrated: bool = True,
    interval: bool = False,
    level: float = 0.9,
    estimate_missing: bool = False,
) -> np.ndarray | ManyPredictions:
    """Predicted latencies (ms per batch, float64 array of N) of N integer encodings of a staged space.

    With ``interval=True`` (prediction intervals at ``level``) or ``estimate_missing=True`` (keys the table
    lacks estimated, their count per architecture returned) the result is a :class:`ManyPredictions`; the
    intervals and estimates equal those of :func:`predict` on each row.

    ``encodings``: an (N, L) integer array (L = 41 for GPUNet, 21 for GENet);
    ``space``: the staged space object they encode (``profiler.spaces.gpunet.SPACE``,
    ``profiler.spaces.resolve_space("genet")``, ...; see :func:`check_space`). Bit-for-bit equal to
    ``predict(table, arch).ms_per_batch`` of each row.

    The first call for a (table, space) pair resolves every stage configuration
    of the space into dense latency grids, kept on the table (about a second
    for GPUNet's 133k keys). Each call then validates the encodings with one
    look-up array, turns each stage's values into its grid cell and gathers
    first-layer and repeated-layer latencies: per stage, latency = first layer +
    (layers - 1) x repeated layer, added in the order :func:`predict` adds.

    Raises ``ValueError`` for an array of the wrong shape or dtype or values out
    of the space, and :class:`MissingKeysError` listing every key the table lacks
    (unless ``estimate_missing``).
    """
    cal = table.calibration if calibrated else None
    model = cal.model if cal is not None else "none"

    def sums(t: LatencyTable) -> Any:
        return _many_sums(
            t,
            encodings,
            space,
            want_blocks=model == "floor_linear",
            want_types=model == "per_type",
            want_io=model == "io_linear",
            want_spread=interval,
        )

    if estimate_missing:
        table, (total, n_blocks, type_sums, io, spread) = _with_estimates(table, encodings, space, sums)
    else:
        total, n_blocks, type_sums, io, spread = sums(table)
    out, done = _calibrate(table, total, n_blocks, type_sums or {}, calibrated, io)  # type: ignore[arg-type]
    out = np.asarray(out, dtype=np.float64)
    if not interval and not estimate_missing:
        return out
    arr = np.asarray(encodings)
    result = ManyPredictions(out, level=level)
    if interval:
        from tables.estimator import interval as bounds
        from tables.estimator import z_for

        z = z_for(level)
        sigma, result.interval_basis = _sigma(table, out, total, spread, done)
        result.low_ms, result.high_ms = bounds(out, sigma, z)
    if estimate_missing:
        counts = space_lookup(table, space, "est").sums(arr, False, False)[0]
        result.n_estimated = np.rint(counts).astype(np.int64)
    return result
