"""The Parquet schema of a latency table and its file-level metadata.

A table is one Parquet file with one row per block key. Columns:

- key columns: ``key`` (canonical string form), then the typed fields of
  :class:`~tables.key.BlockKey` (``block``, ``cin``, ``h``, ``w``, ``cout``,
  ``k``, ``s`` as int32, ``e`` float64, ``se`` bool, ``act``, ``pad``);
- statistics of the timed runs, all in ms per batch: ``latency_ms`` (the
  trimmed mean, the figure the predictor sums), ``median_ms``, ``min_ms``,
  ``max_ms``, ``std_ms``, ``cv`` (std / mean, no unit), ``inner_loop``
  (inferences per timed sample), ``warmup_runs``, ``n_samples`` and
  ``samples_ms`` (the raw samples, ms per batch);
- drift correction: ``raw_latency_ms`` (the trimmed mean as measured) and
  ``reference_ms`` (the trimmed mean of the drift reference's samples taken
  between this key's samples, null when the build had no drift reference). With
  a drift reference ``latency_ms`` is ``raw_latency_ms`` brought to the table's
  reference speed (:func:`drift_corrected`), else it equals ``raw_latency_ms``;
  the other statistics and the samples are always as measured;
- ``boundary_ms``: the part of ``raw_latency_ms`` that is boundary -- what a
  block timed alone pays that a whole network pays once (one engine call,
  moving its input and output across the engine's boundary), measured by the
  build's boundary method (:mod:`kernels_bench.boundary`, metadata
  ``boundary``); the predictor sums ``latency_ms * (1 - boundary_ms /
  raw_latency_ms)`` and adds the table's floor once per network. Null when none
  was measured (``--boundary none``, older tables: the plain sum);
- ``round_latency_ms``: a table built in rounds (``profiler.build --rounds R``)
  times every key once per round, and one whose short keys got further rounds
  (``--short-rounds N``, the cpu profile's default) times those N times; this
  lists each round's ``latency_ms`` of the key, and the row's ``latency_ms``
  (and ``raw_latency_ms``, ``reference_ms``, ``boundary_ms``) is their median, its
  samples those of every round; empty for a table built in one round;
- phases of the measurement in seconds: ``export_s``, ``compile_s``,
  ``warmup_s``, ``timed_s``, and ``boundary_s`` (measuring the key's boundary
  graphs; null without any);
- ``status`` ("ok" or "failed"), ``error`` (text of a failure, else null),
  ``failure_kind`` (of a failed row: "transient" -- the machine was the problem,
  a plain rerun measures it again -- or "permanent" -- only ``--retry-failed``
  does) and ``measured_at`` (UTC timestamp);
- ``settings_id``: the fingerprint of the settings the row was measured with
  (:func:`tables.settings.settings_id`); every row of a table built normally has
  the table's own, a forced merge of tables with different settings keeps each
  row's, with the settings of each id under ``settings_by_id`` in the metadata.

Schema version 2 added ``settings_id`` and ``failure_kind``; tables of version 1
are still read (the columns filled in from their metadata and error texts).
Schema version 3 added ``pad`` and ``boundary_ms``; tables of versions 1 and 2
read with pad "same" and no boundary.
Reading checks every row: its key parses and agrees with its typed columns, an
"ok" row has a finite positive latency, and every column has the schema's type.

The file metadata is one JSON document under the Parquet key ``b"nas_latency"``;
any Arrow reader gets it without this package::

    json.loads(pyarrow.parquet.read_metadata(path).metadata[b"nas_latency"])
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tables.atomic import atomic_path
from tables.errors import PERMANENT, error_text, failure_kind, one_line
from tables.host import host_info
from tables.key import ACTIVATIONS, BLOCK_TYPES, KEY_FIELDS, PAD_SUFFIXES, PADDINGS, BlockKey, format_ratio, parse_key
from tables.settings import settings_id

#: Distribution name of this package (its version goes into every table as ``tool_version``).
PACKAGE_NAME = "nas-latency-profiler"

#: Version of the column layout and metadata document written now; bumped on any incompatible change.
SCHEMA_VERSION = 3

#: Versions this package reads (older ones get their later columns filled in).
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (1, 2, 3)

#: Parquet file-metadata key that holds the JSON metadata document.
METADATA_KEY = b"nas_latency"

#: Value of the metadata field ``kind`` for a latency table.
TABLE_KIND = "latency_table"

STATUS_OK = "ok"
STATUS_FAILED = "failed"

#: Metadata fields every table must carry.
REQUIRED_METADATA: tuple[str, ...] = (
    "schema_version",
    "kind",
    "device_profile",
    "device",
    "engine",
    "backend",
    "backend_settings",
    "precision",
    "batch",
    "timing",
    "host",
    "created_at",
    "tool_version",
)

#: Metadata fields that may be null: the floor (not measured yet), the ONNX opset
#: (torch backend) and the source (a hand-built table); absent ones are written as null.
OPTIONAL_METADATA: tuple[str, ...] = ("floor", "opset", "source", "drift_reference")

STAT_COLUMNS: tuple[str, ...] = ("latency_ms", "median_ms", "min_ms", "max_ms", "std_ms", "cv")
PHASE_COLUMNS: tuple[str, ...] = ("export_s", "compile_s", "warmup_s", "timed_s")
DRIFT_COLUMNS: tuple[str, ...] = ("raw_latency_ms", "reference_ms")
#: The part of a key's raw latency that is boundary: what a block timed alone pays that a whole network pays
#: once (one engine call, moving its input and output across the engine's boundary); see
#: :mod:`kernels_bench.boundary`. Null when the build measured none (``--boundary none``, older tables).
BOUNDARY_COLUMN = "boundary_ms"
#: Seconds the build spent measuring a key's boundary graphs (null without any).
BOUNDARY_SECONDS_COLUMN = "boundary_s"
#: Each round's latency of a key measured in rounds (``--rounds``, or a short key's ``--short-rounds``).
ROUND_COLUMN = "round_latency_ms"
#: The roofline quantities of each key at the table's batch and precision, from the key alone
#: (:func:`tables.cost.key_cost`): FLOPs, bytes moved with no fusion and no cache, and their ratio (FLOP per
#: byte). Against the device's peaks (metadata ``peaks``) they give each key's bound (:mod:`tables.roofline`).
COST_COLUMNS: tuple[str, ...] = ("flops", "bytes_moved", "arithmetic_intensity")

#: Columns added after the first tables were written, and how a file (or rows) without them is filled in:
#: ``latency`` copies ``latency_ms``, ``null`` leaves nulls, ``empty`` gives empty lists, ``settings`` the
#: table's settings id, ``kind`` the failure kind read from a failed row's error text, ``same`` the key
#: padding "same" (every key before schema 3), ``cost`` the key's roofline quantities at the batch and
#: precision of the metadata (:data:`COST_COLUMNS`; computed for the rows that lack them).
ADDED_COLUMNS: dict[str, str] = {
    "pad": "same",
    **{name: "cost" for name in COST_COLUMNS},
    "raw_latency_ms": "latency",
    "reference_ms": "null",
    ROUND_COLUMN: "empty",
    BOUNDARY_COLUMN: "null",
    BOUNDARY_SECONDS_COLUMN: "null",
    "failure_kind": "kind",
    "settings_id": "settings",
}


def arrow_schema() -> pa.Schema:
    """The Arrow schema of a latency table (columns in file order, no metadata)."""
    int32 = pa.int32()
    f64 = pa.float64()
    fields = [
        pa.field("key", pa.string(), nullable=False),
        pa.field("block", pa.string(), nullable=False),
        pa.field("cin", int32, nullable=False),
        pa.field("h", int32, nullable=False),
        pa.field("w", int32, nullable=False),
        pa.field("cout", int32, nullable=False),
        pa.field("k", int32, nullable=False),
        pa.field("s", int32, nullable=False),
        pa.field("e", f64, nullable=False),
        pa.field("se", pa.bool_(), nullable=False),
        pa.field("act", pa.string(), nullable=False),
        pa.field("pad", pa.string(), nullable=False),
        pa.field("flops", pa.int64()),
        pa.field("bytes_moved", pa.int64()),
        pa.field("arithmetic_intensity", f64),
        *(pa.field(name, f64) for name in STAT_COLUMNS),
        pa.field("inner_loop", int32),
        pa.field("warmup_runs", int32),
        pa.field("n_samples", int32, nullable=False),
        pa.field("samples_ms", pa.list_(f64), nullable=False),
        *(pa.field(name, f64) for name in DRIFT_COLUMNS),
        pa.field(ROUND_COLUMN, pa.list_(f64)),
        pa.field(BOUNDARY_COLUMN, f64),
        *(pa.field(name, f64) for name in PHASE_COLUMNS),
        pa.field(BOUNDARY_SECONDS_COLUMN, f64),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("failure_kind", pa.string()),
        pa.field("measured_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("settings_id", pa.string()),
    ]
    return pa.schema(fields)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def _as_key(key: BlockKey | str) -> BlockKey:
    if isinstance(key, BlockKey):
        return key
    return parse_key(key)


def _float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value)


def result_row(
    key: BlockKey | str,
    result: Any = None,
    error: str | BaseException | None = None,
    *,
    measured_at: datetime | None = None,
    reference_ms: float | None = None,
    boundary_ms: float | None = None,
    boundary_s: float | None = None,
) -> dict[str, Any]:
    """One table row for ``key``.

    ``result`` is a timing result (duck-typed like ``kernels_bench.timing.TimingResult``:
    ``samples_ms``, ``trimmed_mean_ms``, ``median_ms``, ``min_ms``, ``max_ms``,
    ``std_ms``, ``cv``, ``inner_loop``, ``warmup_runs``, ``phases``), all times in
    ms per batch, phases in seconds. Without a result, or with ``error``, the row
    is a failed one: NaN statistics (stored as nulls), no samples, status "failed"
    and the error text.

    ``raw_latency_ms`` is the trimmed mean and ``reference_ms`` the result's
    ``reference_ms`` (the drift reference's speed while the key was timed), if any.
    With ``reference_ms`` (the table's reference speed: the drift reference's
    latency in ms) ``latency_ms`` is drift-corrected to it (see :func:`drift_corrected`).
    ``boundary_ms``: the boundary part of the raw latency (:data:`BOUNDARY_COLUMN`), measured in
    ``boundary_s`` seconds.
    """
    k = _as_key(key)
    row: dict[str, Any] = {"key": str(k)}
    for name in KEY_FIELDS:
        row[name] = getattr(k, name)
    if result is not None and error is None and not _finite_positive(getattr(result, "trimmed_mean_ms", None)):
        error = f"the timing gave no usable latency (trimmed mean {getattr(result, 'trimmed_mean_ms', None)!r} ms)"
    failed = result is None or error is not None
    if failed:
        for name in STAT_COLUMNS:
            row[name] = math.nan
        row["inner_loop"] = None
        row["warmup_runs"] = None
        row["n_samples"] = 0
        row["samples_ms"] = []
    else:
        samples = [float(x) for x in result.samples_ms]
        row["latency_ms"] = _float(result.trimmed_mean_ms)
        row["median_ms"] = _float(result.median_ms)
        row["min_ms"] = _float(result.min_ms)
        row["max_ms"] = _float(result.max_ms)
        row["std_ms"] = _float(result.std_ms)
        row["cv"] = _float(result.cv)
        row["inner_loop"] = int(result.inner_loop)
        row["warmup_runs"] = int(result.warmup_runs)
        row["n_samples"] = len(samples)
        row["samples_ms"] = samples
    row["raw_latency_ms"] = row["latency_ms"]
    row[ROUND_COLUMN] = []
    row[BOUNDARY_COLUMN] = _float(boundary_ms) if not failed else math.nan
    now = getattr(result, "reference_ms", None) if not failed else None
    row["reference_ms"] = _float(now)
    if reference_ms is not None and not failed:
        row["latency_ms"] = drift_corrected(row["raw_latency_ms"], row["reference_ms"], reference_ms)
    phases = dict(getattr(result, "phases", None) or {}) if result is not None else {}
    for name in PHASE_COLUMNS:
        row[name] = _float(phases.get(name))
    row[BOUNDARY_SECONDS_COLUMN] = _float(boundary_s)
    if failed:
        row["status"] = STATUS_FAILED
        row["error"] = error_text(error) if error is not None else "no timing result"
        row["failure_kind"] = failure_kind(error) if error is not None else PERMANENT
    else:
        row["status"] = STATUS_OK
        row["error"] = None
        row["failure_kind"] = None
    row["measured_at"] = measured_at or utc_now()
    row["settings_id"] = None  # the table's own, filled in when the row is written (rows_to_arrow)
    return row


def _finite_positive(value: Any) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


def drift_corrected(latency_ms: float, reference_now_ms: float, reference_ms: float) -> float:
    """A latency brought to the table's reference speed.

    ``latency_ms`` was measured while the drift reference took
    ``reference_now_ms``; the result is the latency at the speed where it takes
    ``reference_ms``. The machine was ``reference_now_ms / reference_ms`` times slower than in the
    reference state while the latency was measured; dividing by that factor gives
    the latency in the reference state. All three in the same unit; raises
    ``ValueError`` unless all are finite and positive.
    """
    for name, value in (("latency", latency_ms), ("reference_now", reference_now_ms), ("reference", reference_ms)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"drift correction needs a finite positive {name} latency (ms); got {value!r}")
    return float(latency_ms) * float(reference_ms) / float(reference_now_ms)


def apply_drift_correction(row: Mapping[str, Any], reference_ms: float) -> dict[str, Any]:
    """A copy of a row from :func:`result_row` (without a table reference) with ``latency_ms`` drift-corrected.

    Rows of failed keys, and rows without a ``reference_ms`` measurement, are returned unchanged.
    """
    out = dict(row)
    now, raw = out.get("reference_ms"), out.get("raw_latency_ms")
    if out.get("status") == STATUS_OK and not _is_missing(now) and not _is_missing(raw):
        out["latency_ms"] = drift_corrected(float(raw), float(now), reference_ms)
    return out


def _spread(result: Any) -> dict[str, Any]:
    """The statistics of a timing result besides its trimmed mean (ms per batch; cv without unit)."""
    return {
        "median_ms": float(result.median_ms),
        "min_ms": float(result.min_ms),
        "max_ms": float(result.max_ms),
        "std_ms": float(result.std_ms),
        "cv": float(result.cv),
        "n_samples": len(result.samples_ms),
    }


def floor_entry(result: Any, input_shape: Iterable[int]) -> dict[str, Any]:
    """The metadata ``floor`` of a table from the identity graph's timing result.

    The floor is the backend's cost of one call that does nothing: ``latency_ms``
    is its trimmed mean in ms per batch, ``input_shape`` the identity graph's
    input (batch first); the other statistics come along for re-analysis.
    """
    return {
        "input_shape": [int(d) for d in input_shape],
        "latency_ms": float(result.trimmed_mean_ms),
        "inner_loop": int(result.inner_loop),
        **_spread(result),
    }


def reference_entry(result: Any, key: str, ratio: float) -> dict[str, Any]:
    """The metadata ``drift_reference`` of a table: the reference graph ``key`` timed alone (ms per batch).

    ``latency_ms`` is the table's reference speed, the drift reference's trimmed
    mean; ``ratio`` the length of a reference sample over a measured one.
    """
    return {"key": str(key), "ratio": float(ratio), "latency_ms": float(result.trimmed_mean_ms), **_spread(result)}


def tool_version() -> str:
    """Version of this package, from its installed metadata.

    Run from a source tree that was never installed, it is read from the
    ``pyproject.toml`` next to the package (``+source`` appended); ``0+unknown``
    when neither exists.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE_NAME)
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return f"{m.group(1)}+source" if m else "0+unknown"


