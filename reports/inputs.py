"""The inputs every report shares: latency tables, validation files, CSVs, architectures, common flags.

The commands themselves run through :func:`tables.cli.run_cli`: a mistake in
these inputs raises :class:`ReportError` (a ``ValueError``), which ends the
command as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from profiler.networks import get_network, load_gpunet_config
from profiler.spaces import Architecture
from profiler.spaces.gpunet import architecture as gpunet_architecture
from tables.errors import one_line
from tables.key import BlockKey, parse_key
from tables.predictor import Prediction, predict
from tables.schema import read_metadata as read_schema_metadata
from tables.schema import read_table
from tables.table import LatencyTable

#: Metadata key of tables and validation files (JSON).
METADATA_KEY = b"nas_latency"

#: Columns every validation file written by ``python -m profiler.validate`` has.
VALIDATION_COLUMNS: tuple[str, ...] = (
    "network",
    "source",
    "n_blocks",
    "sum_ms",
    "predicted_ms",
    "measured_ms",
    "split",
    "error_pct",
    "error_uncal_pct",
)


class ReportError(ValueError):
    """A mistake in the user's input (file, column, network, key): one line on stderr, exit status 2."""


# ----- command-line arguments every report shares --------------------------------------


def add_out_argument(parser: argparse.ArgumentParser, default: str = ".") -> None:
    """``--out DIR``: the folder the figures are written to (created if missing)."""
    parser.add_argument(
        "--out", type=Path, default=Path(default), metavar="DIR", help=f"output folder (default: {default})"
    )


def add_unit_arguments(parser: argparse.ArgumentParser, default_per_image: bool) -> None:
    """``--per-image`` / ``--per-batch``: the latency unit of the figure."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--per-image",
        dest="per_image",
        action="store_true",
        default=default_per_image,
        help="latency in ms per image (batch latency / batch size)" + (" (default)" if default_per_image else ""),
    )
    group.add_argument(
        "--per-batch",
        dest="per_image",
        action="store_false",
        help="latency in ms per batch (one inference of the whole batch)" + ("" if default_per_image else " (default)"),
    )


# ----- inputs ---------------------------------------------------------------


def _existing(path: Path | str, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ReportError(f"{what} {str(p)!r} does not exist or is not a file")
    return p


def read_csv(path: Path | str) -> pd.DataFrame:
    """Read a CSV input; an empty file or one without rows is an error."""
    p = _existing(path, "CSV file")
    try:
        df = pd.read_csv(p, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ReportError(f"CSV file {str(p)!r} is empty") from None
    if df.empty:
        raise ReportError(f"CSV file {str(p)!r} has a header but no rows")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise :class:`ReportError` naming the first column ``df`` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ReportError(f"{what} has no column {missing[0]!r} (its columns: {', '.join(map(str, df.columns))})")


def read_table_metadata(path: Path | str) -> dict[str, Any]:
    """A latency table's metadata, validated by ``tables.schema.read_metadata``."""
    return read_schema_metadata(path)


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``nas_latency`` JSON metadata of any Parquet file ({} when absent), not validated."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise ReportError(f"{str(path)!r} is not a Parquet file or is truncated ({one_line(exc)})") from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        key = METADATA_KEY.decode()
        raise ReportError(f"{str(path)!r}: metadata {key!r} is not valid JSON ({one_line(exc)})") from None
    return meta if isinstance(meta, dict) else {}


