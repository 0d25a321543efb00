"""Profile less: measure a chosen fraction of a build's keys, estimate the rest, say how wrong the rest may be.

``profiler.build --measure-fraction F`` measures ``ceil(F * keys)`` keys of the
build in two stages, both through the ordinary crash-safe build
(:func:`profiler.tablebuild.build_table`: parts, one row per key, resume):

1. *coverage* (:func:`coverage_keys`): half of the budget spread over every
   block type in proportion to its keys (at least
   :data:`tables.estimator.MIN_KEYS_PER_TYPE` of each type that has them), and
   within a type over its range of FLOPs (evenly spaced quantiles of log FLOPs);
2. *uncertainty* (:func:`uncertain_keys`): the estimator's models
   (:mod:`tables.estimator`) are fitted on what is measured, and the rest of
   the budget goes to the keys where they disagree most (a committee's
   disagreement: the keys the estimator is least sure of).

The other keys are not stored: ``predict(..., estimate_missing=True)`` estimates
them on demand, the estimator's cross-validated error per block type is stored
in the table's metadata (``partial``) and printed as the expected error. Run the
same command with a larger fraction to measure more: what is measured stays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tables.key import BlockKey


def budget_for(fraction: float, n_keys: int) -> int:
    """Keys to measure for ``fraction`` of ``n_keys`` (at least one)."""
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction <= 1.0):
        raise ValueError(f"--measure-fraction must be a fraction in (0, 1], got {fraction!r}")
    return max(1, math.ceil(fraction * n_keys))


def coverage_keys(
    keys: Sequence[BlockKey], n: int, measured: set[str], batch: int, precision: str, seed: int = 0
) -> list[BlockKey]:
    """Up to ``n`` keys not in ``measured`` that spread the measured set over every block type and FLOPs range.

    Each block type gets a share proportional to its keys (at least ``MIN_KEYS_PER_TYPE`` when it has that
    many), minus what is already measured of it; within a type, the keys nearest to evenly spaced
    quantiles of log FLOPs. Deterministic for a given ``seed``.
    """
    from tables.cost import key_cost
    from tables.estimator import MIN_KEYS_PER_TYPE

    if n <= 0:
        return []
    by_type: dict[str, list[BlockKey]] = {}
    for key in keys:
        by_type.setdefault(key.block, []).append(key)
    total = len(keys)
    target_total = n + sum(1 for k in keys if str(k) in measured)
    chosen: list[BlockKey] = []
    rng = np.random.default_rng(seed)
    wants: dict[str, int] = {}
    for block, members in sorted(by_type.items()):
        share = max(min(MIN_KEYS_PER_TYPE, len(members)), round(target_total * len(members) / total))
        have = sum(1 for k in members if str(k) in measured)
        wants[block] = max(0, min(len(members), share) - have)
    scale = min(1.0, n / max(1, sum(wants.values())))
    for block, members in sorted(by_type.items()):
        want = max(1, math.floor(wants[block] * scale)) if wants[block] else 0  # every type gets a key
        todo = [k for k in members if str(k) not in measured]
        if want <= 0 or not todo:
            continue
        flops = np.log1p([key_cost(k, batch, precision).flops for k in todo])
        order = np.lexsort((rng.random(len(todo)), flops))  # by FLOPs, ties broken by the seed
        picks = np.unique(np.round(np.linspace(0, len(todo) - 1, min(want, len(todo)))).astype(int))
        chosen += [todo[int(order[i])] for i in picks]
    if len(chosen) < n:  # rounding left room: the largest types get the rest, spread the same way
        rest = [k for k in keys if str(k) not in measured and k not in set(chosen)]
        step = max(1, len(rest) // max(1, n - len(chosen)))
        chosen += rest[::step][: n - len(chosen)]
    if len(chosen) > n:  # one key per type went over the budget: keep every type, trim the largest ones
        counts: dict[str, int] = {}
        for key in chosen:
            counts[key.block] = counts.get(key.block, 0) + 1
        while len(chosen) > n:
            block = max(counts, key=lambda b: counts[b])
            if counts[block] <= 1:
                break
            i = max(i for i, k in enumerate(chosen) if k.block == block)
            chosen.pop(i)
            counts[block] -= 1
    return chosen[:n]


def uncertain_keys(
    table: Any, keys: Sequence[BlockKey], n: int, seed: int = 0
) -> tuple[list[BlockKey], dict[str, float]]:
    """The ``n`` keys of ``keys`` the table lacks on which the estimator's models disagree most, and a
    summary (``median_disagreement_pct``, ``chosen_disagreement_pct``: the smallest disagreement chosen)."""
    from tables.estimator import disagreement as committee

    todo = [k for k in keys if k not in table]
    if n <= 0 or not todo:
        return [], {}
    if n >= len(todo):  # every key left is measured: no choice for a committee to make
        return todo, {}
    measured = ~table.estimated_mask
    spread = committee(
        [k for k, m in zip(table.keys, measured) if m],
        table.block_array[measured],
        todo,
        batch=table.batch,
        precision=table.precision,
        seed=seed,
    )
    if spread is None:  # one model only (no scikit-learn): no committee to ask
        return [], {}
    disagreement = spread
    order = np.argsort(-disagreement, kind="stable")[:n]
    picked = [todo[int(i)] for i in order]
    return picked, {
        "median_disagreement_pct": float(np.median(disagreement)),
        "chosen_disagreement_pct": float(disagreement[order[-1]]) if len(order) else math.nan,
    }


def partial_entry(table: Any, n_keys: int, fraction: float, stages: dict[str, int]) -> tuple[dict[str, Any], str]:
    """The table's metadata ``partial`` entry and the line that reports the expected error of the rest."""
    measured = len(table)
    entry: dict[str, Any] = {
        "fraction": fraction,
        "keys_total": n_keys,
        "keys_measured": measured,
        "selection": "coverage (block types, FLOPs range) then the estimator's least sure keys",
        "stages": dict(stages),
    }
    if measured >= n_keys:
        return entry, "every key measured: nothing to estimate"
    try:
        est = table.estimator()
    except ValueError as exc:
        entry["estimator"] = None
        return entry, f"the other {n_keys - measured} keys cannot be estimated yet: {exc}"
    entry["estimator"] = est.to_dict()
    worst = max(est.errors.items(), key=lambda kv: kv[1]["median_ape_pct"])
    line = (
        f"measured {measured} of {n_keys} keys ({measured / n_keys * 100:.0f}%); the other {n_keys - measured} are "
        f"estimated on demand (predict(..., estimate_missing=True)): {est.summary()}; worst block type "
        f"{worst[0]} at {worst[1]['median_ape_pct']:.1f}%"
    )
    return entry, line


