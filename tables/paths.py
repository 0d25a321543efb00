"""Where the files of one table live, all named after the table's file (standard library only).

For ``out/v100_tensorrt_fp16_b64.parquet``:

- ``out/v100_tensorrt_fp16_b64.parquet.parts/`` -- the crash-safe parts of a build in progress;
- ``out/v100_tensorrt_fp16_b64.parquet.lock`` -- the lock of the build writing it;
- ``out/v100_tensorrt_fp16_b64.parquet.rounds/round-R.parquet`` -- each round of a build in rounds;
- ``out/v100_tensorrt_fp16_b64.calibration.json`` -- its calibration (``LatencyTable.load`` applies it);
- ``out/v100_tensorrt_fp16_b64.validation.parquet`` -- its end-to-end validation;
- ``out/v100_tensorrt_fp16_b64.missing_archs.json`` -- keys it lacks, as an archs file for ``--archs``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_NAME_RE = re.compile(r"[^a-z0-9.]+")


def _slug(value: str) -> str:
    return _NAME_RE.sub("-", str(value).strip().lower()).strip("-") or "unknown"


def table_filename(device: str, backend: str, precision: str, batch: int) -> str:
    """Predictable file name of a table, e.g. ``v100_tensorrt_fp16_b64.parquet``."""
    if isinstance(batch, bool) or int(batch) <= 0:
        raise ValueError(f"batch must be a positive integer; got {batch!r}")
    return f"{_slug(device)}_{_slug(backend)}_{_slug(precision)}_b{int(batch)}.parquet"


def _stem(table_path: str | os.PathLike[str]) -> Path:
    p = Path(table_path)
    return p.with_name(p.name.removesuffix(".parquet"))


def calibration_path(table_path: str | os.PathLike[str]) -> Path:
    """Where the calibration of a table file lives: ``x.parquet`` -> ``x.calibration.json``."""
    stem = _stem(table_path)
    return stem.with_name(stem.name + ".calibration.json")


def validation_path(table_path: str | os.PathLike[str]) -> Path:
    """Where the validation of a table file goes by default: ``x.parquet`` -> ``x.validation.parquet``."""
    stem = _stem(table_path)
    return stem.with_name(stem.name + ".validation.parquet")


def missing_archs_path(file_path: str | os.PathLike[str]) -> Path:
    """The archs file of the keys a table lacks, next to ``file_path``: ``x.parquet`` -> ``x.missing_archs.json``."""
    stem = _stem(file_path)
    return stem.with_name(stem.name + ".missing_archs.json")


def parts_dir(out_dir: str | os.PathLike[str], table_name: str) -> Path:
    """The folder of a build's crash-safe parts: ``<out>/<table>.parts``."""
    return Path(out_dir) / f"{table_name}.parts"


def lock_path(out_dir: str | os.PathLike[str], table_name: str) -> Path:
    """The lock file of the build writing a table: ``<out>/<table>.lock``."""
    return Path(out_dir) / f"{table_name}.lock"


def rounds_dir(out_dir: str | os.PathLike[str], table_name: str) -> Path:
    """The folder of a build in rounds, one store per round: ``<out>/<table>.rounds``."""
    return Path(out_dir) / f"{table_name}.rounds"


__all__ = [
    "calibration_path",
    "lock_path",
    "missing_archs_path",
    "parts_dir",
    "rounds_dir",
    "table_filename",
    "validation_path",
]
