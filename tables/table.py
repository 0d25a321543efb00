"""LatencyTable: one device, backend, precision and batch; block key -> latency in ms per batch.

Load a table file (or a folder of tables and build parts), check it is the
table you meant, look keys up one at a time or as index arrays for vectorized
prediction::

    table = LatencyTable.load("v100_tensorrt_fp16_b64.parquet", expect_device="v100", expect_batch=64)
    table.lookup("irb_i64x40x40_o128_k5_s2_e6_se1_swish")   # ms per batch
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tables.atomic import write_text
from tables.calibration import Calibration
from tables.key import BlockKey, io_elements, parse_key
from tables.paths import calibration_path, table_filename
from tables.schema import STATUS_FAILED, STATUS_OK, floor_latency_ms, read_table, validate_metadata
from tables.store import IDENTITY_FIELDS, check_same_identity, dedup_rows

#: How many keys an error message lists before "... and N more".
SHOWN_KEYS = 5


def as_key(key: BlockKey | str) -> BlockKey:
    """A :class:`BlockKey` from a key or its string form (``ValueError`` on bad text)."""
    return key if isinstance(key, BlockKey) else parse_key(key)


def arch_keys(arch: Any) -> list[BlockKey]:
    """The ordered block keys of an architecture.

    ``arch`` is a sequence of :class:`BlockKey` or key strings, or any object
    with a ``keys`` attribute holding one (e.g. ``profiler.spaces.Architecture``).
    """
    keys = getattr(arch, "keys", arch)
    if callable(keys) and not isinstance(arch, (list, tuple)):
        keys = keys()
    if isinstance(keys, (str, BlockKey)):
        return [as_key(keys)]
    try:
        return [as_key(k) for k in keys]
    except TypeError:
        raise ValueError(
            f"cannot read block keys from {type(arch).__name__}: give a list of BlockKey/strings "
            "or an object with a .keys attribute"
        ) from None


def write_archs_file(keys: Iterable[BlockKey | str], path: str | os.PathLike[str], *, name: str = "missing") -> Path:
    """Write keys as a JSON archs file for ``python -m profiler.build --archs FILE``; returns the path.

    Each key becomes a one-block architecture (the keys need not chain):
    ``{"architectures": [{"name": "missing-0", "blocks": ["irb_..."]}, ...]}`` (the
    format of ``profiler.spaces.userfile``).
    """
    path = Path(path)
    unique = list(dict.fromkeys(str(as_key(k)) for k in keys))
    doc = {"architectures": [{"name": f"{name}-{i}", "blocks": [k]} for i, k in enumerate(unique)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


class MissingKeysError(KeyError):
    """Keys the table has no (ok) latency for; ``.keys`` lists them, :meth:`write_archs` saves them.

    Subclass of ``KeyError``; ``str()`` gives the full one-line message.
    """

    def __init__(self, keys: Sequence[BlockKey], table: Mapping[str, Any] | None = None) -> None:
        self.keys: list[BlockKey] = list(dict.fromkeys(keys))
        self.table = dict(table or {})
        super().__init__(self.message)

    @property
    def message(self) -> str:
        n = len(self.keys)
        shown = ", ".join(str(k) for k in self.keys[:SHOWN_KEYS])
        more = f" and {n - SHOWN_KEYS} more" if n > SHOWN_KEYS else ""
        md = self.table
        build = "python -m profiler.build --archs FILE"
        if md:
            build += (
                f" --device {md.get('device_profile')} --backend {md.get('backend')}"
                f" --precision {md.get('precision')} --batch {md.get('batch')}"
            )
        return (
            f"{n} block key(s) not in the latency table: {shown}{more}; profile exactly those with "
            f"{build} (write FILE with MissingKeysError.write_archs or tables.table.write_archs_file), or "
            "estimate them from the table's measured keys with estimate_missing=True"
        )

    def write_archs(self, path: str | os.PathLike[str]) -> Path:
        """Write the missing keys as an archs file for ``profiler.build --archs``; returns the path."""
        return write_archs_file(self.keys, path)

    def __str__(self) -> str:
        return self.message


@dataclass
class CoverageReport:
    """How many of the wanted keys a table has.

    Attributes: ``n_total`` distinct keys asked for, ``n_present`` of them with a
    latency, ``missing`` the others (in first-seen order).
    """

    n_total: int
    n_present: int
    missing: list[BlockKey] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every key is present."""
        return not self.missing

    @property
    def fraction(self) -> float:
        """Share of the keys present, 0..1 (1 when nothing was asked for)."""
        return self.n_present / self.n_total if self.n_total else 1.0

    def __str__(self) -> str:
        return f"{self.n_present}/{self.n_total} keys present ({self.fraction:.1%}), {len(self.missing)} missing"


