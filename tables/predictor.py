"""Predict network latency from a LatencyTable: one architecture, or a million encodings at once.

A network's predicted latency is the sum of its blocks' entries (ms per batch),
mapped through the table's calibration when it has one (see
:mod:`tables.calibration`). :func:`predict` explains one architecture block by
block; :func:`predict_many` evaluates an (N, L) integer-encoding array of a
staged search space (GPUNet, GENet, a user's staged space) with numpy gathers
and no Python loop over architectures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tables.key import ACTIVATIONS, BLOCK_TYPES, BlockKey
from tables.table import LatencyTable, MissingKeysError, arch_keys, write_archs_file

__all__ = [
    "MissingKeysError",
    "Prediction",
    "block_sums",
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
        sum_ms: the raw sum of the block entries, ms per batch.
        breakdown: one row per block: ``position``, ``stage``, ``key``, ``block``,
            ``latency_ms`` (ms per batch).
        calibrated: whether a calibration was applied.
        batch: the table's batch size.
    """

    ms_per_batch: float
    ms_per_image: float
    sum_ms: float
    breakdown: pd.DataFrame = field(repr=False)
    calibrated: bool = False
    batch: int = 1

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
    if key.block != prev.block or BLOCK_TYPES[prev.block].spatial_out == "global":
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


def _calibrate(
    table: LatencyTable,
    sums: float | np.ndarray,
    n_blocks: int | np.ndarray,
    type_sums: Mapping[str, Any],
    calibrated: bool,
) -> tuple[float | np.ndarray, bool]:
    cal = table.calibration
    if not calibrated or cal is None:
        return sums, False
    return cal.apply(sums, n_blocks, type_sums), True


def predict(table: LatencyTable, arch: Any, *, calibrated: bool = True) -> Prediction:
    """Predict one network's latency from ``table``.

    ``arch``: a sequence of :class:`BlockKey` or key strings, or any object with a
    ``keys`` attribute (``profiler.spaces.Architecture``). With ``calibrated``
    (default) the table's calibration, if any, maps the raw sum to the
    prediction. Raises :class:`MissingKeysError` listing every key the table lacks.
    """
    keys = arch_keys(arch)
    if not keys:
        raise ValueError("architecture has no blocks: give at least one block key")
    lat = table.latencies(keys)
    sum_ms = float(np.sum(lat))
    breakdown = pd.DataFrame(
        {
            "position": np.arange(len(keys), dtype=np.int64),
            "stage": np.asarray(_stages(keys), dtype=np.int64),
            "key": [str(k) for k in keys],
            "block": [k.block for k in keys],
            "latency_ms": lat,
        }
    )
    type_sums = {str(k): float(v) for k, v in breakdown.groupby("block", sort=True)["latency_ms"].sum().items()}
    total, done = _calibrate(table, sum_ms, len(keys), type_sums, calibrated)
    total = float(total)
    return Prediction(total, total / table.batch, sum_ms, breakdown, done, table.batch)


