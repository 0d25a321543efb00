"""Latency tables where NAS code lives: Optuna, NNI 3.x and Archai adapters.

- :mod:`profiler.frameworks.optuna`: :func:`~profiler.frameworks.optuna.suggest_architecture`
  (a trial's architecture of a staged space), :func:`~profiler.frameworks.optuna.predict_trial`
  and :func:`~profiler.frameworks.optuna.latency_constraint` (a latency-budget ``constraints_func``);
- :mod:`profiler.frameworks.nni`: ``TableProfiler``, an ``nni.nas.profiler.Profiler`` whose
  ``profile(sample)`` is the predicted latency of a model space whose choices are a staged space's
  positions (and, for a sample of distributions, the differentiable expected latency);
- :mod:`profiler.frameworks.archai`: ``TableLatencyEvaluator``, an Archai ``ModelEvaluator`` whose
  ``evaluate(arch, budget=None)`` is the predicted latency of an ``ArchaiModel``.

Each framework is imported only by its own adapter module, when that is used. What they share is
:class:`SpaceLatency`: one staged space's architectures predicted from a table one at a time,
by the position labels of the space (``"resolution"``, ``"stage 2 kernel"``, ...), in ms per batch of
the table's batch size (ms per image for a batch-1 table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from profiler.spaces import resolve_space
from profiler.spaces.staged import StagedSpace
from tables.predictor import predict_many
from tables.table import LatencyTable


class SpaceLatency:
    """Predicted latency (ms per batch) of single architectures of one staged space, from one table.

    ``space``: a :class:`~profiler.spaces.staged.StagedSpace` or a name / space file for
    :func:`profiler.spaces.resolve_space`. Each prediction is :func:`tables.predictor.predict_many`
    of one row (its look-up grids are built on the first call, then kept on the table), with the
    table's calibration unless ``calibrated=False``.
    """

    def __init__(self, table: LatencyTable, space: StagedSpace | str, *, calibrated: bool = True) -> None:
        self.table = table
        self.space = resolve_space(space)
        self.calibrated = calibrated
        #: The positions a search chooses: those with more than one code.
        self.choices = [p for p in self.space.positions if len(p.codes) > 1]

    def encoding_ms(self, encoding: Sequence[int] | np.ndarray) -> float:
        """Predicted latency of one encoding of the space, ms per batch."""
        row = np.asarray(encoding, dtype=np.int64).reshape(1, -1)
        return float(predict_many(self.table, row, self.space, calibrated=self.calibrated)[0])

    def encoding_of(self, values: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> tuple[int, ...]:
        """The encoding whose position ``p`` has the code ``values[labels.get(p.label, p.label)]``.

        Positions with a single code may be left out. Raises ``ValueError`` naming a missing choice
        or a value outside the space.
        """
        labels = labels or {}
        out = []
        for p in self.space.positions:
            name = labels.get(p.label, p.label)
            if name in values:
                out.append(int(values[name]))
            elif len(p.codes) == 1:
                out.append(p.codes[0])
            else:
                raise ValueError(
                    f"no value for {name!r} ({self.space.name} {p.label}); the sample has {sorted(values)}"
                )
        return self.space.validate(out)

    def values_ms(self, values: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> float:
        """Predicted latency (ms per batch) of the architecture given as ``{position label: value}``."""
        return self.encoding_ms(self.encoding_of(values, labels))


__all__ = ["SpaceLatency"]