@dataclass
class ValidationReport:
    """Problems found by :meth:`LatencyTable.validate`.

    Attributes: ``n_rows`` rows read, ``n_keys`` distinct keys,
    ``duplicate_keys`` keys stored more than once in one file,
    ``bad_latency_keys`` "ok" keys whose latency is NaN, infinite or not positive,
    ``failed_keys`` keys whose measurement failed (-> their error text).
    """

    n_rows: int
    n_keys: int
    duplicate_keys: list[str] = field(default_factory=list)
    bad_latency_keys: list[str] = field(default_factory=list)
    failed_keys: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when there is nothing to report."""
        return not (self.duplicate_keys or self.bad_latency_keys or self.failed_keys)

    def __str__(self) -> str:
        if self.ok:
            return f"{self.n_keys} keys, no problems"
        parts = []
        for label, items in (
            ("duplicate", self.duplicate_keys),
            ("NaN or non-positive latency", self.bad_latency_keys),
            ("failed", list(self.failed_keys)),
        ):
            if items:
                more = f" and {len(items) - SHOWN_KEYS} more" if len(items) > SHOWN_KEYS else ""
                parts.append(f"{len(items)} {label} ({', '.join(items[:SHOWN_KEYS])}{more})")
        return f"{self.n_keys} keys: " + "; ".join(parts)


class _EstimatedTiming:
    """A timing result standing for an estimate (one sample, the estimate itself), for :func:`result_row`."""

    def __init__(self, ms: float) -> None:
        self.samples_ms = [ms]
        self.trimmed_mean_ms = self.median_ms = self.min_ms = self.max_ms = ms
        self.std_ms = self.cv = 0.0
        self.inner_loop = 1
        self.warmup_runs = 0
        self.phases: dict[str, float] = {}


def _column(frame: pd.DataFrame, name: str, default: Any, usable: np.ndarray) -> np.ndarray:
    """Column ``name`` of the usable rows (``default`` everywhere when the frame has none)."""
    if name not in frame.columns:
        return np.full(int(usable.sum()), default)
    return frame[name].to_numpy()[usable]


def _sigmas(frame: pd.DataFrame, usable: np.ndarray, latency: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Spread (1 sigma, ms per batch) of each usable key's summed value: a measured key's from the spread of its
    samples (std / sqrt(n)) or of its rounds (std / sqrt(rounds)), whichever is larger, scaled to what is
    summed; an estimated key's from the estimator's error (in-memory column ``estimate_sigma_ms``)."""
    n = len(latency)
    if not n:
        out = np.zeros(0)
        out.setflags(write=False)
        return out
    std = pd.to_numeric(pd.Series(_column(frame, "std_ms", np.nan, usable)), errors="coerce").to_numpy(float)
    count = pd.to_numeric(pd.Series(_column(frame, "n_samples", 0, usable)), errors="coerce").to_numpy(float)
    raw = pd.to_numeric(pd.Series(_column(frame, "raw_latency_ms", np.nan, usable)), errors="coerce").to_numpy(float)
    sem = np.where(count > 0, std / np.sqrt(np.maximum(count, 1.0)), 0.0)
    rounds = _column(frame, "round_latency_ms", None, usable)
    for i, r in enumerate(rounds):
        values = [float(v) for v in (r if r is not None else ()) if v == v]
        if len(values) >= 2:
            sem[i] = max(sem[i], float(np.std(values, ddof=1)) / np.sqrt(len(values)))
    scale = np.where(np.isfinite(raw) & (raw > 0), latency / np.where(raw > 0, raw, 1.0), 1.0) * (
        block / np.where(latency > 0, latency, 1.0)
    )
    sigma = np.nan_to_num(sem * scale, nan=0.0)
    estimated = _column(frame, "estimated", False, usable).astype(bool)
    if estimated.any():
        est = pd.to_numeric(pd.Series(_column(frame, "estimate_sigma_ms", 0.0, usable)), errors="coerce")
        sigma = np.where(estimated, np.nan_to_num(est.to_numpy(float), nan=0.0), sigma)
    sigma.setflags(write=False)
    return sigma