def block_sums(table: LatencyTable, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Raw block sums of several architectures: (sum_ms, n_blocks, per-type sums), ms per batch.

    Used to fit a calibration. Raises :class:`MissingKeysError` listing every
    missing key of all architectures together.
    """
    key_lists = [arch_keys(a) for a in archs]
    flat = [k for keys in key_lists for k in keys]
    pos = table.indices(flat)
    lat = table.latency_array[pos]
    owner = np.repeat(np.arange(len(key_lists)), [len(k) for k in key_lists])
    n = len(key_lists)
    sums = np.bincount(owner, weights=lat, minlength=n).astype(np.float64)
    n_blocks = np.asarray([len(k) for k in key_lists], dtype=np.int64)
    blocks = np.asarray([k.block for k in flat], dtype=object)
    type_sums = {
        str(t): np.bincount(owner[blocks == t], weights=lat[blocks == t], minlength=n).astype(np.float64)
        for t in sorted(set(blocks.tolist()))
    }
    return sums, n_blocks, type_sums


# --------------------------------------------------------------------------- vectorized
def resolve_space(space: Any) -> Any:
    """A staged search space from a name or an object.

    Names: ``"gpunet"``; ``"genet"`` (GENet-normal's perturbation space) or
    ``"genet-light"``, ``"genet-normal"``, ``"genet-large"``. Objects: anything
    shaped like ``profiler.spaces.staged.StagedSpace`` (``stages``, ``length``,
    ``stage_arrays``, ``stage_layer_keys``). ``profiler`` is imported only here,
    so :mod:`tables` imports without it.
    """
    if isinstance(space, str):
        name = space.strip().lower()
        if name == "gpunet":
            from profiler.spaces import gpunet

            return gpunet.SPACE
        if name == "genet" or name.startswith(("genet-", "genet:")):
            from profiler.spaces import genet

            base = name[len("genet") :].lstrip("-:") or "normal"
            return genet.space(base)
        raise ValueError(
            f"unknown search space {space!r}: use gpunet, genet, genet-light/normal/large or a space object"
        )
    needed = ("stages", "length", "stage_arrays", "stage_layer_keys")
    if all(hasattr(space, a) for a in needed):
        return space
    raise ValueError(
        f"{type(space).__name__} is not a staged search space (needs {', '.join(needed)}); "
        "pass 'gpunet', 'genet' or a profiler.spaces.staged.StagedSpace"
    )


_FIRST_FIELDS = ("resolution", "cin", "cout", "kernel", "eidx", "se", "act")
_REST_FIELDS = ("resolution", "cout", "kernel", "eidx", "se", "act")  # a repeated layer maps cout -> cout


class _StageLookup:
    """Latencies of a staged space's stage configurations in one table, resolved lazily and kept.

    A stage configuration is coded as one int64: a mixed-radix number over the
    stage's columns (resolution, channels, kernel, expansion index, SE,
    activation) with radices fixed by the space, so codes stay valid across
    calls. Per (stage, first/repeated layer) it keeps a sorted array of the codes
    seen so far and their latencies (NaN for keys the table lacks); building a
    key is the costly step and happens once per configuration.
    """

    def __init__(self, table: LatencyTable, space: Any) -> None:
        self.table = table
        self.space = space
        stages = space.stages
        channels = [int(space.in_channels)] + [int(f) for st in stages for f in (st.filters or ())]
        self.ratios = np.unique(np.rint(np.asarray([e for st in stages for e in st.expansions]) * 1e6))
        self.radix = {
            "resolution": max(int(r) for r in space.resolutions) + 1,
            "cin": max(channels) + 1,
            "cout": max(channels) + 1,
            "kernel": max(int(k) for st in stages for k in st.kernels) + 1,
            "eidx": len(self.ratios),
            "se": 2,
            "act": len(ACTIVATIONS),
        }
        capacity = math.prod(self.radix[f] for f in _FIRST_FIELDS)
        if capacity >= 2**62:
            raise ValueError(
                f"search space {getattr(space, 'name', '?')} is too wide for predict_many "
                "(channels or resolutions too large); use predict() per architecture"
            )
        self.codes: dict[tuple[int, int], np.ndarray] = {}
        self.latency: dict[tuple[int, int], np.ndarray] = {}
        self.missing: dict[tuple[int, int], dict[int, BlockKey]] = {}

    def code(self, fields: Sequence[str], cols: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.zeros(len(cols[fields[0]]), dtype=np.int64)
        for f in fields:
            out = out * self.radix[f] + cols[f]
        return out

    def _resolve(self, si: int, layers: int, values: Mapping[str, int], e: float) -> tuple[float, BlockKey | None]:
        has_filters = self.space.stages[si].filters is not None
        first, rest = self.space.stage_layer_keys(
            si,
            values["resolution"],
            values.get("cin", values["cout"]),
            values["cout"] if has_filters else None,
            values["kernel"],
            e,
            bool(values["se"]),
            values["act"],
            layers,
        )
        key = first if layers == 1 else rest
        pos = self.table.position(key)
        return (math.nan, key) if pos is None else (float(self.table.latency_array[pos]), None)

    def latencies(
        self, si: int, layers: int, cols: Mapping[str, np.ndarray], rows: np.ndarray, missing: dict[str, BlockKey]
    ) -> np.ndarray:
        """Latency (ms per batch) of stage ``si``'s first (``layers=1``) or repeated (``layers=2``) layer.

        ``cols``: the stage's columns for all encodings; ``rows``: the encodings that have that layer.
        Returns one latency per entry of ``rows``; keys the table lacks go to ``missing``.
        """
        fields = _FIRST_FIELDS if layers == 1 else _REST_FIELDS
        slot = (si, layers)
        codes = self.code(fields, cols)[rows]
        known = self.codes.get(slot, np.zeros(0, dtype=np.int64))
        pos = np.searchsorted(known, codes)
        found = pos < len(known)
        found[found] = known[pos[found]] == codes[found]
        if not found.all():
            new_codes, first_row = np.unique(codes[~found], return_index=True)
            new_rows = rows[np.flatnonzero(~found)[first_row]]
            new_lat = np.empty(len(new_codes), dtype=np.float64)
            lost = self.missing.setdefault(slot, {})
            for j, r in enumerate(new_rows):
                values = {f: int(cols[f][r]) for f in fields}
                new_lat[j], key = self._resolve(si, layers, values, float(cols["expansion"][r]))
                if key is not None:
                    lost[int(new_codes[j])] = key
            merged = np.concatenate([known, new_codes])
            order = np.argsort(merged, kind="stable")
            self.codes[slot] = known = merged[order]
            self.latency[slot] = np.concatenate([self.latency.get(slot, np.zeros(0)), new_lat])[order]
            pos = np.searchsorted(known, codes)
        out = self.latency[slot][pos]
        bad = np.isnan(out)
        if bad.any():
            lost = self.missing[slot]
            for c in np.unique(codes[bad]):
                key = lost[int(c)]
                missing.setdefault(str(key), key)
        return out


def _lookup_for(table: LatencyTable, space: Any) -> _StageLookup:
    # kept on the table: a NAS loop calls predict_many many times with one table and space
    cache = table.__dict__.setdefault("_stage_lookups", {})
    entry = cache.get(id(space))
    if entry is None or entry.space is not space:
        entry = cache[id(space)] = _StageLookup(table, space)
    return entry


def _many_sums(table: LatencyTable, encodings: Any, space: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    sp = resolve_space(space)
    length = int(sp.length)
    arr = np.asarray(encodings)
    if arr.ndim != 2 or arr.shape[1] != length or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"encodings must be an (N, {length}) integer array; got shape {arr.shape} {arr.dtype}")
    n = arr.shape[0]
    st = sp.stage_arrays(arr)
    lookup = _lookup_for(table, sp)
    eidx = np.searchsorted(lookup.ratios, np.rint(st["expansion"] * 1e6))
    total = np.zeros(n, dtype=np.float64)
    n_blocks = np.zeros(n, dtype=np.int64)
    type_sums: dict[str, np.ndarray] = {}
    missing: dict[str, BlockKey] = {}
    for si, stage in enumerate(sp.stages):
        layers = st["layers"][:, si]
        cols = {
            "resolution": st["resolution"],
            "cin": st["cin"][:, si],
            "cout": st["cout"][:, si],
            "kernel": st["kernel"][:, si],
            "eidx": eidx[:, si],
            "expansion": st["expansion"][:, si],
            "se": st["se"][:, si],
            "act": st["act"][:, si],
        }
        first = np.zeros(n, dtype=np.float64)
        rest = np.zeros(n, dtype=np.float64)
        for kind, target in ((1, first), (2, rest)):
            rows = np.flatnonzero(layers >= kind)
            if len(rows):
                target[rows] = lookup.latencies(si, kind, cols, rows, missing)
        contribution = np.where(layers >= 1, first + np.maximum(layers - 1, 0) * rest, 0.0)
        total += contribution
        n_blocks += layers
        type_sums[stage.block] = type_sums.get(stage.block, np.zeros(n, dtype=np.float64)) + contribution
    if missing:
        raise MissingKeysError(list(missing.values()), table.identity)
    return total, n_blocks, type_sums


def predict_many(
    table: LatencyTable,
    encodings: np.ndarray | Sequence[Sequence[int]],
    space: Any = "gpunet",
    *,
    calibrated: bool = True,
) -> np.ndarray:
    """Predicted latencies (ms per batch, float64 array of N) of N integer encodings of a staged space.

    ``encodings``: an (N, L) integer array (L = 41 for GPUNet, 21 for GENet);
    ``space``: ``"gpunet"``, ``"genet"``/``"genet-light"``/... or a staged space
    object (see :func:`resolve_space`). Equal to ``predict(table, arch)`` of each
    row. Per stage, the rows are grouped by their stage configuration (a
    mixed-radix index over the stage's columns); each distinct configuration is
    looked up once and scattered back with numpy indexing: latency = sum over
    stages of first layer + (layers - 1) x repeated layer.

    Raises ``ValueError`` for an array of the wrong shape or dtype or values out
    of the space, and :class:`MissingKeysError` listing every key the table lacks.
    """
    total, n_blocks, type_sums = _many_sums(table, encodings, space)
    out, _ = _calibrate(table, total, n_blocks, type_sums, calibrated)
    return np.asarray(out, dtype=np.float64)
