"""Estimate the keys a table lacks from the keys it measured, with an error measured on the table itself.

Features come from the key alone (:func:`key_features`): its block type, shapes
and configuration, FLOPs, bytes moved, parameters and arithmetic intensity
(:mod:`tables.cost`), and its boundary quantity (the input and output elements
a block moves across the engine's boundary). The target is what the predictor
sums for a key (``LatencyTable.block_array``: its in-network latency when the
table measured boundaries), on a log scale. Two models are fitted and compared
by cross-validation over the measured keys (:data:`MODELS`):

- ``roofline``: a physically shaped model per block type: latency = a + b *
  FLOPs + c * bytes moved + d * boundary elements, every coefficient >= 0
  (non-negative least squares on relative errors), so an estimate grows with
  the work and the traffic the way a roofline says it must;
- ``boosting``: gradient-boosted trees (scikit-learn's
  ``HistGradientBoostingRegressor``, seeded) on the log of the latency over all
  the features, block type included.

:func:`fit_estimator` keeps the one with the lower cross-validated median
absolute percentage error, refits it on every measured key and stores its
error per block type (:class:`Estimator.errors`: median and 90th percentile of
the absolute percentage error over the held-out folds, and the relative spread
the prediction intervals use). Estimates are never mixed into predictions
silently: :func:`tables.predictor.predict` uses them only with
``estimate_missing=True`` and says how many keys of each architecture were
estimated. Nothing is pickled: an estimator is refitted from its table (seeded,
deterministic), only its description and errors are stored.

scikit-learn is imported only by the ``boosting`` model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tables.cost import key_cost
from tables.key import ACTIVATIONS, BLOCK_TYPES, BlockKey, parse_key

#: Models :func:`fit_estimator` compares, simplest first (ties go to the simpler one).
MODELS: tuple[str, ...] = ("roofline", "boosting")

#: Folds of the cross-validation over measured keys.
FOLDS = 5

#: Fewest measured keys a table needs before it can be cross-validated at all.
MIN_KEYS = 20

#: Fewest measured keys of a block type for the ``roofline`` model of that type (else it borrows the
#: model of all types together).
MIN_KEYS_PER_TYPE = 6

#: z-score of a two-sided 90% interval (the default prediction interval).
Z90 = 1.6448536269514722


def key_features(keys: Sequence[BlockKey], batch: int, precision: str) -> dict[str, np.ndarray]:
    """The features of each key (arrays of len(keys)): ``flops``, ``bytes``, ``params``, ``intensity``,
    ``boundary`` (input + output elements per batch), ``hw``, ``cin``, ``cout``, ``k``, ``s``, ``e``, ``se``,
    ``act`` (index in ACTIVATIONS), ``block`` (index in BLOCK_TYPES), ``pad`` (1 for valid)."""
    types = list(BLOCK_TYPES)
    rows = []
    for key in keys:
        c = key_cost(key, batch, precision)
        rows.append(
            (
                c.flops,
                c.bytes_moved,
                c.params,
                c.arithmetic_intensity,
                key.io_elements * batch,
                key.h * key.w,
                key.cin,
                key.cout,
                key.k,
                key.s,
                key.e,
                int(key.se),
                ACTIVATIONS.index(key.act),
                types.index(key.block),
                int(getattr(key, "pad", "same") == "valid"),
            )
        )
    names = ("flops", "bytes", "params", "intensity", "boundary", "hw", "cin", "cout", "k", "s", "e", "se")
    names += ("act", "block", "pad")
    arr = np.asarray(rows, dtype=np.float64).reshape(len(keys), len(names))
    return {name: arr[:, i] for i, name in enumerate(names)}


def _design(f: Mapping[str, np.ndarray]) -> np.ndarray:
    """The roofline model's columns: 1, FLOPs, bytes, boundary elements (scaled to order one)."""
    return np.column_stack([np.ones(len(f["flops"])), f["flops"] / 1e9, f["bytes"] / 1e8, f["boundary"] / 1e6])


