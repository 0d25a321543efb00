"""Optuna: the architecture of a trial, its predicted latency and a latency-budget constraint, from a table.

A trial chooses one value per position of a staged space (:func:`suggest_architecture`, one
``suggest_categorical`` per position with several codes, named by the position's label). Its
predicted latency is :func:`predict_trial`; a budget becomes the constraint ``latency - budget``
in ms per batch, > 0 when the trial is over budget: set on the trial by :func:`predict_trial`
with ``budget_ms`` (Optuna 5's ``Trial.set_constraint``), or as the ``constraints_func`` that
Optuna's samplers (NSGA-II, TPE, GP, ...) took before Optuna 5 (:func:`latency_constraint`)::

    import optuna
    from profiler.frameworks.optuna import predict_trial, suggest_architecture

    def objective(trial):
        encoding = suggest_architecture(trial, "gpunet")
        latency = predict_trial(trial, table, "gpunet", budget_ms=2.0)   # also trial.user_attrs["latency_ms"]
        return accuracy_proxy(encoding), latency

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler())

Optuna itself is never imported here: the functions only call the trial's own methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from profiler.frameworks import SpaceLatency
from profiler.spaces import resolve_space
from profiler.spaces.staged import StagedSpace
from tables.table import LatencyTable

#: The user attribute in which :func:`predict_trial` keeps a trial's predicted latency (ms per batch).
LATENCY_ATTR = "latency_ms"


def _latency(table: LatencyTable, space: StagedSpace | str, calibrated: bool) -> SpaceLatency:
    # kept on the table, like its look-up grids: a study calls these once per trial
    cache = table.__dict__.setdefault("_space_latencies", {})
    key = (space if isinstance(space, str) else id(space), calibrated)
    found = cache.get(key)
    if found is None or (not isinstance(space, str) and found.space is not space):
        found = cache[key] = SpaceLatency(table, space, calibrated=calibrated)
    return found


def suggest_architecture(trial: Any, space: StagedSpace | str) -> tuple[int, ...]:
    """The trial's encoding of ``space``: ``trial.suggest_categorical(label, codes)`` per position with choices."""
    return tuple(
        int(trial.suggest_categorical(p.label, list(p.codes))) if len(p.codes) > 1 else p.codes[0]
        for p in resolve_space(space).positions
    )


def predict_trial(
    trial: Any,
    table: LatencyTable,
    space: StagedSpace | str,
    *,
    budget_ms: float | None = None,
    calibrated: bool = True,
) -> float:
    """Predicted latency (ms per batch) of the architecture in ``trial.params``, kept as its ``latency_ms``.

    ``trial``: a running ``optuna.Trial`` (after :func:`suggest_architecture`) or a ``FrozenTrial``.
    With ``budget_ms`` the trial also gets the constraint ``latency - budget_ms`` (> 0 violated) by
    Optuna 5's ``trial.set_constraint("latency_ms", ...)``, which its samplers read instead of the
    ``constraints_func`` of :func:`latency_constraint` (deprecated there, still accepted).
    """
    latency = _latency(table, space, calibrated).values_ms(trial.params)
    if hasattr(trial, "set_user_attr"):
        trial.set_user_attr(LATENCY_ATTR, latency)
    if budget_ms is not None:
        budget = _budget(budget_ms)
        if not hasattr(trial, "set_constraint"):
            raise ValueError(
                "this Optuna has no Trial.set_constraint (Optuna < 5): pass latency_constraint(...) "
                "as the sampler's constraints_func instead of budget_ms"
            )
        trial.set_constraint(LATENCY_ATTR, latency - budget)
    return latency


def _budget(budget_ms: float) -> float:
    budget = float(budget_ms)
    if not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"the latency budget must be a positive number of ms; got {budget_ms!r}")
    return budget


def latency_constraint(
    table: LatencyTable, space: StagedSpace | str, budget_ms: float, *, calibrated: bool = True
) -> Callable[[Any], Sequence[float]]:
    """A sampler's ``constraints_func``: ``[latency - budget_ms]`` (ms per batch; > 0 is a violation).

    Optuna 5 deprecates ``constraints_func`` (a ``FutureWarning``) for ``Trial.set_constraint``: give
    :func:`predict_trial` the budget instead; this is for Optuna 3.x-4.x and samplers that still take it.

    The latency is the trial's ``latency_ms`` user attribute when :func:`predict_trial` left one,
    else predicted from its parameters.
    """
    budget = _budget(budget_ms)
    latency = _latency(table, space, calibrated)

    def constraints(trial: Any) -> Sequence[float]:
        value = trial.user_attrs.get(LATENCY_ATTR)
        if value is None:
            value = latency.values_ms(trial.params)
        return [float(value) - budget]

    return constraints


__all__ = ["LATENCY_ATTR", "latency_constraint", "predict_trial", "suggest_architecture"]
