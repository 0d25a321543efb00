"""Calibration of summed block latencies against end-to-end measurements.

The sum of a network's block entries misses what happens between blocks: an
engine fuses across block boundaries, and every timed block paid the backend's
fixed per-call cost (the *floor*, measured on an identity graph) that a whole
network pays once. A calibration maps the raw sum (ms per batch) to the
predicted end-to-end latency (ms per batch). Candidate models:

- ``none``: total = sum;
- ``linear``: total = a * sum + b (least squares);
- ``floor_linear``: total = a * (sum - n_blocks * floor) + b, the per-block call
  overhead removed first;
- ``per_type``: total = sum over block types t of c_t * sum_t + b with every
  c_t >= 0 (bounded least squares), for engines that fuse some block types better;
- ``io_linear``: total = a * sum + c * io + b, where io is what the blocks take
  in and give out (millions of elements per batch, :attr:`tables.key.BlockKey.io_elements`):
  a block timed alone moves its input and output across the engine's boundary
  (a copy, a layout change such as onnxruntime's NCHW <-> NCHWc reorders, a
  TensorRT reformat), which a whole network does once, not at every block.

:func:`fit` chooses by cross-validated mean absolute percentage error (MAPE) with
the one-standard-error rule: the simplest model whose held-out MAPE is within
one standard error of the lowest one is kept, so a model that beats the raw sum
only by noise on a few fit networks is not applied to every prediction.

A calibration is applied in full only to networks the size of those it was
fitted on (raw block sums between the smallest and the largest fit network's,
``fit_sum_ms``); beyond them its correction fades in proportion to the distance
(a network half the smallest fit network's sum gets half the correction, one a
fifth of it a fifth): an intercept fitted on networks of 60-800 ms is not
evidence about a 12 ms one, whose raw sum (the boundary-corrected blocks) is
then the better-founded figure. Cross-validation measures the faded map, as it
is applied. A
calibration is stored as JSON next to its table (``<table>.calibration.json``,
see :func:`tables.paths.calibration_path`) and loaded by ``LatencyTable.load``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear

from tables.atomic import write_text
from tables.errors import one_line
from tables.metrics import accuracy_metrics
from tables.schema import utc_now
from tables.settings import settings_id

#: Calibration models, simplest first (a model within one standard error of a better one's cross-validated
#: error is kept over it, see :func:`fit`).
MODELS: tuple[str, ...] = ("none", "linear", "floor_linear", "per_type", "io_linear")

#: Metadata fields a calibration shares with the table it was fitted for.
TABLE_IDENTITY: tuple[str, ...] = ("device_profile", "backend", "precision", "batch")

CALIBRATION_KIND = "latency_calibration"
CALIBRATION_VERSION = 1

#: Sane ranges of a calibration's parameters, (low, high) inclusive: a value outside is a damaged or
#: hand-edited file, refused instead of applied (the fit never gives one: a > 0, latencies positive).
LIMITS: dict[str, tuple[float, float]] = {
    "a": (1e-3, 100.0),  # slope, no unit
    "b": (-1e6, 1e6),  # intercept, ms per batch
    "io_ms_per_mel": (-1e4, 1e4),  # ms per batch per million elements
    "floor_ms": (0.0, 1e6),  # ms per batch per block
    "type_scale": (0.0, 100.0),  # per block type, no unit
}


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"calibration {name}={value!r} is not a finite number: fit it again")
    if not low <= value <= high:
        raise ValueError(f"calibration {name}={value!r} is outside the sane range {low:g}..{high:g}: fit it again")


@dataclass
class Calibration:
    """A fitted map from the raw block sum to the end-to-end latency, both in ms per batch.

    Attributes:
        model: one of :data:`MODELS`.
        a, b: slope (no unit) and intercept (ms per batch) of ``linear``,
            ``floor_linear`` and ``io_linear``; ``b`` is also the intercept of ``per_type``.
        io_ms_per_mel: ``io_linear``: ms per batch per million elements of block input and output.
        floor_ms: the backend floor used by ``floor_linear`` (ms per batch per block).
        type_scales: block type -> scale of ``per_type`` (types not listed get 1.0).
        table: device_profile, backend, precision and batch of the table it belongs to.
        n_fit: number of networks it was fitted on.
        cv_mape_pct: model -> cross-validated MAPE (%) of each candidate tried.
        not_fitted: model -> why it was not tried (too few networks, how many to add; a missing input).
        excluded: model -> why it was fitted but not kept although its cross-validated error was lower: it
            leaves its domain (:data:`DOMAIN_FACTOR`, :data:`DOMAIN_RATIO`) on networks smaller or larger
            than those it was fitted on.
        not_better: model -> why it was not kept although its cross-validated error was lower: the
            difference is within one standard error of the lowest error, and a simpler model is kept.
        cv_se_pct: model -> standard error (%) of its cross-validated MAPE over the fit networks.
        fit_sum_ms: (smallest, largest) raw block sum of its fit networks, ms per batch: the range where it
            is applied in full (:meth:`apply`); ``None`` (a calibration made by hand, or fitted by an older
            version): applied in full everywhere.
        accuracy: ``uncalibrated``, ``calibrated`` (in-sample) and
            ``calibrated_cv`` (held-out folds) metrics from :func:`tables.metrics.accuracy_metrics`.
    """

    model: str = "none"
    a: float = 1.0
    b: float = 0.0
    floor_ms: float | None = None
    io_ms_per_mel: float = 0.0
    type_scales: dict[str, float] = field(default_factory=dict)
    table: dict[str, Any] = field(default_factory=dict)
    n_fit: int = 0
    cv_mape_pct: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    not_fitted: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    not_better: dict[str, str] = field(default_factory=dict)
    cv_se_pct: dict[str, float] = field(default_factory=dict)
    fit_sum_ms: tuple[float, float] | None = None
    created_at: str = field(default_factory=lambda: utc_now().isoformat())

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown calibration model {self.model!r}: use one of {', '.join(MODELS)}")
        if self.model == "floor_linear" and (self.floor_ms is None or not math.isfinite(self.floor_ms)):
            raise ValueError("calibration model floor_linear needs floor_ms (the backend floor, ms per batch)")
        _check_range("a", self.a, *LIMITS["a"])
        _check_range("b", self.b, *LIMITS["b"])
        _check_range("io_ms_per_mel", self.io_ms_per_mel, *LIMITS["io_ms_per_mel"])
        if self.floor_ms is not None:
            _check_range("floor_ms", self.floor_ms, *LIMITS["floor_ms"])
        for block, scale in self.type_scales.items():
            _check_range(f"type_scales[{block}]", scale, *LIMITS["type_scale"])
        if isinstance(self.n_fit, bool) or not isinstance(self.n_fit, int) or self.n_fit < 0:
            raise ValueError(f"calibration n_fit={self.n_fit!r} is not a count of networks")
        if self.fit_sum_ms is not None:
            try:
                lo, hi = (float(v) for v in self.fit_sum_ms)
            except (TypeError, ValueError):
                raise ValueError(f"calibration fit_sum_ms={self.fit_sum_ms!r} is not a pair of sums") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
                raise ValueError(
                    f"calibration fit_sum_ms={self.fit_sum_ms!r} is not a range of positive sums (smallest first)"
                )
            self.fit_sum_ms = (lo, hi)

    @property
    def needs_block_counts(self) -> bool:
        """True when :meth:`apply` needs ``n_blocks``."""
        return self.model == "floor_linear"

    @property
    def needs_type_sums(self) -> bool:
        """True when :meth:`apply` needs ``type_sums``."""
        return self.model == "per_type"

    @property
    def needs_io(self) -> bool:
        """True when :meth:`apply` needs ``io_mel``."""
        return self.model == "io_linear"

    def apply(
        self,
        sum_ms: float | np.ndarray,
        n_blocks: int | np.ndarray | None = None,
        type_sums: Mapping[str, float | np.ndarray] | None = None,
        io_mel: float | np.ndarray | None = None,
        *,
        extrapolate: bool = False,
    ) -> float | np.ndarray:
        """Calibrated latency (ms per batch) from the raw block sum ``sum_ms`` (ms per batch).

        Works on one network (floats) or many (arrays of the same length).
        ``n_blocks`` (blocks per network) is needed by ``floor_linear``;
        ``type_sums`` (block type -> summed ms per batch of that type) by ``per_type``;
        ``io_mel`` (the blocks' input plus output, millions of elements per batch) by ``io_linear``.
        The model's correction is applied in the share :meth:`weight` gives (1 within :attr:`fit_sum_ms`,
        fading beyond); ``extrapolate=True`` applies the fitted map as it is everywhere (an affine map of the
        per-block features, e.g. to split a prediction into per-block shares).
        """
        out = self._model(sum_ms, n_blocks, type_sums, io_mel)
        if extrapolate or self.fit_sum_ms is None or self.model == "none":
            return out
        s = np.asarray(sum_ms, dtype=np.float64)
        w = np.asarray(self.weight(s), dtype=np.float64)
        fitted = np.asarray(out, dtype=np.float64)
        faded = np.where(w < 1.0, s + w * (fitted - s), fitted)  # the fitted map itself, exactly, within range
        return float(faded) if np.ndim(out) == 0 else faded

    def weight(self, sum_ms: float | np.ndarray) -> float | np.ndarray:
        """Share (0-1) of the calibration's correction applied to networks of raw block sum ``sum_ms``: 1 within
        :attr:`fit_sum_ms`, ``sum / smallest`` below it, ``largest / sum`` above it (1 everywhere without a
        recorded range or for ``none``)."""
        s = np.asarray(sum_ms, dtype=np.float64)
        if self.fit_sum_ms is None or self.model == "none":
            w = np.ones_like(s)
        else:
            lo, hi = self.fit_sum_ms
            safe = np.where(s > 0, s, 1.0)
            w = np.where(s > 0, np.minimum(1.0, np.minimum(safe / lo, hi / safe)), 0.0)
        return float(w) if np.ndim(sum_ms) == 0 else w

    def _model(
        self,
        sum_ms: float | np.ndarray,
        n_blocks: int | np.ndarray | None,
        type_sums: Mapping[str, float | np.ndarray] | None,
        io_mel: float | np.ndarray | None,
    ) -> float | np.ndarray:
        """The fitted map itself, everywhere (see :meth:`apply`)."""
        scalar = np.ndim(sum_ms) == 0
        s = np.asarray(sum_ms, dtype=np.float64)
        if self.model == "none":
            out = s
        elif self.model == "linear":
            out = self.a * s + self.b
        elif self.model == "floor_linear":
            if n_blocks is None:
                raise ValueError("calibration model floor_linear needs n_blocks (blocks per network)")
            out = self.a * (s - np.asarray(n_blocks, dtype=np.float64) * float(self.floor_ms)) + self.b
        elif self.model == "io_linear":
            if io_mel is None:
                raise ValueError("calibration model io_linear needs io_mel (block input + output, M elements)")
            out = self.a * s + self.io_ms_per_mel * np.asarray(io_mel, dtype=np.float64) + self.b
        else:
            if type_sums is None:
                raise ValueError("calibration model per_type needs type_sums (summed ms per block type)")
            out = np.full(s.shape, self.b, dtype=np.float64)
            for block, part in type_sums.items():
                out = out + self.type_scales.get(block, 1.0) * np.asarray(part, dtype=np.float64)
        return float(out) if scalar else out

    # ----- JSON ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (kind and version included)."""
        return {
            "kind": CALIBRATION_KIND,
            "version": CALIBRATION_VERSION,
            "model": self.model,
            "a": self.a,
            "b": self.b,
            "floor_ms": self.floor_ms,
            "io_ms_per_mel": self.io_ms_per_mel,
            "type_scales": dict(self.type_scales),
            "table": dict(self.table),
            "n_fit": self.n_fit,
            "cv_mape_pct": dict(self.cv_mape_pct),
            "accuracy": {k: dict(v) for k, v in self.accuracy.items()},
            "not_fitted": dict(self.not_fitted),
            "excluded": dict(self.excluded),
            "not_better": dict(self.not_better),
            "cv_se_pct": dict(self.cv_se_pct),
            "fit_sum_ms": None if self.fit_sum_ms is None else list(self.fit_sum_ms),
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`; ``ValueError`` on a document of another kind or version, or one whose
        values are not numbers in their sane ranges (:data:`LIMITS`)."""
        if not isinstance(data, Mapping) or data.get("kind") != CALIBRATION_KIND:
            raise ValueError(f"not a calibration document (kind must be {CALIBRATION_KIND!r})")
        if data.get("version") != CALIBRATION_VERSION:
            raise ValueError(
                f"calibration version {data.get('version')} is not supported by this version "
                f"({CALIBRATION_VERSION}); fit it again"
            )
        return cls(
            model=str(data["model"]),
            a=float(data.get("a", 1.0)),
            b=float(data.get("b", 0.0)),
            floor_ms=None if data.get("floor_ms") is None else float(data["floor_ms"]),
            io_ms_per_mel=float(data.get("io_ms_per_mel") or 0.0),
            type_scales={str(k): float(v) for k, v in _mapping(data, "type_scales").items()},
            table=dict(_mapping(data, "table")),
            n_fit=_count(data.get("n_fit", 0), "n_fit"),
            cv_mape_pct={str(k): float(v) for k, v in _mapping(data, "cv_mape_pct").items()},
            accuracy={str(k): dict(v) for k, v in _mapping(data, "accuracy").items()},
            not_fitted={str(k): str(v) for k, v in _mapping(data, "not_fitted").items()},
            excluded={str(k): str(v) for k, v in _mapping(data, "excluded").items()},
            not_better={str(k): str(v) for k, v in _mapping(data, "not_better").items()},
            cv_se_pct={str(k): float(v) for k, v in _mapping(data, "cv_se_pct").items()},
            fit_sum_ms=None if data.get("fit_sum_ms") is None else tuple(data["fit_sum_ms"]),  # type: ignore[arg-type]
            created_at=str(data.get("created_at", "")),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON document atomically (temporary file + ``os.replace``); returns the path."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=True)
        return write_text(path, text + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Read a calibration JSON file; one-line ``ValueError`` when it is missing, unreadable or malformed."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"calibration file not found: {path}") from None
        except IsADirectoryError:
            raise ValueError(f"calibration path {path} is a folder, not a calibration file") from None
        except OSError as exc:
            raise ValueError(f"calibration file {path} cannot be read ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise ValueError(f"calibration file {path} is not valid JSON ({one_line(exc)}); fit it again") from None
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"calibration file {path}: {one_line(exc)}") from None

    def check_table(self, metadata: Mapping[str, Any], where: str = "", *, require_link: bool = False) -> None:
        """Raise ``ValueError`` when this calibration was fitted for another table.

        It must name the same device profile, backend, precision and batch, and,
        when it records one (every fitted calibration does), the same settings
        fingerprint (:func:`tables.settings.settings_id`): a table rebuilt with
        other settings does not keep the calibration of the old one. With
        ``require_link`` (a calibration file next to a table) a calibration that
        records no fingerprint is refused too.
        """
        diffs = [
            f"{name} {self.table.get(name)!r} vs table {metadata.get(name)!r}"
            for name in TABLE_IDENTITY
            if name in self.table and self.table.get(name) != metadata.get(name)
        ]
        link = self.table.get("settings_id")
        if link is not None and link != settings_id(metadata):
            diffs.append(f"settings {link} vs table {settings_id(metadata)}")
        if diffs:
            raise ValueError(
                f"calibration {where or ''} belongs to another table ({'; '.join(diffs)}); "
                "fit it again for this table (python -m profiler.validate) or remove the file"
            )
        if require_link and link is None:
            raise ValueError(
                f"calibration {where or ''} records no link to its table (fitted by an older version): "
                "fit it again for this table (python -m profiler.validate) or remove the file"
            )

    def summary(self) -> str:
        """One line: the model, its parameters and its fit networks' MAPE, raw and cross-validated."""
        if self.model == "none":
            params = "raw block sum"
        elif self.model == "per_type":
            scales = ", ".join(f"{k}={v:.3g}" for k, v in sorted(self.type_scales.items()))
            params = f"scales {scales}; b={self.b:.4g} ms"
        elif self.model == "floor_linear":
            params = f"a={self.a:.4g}, b={self.b:.4g} ms, floor {self.floor_ms:.4g} ms/block"
        elif self.model == "io_linear":
            params = f"a={self.a:.4g}, io {self.io_ms_per_mel:.4g} ms per M elements, b={self.b:.4g} ms"
        else:
            params = f"a={self.a:.4g}, b={self.b:.4g} ms"
        raw = self.accuracy.get("uncalibrated", {}).get("mape_pct", math.nan)
        cv = self.accuracy.get("calibrated_cv", {}).get("mape_pct", math.nan)
        span = ""
        if self.fit_sum_ms is not None and self.model != "none":
            span = f"; in full for block sums {self.fit_sum_ms[0]:.4g}-{self.fit_sum_ms[1]:.4g} ms, fading beyond"
        return (
            f"calibration {self.model} ({params}), n={self.n_fit}: "
            f"MAPE on the fit networks {raw:.2f}% raw, {cv:.2f}% cross-validated{span}"
        )

    def held_out_mape_pct(self) -> float:
        """The calibration's own held-out error: cross-validated MAPE (%) over its fit networks (NaN if unknown)."""
        return float(self.accuracy.get("calibrated_cv", {}).get("mape_pct", math.nan))

    def explain(self) -> list[str]:
        """What was chosen and why, in a few lines: never a silent fallback to the raw sum.

        Names the model kept, its cross-validated error against the others tried,
        and every model that could not be fitted with how many networks to add.
        """
        tried = ", ".join(f"{m} {v:.2f}%" for m, v in sorted(self.cv_mape_pct.items(), key=lambda kv: kv[1]))
        lines: list[str] = []
        others = [m for m in self.cv_mape_pct if m != self.model]
        if self.model == "none" and not others:
            lines.append(
                f"no calibration: only the raw block sum could be fitted on {self.n_fit} network"
                f"{'s' if self.n_fit != 1 else ''}, so predictions are the raw sum"
            )
        elif self.model == "none" and self.excluded:
            lines.append(
                f"no calibration: the models that beat the raw block sum in cross-validation (MAPE {tried}) "
                "extrapolate past their fit networks, so predictions are the raw sum"
            )
        elif self.model == "none" and self.not_better:
            lines.append(
                "no calibration: no model beat the raw block sum by more than one standard error in "
                f"cross-validation on {self.n_fit} networks (MAPE {tried}), so predictions are the raw sum"
            )
        elif self.model == "none":
            lines.append(f"no calibration: no model beat the raw block sum in cross-validation (MAPE {tried})")
        else:
            lines.append(f"calibration {self.model} chosen by cross-validated MAPE on {self.n_fit} networks ({tried})")
        for model, why in self.excluded.items():
            lines.append(f"  not kept: {model}: {why}")
        for model, why in self.not_better.items():
            lines.append(f"  not kept: {model}: {why}")
        for model, why in self.not_fitted.items():
            lines.append(f"  not fitted: {model}: {why}")
        return lines


#: A calibration must hold for networks this many times smaller and larger than those it was fitted on: each
#: fit network's block sum, block count, block I/O and per-type sums scaled by 1/DOMAIN_FACTOR and by
#: DOMAIN_FACTOR (the same mix of blocks, ten times fewer or more). The reference networks span about 10-1000 ms
#: on a CPU; a fit set may hold only some of that range.
DOMAIN_FACTOR = 10.0

#: ... where "hold" means a prediction of at least 1/DOMAIN_RATIO of the raw block sum: a whole network is not
#: four times faster than its blocks timed alone, so a calibration that says so (or gives a negative figure) is
#: a negative intercept or I/O term extrapolated past its data. Larger figures are left alone: a per-network
#: overhead the blocks did not see can make a tiny network several times its block sum.
DOMAIN_RATIO = 4.0


def domain_problem(cal: Calibration, sum_ms: np.ndarray, n_blocks: Any, type_sums: Any, io_mel: Any) -> str | None:
    """Why ``cal`` leaves its domain on the networks given (raw sums ``sum_ms`` and the rest as for
    :meth:`Calibration.apply`) scaled by 1/:data:`DOMAIN_FACTOR` and :data:`DOMAIN_FACTOR`, or ``None``."""
    if cal.model == "none":
        return None
    for factor in (1.0 / DOMAIN_FACTOR, DOMAIN_FACTOR):
        s = np.asarray(sum_ms, dtype=np.float64) * factor
        types = (
            None if type_sums is None else {t: np.asarray(v, dtype=np.float64) * factor for t, v in type_sums.items()}
        )
        io = None if io_mel is None else np.asarray(io_mel, dtype=np.float64) * factor
        blocks = None if n_blocks is None else np.asarray(n_blocks, dtype=np.float64) * factor
        pred = np.asarray(cal.apply(s, blocks, types, io, extrapolate=True), dtype=np.float64)
        ratio = np.divide(pred, s, out=np.full_like(s, np.nan), where=s > 0)
        bad = ~(np.isfinite(ratio) & (ratio >= 1.0 / DOMAIN_RATIO))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            size = f"1/{DOMAIN_FACTOR:g}" if factor < 1 else f"{DOMAIN_FACTOR:g} times"
            return (
                f"it gives {pred[i]:.4g} ms for a network {size} the size of a fit network (raw sum {s[i]:.4g} ms): "
                f"it extrapolates past its fit networks; fit it on smaller and larger networks too"
            )
    return None


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise ValueError(f"{name}={value!r} is not a count")
    return int(value)


def _mapping(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a JSON object, not {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- fitting
@dataclass
class _Data:
    sum_ms: np.ndarray
    measured: np.ndarray
    n_blocks: np.ndarray | None
    types: list[str]
    type_sums: np.ndarray | None  # (n, n_types)
    io_mel: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> _Data:
        return _Data(
            self.sum_ms[idx],
            self.measured[idx],
            None if self.n_blocks is None else self.n_blocks[idx],
            self.types,
            None if self.type_sums is None else self.type_sums[idx],
            None if self.io_mel is None else self.io_mel[idx],
        )

    def type_dict(self) -> dict[str, np.ndarray] | None:
        if self.type_sums is None:
            return None
        return {t: self.type_sums[:, j] for j, t in enumerate(self.types)}


def _least_squares(design: np.ndarray, target: np.ndarray, bounds: list[tuple[float, float]]) -> np.ndarray:
    """The least-squares solution with each coefficient within its bounds (plain least squares when inside)."""
    x, *_ = np.linalg.lstsq(design, target, rcond=None)
    lower = np.array([b[0] for b in bounds])
    upper = np.array([b[1] for b in bounds])
    if np.all(x >= lower) and np.all(x <= upper):
        return x
    return lsq_linear(design, target, bounds=(lower, upper), method="bvls").x


def _fit_model(model: str, d: _Data, floor_ms: float | None) -> Calibration:
    """Least squares on *relative* errors, sum(((fit - measured) / measured) ** 2): the accuracy
    figures are relative, and plain least squares would let the largest networks set the fit. Every
    coefficient stays in its sane range (:data:`LIMITS`): a slope is positive, a scale is not negative.
    The result records its fit networks' range of block sums (:attr:`Calibration.fit_sum_ms`)."""
    cal = _fit_map(model, d, floor_ms)
    if model != "none" and len(d.sum_ms) and float(np.min(d.sum_ms)) > 0:
        cal.fit_sum_ms = (float(np.min(d.sum_ms)), float(np.max(d.sum_ms)))
    return cal


def _fit_map(model: str, d: _Data, floor_ms: float | None) -> Calibration:
    n = len(d.measured)
    w = 1.0 / d.measured
    target = d.measured * w
    if model == "none":
        return Calibration("none")
    if model in ("linear", "floor_linear"):
        x = d.sum_ms if model == "linear" else d.sum_ms - d.n_blocks * float(floor_ms)
        design = np.column_stack([x, np.ones(n)])
        a, b = _least_squares(design * w[:, None], target, [LIMITS["a"], LIMITS["b"]])
        return Calibration(model, a=float(a), b=float(b), floor_ms=floor_ms if model == "floor_linear" else None)
    if model == "io_linear":
        design = np.column_stack([d.sum_ms, d.io_mel, np.ones(n)])
        a, c, b = _least_squares(design * w[:, None], target, [LIMITS["a"], LIMITS["io_ms_per_mel"], LIMITS["b"]])
        return Calibration(model, a=float(a), b=float(b), io_ms_per_mel=float(c))
    design = np.column_stack([d.type_sums, np.ones(n)])
    k = d.type_sums.shape[1]
    coef = _least_squares(design * w[:, None], target, [LIMITS["type_scale"]] * k + [LIMITS["b"]])
    scales = {t: float(c) for t, c in zip(d.types, coef[:k])}
    return Calibration("per_type", b=float(coef[k]), type_scales=scales)


def _apply(cal: Calibration, d: _Data) -> np.ndarray:
    return np.asarray(cal.apply(d.sum_ms, d.n_blocks, d.type_dict(), d.io_mel), dtype=np.float64)


def _folds(n: int, folds: int, seed: int) -> list[np.ndarray]:
    k = min(folds, n)  # leave-one-out for small sets
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def _held_out_predictions(model: str, d: _Data, floor_ms: float | None, folds: int, seed: int) -> np.ndarray:
    n = len(d.measured)
    out = np.empty(n, dtype=np.float64)
    for test in _folds(n, folds, seed):
        train = np.setdiff1d(np.arange(n), test)
        cal = _fit_model(model, d.take(train), floor_ms)
        out[test] = _apply(cal, d.take(test))
    return out


def _standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` (0 for fewer than two)."""
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def _min_points(model: str, n_types: int) -> int:
    # enough points that every training fold over-determines the model
    return {"none": 1, "linear": 4, "floor_linear": 4, "per_type": n_types + 4, "io_linear": 6}[model]


def fit(
    sum_ms: Sequence[float] | np.ndarray,
    measured_ms: Sequence[float] | np.ndarray,
    *,
    n_blocks: Sequence[int] | np.ndarray | None = None,
    type_sums: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    floor_ms: float | None = None,
    io_mel: Sequence[float] | np.ndarray | None = None,
    models: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    table: Mapping[str, Any] | None = None,
) -> Calibration:
    """Fit every applicable model and keep the one with the lowest cross-validated MAPE.

    Inputs, one entry per network: ``sum_ms`` the raw block sums and
    ``measured_ms`` the end-to-end measurements (both ms per batch); optional
    ``n_blocks`` (blocks per network, enables ``floor_linear`` together with
    ``floor_ms``, the backend floor in ms per batch) and ``type_sums`` (block type ->
    per-network sums of that type in ms per batch, enables ``per_type``) and
    ``io_mel`` (the blocks' input plus output per network, millions of elements
    per batch, enables ``io_linear``).
    ``models`` restricts the candidates; ``folds``-fold cross-validation
    (leave-one-out when there are fewer networks). ``table`` is the identity
    (device_profile, backend, precision, batch) stored with the result.

    Returns the chosen :class:`Calibration`, refitted on all networks, with the
    candidates' cross-validated errors and the accuracy with and without it.
    """
    s = np.asarray(sum_ms, dtype=np.float64).ravel()
    m = np.asarray(measured_ms, dtype=np.float64).ravel()
    if s.shape != m.shape:
        raise ValueError(f"sum_ms and measured_ms must have the same length; got {len(s)} and {len(m)}")
    if len(s) == 0:
        raise ValueError("no networks to fit a calibration on: measure some networks end to end first")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(m)) and np.all(m > 0)):
        raise ValueError("sum_ms and measured_ms must be finite and measured_ms positive; drop failed networks")
    nb = None if n_blocks is None else np.asarray(n_blocks, dtype=np.float64).ravel()
    if nb is not None and nb.shape != s.shape:
        raise ValueError(f"n_blocks must have one entry per network ({len(s)}); got {len(nb)}")
    types: list[str] = sorted(type_sums) if type_sums else []
    ts = None
    if types:
        ts = np.column_stack([np.asarray(type_sums[t], dtype=np.float64).ravel() for t in types])
        if ts.shape[0] != len(s):
            raise ValueError(f"type_sums must have one entry per network ({len(s)}) for every block type")
    if floor_ms is not None and not (math.isfinite(floor_ms) and floor_ms >= 0):
        raise ValueError(f"floor_ms must be a non-negative number of ms per batch; got {floor_ms!r}")
    io = None if io_mel is None else np.asarray(io_mel, dtype=np.float64).ravel()
    if io is not None and (io.shape != s.shape or not np.all(np.isfinite(io))):
        raise ValueError(f"io_mel must have one finite entry per network ({len(s)})")
    d = _Data(s, m, nb, types, ts, io)

    wanted = list(models) if models is not None else list(MODELS)
    for name in wanted:
        if name not in MODELS:
            raise ValueError(f"unknown calibration model {name!r}: use one of {', '.join(MODELS)}")
    usable = {
        "none": True,
        "linear": True,
        "floor_linear": nb is not None and floor_ms is not None,
        "per_type": ts is not None,
        "io_linear": io is not None,
    }
    needs = {
        "floor_linear": "needs the blocks per network and the table's floor",
        "per_type": "needs the per-type block sums",
        "io_linear": "needs the block input and output sizes",
    }
    candidates: list[str] = []
    not_fitted: dict[str, str] = {}
    for name in MODELS:
        if name not in wanted:
            continue
        need = _min_points(name, len(types))
        if not usable[name]:
            not_fitted[name] = needs.get(name, "its inputs are missing")
        elif len(s) < need:
            more = need - len(s)
            not_fitted[name] = (
                f"needs at least {need} fit networks, {len(s)} given: measure {more} more network"
                f"{'s' if more != 1 else ''} end to end (or hold fewer out)"
            )
        else:
            candidates.append(name)
    if not candidates:
        raise ValueError(
            f"none of the models {', '.join(wanted)} can be fitted on {len(s)} networks with the inputs given; "
            "measure more networks or pass n_blocks/floor_ms/type_sums/io_mel"
        )
    cv_pred = {name: _held_out_predictions(name, d, floor_ms, folds, seed) for name in candidates}
    ape = {name: np.abs(cv_pred[name] - m) / m * 100.0 for name in candidates}
    cv_mape = {name: float(np.mean(ape[name])) for name in candidates}
    cv_se = {name: _standard_error(ape[name]) for name in candidates}
    excluded: dict[str, str] = {}
    fitted: dict[str, Calibration] = {}
    for name in sorted(candidates, key=lambda name: (round(cv_mape[name], 9), MODELS.index(name))):
        candidate = _fit_model(name, d, floor_ms)
        problem = domain_problem(candidate, s, nb, d.type_dict(), io)
        if problem is not None:
            excluded[name] = problem
            continue
        fitted[name] = candidate
    best, cal = "none", _fit_model("none", d, floor_ms)  # when every candidate leaves its domain
    not_better: dict[str, str] = {}
    if fitted:
        lowest = min(fitted, key=lambda name: (round(cv_mape[name], 9), MODELS.index(name)))
        reach = cv_mape[lowest] + cv_se[lowest]
        best = next(name for name in MODELS if name in fitted and cv_mape[name] <= reach + 1e-9)
        cal = fitted[best]
        for name in fitted:
            if cv_mape[name] < cv_mape[best] and name != best:
                not_better[name] = (
                    f"its cross-validated MAPE {cv_mape[name]:.2f}% is within one standard error "
                    f"({cv_se[lowest]:.2f}%) of the lowest, so the simpler {best} ({cv_mape[best]:.2f}%) is kept"
                )
    excluded = {name: why for name, why in excluded.items() if cv_mape[name] < cv_mape[best]}
    cal.excluded = excluded
    cal.not_better = not_better
    cal.cv_se_pct = cv_se
    cal.table = {k: table[k] for k in TABLE_IDENTITY if table is not None and k in table}
    if table is not None and "backend_settings" in table:  # a whole metadata document: link to its settings
        cal.table["settings_id"] = settings_id(table)
    cal.n_fit = len(s)
    cal.cv_mape_pct = cv_mape
    cal.not_fitted = not_fitted
    cal.accuracy = {
        "uncalibrated": accuracy_metrics(s, m),
        "calibrated": accuracy_metrics(_apply(cal, d), m),
        "calibrated_cv": accuracy_metrics(cv_pred[best], m),
    }
    return cal