def build_metadata(
    *,
    device_profile: str,
    backend: str,
    precision: str,
    batch: int,
    device: Mapping[str, Any] | None = None,
    engine: Mapping[str, Any] | None = None,
    backend_settings: Mapping[str, Any] | None = None,
    timing: Mapping[str, Any] | None = None,
    floor: Mapping[str, Any] | None = None,
    opset: int | None = None,
    source: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A complete metadata document; fills schema version, kind, host, creation time and tool version.

    ``batch`` is the number of images per inference; ``timing`` the timing
    settings; ``floor`` the identity-graph measurement (:func:`floor_entry`);
    ``source`` what was enumerated (space, networks, archs files, sample size).
    Extra keyword arguments are stored as extra fields.
    """
    md: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": TABLE_KIND,
        "device_profile": str(device_profile),
        "device": dict(device or {}),
        "engine": dict(engine or {}),
        "backend": str(backend),
        "backend_settings": dict(backend_settings or {}),
        "precision": str(precision),
        "batch": int(batch),
        "timing": dict(timing or {}),
        "floor": dict(floor) if floor is not None else None,
        "host": host_info(),
        "created_at": utc_now().isoformat(),
        "tool_version": tool_version(),
        "opset": int(opset) if opset is not None else None,
        "source": dict(source) if source is not None else None,
    }
    md.update(extra)
    return md


def validate_metadata(md: Mapping[str, Any]) -> None:
    """Check a metadata document; raises ``ValueError`` naming missing or wrong fields."""
    if not isinstance(md, Mapping):
        raise ValueError(f"table metadata must be a JSON object (dict); got {type(md).__name__}")
    missing = [name for name in REQUIRED_METADATA if name not in md]
    if missing:
        raise ValueError(
            "table metadata lacks field(s) " + ", ".join(missing) + "; build it with tables.schema.build_metadata()"
        )
    if md["kind"] != TABLE_KIND:
        raise ValueError(f"table metadata kind is {md['kind']!r}, expected {TABLE_KIND!r}")
    batch = md["batch"]
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or int(batch) <= 0:
        raise ValueError(f"table metadata batch must be a positive integer; got {batch!r}")
    for name in ("device_profile", "backend", "precision"):
        if not isinstance(md[name], str) or not md[name]:
            raise ValueError(f"table metadata {name} must be a non-empty string; got {md[name]!r}")
    for name in ("device", "engine", "backend_settings", "timing"):
        if not isinstance(md[name], Mapping):
            raise ValueError(f"table metadata {name} must be a JSON object; got {type(md[name]).__name__}")
    floor = md.get("floor")
    if floor is not None and floor_latency_ms(floor) is None:
        raise ValueError("table metadata floor must be null or an object with latency_ms (ms per batch)")


def floor_latency_ms(floor: Mapping[str, Any] | None) -> float | None:
    """The floor's trimmed mean in ms per batch (``latency_ms``, or ``trimmed_mean_ms``); ``None`` if absent."""
    if not isinstance(floor, Mapping):
        return None
    for name in ("latency_ms", "trimmed_mean_ms"):
        value = floor.get(name)
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (Path, BlockKey)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"table metadata value of type {type(value).__name__} is not JSON-serializable")