def _in_network(frame: pd.DataFrame, usable: np.ndarray, latency: np.ndarray) -> tuple[np.ndarray, bool]:
    """(what the predictor sums per usable key, whether it is boundary-corrected): the in-network latencies
    when every usable key has a finite ``boundary_ms``, else the latencies as measured (never a mix)."""
    if "boundary_ms" not in frame.columns or not len(latency):
        return latency, False
    boundary = frame["boundary_ms"].to_numpy(dtype=np.float64, na_value=np.nan)[usable]
    raw = frame["raw_latency_ms"].to_numpy(dtype=np.float64, na_value=np.nan)[usable]
    if not (np.all(np.isfinite(boundary)) and np.all(np.isfinite(raw) & (raw > 0))):
        return latency, False
    # a boundary is never negative (a block inside a network does not cost more than alone) nor more than the
    # block's own time: outside [0, raw] a figure is measurement noise, bounded (benchmarks/bench_boundary.py)
    share = np.clip(boundary, 0.0, raw) / raw
    block = latency * (1.0 - share)
    block.setflags(write=False)
    return block, True


def _expect(md: Mapping[str, Any], where: str, name: str, label: str, expected: Any) -> None:
    if expected is None:
        return
    actual = md.get(name)
    if name == "batch":
        same = actual == int(expected)
    else:
        same = str(actual).lower() == str(expected).lower()
        if not same and name == "device_profile":
            device_name = (md.get("device") or {}).get("name")
            same = device_name is not None and str(device_name).lower() == str(expected).lower()
    if not same:
        raise ValueError(
            f"{where} was built for {label} {actual!r}, not {expected!r}; load the table for {label} {expected} "
            f"or build it with python -m profiler.build --{label} {expected}"
        )


