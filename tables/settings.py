"""A table's identity: every setting that changes its numbers, as one flat dict that compares.

Two tables (or a table and a build resuming it, or the inputs of a merge) may
share rows only when :func:`differences` between their metadata is empty.
:func:`table_settings` flattens a metadata document into names that say where
each setting comes from:

- ``device``, ``device name`` (the GPU or CPU model), ``backend``, ``engine``,
  ``engine version``, ``precision``, ``batch``, ``opset``, ``rounds``;
- ``timing.<field>`` for every field of the timing protocol;
- ``backend.<name>`` for every backend setting (threads, CPU pinning, provider,
  builder options, strong typing, CUDA graphs, compile, ...);
- ``drift reference`` (its key) and ``drift reference ratio``;
- ``boundary``: the method that measured each key's boundary (absent when none was);
- ``short rounds`` and ``short below ms``: how many times the keys under that many ms were measured, when more
  often than every key (absent otherwise).

:func:`settings_id` is a short fingerprint of those settings; every row of a
table carries the id of the settings it was measured with (column
``settings_id``), so a forced merge of different settings stays visible row by
row. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: Names older tables stored backend settings under, and the names they have now.
LEGACY_SETTING_NAMES: dict[str, str] = {
    "intra_op_threads": "threads",
    "cpu_affinity": "cpus",
    "builder_optimization_level": "opt_level",
}

#: Backend settings that are facts about the run, not choices that change numbers.
_NOT_SETTINGS = frozenset({"timing_cache"})

#: Values a setting takes when an older table does not record it.
_DEFAULTS: dict[str, Any] = {"rounds": 1, "backend.cpus": [], "timing.cold_l2": False}

#: Values a setting left out of :func:`table_settings` (so that older tables' ids stay as they were) means.
_ABSENT: dict[str, Any] = {"short rounds": 1}

#: The command-line flag that sets a setting, where there is one (for messages).
FLAGS: dict[str, str] = {
    "device": "--device",
    "backend": "--backend",
    "precision": "--precision",
    "batch": "--batch",
    "rounds": "--rounds",
    "drift reference": "drift correction (--drift-correct / --no-drift-correct, --drift-reference)",
    "timing.repeats": "--repeats",
    "timing.warmup_runs": "--warmup",
    "timing.warmup_min_ms": "--warmup-ms",
    "timing.trim": "--trim",
    "timing.min_sample_ms": "--min-sample-ms",
    "backend.threads": "--threads",
    "backend.cpus": "--cpus",
    "backend.opt_level": "--opt-level",
    "backend.strongly_typed": "--strongly-typed",
    "backend.cuda_graphs": "--cuda-graphs",
    "backend.tf32": "--tf32",
    "timing.cold_l2": "--cold-l2",
    "backend.compile": "--compile",
    "boundary": "--boundary",
    "short rounds": "--short-rounds",
    "short below ms": "--short-below",
}


def normalized_backend_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Backend settings under today's names (older tables' names translated), run facts left out."""
    out: dict[str, Any] = {}
    for name, value in (settings or {}).items():
        name = LEGACY_SETTING_NAMES.get(name, name)
        if name not in _NOT_SETTINGS:
            out[name] = value
    return out


def table_settings(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting that changes a table's numbers, flattened (see the module docstring)."""
    device = metadata.get("device") or {}
    engine = metadata.get("engine") or {}
    drift = metadata.get("drift_reference") or {}
    profile = metadata.get("device_profile")
    name = device.get("cpu_model") if profile == "cpu" else device.get("gpu_name") or device.get("name")
    out: dict[str, Any] = {
        "device": profile,
        "device name": name,
        "backend": metadata.get("backend"),
        "engine": engine.get("name"),
        "engine version": engine.get("version"),
        "precision": metadata.get("precision"),
        "batch": metadata.get("batch"),
        "opset": metadata.get("opset"),
        "rounds": metadata.get("rounds"),
        "drift reference": drift.get("key") if drift else None,
        "drift reference ratio": drift.get("ratio") if drift else None,
    }
    for field, value in sorted((metadata.get("timing") or {}).items()):
        out[f"timing.{field}"] = value
    for field, value in sorted(normalized_backend_settings(metadata.get("backend_settings")).items()):
        out[f"backend.{field}"] = value
    for field, value in _DEFAULTS.items():
        if out.get(field) is None:
            out[field] = value
    boundary = (metadata.get("boundary") or {}).get("method")
    if boundary not in (None, "none"):  # absent when none is measured: the ids of older tables stay as they were
        out["boundary"] = boundary
    short = metadata.get("short_keys")
    if short:  # absent when the short keys get no more rounds than every key (older tables' ids unchanged)
        out["short rounds"] = short.get("rounds")
        out["short below ms"] = short.get("below_ms")
    return out


def settings_id(metadata: Mapping[str, Any]) -> str:
    """A 12-hex-digit fingerprint of :func:`table_settings`: equal ids, equal settings."""
    text = json.dumps(table_settings(metadata), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(setting, value in a, value in b)`` for every setting that differs between two metadata documents."""
    sa, sb = table_settings(a), table_settings(b)
    for settings in (sa, sb):
        for name, value in _ABSENT.items():
            settings.setdefault(name, value)
    return [(name, sa.get(name), sb.get(name)) for name in dict.fromkeys([*sa, *sb]) if sa.get(name) != sb.get(name)]


def describe(diffs: list[tuple[str, Any, Any]]) -> str:
    """``"--repeats 10 vs 20; engine version 1.31 vs 1.32"``: each difference with both values, first value first."""

    def show(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, list):
            return "[" + ",".join(str(v) for v in value) + "]"
        return str(value)

    names = {name for name, _, _ in diffs}
    hidden = {"drift reference ratio": "drift reference", "short below ms": "short rounds"}
    shown = [d for d in diffs if not (d[0] in hidden and hidden[d[0]] in names)]
    return "; ".join(f"{FLAGS.get(name, name)} {show(va)} vs {show(vb)}" for name, va, vb in shown)


class SettingsMismatch(ValueError):
    """Two tables (or a table and a build) were measured with different settings.

    Attributes:
        differences: ``(setting, first value, second value)`` for each setting that differs.
    """

    def __init__(self, message: str, diffs: list[tuple[str, Any, Any]]) -> None:
        super().__init__(message)
        self.differences = diffs


def check_same_settings(a: Mapping[str, Any], b: Mapping[str, Any], first: str, second: str, advice: str) -> None:
    """Raise :class:`SettingsMismatch` naming every differing setting with both values, then ``advice``."""
    diffs = differences(a, b)
    if diffs:
        raise SettingsMismatch(
            f"{first} and {second} were measured with different settings ({describe(diffs)}; the first value is "
            f"{first}'s, the second {second}'s): {advice}",
            diffs,
        )


__all__ = [
    "FLAGS",
    "LEGACY_SETTING_NAMES",
    "SettingsMismatch",
    "check_same_settings",
    "describe",
    "differences",
    "normalized_backend_settings",
    "settings_id",
    "table_settings",
]