def _nnls_relative(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    w = 1.0 / y
    coef, _ = nnls(design * w[:, None], np.ones(len(y)))
    return coef


@dataclass
class _Roofline:
    """Per block type non-negative linear models in FLOPs, bytes and boundary elements."""

    per_type: dict[int, np.ndarray] = field(default_factory=dict)
    pooled: np.ndarray | None = None

    def fit(self, f: Mapping[str, np.ndarray], y: np.ndarray) -> _Roofline:
        design = _design(f)
        self.pooled = _nnls_relative(design, y)
        for t in np.unique(f["block"]).astype(int):
            mask = f["block"] == t
            if mask.sum() >= MIN_KEYS_PER_TYPE:
                self.per_type[int(t)] = _nnls_relative(design[mask], y[mask])
        return self

    def predict(self, f: Mapping[str, np.ndarray]) -> np.ndarray:
        design = _design(f)
        out = design @ self.pooled
        for t, coef in self.per_type.items():
            mask = f["block"] == t
            out[mask] = design[mask] @ coef
        return np.maximum(out, 1e-6)


@dataclass
class _Boosting:
    """Gradient-boosted trees on log latency over every feature."""

    seed: int = 0
    model: Any = None

    @staticmethod
    def _x(f: Mapping[str, np.ndarray]) -> np.ndarray:
        logs = [np.log1p(f[n]) for n in ("flops", "bytes", "params", "intensity", "boundary", "hw", "cin", "cout")]
        rest = [f[n] for n in ("k", "s", "e", "se", "act", "block", "pad")]
        return np.column_stack([*logs, *rest])

    def fit(self, f: Mapping[str, np.ndarray], y: np.ndarray) -> _Boosting:
        try:
            from sklearn.ensemble import HistGradientBoostingRegressor
        except ImportError as exc:  # pragma: no cover - scikit-learn is in the dev install
            raise ValueError(
                f"the boosting estimator needs scikit-learn ({exc}): pip install -e '.[estimate]'"
            ) from None
        x = self._x(f)
        categorical = np.zeros(x.shape[1], dtype=bool)
        categorical[-3:-1] = True  # act, block
        self.model = HistGradientBoostingRegressor(
            max_iter=400,
            learning_rate=0.08,
            min_samples_leaf=5,
            categorical_features=categorical,
            random_state=self.seed,
        )
        self.model.fit(x, np.log(y))
        return self

    def predict(self, f: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.exp(self.model.predict(self._x(f)))


def available_models() -> tuple[str, ...]:
    """The :data:`MODELS` this environment can fit: ``boosting`` needs scikit-learn (the ``estimate`` extra)."""
    import importlib.util

    return tuple(m for m in MODELS if m != "boosting" or importlib.util.find_spec("sklearn") is not None)


def _make(model: str, seed: int) -> Any:
    if model == "roofline":
        return _Roofline()
    if model == "boosting":
        return _Boosting(seed)
    raise ValueError(f"unknown estimator model {model!r}: use one of {', '.join(MODELS)}")


def _subset(f: Mapping[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in f.items()}


def _type_errors(ape: np.ndarray, blocks: np.ndarray) -> dict[str, dict[str, float]]:
    names = list(BLOCK_TYPES)
    out: dict[str, dict[str, float]] = {}
    for t in np.unique(blocks).astype(int):
        e = ape[blocks == t]
        out[names[t]] = {
            "n": len(e),
            "median_ape_pct": float(np.median(e)),
            "p90_ape_pct": float(np.percentile(e, 90)),
            "sigma_rel": float(np.sqrt(np.mean((e / 100.0) ** 2))),
        }
    return out


@dataclass
class Estimator:
    """A fitted key-level estimator of one table.

    Attributes:
        model: the model kept (one of :data:`MODELS`).
        batch, precision: the table's.
        n_keys: measured keys it was fitted on.
        cv: model -> cross-validated median absolute percentage error (%) over all measured keys.
        errors: block type -> ``n``, ``median_ape_pct``, ``p90_ape_pct`` and ``sigma_rel`` (the root mean
            square relative error: the spread a prediction interval gives an estimated key) of the kept
            model over the held-out folds.
        overall: the same over every measured key.
    """

    model: str
    batch: int
    precision: str
    n_keys: int
    cv: dict[str, float]
    errors: dict[str, dict[str, float]]
    overall: dict[str, float]
    _fitted: Any = field(default=None, repr=False)

    def estimate(self, keys: Iterable[BlockKey | str]) -> np.ndarray:
        """Estimated block latencies (ms per batch, what the predictor sums) of ``keys``.

        Raises ``ValueError`` for a key whose block type the table measured no key of (say which type and how
        many keys to measure).
        """
        ks = [k if isinstance(k, BlockKey) else parse_key(k) for k in keys]
        known = set(self.errors)
        for key in ks:
            if key.block not in known:
                raise ValueError(
                    f"cannot estimate {key}: the table measured no {key.block} key; measure at least "
                    f"{MIN_KEYS_PER_TYPE} keys of type {key.block} (python -m profiler.build --archs FILE)"
                )
        if not ks:
            return np.zeros(0)
        return self._fitted.predict(key_features(ks, self.batch, self.precision))

    def sigma_rel(self, keys: Iterable[BlockKey | str]) -> np.ndarray:
        """The relative spread (1 sigma) of each key's estimate, from its block type's held-out error."""
        out = []
        for k in keys:
            block = k.block if isinstance(k, BlockKey) else parse_key(k).block
            out.append(self.errors.get(block, self.overall)["sigma_rel"])
        return np.asarray(out, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The description stored with the table (metadata ``estimator``); the model itself is refitted."""
        return {
            "model": self.model,
            "n_keys": self.n_keys,
            "cv_median_ape_pct": dict(self.cv),
            "errors": {k: dict(v) for k, v in self.errors.items()},
            "overall": dict(self.overall),
            "features": "block type, shapes, config, FLOPs, bytes moved, params, intensity, boundary elements",
        }

    def summary(self) -> str:
        """One line: the model, its held-out median error and the alternative's."""
        alt = ", ".join(f"{m} {v:.2f}%" for m, v in self.cv.items())
        if "boosting" not in self.cv:
            alt += " (boosting not compared: it needs scikit-learn, pip install -e '.[estimate]')"
        return (
            f"estimator {self.model} on {self.n_keys} measured keys: held-out median |error| "
            f"{self.overall['median_ape_pct']:.2f}% (90th percentile {self.overall['p90_ape_pct']:.2f}%); "
            f"models compared: {alt}"
        )


def fit_estimator(
    keys: Sequence[BlockKey | str],
    values_ms: Sequence[float] | np.ndarray,
    *,
    batch: int,
    precision: str,
    models: Sequence[str] | None = None,
    folds: int = FOLDS,
    seed: int = 0,
) -> Estimator:
    """Fit the models on measured keys and their block latencies (ms per batch), keep the better by
    cross-validated median error, refit it on all keys. ``models``: those to compare (default: every one
    :func:`available_models` can fit).

    Raises ``ValueError`` (one line) with fewer than :data:`MIN_KEYS` keys, saying how many to measure.
    """
    ks = [k if isinstance(k, BlockKey) else parse_key(k) for k in keys]
    y = np.asarray(values_ms, dtype=np.float64)
    if len(ks) != len(y):
        raise ValueError(f"keys and values must have the same length; got {len(ks)} and {len(y)}")
    good = np.isfinite(y) & (y > 0)
    ks, y = [k for k, g in zip(ks, good) if g], y[good]
    if len(ks) < MIN_KEYS:
        raise ValueError(
            f"the table has {len(ks)} measured keys, too few to cross-validate an estimator: measure at least "
            f"{MIN_KEYS - len(ks)} more (at least {MIN_KEYS} in all)"
        )
    models = tuple(models) if models is not None else available_models()
    f = key_features(ks, batch, precision)
    n = len(y)
    order = np.random.default_rng(seed).permutation(n)
    parts = [order[i::folds] for i in range(folds)]
    cv_ape: dict[str, np.ndarray] = {}
    for model in models:
        pred = np.empty(n)
        for test in parts:
            train = np.setdiff1d(np.arange(n), test)
            fitted = _make(model, seed).fit(_subset(f, train), y[train])
            pred[test] = fitted.predict(_subset(f, test))
        cv_ape[model] = np.abs(pred / y - 1.0) * 100.0
    cv = {m: float(np.median(a)) for m, a in cv_ape.items()}
    best = min(models, key=lambda m: (round(cv[m], 9), MODELS.index(m)))
    ape = cv_ape[best]
    overall = {
        "n": n,
        "median_ape_pct": float(np.median(ape)),
        "p90_ape_pct": float(np.percentile(ape, 90)),
        "sigma_rel": float(np.sqrt(np.mean((ape / 100.0) ** 2))),
    }
    fitted = _make(best, seed).fit(f, y)
    return Estimator(best, batch, precision, n, cv, _type_errors(ape, f["block"]), overall, fitted)


def disagreement(
    keys: Sequence[BlockKey | str],
    values_ms: Sequence[float] | np.ndarray,
    candidates: Sequence[BlockKey],
    *,
    batch: int,
    precision: str,
    seed: int = 0,
) -> np.ndarray | None:
    """How much the models, each fitted on the measured ``keys``, disagree on each candidate key: the largest
    absolute difference of their log estimates, in percent (a committee's disagreement: where the estimator
    is least sure). ``None`` when fewer than two models can be fitted here (:func:`available_models`)."""
    models = available_models()
    if len(models) < 2:
        return None
    ks = [k if isinstance(k, BlockKey) else parse_key(k) for k in keys]
    f = key_features(ks, batch, precision)
    y = np.asarray(values_ms, dtype=np.float64)
    g = key_features(list(candidates), batch, precision)
    logs = np.vstack([np.log(_make(m, seed).fit(f, y).predict(g)) for m in models])
    return (logs.max(axis=0) - logs.min(axis=0)) * 100.0


def interval(center_ms: np.ndarray | float, sigma_ms: np.ndarray | float, z: float = Z90) -> tuple[Any, Any]:
    """``(low, high)`` of a two-sided interval ``center +- z * sigma``, never below zero."""
    c = np.asarray(center_ms, dtype=np.float64)
    s = np.asarray(sigma_ms, dtype=np.float64)
    low, high = np.maximum(c - z * s, 0.0), c + z * s
    if np.ndim(center_ms) == 0 and np.ndim(sigma_ms) == 0:
        return float(low), float(high)
    return low, high


def z_for(level: float) -> float:
    """The two-sided normal z-score of a coverage ``level`` (0 < level < 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must be a fraction in (0, 1), got {level!r}")
    from statistics import NormalDist

    return float(NormalDist().inv_cdf(0.5 + level / 2.0))


__all__ = [
    "FOLDS",
    "MIN_KEYS",
    "MIN_KEYS_PER_TYPE",
    "MODELS",
    "Z90",
    "Estimator",
    "available_models",
    "disagreement",
    "fit_estimator",
    "interval",
    "key_features",
    "z_for",
]