class LatencyTable:
    """Latencies (ms per batch) of block keys on one device, backend, precision and batch.

    Build one with :meth:`load`, or from a frame of table rows and a metadata
    document. Only "ok" rows with a finite positive latency can be looked up;
    ``len(table)`` counts those keys.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        metadata: Mapping[str, Any],
        *,
        calibration: Calibration | None = None,
        path: str | os.PathLike[str] | None = None,
        duplicate_keys: Sequence[str] = (),
    ) -> None:
        validate_metadata(metadata)
        self._metadata = dict(metadata)
        self.path = Path(path) if path is not None else None
        self._frame = dedup_rows(frame)
        self._duplicates = list(duplicate_keys)
        self._n_rows = len(frame)
        lat = self._frame["latency_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
        usable = (self._frame["status"] == STATUS_OK).to_numpy() & np.isfinite(lat) & (lat > 0)
        self._keys: list[str] = self._frame.loc[usable, "key"].tolist()
        self._latency = lat[usable].copy()
        self._latency.setflags(write=False)
        self._block, self._boundary_corrected = _in_network(self._frame, usable, self._latency)
        self._estimated = _column(self._frame, "estimated", False, usable).astype(bool)
        self._estimated.setflags(write=False)
        self._variance = _sigmas(self._frame, usable, self._latency, self._block)
        self._index: dict[str, int] = {k: i for i, k in enumerate(self._keys)}
        self._calibration: Calibration | None = None
        self.calibration = calibration

    # ----- loading ------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path_or_dir: str | os.PathLike[str],
        *,
        expect_device: str | None = None,
        expect_precision: str | None = None,
        expect_batch: int | None = None,
        expect_backend: str | None = None,
        calibration: bool = True,
    ) -> LatencyTable:
        """Load a table file, or a folder of table files and build parts (``*.parts/part-*.parquet``).

        All files must describe the same device profile, backend, precision and
        batch. ``expect_*`` refuse a table of another device (profile or device
        name), precision, batch or backend with a one-line ``ValueError``. With
        ``calibration=True`` a calibration file next to the table
        (``<table>.calibration.json``) is loaded and applied by ``predict``.
        """
        path = Path(path_or_dir)
        if path.is_dir():
            files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
            files += sorted(path.glob("*.parts/part-*.parquet"))
            if not files:
                raise ValueError(
                    f"no latency tables (*.parquet) in folder {path}; build one with python -m profiler.build"
                )
        else:
            files = [path]
        frames: list[pd.DataFrame] = []
        duplicates: list[str] = []
        metadata: dict[str, Any] | None = None
        for file in files:
            frame, md = read_table(file)
            if metadata is None:
                metadata = dict(md)
            else:
                check_same_identity(
                    metadata, md, f"table {files[0]}", f"table {file}", "load the files of one table only"
                )
                if metadata.get("floor") is None and md.get("floor") is not None:
                    metadata["floor"] = md["floor"]
            counts = frame["key"].value_counts()
            duplicates += counts.index[counts > 1].tolist()
            frames.append(frame)
        assert metadata is not None
        where = f"latency table {path}"
        _expect(metadata, where, "device_profile", "device", expect_device)
        _expect(metadata, where, "precision", "precision", expect_precision)
        _expect(metadata, where, "batch", "batch", expect_batch)
        _expect(metadata, where, "backend", "backend", expect_backend)
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        cal = None
        if calibration:
            if path.is_dir():
                name = table_filename(
                    metadata["device_profile"], metadata["backend"], metadata["precision"], metadata["batch"]
                )
                cal_file = calibration_path(path / name)
            else:
                cal_file = calibration_path(path)
            if cal_file.exists():
                cal = Calibration.load(cal_file)
                cal.check_table(metadata, str(cal_file), require_link=True)
        return cls(frame, metadata, calibration=cal, path=path, duplicate_keys=sorted(set(duplicates)))

    # ----- metadata -------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the table's metadata document."""
        return json.loads(json.dumps(self._metadata, default=str))

    @property
    def device(self) -> str:
        """Device profile the table was built for (e.g. ``v100``)."""
        return str(self._metadata["device_profile"])

    @property
    def device_info(self) -> dict[str, Any]:
        """What was detected about the device: name, driver, CUDA, compute capability, ..."""
        return dict(self._metadata.get("device") or {})

    @property
    def backend(self) -> str:
        """Backend name (``tensorrt``, ``onnxruntime``, ``torch``)."""
        return str(self._metadata["backend"])

    @property
    def precision(self) -> str:
        """Precision of every row (``fp32``, ``fp16``, ``int8``, ``bf16``)."""
        return str(self._metadata["precision"])

    @property
    def batch(self) -> int:
        """Images per inference; every latency is ms per batch of this size."""
        return int(self._metadata["batch"])

    @property
    def floor_ms(self) -> float | None:
        """The backend floor: trimmed mean of the identity graph, ms per batch (``None`` if not measured)."""
        return floor_latency_ms(self._metadata.get("floor"))

    @property
    def identity(self) -> dict[str, Any]:
        """device_profile, backend, precision and batch."""
        return {name: self._metadata.get(name) for name in IDENTITY_FIELDS}

    @property
    def calibration(self) -> Calibration | None:
        """The calibration ``predict`` applies by default, or ``None``."""
        return self._calibration

    @calibration.setter
    def calibration(self, value: Calibration | None) -> None:
        if value is not None:
            value.check_table(self._metadata)
        self._calibration = value

    # ----- lookups ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, BlockKey):
            return str(key) in self._index
        if isinstance(key, str):
            if key in self._index:
                return True
            try:
                return str(parse_key(key)) in self._index
            except ValueError:
                return False
        return False

    def __repr__(self) -> str:
        return (
            f"LatencyTable({self.device}, {self.backend}, {self.precision}, batch {self.batch}: "
            f"{len(self)} keys{', calibrated' if self._calibration else ''})"
        )

    def position(self, key: BlockKey | str) -> int | None:
        """Position of ``key`` in :attr:`latency_array`, or ``None`` when the table has no latency for it."""
        text = str(key)
        pos = self._index.get(text)
        if pos is None and isinstance(key, str):
            pos = self._index.get(str(parse_key(key)))
        return pos

    def lookup(self, key: BlockKey | str) -> float:
        """Latency of one key, ms per batch; :class:`MissingKeysError` when the table lacks it."""
        pos = self.position(key)
        if pos is None:
            raise MissingKeysError([as_key(key)], self.identity)
        return float(self._latency[pos])

    @property
    def keys(self) -> list[str]:
        """Canonical strings of the keys with a latency, in the order of :attr:`latency_array`."""
        return list(self._keys)

    @property
    def key_index(self) -> dict[str, int]:
        """Canonical key string -> position in :attr:`latency_array`."""
        return dict(self._index)

    @property
    def latency_array(self) -> np.ndarray:
        """Latencies in ms per batch (read-only float64), aligned with :attr:`keys`."""
        return self._latency

    @property
    def boundary_corrected(self) -> bool:
        """True when every key has its boundary measured (``boundary_ms``): the predictor then sums each block's
        in-network latency (:attr:`block_array`) and adds :attr:`network_ms` once per network."""
        return self._boundary_corrected

    @property
    def block_array(self) -> np.ndarray:
        """What the predictor sums per block, ms per batch (read-only float64), aligned with :attr:`keys`.

        Each key's latency without its boundary, ``latency_ms * (1 - b / raw_latency_ms)`` with ``b`` the
        measured ``boundary_ms`` bounded to ``[0, raw_latency_ms]``, when :attr:`boundary_corrected`; else the
        latencies as measured (:attr:`latency_array`).
        """
        return self._block

    @property
    def network_ms(self) -> float:
        """What a whole network pays once on top of its blocks' :attr:`block_array`, ms per batch: the table's
        floor (one engine call) when :attr:`boundary_corrected` and a floor was measured, else 0."""
        if not self._boundary_corrected:
            return 0.0
        return float(self.floor_ms or 0.0)

    @property
    def sigma_array(self) -> np.ndarray:
        """Spread (1 sigma, ms per batch) of each key's :attr:`block_array` entry (read-only float64): a
        measured key's from its samples or rounds, an estimated key's from the estimator's error."""
        return self._variance

    @property
    def estimated_mask(self) -> np.ndarray:
        """True for keys whose entry is an estimate (a view made by :meth:`with_estimates`), aligned with
        :attr:`keys`; all False for a table as loaded."""
        return self._estimated

    def model_sigma_rel(self, calibrated: bool = True) -> float | None:
        """The relative spread (1 sigma) of a whole-network prediction against end-to-end timings: the
        calibration's cross-validated RMSPE (calibrated), else the held-out RMSPE of the block sum from the
        build's validation (metadata ``validation``) or from the calibration's fit networks; ``None`` when
        the table was never validated (an interval then holds only the measurement and estimation spread)."""
        cal = self._calibration
        candidates = []
        if calibrated and cal is not None:
            candidates.append((cal.accuracy.get("calibrated_cv") or {}).get("rmspe_pct"))
        else:
            candidates.append(((self._metadata.get("validation") or {}).get("uncalibrated") or {}).get("rmspe_pct"))
            if cal is not None:
                candidates.append((cal.accuracy.get("uncalibrated") or {}).get("rmspe_pct"))
        for value in candidates:
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(v) and v >= 0:
                return v / 100.0
        return None

    def estimator(self, seed: int = 0) -> Any:
        """The key-level estimator fitted on this table's measured keys (:mod:`tables.estimator`; cached).

        Raises ``ValueError`` (one line) when the table has too few measured keys to cross-validate one.
        """
        cache = self.__dict__.setdefault("_estimators", {})
        if seed not in cache:
            from tables.estimator import fit_estimator

            measured = ~self._estimated
            keys = [k for k, m in zip(self._keys, measured) if m]
            cache[seed] = fit_estimator(
                keys, self._block[measured], batch=self.batch, precision=self.precision, seed=seed
            )
        return cache[seed]

    def with_estimates(self, keys: Iterable[BlockKey | str], seed: int = 0) -> LatencyTable:
        """A view of this table with the keys of ``keys`` it lacks estimated (:meth:`estimator`), marked in
        :attr:`estimated_mask`; in memory only, never written. Its calibration is this table's."""
        from tables.schema import result_row

        missing = [k for k in dict.fromkeys(as_key(k) for k in keys) if str(k) not in self._index]
        if not missing:
            return self
        est = self.estimator(seed)
        values = est.estimate(missing)
        sigmas = est.sigma_rel(missing) * values
        rows = []
        for key, value, sigma in zip(missing, values, sigmas):
            v = float(value)
            fake = _EstimatedTiming(v)
            row = result_row(key, fake, boundary_ms=0.0 if self._boundary_corrected else None)
            row.update(estimated=True, estimate_sigma_ms=float(sigma), error="estimated, not measured")
            rows.append(row)
        frame = pd.concat([self._frame.assign(estimated=False), pd.DataFrame(rows)], ignore_index=True)
        view = LatencyTable(frame, self._metadata, path=self.path)
        view._calibration = self._calibration
        view.__dict__["_estimators"] = self.__dict__.get("_estimators", {})
        return view

    @property
    def io_array(self) -> np.ndarray:
        """Block input plus output, millions of elements per batch (read-only float64), aligned with :attr:`keys`.

        What a block timed alone moves across its boundaries; the ``io_linear``
        calibration charges it (see :mod:`tables.calibration`).
        """
        cached = self.__dict__.get("_io_array")
        if cached is None:
            rows = self._frame.set_index("key").loc[self._keys]
            pad = rows["pad"] if "pad" in rows.columns else None  # pad "valid" changes the output size
            elements = io_elements(
                rows["block"], rows["cin"], rows["h"], rows["w"], rows["cout"], rows["s"], pad=pad, k=rows["k"]
            )
            cached = elements.astype(np.float64) * self.batch / 1e6
            cached.setflags(write=False)
            self.__dict__["_io_array"] = cached
        return cached

    def indices(self, keys: Iterable[BlockKey | str], *, missing: str = "raise") -> np.ndarray:
        """Positions of ``keys`` in :attr:`latency_array` (int64).

        ``missing="raise"`` raises :class:`MissingKeysError` listing every absent
        key; ``missing="ignore"`` puts -1 there.
        """
        if missing not in ("raise", "ignore"):
            raise ValueError(f"missing must be 'raise' or 'ignore'; got {missing!r}")
        keys = list(keys)
        out = np.empty(len(keys), dtype=np.int64)
        absent: list[BlockKey] = []
        for i, key in enumerate(keys):
            pos = self.position(key)
            if pos is None:
                absent.append(as_key(key))
                pos = -1
            out[i] = pos
        if absent and missing == "raise":
            raise MissingKeysError(absent, self.identity)
        return out

    def latencies(self, keys: Iterable[BlockKey | str]) -> np.ndarray:
        """Latencies of ``keys`` in ms per batch; :class:`MissingKeysError` lists every absent key."""
        return self._latency[self.indices(keys)]

    def coverage(self, items: Any) -> CoverageReport:
        """Which of the keys needed by ``items`` the table has.

        ``items``: one architecture (object with ``.keys``), or an iterable of
        keys / key strings / architectures (objects with ``.keys`` or sequences of keys).
        """
        wanted: dict[str, BlockKey] = {}
        if hasattr(items, "keys") and not isinstance(items, Mapping):
            items = [items]
        for item in items:
            if isinstance(item, (BlockKey, str)):
                key = as_key(item)
                wanted.setdefault(str(key), key)
            else:
                for key in arch_keys(item):
                    wanted.setdefault(str(key), key)
        missing = [key for text, key in wanted.items() if text not in self._index]
        return CoverageReport(len(wanted), len(wanted) - len(missing), missing)

    def failed_keys(self) -> dict[str, str]:
        """Keys whose measurement failed (and never succeeded) -> error text."""
        f = self._frame
        failed = f[f["status"] == STATUS_FAILED]
        return {
            k: ("" if e is None or (isinstance(e, float) and math.isnan(e)) else str(e))
            for k, e in zip(failed["key"], failed["error"])
        }

    def validate(self, *, raise_on_error: bool = False) -> ValidationReport:
        """Check the table: duplicate keys within a file, bad latencies, failed keys.

        Returns a :class:`ValidationReport`; with ``raise_on_error=True`` raises a
        one-line ``ValueError`` summarising it when it is not clean.
        """
        f = self._frame
        ok_rows = f[f["status"] == STATUS_OK]
        lat = ok_rows["latency_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ok_rows.loc[~(np.isfinite(lat) & (lat > 0)), "key"].tolist()
        report = ValidationReport(
            n_rows=self._n_rows,
            n_keys=len(f),
            duplicate_keys=list(self._duplicates),
            bad_latency_keys=bad,
            failed_keys=self.failed_keys(),
        )
        if raise_on_error and not report.ok:
            where = f" {self.path}" if self.path else ""
            raise ValueError(f"latency table{where} is not clean: {report}; re-measure those keys (--retry-failed)")
        return report

    def to_frame(self) -> pd.DataFrame:
        """The table's rows, one per key (failed ones included), as a new DataFrame."""
        return self._frame.copy()
