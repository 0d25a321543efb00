"""NNI 3.x: a ``nni.nas.profiler.Profiler`` backed by a latency table.

NNI's multi-trial strategies filter samples with a profiler (``RangeProfilerFilter``) and its
one-shot strategies add a profiler's value to the loss (``SampleProfilerPenalty``). A model space
maps onto a table when its choices are the positions of a staged space (GPUNet, GENet, a space
file): each choice labelled like the position (``"stage 2 kernel"``, or through ``labels``) with the
position's codes as its values. Then::

    from profiler.frameworks.nni import TableProfiler
    profiler = TableProfiler(model_space, table, space)          # checks the space's choices
    profiler.profile({"stage 2 kernel": 5, ...})                  # predicted ms per batch, a float
    RangeProfilerFilter(profiler, max=2.0)                        # NNI's latency range filter

A sample whose values are distributions (``{label: {value: probability}}``, as one-shot strategies
hold them) gets the expected latency instead (:class:`profiler.expected_latency.ExpectedLatency`):
a torch scalar whose gradient flows to the probabilities.

``TableProfiler`` subclasses NNI's own ``Profiler``, so it is built when first asked for
(``from profiler.frameworks.nni import TableProfiler`` imports NNI; importing this module does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from profiler.frameworks import SpaceLatency
from profiler.spaces.staged import StagedSpace
from tables.table import LatencyTable


def check_model_space(model_space: Any, latency: SpaceLatency, labels: Mapping[str, str]) -> None:
    """``ValueError`` unless every position with choices is a choice of ``model_space`` with the same values.

    ``model_space.simplify()`` (NNI's flattened choices, label -> ``Categorical``) is read; values
    given as strings (``LayerChoice`` keys such as ``"3"``) count as their integers.
    """
    simplify = getattr(model_space, "simplify", None)
    if simplify is None:
        raise ValueError(f"{type(model_space).__name__} is not an NNI model space (it has no simplify())")
    choices = simplify()
    for p in latency.choices:
        name = labels.get(p.label, p.label)
        mutable = choices.get(name)
        if mutable is None:
            raise ValueError(
                f"the model space has no choice {name!r} ({latency.space.name} {p.label}, values "
                f"{list(p.codes)}); label the choice so, or map it with labels={{{p.label!r}: 'your label'}}"
            )
        try:
            values = sorted(int(v) for v in getattr(mutable, "values", []))
        except (TypeError, ValueError):
            values = None
        if values != sorted(p.codes):
            raise ValueError(
                f"the model space's choice {name!r} has values {list(getattr(mutable, 'values', []))}, but "
                f"{latency.space.name} {p.label} has {list(p.codes)}"
            )


@lru_cache(maxsize=1)
def profiler_class() -> type:
    """The ``TableProfiler`` class (a subclass of NNI's Profiler); imports the framework on the first call."""
    from nni.nas.profiler import Profiler

    class TableProfiler(Profiler):
        """``nni.nas.profiler.Profiler`` whose ``profile(sample)`` is the table's predicted latency (ms per batch).

        Args:
            model_space: the NNI model space (its choices are checked, see :func:`check_model_space`).
            table: the latency table.
            space: the staged space whose positions the choices are (object, name or space file).
            labels: position label -> the model space's label, where they differ.
            calibrated: apply the table's calibration (default).
        """

        def __init__(
            self,
            model_space: Any,
            table: LatencyTable,
            space: StagedSpace | str,
            *,
            labels: Mapping[str, str] | None = None,
            calibrated: bool = True,
        ) -> None:
            super().__init__(model_space)
            self.latency = SpaceLatency(table, space, calibrated=calibrated)
            self.labels = dict(labels or {})
            self.calibrated = calibrated
            self._expected: Any = None
            check_model_space(model_space, self.latency, self.labels)

        def profile(self, sample: Mapping[str, Any]) -> Any:
            """Predicted latency of a sample (ms per batch, float); of a sample of distributions, its expectation."""
            if sample and all(isinstance(v, Mapping) for v in sample.values()):
                return self.expected(sample)
            return self.latency.values_ms(sample, self.labels)

        def expected(self, distributions: Mapping[str, Mapping[Any, Any]]) -> Any:
            """E[latency] (ms per batch, a torch scalar) of ``{label: {value: probability}}``, differentiable."""
            import torch

            from profiler.expected_latency import ExpectedLatency

            if self._expected is None:
                self._expected = ExpectedLatency(self.latency.table, self.latency.space, calibrated=self.calibrated)
            vectors: list[Any] = []
            for p in self.latency.space.positions:
                dist = distributions.get(self.labels.get(p.label, p.label))
                if dist is None:
                    vectors.append(None)
                    continue
                by_code = {int(v): w for v, w in dist.items()}
                vectors.append(torch.stack([torch.as_tensor(by_code.get(c, 0.0)) for c in p.codes]).double())
            return self._expected(vectors)

    return TableProfiler


def __getattr__(name: str) -> Any:
    if name == "TableProfiler":
        return profiler_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["check_model_space", "profiler_class"]  # and TableProfiler, built on first access
