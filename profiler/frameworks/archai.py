"""Archai: a ``ModelEvaluator`` whose ``evaluate(arch, budget=None)`` is the table's predicted latency.

Register it as a cheap objective or a constraint of Archai's ``SearchObjectives``::

    from profiler.frameworks.archai import TableLatencyEvaluator
    latency = TableLatencyEvaluator(table, space="gpunet")
    objectives.add_objective("latency_ms", latency, higher_is_better=False, compute_intensive=False)
    objectives.add_constraint("latency_budget", latency, (0.0, 2.0))

What ``evaluate`` reads from an ``ArchaiModel`` (first that applies):

1. ``keys_of(model)``, when given: block keys (or key strings) of the model;
2. ``model.metadata["encoding"]``, or ``model.arch`` itself being a sequence of integers: an
   encoding of ``space``;
3. ``model.arch`` with block keys (a list of keys or key strings, a ``profiler.spaces.Architecture``);
4. ``model.arch`` a torch ``nn.Module``: exported to ONNX and mapped onto keys
   (:func:`profiler.predict.predict_model`, ``input_shape`` needed), once per ``archid``.

All in ms per batch of the table's batch. ``TableLatencyEvaluator`` subclasses Archai's own
``ModelEvaluator``, so it is built when first asked for (importing this module imports no Archai).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from profiler.frameworks import SpaceLatency
from profiler.spaces.staged import StagedSpace
from tables.table import LatencyTable


@lru_cache(maxsize=1)
def evaluator_class() -> type:
    """The ``TableLatencyEvaluator`` class (an Archai ModelEvaluator); imports Archai on the first call."""
    from archai.discrete_search.api.model_evaluator import ModelEvaluator

    class TableLatencyEvaluator(ModelEvaluator):
        """Archai ``ModelEvaluator``: predicted latency (ms per batch) of an ``ArchaiModel`` from a table.

        Args:
            table: the latency table.
            space: the staged space of encodings (object, name or space file), when models carry encodings.
            input_shape: (C, H, W) of the input, for models that are torch modules.
            keys_of: a function of the ``ArchaiModel`` giving its block keys, for any other model.
            calibrated: apply the table's calibration (default).
        """

        def __init__(
            self,
            table: LatencyTable,
            space: StagedSpace | str | None = None,
            *,
            input_shape: Sequence[int] | None = None,
            keys_of: Callable[[Any], Sequence[Any]] | None = None,
            calibrated: bool = True,
        ) -> None:
            self.table = table
            self.latency = SpaceLatency(table, space, calibrated=calibrated) if space is not None else None
            self.input_shape = tuple(input_shape) if input_shape is not None else None
            self.keys_of = keys_of
            self.calibrated = calibrated
            self._by_archid: dict[str, float] = {}

        def evaluate(self, arch: Any, budget: float | None = None) -> float:
            """Predicted latency of ``arch`` (an ``ArchaiModel``), ms per batch; ``budget`` is not used."""
            from tables.predictor import predict

            if self.keys_of is not None:
                return predict(self.table, list(self.keys_of(arch)), calibrated=self.calibrated).ms_per_batch
            model = arch.arch
            encoding = (getattr(arch, "metadata", None) or {}).get("encoding")
            if encoding is None and _is_encoding(model):
                encoding = model
            if encoding is not None:
                if self.latency is None:
                    raise ValueError("this model carries an encoding: give TableLatencyEvaluator(table, space=...)")
                return self.latency.encoding_ms(encoding)
            from profiler.predict import is_torch_module

            if is_torch_module(model):
                cached = self._by_archid.get(arch.archid)
                if cached is None:
                    from profiler.predict import predict_model

                    if self.input_shape is None:
                        raise ValueError(
                            "this model is a torch module: give TableLatencyEvaluator(..., input_shape=(C, H, W))"
                        )
                    result = predict_model(self.table, model, input_shape=self.input_shape, calibrated=self.calibrated)
                    cached = self._by_archid[arch.archid] = result.ms_per_batch
                return cached
            return predict(self.table, model, calibrated=self.calibrated).ms_per_batch

        # what overrides' @overrides decorator marks (Archai's EnforceOverrides checks it); the decorator itself
        # looks the base class up by name in the caller's frame, which a class made in a function defeats
        evaluate.__override__ = True  # type: ignore[attr-defined]

    return TableLatencyEvaluator


def _is_encoding(obj: Any) -> bool:
    if isinstance(obj, np.ndarray):
        return obj.ndim == 1 and np.issubdtype(obj.dtype, np.integer)
    return isinstance(obj, (list, tuple)) and bool(obj) and all(isinstance(v, (int, np.integer)) for v in obj)


def __getattr__(name: str) -> Any:
    if name == "TableLatencyEvaluator":
        return evaluator_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["evaluator_class"]  # and TableLatencyEvaluator, built on first access
