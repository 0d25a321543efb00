"""Estimate the keys a table lacks from the keys it measured, with an error measured on the table itself.

Features come from the key alone (:func:`key_features`): its block type, shapes
and configuration, FLOPs, bytes moved, parameters and arithmetic intensity
(:mod:`tables.cost`), and its boundary quantity (the input and output elements
a block moves across the engine's boundary); the ``layers`` models read the
key's layers (:func:`layer_terms`). The target is what the predictor sums for a
key (``LatencyTable.block_array``: its in-network latency when the table
measured boundaries). The models (:data:`MODELS`) are compared by
cross-validation over the measured keys:

- ``roofline``: a physically shaped model per block type: latency = a + b *
  FLOPs + c * bytes moved + d * boundary elements, every coefficient >= 0
  (non-negative least squares on relative errors), so an estimate grows with
  the work and the traffic the way a roofline says it must;
- ``layers``: a physically shaped model over the key's layers, shared by every
  block type (a block is the sum of its layers, and the same convolution kernel
  runs in every block that holds it): each layer kind costs, with coefficients
  >= 0, per multiply-accumulate (1x1, kxk and the first layer's few-channel
  convolutions apart; depthwise per kernel size), per multiply-accumulate with
  the channels padded to the engine's channel blocks of 8 and 16 (onnxruntime's
  NCHWc kernels, tensor cores: a convolution of 24 channels costs what one of
  32 does), per element read and written, per weight, per elementwise element
  (sigmoid, binary, clamp), per node, plus a per-call constant;
- ``boosting``: gradient-boosted trees (scikit-learn's
  ``HistGradientBoostingRegressor``, seeded) on the log of the latency over all
  the features, block type included;
- ``layers_boosted``: the ``layers`` model, with gradient-boosted trees fitted
  on the log of what it leaves (shapes and configurations it cannot express).

:func:`fit_estimator` keeps the one with the lower cross-validated median
absolute percentage error, refits it on every measured key and stores its
error per block type (:class:`Estimator.errors`: median and 90th percentile of
the absolute percentage error over the held-out folds, and the relative spread
the prediction intervals use). Estimates are never mixed into predictions
silently: :func:`tables.predictor.predict` uses them only with
``estimate_missing=True`` and says how many keys of each architecture were
estimated. Nothing is pickled: an estimator is refitted from its table (seeded,
deterministic), only its description and errors are stored.

scikit-learn is imported only by the ``boosting`` and ``layers_boosted`` models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tables.cost import key_cost, key_layers
from tables.key import ACTIVATIONS, BLOCK_TYPES, BlockKey, parse_key

#: Models :func:`fit_estimator` compares, simplest first (ties go to the simpler one).
MODELS: tuple[str, ...] = ("roofline", "layers", "boosting", "layers_boosted")

#: The models that need scikit-learn.
TREE_MODELS: frozenset[str] = frozenset({"boosting", "layers_boosted"})

#: Channel blocks a convolution's channels are padded to by the engines' kernels (the ``layers`` models).
CHANNEL_BLOCKS: tuple[int, ...] = (8, 16)

#: A dense convolution with fewer input channels than this is a network's first layer (``stem``): engines run it
#: with their own kernels (onnxruntime: from NCHW input), so it has its own terms.
STEM_CHANNELS = 8

#: The terms of the ``layers`` models, in column order (see :func:`layer_terms`).
LAYER_TERMS: tuple[str, ...] = (
    "call",
    "nodes",
    "tiny_nodes",
    "stem_macs",
    "stem_out",
    "conv1_macs",
    *(f"conv1_macs_c{b}" for b in CHANNEL_BLOCKS),
    "convk_macs",
    *(f"convk_macs_c{b}" for b in CHANNEL_BLOCKS),
    "dw3_macs",
    "dw5_macs",
    "dw7_macs",
    "conv_in",
    "conv_out",
    "conv_weights",
    "sigmoid",
    "binary",
    "clamp",
    "reduce",
    "pool",
    "gemm_macs",
)

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
    ``act`` (index in ACTIVATIONS), ``block`` (index in BLOCK_TYPES), ``pad`` (1 for valid), and ``layers``
    (:func:`layer_terms`, a 2-D array)."""
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
    out = {name: arr[:, i] for i, name in enumerate(names)}
    out["layers"] = layer_terms(keys, batch)
    return out