def _encode_metadata(md: Mapping[str, Any]) -> bytes:
    doc = dict(md)
    for name in OPTIONAL_METADATA:
        doc.setdefault(name, None)
    return json.dumps(doc, default=_json_default, sort_keys=True, allow_nan=True).encode("utf-8")


def rows_to_arrow(
    rows: Iterable[Mapping[str, Any]] | pd.DataFrame, metadata: Mapping[str, Any] | None = None
) -> pa.Table:
    """Rows (dicts from :func:`result_row`, or a DataFrame of table columns) -> an Arrow table.

    Columns follow :func:`arrow_schema`; with ``metadata`` (validated) the
    schema carries it under :data:`METADATA_KEY`.
    """
    schema = arrow_schema()
    if not isinstance(rows, pd.DataFrame):
        rows = pd.DataFrame([dict(r) for r in rows], columns=list(schema.names))
    rows = fill_added_columns(rows, metadata)
    missing = [name for name in schema.names if name not in rows.columns]
    if missing:
        raise ValueError("table rows lack column(s) " + ", ".join(missing) + "; make rows with result_row()")
    frame = rows.loc[:, list(schema.names)].copy()
    frame["samples_ms"] = pd.Series(
        [[] if _is_missing(v) else [float(x) for x in v] for v in frame["samples_ms"]], index=frame.index, dtype=object
    )
    frame[ROUND_COLUMN] = pd.Series(
        [[] if _is_missing(v) else [float(x) for x in v] for v in frame[ROUND_COLUMN]], index=frame.index, dtype=object
    )
    for name in ("error", "failure_kind", "settings_id"):
        frame[name] = pd.Series(
            [None if _is_missing(v) else str(v) for v in frame[name]], index=frame.index, dtype=object
        )
    for name in ("inner_loop", "warmup_runs"):
        frame[name] = pd.array([None if _is_missing(v) else int(v) for v in frame[name]], dtype="Int64")
    frame["measured_at"] = pd.to_datetime(frame["measured_at"], utc=True)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(None)
    if metadata is not None:
        validate_metadata(metadata)
        table = table.replace_schema_metadata({METADATA_KEY: _encode_metadata(metadata)})
    return table


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def write_table(
    table_or_rows: pa.Table | pd.DataFrame | Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    *,
    fault: str | None = None,
) -> Path:
    """Write a table atomically: a temporary file in the same folder, fsync, then ``os.replace``.

    A reader sees either the old file or the complete new one, never a partial
    file. Returns the path written. ``fault`` names the write point for the crash tests
    (:func:`tables.atomic.fault_point`).
    """
    path = Path(path)
    if isinstance(table_or_rows, pa.Table):
        validate_metadata(metadata)
        schema = arrow_schema()
        table = table_or_rows.select(schema.names).cast(schema)
        table = table.replace_schema_metadata({METADATA_KEY: _encode_metadata(metadata)})
    else:
        table = rows_to_arrow(table_or_rows, metadata)
    with atomic_path(path, fault=fault) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata document of a table file (footer only; the rows are not read).

    Raises a one-line ``ValueError`` for a missing, corrupt or foreign file or an
    unsupported schema version.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"latency table not found: {path}")
    if path.is_dir():
        raise ValueError(f"latency table path is a folder, not a Parquet file: {path}")
    try:
        file_md = pq.read_metadata(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"not a Parquet file or truncated: {path} ({one_line(exc)})") from None
    raw = file_md.get(METADATA_KEY)
    if raw is None:
        raise ValueError(
            f"{path} is a Parquet file without latency-table metadata (key 'nas_latency'); "
            "it was not written by this tool, rebuild it with python -m profiler.build"
        )
    try:
        md = json.loads(raw)
    except ValueError:
        raise ValueError(f"{path}: latency-table metadata is not valid JSON; rebuild the table") from None
    version = md.get("schema_version") if isinstance(md, dict) else None
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ValueError(
            f"table schema version {version} is not supported by this version ({SCHEMA_VERSION}); "
            f"{path} needs a matching release of this package, or rebuild the table"
        )
    try:
        validate_metadata(md)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return md