def read_latency_table(path: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A latency table as (rows, metadata), read through ``tables.schema.read_table``."""
    p = Path(path)
    df, meta = read_table(p)
    if len(df) == 0:
        raise ReportError(f"latency table {str(p)!r} has no rows")
    require_columns(df, ("key", "block", "latency_ms", "status"), f"latency table {str(p)!r}")
    return df, dict(meta or {})


def read_validation(path: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A validation file of ``python -m profiler.validate`` as (rows, metadata)."""
    p = _existing(path, "validation file")
    try:
        df = pq.read_table(p).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise ReportError(f"validation file {str(p)!r} is not Parquet or is truncated ({one_line(exc)})") from None
    require_columns(df, VALIDATION_COLUMNS, f"validation file {str(p)!r}")
    if len(df) == 0:
        raise ReportError(f"validation file {str(p)!r} has no rows")
    return df, read_metadata(p)


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows measured successfully (``status == "ok"``) with a finite latency."""
    good = (df["status"].astype(str) == "ok") & pd.to_numeric(df["latency_ms"], errors="coerce").notna()
    return df.loc[good]


def table_label(meta: dict[str, Any], fallback: str = "table") -> str:
    """Short name of a table for legends: device, engine, precision, batch."""
    device = meta.get("device") if isinstance(meta.get("device"), dict) else {}
    engine = meta.get("engine") if isinstance(meta.get("engine"), dict) else {}
    parts = []
    dev = device.get("name") or meta.get("device_profile")
    if dev:
        parts.append(str(dev))
    eng = engine.get("name") or meta.get("backend")
    if eng:
        parts.append(str(eng) + (f" {engine['version']}" if engine.get("version") else ""))
    if meta.get("precision"):
        parts.append(str(meta["precision"]))
    if meta.get("batch") is not None:
        parts.append(f"batch {meta['batch']}")
    return ", ".join(parts) if parts else fallback


def table_batch(meta: dict[str, Any], path: Path | str) -> int:
    """The batch size recorded in a table's metadata."""
    try:
        batch = int(meta["batch"])
    except (KeyError, TypeError, ValueError):
        raise ReportError(f"{str(path)!r}: metadata has no batch size") from None
    if batch <= 0:
        raise ReportError(f"{str(path)!r}: metadata batch size {batch} is not positive")
    return batch


# ----- architectures ----------------------------------------------------------

_INT_LIST = re.compile(r"^\[?\s*-?\d+(\s*[,\s]\s*-?\d+)*\s*\]?$")


def parse_encoding(text: str) -> list[int] | None:
    """Integers of an encoding written as a JSON list or space/comma separated; None if not one."""
    text = text.strip()
    if not _INT_LIST.match(text) or not re.search(r"[\s,\[]", text):
        return None
    return [int(t) for t in re.findall(r"-?\d+", text)]


def _keys_from_strings(items: Iterable[str], source: str) -> list[BlockKey]:
    keys = []
    for item in items:
        line = item.split("#", 1)[0].strip()
        if line:
            try:
                keys.append(parse_key(line))
            except ValueError as exc:
                raise ReportError(f"{source}: {one_line(exc)}") from None
    if not keys:
        raise ReportError(f"{source}: no block keys in it")
    return keys


def _architecture_from_file(path: Path) -> Architecture:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReportError(f"{str(path)!r} is not valid JSON ({one_line(exc)})") from None
        if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
            return load_gpunet_config(path)
        if not (isinstance(data, list) and all(isinstance(d, str) for d in data)):
            raise ReportError(f"{str(path)!r}: expected a GPUNet layer list or a JSON list of block-key strings")
        keys = _keys_from_strings(data, str(path))
    else:
        keys = _keys_from_strings(text.splitlines(), str(path))
    try:
        return Architecture(name=path.stem, keys=tuple(keys), resolution=keys[0].h, source="file")
    except ValueError as exc:
        raise ReportError(f"{str(path)!r}: {one_line(exc)}") from None


def resolve_architecture(text: str, base_dir: Path | None = None) -> Architecture:
    """Turn a reference-network name, a GPUNet encoding or a file into a ``profiler.spaces.Architecture``.

    ``text`` is one of: a 41-integer GPUNet encoding (JSON list, or integers
    separated by spaces or commas); a file (relative to ``base_dir`` or to the
    current folder) holding a GPUNet layer list (JSON) or block-key strings (a
    JSON list, or one per line); otherwise the name of a reference network of
    ``profiler.networks``.
    """
    text = str(text).strip()
    if not text or text.lower() == "nan":
        raise ReportError("empty architecture: give a network name, an encoding or a file")
    encoding = parse_encoding(text)
    if encoding is not None:
        try:
            return gpunet_architecture(encoding)
        except (ValueError, LookupError) as exc:
            raise ReportError(f"GPUNet encoding {text!r}: {one_line(exc)}") from None
    for candidate in ([base_dir / text] if base_dir is not None else []) + [Path(text)]:
        if candidate.is_file():
            return _architecture_from_file(candidate)
    try:
        return get_network(text)
    except (KeyError, ValueError) as exc:
        raise ReportError(f"{one_line(exc)}; or give a GPUNet encoding or an existing file") from None


def load_latency_table(path: Path | str) -> LatencyTable:
    """A ``tables.table.LatencyTable`` for predictions."""
    return LatencyTable.load(_existing(path, "latency table"))


def predict_architecture(table: LatencyTable, arch: Architecture, name: str) -> Prediction:
    """``tables.predictor.predict(table, arch)``; a key the table lacks becomes a ReportError."""
    try:
        return predict(table, arch)
    except (KeyError, LookupError, ValueError) as exc:
        raise ReportError(f"cannot predict {name!r}: {one_line(exc)}") from None


def parse_assignments(items: Sequence[str], flag: str) -> list[tuple[str, str]]:
    """``COL=VALUE`` strings into pairs; raises ReportError on text without ``=``."""
    pairs = []
    for item in items:
        col, sep, value = item.partition("=")
        if not sep or not col.strip():
            raise ReportError(f"{flag} {item!r}: expected COLUMN=VALUE")
        pairs.append((col.strip(), value.strip()))
    return pairs


def filter_rows(df: pd.DataFrame, where: Sequence[tuple[str, str]], what: str) -> pd.DataFrame:
    """Rows where every ``column == value`` holds (numbers compared as numbers, text case-insensitively)."""
    for col, value in where:
        require_columns(df, [col], what)
        column = df[col]
        numeric = pd.to_numeric(column, errors="coerce")
        try:
            target = float(value)
        except ValueError:
            target = None
        if target is not None and numeric.notna().all():
            mask = numeric == target
        else:
            mask = column.astype(str).str.strip().str.casefold() == value.casefold()
        if not mask.any():
            seen = ", ".join(sorted({str(v) for v in column.dropna().unique()})[:12])
            raise ReportError(f"no rows of {what} have {col}={value} (values present: {seen})")
        df = df.loc[mask]
    return df