def _blocked(c: int, block: int) -> int:
    return -(-c // block) * block


_COLUMN = {name: i for i, name in enumerate(LAYER_TERMS)}


def _layer_row(key: BlockKey) -> np.ndarray:
    """One key's :data:`LAYER_TERMS` for one image (the batch scales them in :func:`layer_terms`)."""
    col = _COLUMN
    row = np.zeros(len(LAYER_TERMS))
    row[col["call"]] = 1.0
    for layer in key_layers(key):
        row[col["nodes"]] += 1.0
        out = layer.output_elements
        if layer.op == "Conv":
            cout, h, w = layer.output
            if h * w == 1:  # per-channel ops on a 1x1 map (squeeze-excite): what they cost is the node
                row[col["tiny_nodes"]] += 1.0
                continue
            cin = layer.inputs[0][0]
            k2 = layer.kernel * layer.kernel
            if layer.groups > 1 and layer.groups == cin:
                bucket = 3 if layer.kernel <= 3 else 5 if layer.kernel <= 5 else 7
                row[col[f"dw{bucket}_macs"]] += layer.macs
            elif cin < STEM_CHANNELS:
                row[col["stem_macs"]] += layer.macs
                row[col["stem_out"]] += out
            else:
                kind = "conv1" if layer.kernel == 1 else "convk"
                row[col[f"{kind}_macs"]] += layer.macs
                for b in CHANNEL_BLOCKS:
                    row[col[f"{kind}_macs_c{b}"]] += h * w * k2 * _blocked(cin, b) * _blocked(cout, b) / layer.groups
            row[col["conv_in"]] += layer.input_elements
            row[col["conv_out"]] += out
            row[col["conv_weights"]] += layer.weights
        elif layer.op == "Sigmoid":
            row[col["sigmoid"]] += out
        elif layer.op in ("Mul", "Add"):
            row[col["binary"]] += out
        elif layer.op in ("Relu", "Clip"):
            row[col["clamp"]] += out
        elif layer.op == "ReduceMean":
            row[col["reduce"]] += layer.input_elements
        elif layer.op == "MaxPool":
            row[col["pool"]] += layer.flops
        elif layer.op == "Gemm":
            row[col["gemm_macs"]] += layer.macs
    return row


#: Terms that do not grow with the batch: the call, the nodes, the weights.
_PER_CALL = frozenset({"call", "nodes", "tiny_nodes", "conv_weights"})


def layer_terms(keys: Sequence[BlockKey], batch: int) -> np.ndarray:
    """The ``layers`` models' design matrix: one row per key, one column per :data:`LAYER_TERMS` entry, per batch
    (the call, node and weight terms once, every other term times ``batch``)."""
    rows = np.asarray([_layer_row(k) for k in keys], dtype=np.float64).reshape(len(keys), len(LAYER_TERMS))
    scale = np.asarray([1.0 if name in _PER_CALL else float(batch) for name in LAYER_TERMS])
    return rows * scale


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
class _Layers:
    """One non-negative linear model over the keys' layer terms, shared by every block type."""

    coef: np.ndarray | None = None
    scale: np.ndarray | None = None

    def fit(self, f: Mapping[str, np.ndarray], y: np.ndarray) -> _Layers:
        x = f["layers"]
        self.scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
        self.coef = _nnls_relative(x / self.scale, y)
        return self

    def predict(self, f: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.maximum((f["layers"] / self.scale) @ self.coef, 1e-6)


def _trees(seed: int, categorical: np.ndarray, **params: Any) -> Any:
    """scikit-learn's seeded ``HistGradientBoostingRegressor`` with ``params``; a one-line error without it."""
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the dev install
        raise ValueError(f"the tree estimators need scikit-learn ({exc}): pip install -e '.[estimate]'") from None
    return HistGradientBoostingRegressor(categorical_features=categorical, random_state=seed, **params)


@dataclass
class _LayersBoosted:
    """The ``layers`` model times trees fitted on the log of its ratio to the measured latency."""

    seed: int = 0
    base: _Layers | None = None
    model: Any = None

    @staticmethod
    def _x(f: Mapping[str, np.ndarray], base: np.ndarray) -> np.ndarray:
        return np.column_stack([_Boosting._x(f), np.log(base)])

    def fit(self, f: Mapping[str, np.ndarray], y: np.ndarray) -> _LayersBoosted:
        self.base = _Layers().fit(f, y)
        base = self.base.predict(f)
        x = self._x(f, base)
        categorical = np.append(_Boosting.categorical(x.shape[1] - 1), False)  # the base estimate comes last
        self.model = _trees(
            self.seed, categorical, max_iter=50, learning_rate=0.05, min_samples_leaf=10, l2_regularization=1.0
        )
        self.model.fit(x, np.log(y / base))
        return self

    def predict(self, f: Mapping[str, np.ndarray]) -> np.ndarray:
        base = self.base.predict(f)
        return base * np.exp(self.model.predict(self._x(f, base)))


@dataclass
class _Boosting:
    """Gradient-boosted trees on log latency over every feature."""

    seed: int = 0
    model: Any = None

    @staticmethod
    def categorical(width: int) -> np.ndarray:
        """Which of :meth:`_x`'s ``width`` columns are categories: ``act`` and ``block``."""
        mask = np.zeros(width, dtype=bool)
        mask[-3:-1] = True
        return mask

    @staticmethod
    def _x(f: Mapping[str, np.ndarray]) -> np.ndarray:
        logs = [np.log1p(f[n]) for n in ("flops", "bytes", "params", "intensity", "boundary", "hw", "cin", "cout")]
        rest = [f[n] for n in ("k", "s", "e", "se", "act", "block", "pad")]
        return np.column_stack([*logs, *rest])

    def fit(self, f: Mapping[str, np.ndarray], y: np.ndarray) -> _Boosting:
        x = self._x(f)
        self.model = _trees(
            self.seed,
            self.categorical(x.shape[1]),
            max_iter=400,
            learning_rate=0.08,
            min_samples_leaf=5,
            l2_regularization=0.0,
        )
        self.model.fit(x, np.log(y))
        return self

    def predict(self, f: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.exp(self.model.predict(self._x(f)))


def available_models() -> tuple[str, ...]:
    """The :data:`MODELS` this environment can fit: the tree models need scikit-learn (the ``estimate`` extra)."""
    import importlib.util

    trees = importlib.util.find_spec("sklearn") is not None
    return tuple(m for m in MODELS if m not in TREE_MODELS or trees)


def _make(model: str, seed: int) -> Any:
    if model == "roofline":
        return _Roofline()
    if model == "layers":
        return _Layers()
    if model == "boosting":
        return _Boosting(seed)
    if model == "layers_boosted":
        return _LayersBoosted(seed)
    raise ValueError(f"unknown estimator model {model!r}: use one of {', '.join(MODELS)}")


def _usable(
    keys: Sequence[BlockKey | str], values_ms: Sequence[float] | np.ndarray
) -> tuple[list[BlockKey], np.ndarray]:
    """The keys and values a model can be fitted on: finite and positive (a key whose whole latency its boundary
    took, in-network 0, says nothing about how latency grows with the work)."""
    ks = [k if isinstance(k, BlockKey) else parse_key(k) for k in keys]
    y = np.asarray(values_ms, dtype=np.float64)
    if len(ks) != len(y):
        raise ValueError(f"keys and values must have the same length; got {len(ks)} and {len(y)}")
    good = np.isfinite(y) & (y > 0)
    return [k for k, g in zip(ks, good) if g], y[good]


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
            "features": "block type, shapes, config, FLOPs, bytes moved, params, intensity, boundary elements, "
            "layer terms",
        }

    def summary(self) -> str:
        """One line: the model, its held-out median error and the alternative's."""
        alt = ", ".join(f"{m} {v:.2f}%" for m, v in self.cv.items())
        if "boosting" not in self.cv:
            alt += " (the tree models not compared: they need scikit-learn, pip install -e '.[estimate]')"
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
    ks, y = _usable(keys, values_ms)
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
    ks, y = _usable(keys, values_ms)
    f = key_features(ks, batch, precision)
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
    "CHANNEL_BLOCKS",
    "FOLDS",
    "LAYER_TERMS",
    "MIN_KEYS",
    "MIN_KEYS_PER_TYPE",
    "MODELS",
    "STEM_CHANNELS",
    "TREE_MODELS",
    "Z90",
    "Estimator",
    "available_models",
    "disagreement",
    "fit_estimator",
    "interval",
    "key_features",
    "layer_terms",
    "z_for",
]