def read_table(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a table file -> (DataFrame with one row per stored row, metadata dict).

    Raises a one-line ``ValueError`` for a missing file, a file that is not
    Parquet or is truncated, a Parquet file without our metadata, or another
    schema version.
    """
    path = Path(path)
    md = read_metadata(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"not a Parquet file or truncated: {path} ({one_line(exc)})") from None
    check_column_types(table.schema, path)
    missing = [n for n in arrow_schema().names if n not in table.schema.names and n not in ADDED_COLUMNS]
    if missing:
        raise ValueError(f"{path} lacks table column(s) {', '.join(missing)}; rebuild the table")
    frame = table_to_frame(table, md)
    check_rows(frame, path)
    return frame, md


def fill_added_columns(frame: pd.DataFrame, metadata: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """``frame`` with the :data:`ADDED_COLUMNS` it lacks filled in (a copy when anything was added).

    ``settings_id`` nulls become the id of ``metadata``'s settings (when given): a
    row written into a table carries that table's settings unless it has its own.
    """
    added = {}
    for name, rule in ADDED_COLUMNS.items():
        if rule == "cost":
            continue
        if name in frame.columns and not (rule == "settings" and metadata is not None):
            continue
        if rule == "latency":
            added[name] = frame["latency_ms"] if "latency_ms" in frame.columns else math.nan
        elif rule == "null":
            added[name] = math.nan
        elif rule == "same":
            added[name] = "same"
        elif rule == "empty":
            added[name] = [[] for _ in range(len(frame))]
        elif rule == "kind":
            added[name] = [
                failure_kind(str(err or "")) if status == STATUS_FAILED else None
                for status, err in zip(frame.get("status", []), frame.get("error", [None] * len(frame)))
            ]
        elif rule == "settings":
            own = settings_id(metadata) if metadata is not None else None
            old = frame[name] if name in frame.columns else [None] * len(frame)
            added[name] = [own if _is_missing(v) else v for v in old]
    added.update(_cost_columns(frame, metadata))
    if not added:
        return frame
    out = frame.copy()
    for name, value in added.items():
        out[name] = value
    return out


def _cost_columns(frame: pd.DataFrame, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The :data:`COST_COLUMNS` of ``frame`` with the rows that lack them computed from their keys at the
    metadata's batch and precision (nulls where there is no metadata or a key has no cost); ``{}`` when
    every row has them."""
    present = [n for n in COST_COLUMNS if n in frame.columns]
    if len(present) == len(COST_COLUMNS):
        lack = np.zeros(len(frame), dtype=bool)
        for name in COST_COLUMNS:
            lack |= pd.isna(frame[name]).to_numpy()
        if not lack.any():
            return {}
    else:
        lack = np.ones(len(frame), dtype=bool)
    values = {
        n: (
            np.array(pd.to_numeric(frame[n], errors="coerce"), dtype=np.float64)
            if n in frame.columns
            else np.full(len(frame), np.nan)
        )
        for n in COST_COLUMNS
    }
    try:
        batch = int(metadata["batch"])  # type: ignore[index]
        precision = str(metadata["precision"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        batch = 0
    if batch > 0 and "key" in frame.columns:
        from tables.cost import key_cost

        known: dict[str, tuple[float, float, float]] = {}
        keys = frame["key"].to_numpy()
        for i in np.flatnonzero(lack):
            text = str(keys[i])
            if text not in known:
                try:
                    c = key_cost(parse_key(text), batch, precision)
                    known[text] = (float(c.flops), float(c.bytes_moved), float(c.arithmetic_intensity))
                except ValueError:
                    known[text] = (math.nan, math.nan, math.nan)
            for name, v in zip(COST_COLUMNS, known[text]):
                values[name][i] = v
    return {
        "flops": pd.array([None if v != v else int(v) for v in values["flops"]], dtype="Int64"),
        "bytes_moved": pd.array([None if v != v else int(v) for v in values["bytes_moved"]], dtype="Int64"),
        "arithmetic_intensity": values["arithmetic_intensity"],
    }


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual == expected:
        return True
    for check in (pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_timestamp):
        if check(expected):
            if check is pa.types.is_floating:
                return pa.types.is_floating(actual) or pa.types.is_integer(actual)
            if check is pa.types.is_string:
                return pa.types.is_string(actual) or pa.types.is_large_string(actual) or pa.types.is_null(actual)
            return check(actual) or pa.types.is_null(actual)
    if pa.types.is_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and (
            pa.types.is_floating(actual.value_type)
            or pa.types.is_integer(actual.value_type)
            or pa.types.is_null(actual.value_type)
        )
    if pa.types.is_boolean(expected):
        return pa.types.is_boolean(actual)
    return False


def check_column_types(schema: pa.Schema, path: str | os.PathLike[str]) -> None:
    """One-line ``ValueError`` naming the first column whose type is not the table schema's (numbers stay numbers)."""
    for field in arrow_schema():
        if field.name in schema.names and not _compatible(schema.field(field.name).type, field.type):
            raise ValueError(
                f"{path}: column {field.name} is stored as {schema.field(field.name).type}, not {field.type}; "
                "the file was not written by this tool or is damaged: rebuild the table"
            )


def canonical_keys(frame: pd.DataFrame) -> pd.Series:
    """The canonical key string of every row, made from its typed columns (one pass over plain Python values:
    a few times faster than column-wise string arithmetic, for a table of ten rows or of a million)."""
    ratios = {e: format_ratio(float(e)) for e in pd.unique(frame["e"])}
    columns = [frame[c].tolist() for c in ("block", "cin", "h", "w", "cout", "k", "s")]
    e_text = frame["e"].map(ratios).tolist()
    tails = [
        f"_se{1 if bool(se) else 0}_{act}{PAD_SUFFIXES.get(pad, '?')}"
        for se, act, pad in zip(frame["se"].tolist(), frame["act"].tolist(), frame["pad"].tolist())
    ]
    keys = [
        f"{b}_i{cin}x{h}x{w}_o{cout}_k{k}_s{s}_e{e}{tail}"
        for b, cin, h, w, cout, k, s, e, tail in zip(*columns, e_text, tails)
    ]
    return pd.Series(keys, index=frame.index, dtype=frame["key"].dtype if "key" in frame.columns else object)


def check_rows(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """One-line ``ValueError`` for the first row that is not a row this tool writes.

    Checks: the block type and activation are known, the integer fields are
    positive, each key string equals the one its typed columns make (so it
    parses, and to the same key), the status is ok or failed, and every ok row
    has a finite positive ``latency_ms``.
    """
    if frame.empty:
        return

    def refuse(mask: np.ndarray, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise ValueError(
                f"{path}: row {i} (key {frame['key'].iloc[i]!r}) {what}; the table is damaged or was not written by "
                "this tool: rebuild it (or re-measure those keys with --retry-failed)"
            )

    refuse(~frame["block"].isin(list(BLOCK_TYPES)).to_numpy(), "has an unknown block type")
    refuse(~frame["act"].isin(list(ACTIVATIONS)).to_numpy(), "has an unknown activation")
    refuse(~frame["pad"].isin(list(PADDINGS)).to_numpy(), "has an unknown padding")
    ints = frame[["cin", "h", "w", "cout", "k", "s"]].to_numpy()
    refuse((ints <= 0).any(axis=1), "has a key field that is not a positive integer")
    refuse((frame["key"] != canonical_keys(frame)).to_numpy(), "has a key string that does not match its columns")
    refuse(~frame["status"].isin([STATUS_OK, STATUS_FAILED]).to_numpy(), "has a status other than ok or failed")
    lat = pd.to_numeric(frame["latency_ms"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    ok = (frame["status"] == STATUS_OK).to_numpy()
    refuse(ok & ~(np.isfinite(lat) & (lat > 0)), "is ok but its latency_ms is not a finite positive number")
    if BOUNDARY_COLUMN in frame.columns:
        bnd = pd.to_numeric(frame[BOUNDARY_COLUMN], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        refuse(ok & np.isinf(bnd), f"has an infinite {BOUNDARY_COLUMN}")


def table_to_frame(table: pa.Table, metadata: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """An Arrow table of :func:`arrow_schema` (later columns may be missing) -> DataFrame in the schema's
    column order (``samples_ms`` as lists of float); missing columns filled from ``metadata``."""
    frame = fill_added_columns(table.to_pandas(), metadata)
    frame = frame.loc[:, list(arrow_schema().names)]
    frame["samples_ms"] = [list(v) if v is not None else [] for v in frame["samples_ms"]]
    frame[ROUND_COLUMN] = [list(v) if v is not None else [] for v in frame[ROUND_COLUMN]]
    for name in ("cin", "h", "w", "cout", "k", "s", "n_samples"):
        frame[name] = frame[name].astype(np.int64)
    for name in ("inner_loop", "warmup_runs"):
        frame[name] = frame[name].astype("Int64")
    for name in ("error", "failure_kind", "settings_id"):  # text or None, never NaN
        frame[name] = pd.Series(
            [None if _is_missing(v) else str(v) for v in frame[name]], index=frame.index, dtype=object
        )
    return frame


def empty_frame() -> pd.DataFrame:
    """A DataFrame with the table's columns and no rows."""
    return table_to_frame(arrow_schema().empty_table())