def build_fraction(job: Any, executor: Any, info: Any, fraction: float, seed: int = 0) -> tuple[Any, list[str]]:
    """Build ``fraction`` of ``job``'s keys in the two stages of this module; returns the combined
    :class:`profiler.tablebuild.BuildOutcome` and the lines to print (the expected error of the rest)."""
    from profiler.proof import record
    from profiler.tablebuild import BuildOutcome, build_table
    from tables.estimator import MIN_KEYS
    from tables.store import PartStore
    from tables.table import LatencyTable

    keys = list(job.keys)
    budget = budget_for(fraction, len(keys))
    wanted = {str(k) for k in keys}
    done = PartStore(job.out_dir, job.table_name, None).done_keys()
    measured = {k for k, v in done.items() if v == "ok" and k in wanted}
    first = coverage_keys(keys, max(0, math.ceil(budget / 2) - len(measured)), measured, job.batch, job.precision, seed)
    out1 = build_table(job.replace(keys=tuple(first)), executor, info)
    table = LatencyTable.load(out1.path, calibration=False)
    have = sum(1 for k in keys if k in table)
    left = max(0, budget - have)
    notes: dict[str, float] = {}
    second: list[BlockKey] = []
    if left and have >= MIN_KEYS:
        second, notes = uncertain_keys(table, keys, left, seed)
    if left and not second:  # too few keys for the estimator yet, or no committee: more coverage instead
        second = coverage_keys(keys, left, {k for k in wanted if k in table}, job.batch, job.precision, seed + 1)
    out2 = build_table(job.replace(keys=tuple(second)), executor, info)
    table = LatencyTable.load(out2.path, calibration=False)
    least_sure = len(second) if notes else 0  # the second stage fell back to coverage without a committee
    stages = {"coverage": len(first) + len(second) - least_sure, "least_sure": least_sure, "budget": budget}
    entry, line = partial_entry(table, len(keys), fraction, stages)
    entry.update({f"disagreement_{k}": v for k, v in notes.items()})
    record(out2.path, entry, "partial")
    outcome = BuildOutcome(out2.path, out1.measured + out2.measured, [*out1.failures, *out2.failures])
    return outcome, [f"  {line}"]


__all__ = ["budget_for", "build_fraction", "coverage_keys", "partial_entry", "uncertain_keys"]
