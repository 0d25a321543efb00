"""How steady the machine was while a table was built, and the speed a drift-corrected table is brought to.

A latency table is only as right as the machine was steady. Every build records
in its metadata (``steadiness``) the spread of its keys' timed runs (median and
90th percentile of their coefficients of variation, and the median standard
error of a key's trimmed mean that follows from them) and how far the machine's
speed moved: with drift correction the 10th-90th percentile swing of the drift
reference's time over the keys; without it, the reference timed alone at the
start and at the end of the build (the *probes*). Above either documented
threshold the build says, in one line, that the table's absolute figures are
unreliable and what to do:

- :data:`UNSTEADY_SE`: a median standard error of the keys' figures above 2%
  (the coefficient of variation of a key's samples over the square root of the
  samples its trimmed mean keeps: 30 samples with a CV of 5%, usual for a
  sub-millisecond key on a shared VM, give a figure good to 1%; a machine
  loaded while building, CVs of 10-60%, crosses it);
- :data:`UNSTEADY_SWING_PCT`: without drift correction, the machine's speed
  moving by more than 10% (the probes' spread): nothing corrected it;
- :data:`UNSTEADY_CORRECTED_SWING_PCT`: with drift correction, the reference's
  10th-90th percentile swing over the keys above 30%. The correction removes
  smaller swings: on the 2-vCPU VM of BENCHMARKS.md every idle build swings
  about 19% and its drift-corrected table put 96.8% of 31 held-out networks
  within +-5% ("Right by default"); a build on a loaded machine swings 40% and
  more.

Drift correction brings every key to one well-defined speed: the machine's
*fastest sustained* speed over the build, the :data:`FASTEST_SUSTAINED_PERCENTILE`
th percentile of the reference's time taken with the keys (see
:func:`fastest_sustained_ms`), recomputed over every row whenever the table is
compacted, so a resumed build and a fresh one land on the same definition. It
makes a table self-consistent and close to what a quiet machine gives; it cannot
make a table built on a machine loaded throughout right in absolute terms, which
is why the verdict is recorded too, and why ``profiler.validate`` reports how far
the machine's speed moved since the build.

Imports only numpy and pandas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Median standard error of a build's key figures (fraction of the figure: sample CV / sqrt(samples kept by
#: the trimmed mean)) above which its absolute figures are called unreliable.
UNSTEADY_SE = 0.02

#: Samples a key's trimmed mean keeps under the default timing protocol (30 less 3 + 3).
DEFAULT_SAMPLES_KEPT = 24

#: Movement of the machine's speed during a build (%, drift-reference swing or probes' spread) above which
#: its absolute figures are called unreliable.
UNSTEADY_SWING_PCT = 10.0

#: 10th-90th percentile swing of the drift reference over a drift-corrected build's keys (%) above which its
#: absolute figures are called unreliable (the correction removes smaller swings; see the module docstring).
UNSTEADY_CORRECTED_SWING_PCT = 30.0

#: Percentile of the drift reference's times over a build that defines its fastest sustained speed.
FASTEST_SUSTAINED_PERCENTILE = 10.0

#: What to do about an unsteady machine, for the one-line verdict.
ADVICE = "rebuild on a quieter machine, with --drift-correct, or pinned with --cpus"

#: ... and for a drift-corrected build, whose keys the correction already brought to one speed.
ADVICE_DRIFT_CORRECTED = "for absolute figures rebuild on a quieter machine (fewer jobs beside it, a dedicated host)"


def fastest_sustained_ms(reference_ms: Sequence[float] | np.ndarray) -> float | None:
    """The drift reference's time at the machine's fastest sustained speed (ms), or ``None`` without any.

    The :data:`FASTEST_SUSTAINED_PERCENTILE` th percentile of the reference's times
    taken with the keys: faster than a typical moment, but a speed the machine
    held for a tenth of the build, not one lucky sample.
    """
    values = np.asarray([v for v in reference_ms if v is not None and math.isfinite(float(v)) and v > 0], dtype=float)
    if not len(values):
        return None
    return float(np.percentile(values, FASTEST_SUSTAINED_PERCENTILE))


def reference_times(rows: pd.DataFrame) -> np.ndarray:
    """The ``reference_ms`` of every ok row that has one (ms per batch)."""
    if "reference_ms" not in rows:
        return np.asarray([], dtype=float)
    ok = rows[(rows["status"] == "ok") & rows["reference_ms"].notna()]
    return ok["reference_ms"].to_numpy(float)


def rescale_to(rows: pd.DataFrame, target_ms: float) -> pd.DataFrame:
    """A copy of ``rows`` with every drift-corrected latency brought to the reference speed ``target_ms``.

    Uses each ok row's ``raw_latency_ms`` and ``reference_ms`` (``latency = raw * target / reference``), so
    applying it again with another target is exact; rows without a reference measurement are unchanged.
    """
    out = rows.copy()
    if not len(out) or "reference_ms" not in out or "raw_latency_ms" not in out:
        return out
    now = out["reference_ms"].to_numpy(float)
    raw = out["raw_latency_ms"].to_numpy(float)
    use = (out["status"] == "ok").to_numpy() & np.isfinite(now) & (now > 0) & np.isfinite(raw)
    latency = out["latency_ms"].to_numpy(float).copy()
    latency[use] = raw[use] * (float(target_ms) / now[use])
    out["latency_ms"] = latency
    return out


def steadiness(
    rows: pd.DataFrame,
    *,
    drift_corrected: bool,
    probes_ms: Sequence[float] = (),
    probe_key: str | None = None,
    samples_kept: int | None = None,
) -> dict[str, Any]:
    """The ``steadiness`` metadata entry of a build from its rows (and, without drift correction, its probes).

    ``samples_kept`` is how many samples a key's trimmed mean keeps (the timing protocol's repeats less the
    trimmed ones; ``None``: 24, the default protocol's 30 less 3 + 3).

    Keys: ``key_cv_median``, ``key_cv_p90``, ``key_se_median`` (fractions), ``samples_kept``,
    ``swing_pct`` (the machine's speed movement, %, or
    ``None`` when unknown), ``swing_from`` (``drift_reference`` or ``probes``), ``speed_ms`` (the reference's
    typical time during the build: what a later validation compares with), ``probes_ms``, ``probe_key``,
    ``unsteady`` and ``reasons`` (one phrase per threshold crossed), and the ``thresholds``.
    """
    kept = DEFAULT_SAMPLES_KEPT if samples_kept is None else max(1, int(samples_kept))
    ok = rows[rows["status"] == "ok"] if len(rows) else rows
    cv = ok["cv"].to_numpy(float) if len(ok) else np.asarray([], dtype=float)
    cv = cv[np.isfinite(cv)]
    entry: dict[str, Any] = {
        "key_cv_median": float(np.median(cv)) if len(cv) else None,
        "key_cv_p90": float(np.percentile(cv, 90)) if len(cv) else None,
        "key_se_median": float(np.median(cv) / math.sqrt(kept)) if len(cv) else None,
        "samples_kept": kept,
        "swing_pct": None,
        "swing_from": None,
        "speed_ms": None,
        "probes_ms": [float(p) for p in probes_ms],
        "probe_key": probe_key,
        "thresholds": {"key_se_median": UNSTEADY_SE, "swing_pct": UNSTEADY_SWING_PCT},
    }
    ref = reference_times(rows) if drift_corrected else np.asarray([], dtype=float)
    if len(ref) >= 2:
        p10, p50, p90 = np.percentile(ref, [10, 50, 90])
        entry.update(swing_pct=float((p90 - p10) / p50 * 100), swing_from="drift_reference", speed_ms=float(p50))
        entry["thresholds"]["swing_pct"] = UNSTEADY_CORRECTED_SWING_PCT  # a swing the correction removed
    elif len(probes_ms) >= 1:
        probes = np.asarray(probes_ms, dtype=float)
        entry["speed_ms"] = float(np.median(probes))
        if len(probes) >= 2:
            entry.update(swing_pct=float((probes.max() - probes.min()) / probes.min() * 100), swing_from="probes")
    reasons = []
    if entry["key_se_median"] is not None and entry["key_se_median"] > UNSTEADY_SE:
        reasons.append(
            f"median key standard error {entry['key_se_median'] * 100:.1f}% > {UNSTEADY_SE * 100:g}% "
            f"(median key CV {entry['key_cv_median'] * 100:.1f}% over {kept} samples)"
        )
    limit = entry["thresholds"]["swing_pct"]
    if entry["swing_pct"] is not None and entry["swing_pct"] > limit:
        what = "drift reference swing" if entry["swing_from"] == "drift_reference" else "speed moved"
        reasons.append(f"{what} {entry['swing_pct']:.0f}% > {limit:g}%")
    entry["unsteady"] = bool(reasons)
    entry["reasons"] = reasons
    return entry


def verdict_line(entry: Mapping[str, Any] | None) -> str | None:
    """The one-line warning for an unsteady build (``None`` when steady or unknown)."""
    if not entry or not entry.get("unsteady"):
        return None
    reasons = "; ".join(entry.get("reasons", []))
    if entry.get("swing_from") == "drift_reference":
        return (
            f"warning: the machine was unsteady while this table was built ({reasons}): drift correction brought "
            "every key to its fastest sustained speed, so the table is self-consistent, but its absolute figures "
            f"hold only where the machine runs that fast; {ADVICE_DRIFT_CORRECTED}"
        )
    return (
        f"warning: the machine was unsteady while this table was built ({reasons}): its absolute figures are "
        f"unreliable; {ADVICE}"
    )


def quality_line(entry: Mapping[str, Any] | None) -> str:
    """A short description of a build's steadiness for reports (``unknown`` for tables without the entry)."""
    if not entry:
        return "unknown (table written before steadiness was recorded)"
    parts = []
    if entry.get("key_cv_median") is not None:
        parts.append(f"median key CV {float(entry['key_cv_median']) * 100:.2f}%")
    if entry.get("key_se_median") is not None:
        parts.append(f"standard error {float(entry['key_se_median']) * 100:.2f}%")
    if entry.get("swing_pct") is not None:
        source = "drift reference swing" if entry.get("swing_from") == "drift_reference" else "speed moved"
        parts.append(f"{source} {float(entry['swing_pct']):.1f}%")
    verdict = "unsteady: absolute figures unreliable" if entry.get("unsteady") else "steady"
    return f"{verdict} ({', '.join(parts) or 'no figures'})"


def speed_change_pct(entry: Mapping[str, Any] | None, now_ms: float) -> float | None:
    """How much slower (+) or faster (-) the machine is now than during the build, %, from the reference's time."""
    if not entry or entry.get("speed_ms") in (None, 0) or not (now_ms and math.isfinite(now_ms)):
        return None
    return (float(now_ms) / float(entry["speed_ms"]) - 1.0) * 100.0


__all__ = [
    "ADVICE",
    "ADVICE_DRIFT_CORRECTED",
    "DEFAULT_SAMPLES_KEPT",
    "FASTEST_SUSTAINED_PERCENTILE",
    "UNSTEADY_CORRECTED_SWING_PCT",
    "UNSTEADY_SE",
    "UNSTEADY_SWING_PCT",
    "fastest_sustained_ms",
    "quality_line",
    "reference_times",
    "rescale_to",
    "speed_change_pct",
    "steadiness",
    "verdict_line",
]
