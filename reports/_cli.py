"""Shared plumbing of the report commands: argument parsing, one-line errors, inputs.

Every ``python -m reports.<name>`` builds its parser with :func:`make_parser` and
runs through :func:`run_main`, so a user's mistake (a missing file or column, an
unknown network, a key the table lacks) ends as one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

#: Metadata key of tables and validation files (JSON).
METADATA_KEY = b"nas_latency"

#: Exit status for bad input data and for bad command-line usage.
EXIT_ERROR = 1
EXIT_USAGE = 2

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


class ReportError(Exception):
    """A mistake in the user's input; the CLI prints its message as one line."""


class _UsageError(Exception):
    """Raised by the parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def make_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser whose usage errors come back as one line."""
    return _Parser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def one_line(exc: BaseException) -> str:
    """An exception's message collapsed onto one line (KeyError without its quotes)."""
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc) or type(exc).__name__
    return re.sub(r"\s*\n\s*", "; ", text.strip())


def run_main(
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, run ``body(args)`` and turn user errors into one line on stderr.

    Returns the exit status: 0 on success, 1 for bad input data, 2 for bad usage.
    """
    prog = parser.prog
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except _UsageError as exc:
        print(f"{prog}: error: {one_line(exc)} (see --help)", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version exit through here
        return int(exc.code or 0)
    try:
        status = body(args)
    except ImportError as exc:
        name = getattr(exc, "name", None) or one_line(exc)
        print(f"{prog}: error: this report needs the module {name!r}, which is not installed", file=sys.stderr)
        return EXIT_ERROR
    except (ReportError, ValueError, LookupError, OSError) as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    return int(status or 0)


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
    from tables.schema import read_metadata as read_schema_metadata

    return read_schema_metadata(path)


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``nas_latency`` JSON metadata of any Parquet file ({} when absent), not validated."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{str(path)!r}: metadata {METADATA_KEY.decode()!r} is not valid JSON ({exc})") from None
    return meta if isinstance(meta, dict) else {}


def read_latency_table(path: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A latency table as (rows, metadata), read through ``tables.schema.read_table``."""
    from tables.schema import read_table

    p = Path(path)
    df, meta = read_table(p)
    if len(df) == 0:
        raise ReportError(f"latency table {str(p)!r} has no rows")
    require_columns(df, ("key", "block", "latency_ms", "status"), f"latency table {str(p)!r}")
    return df, dict(meta or {})


def read_validation(path: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A validation file of ``python -m profiler.validate`` as (rows, metadata)."""
    import pyarrow.parquet as pq

    p = _existing(path, "validation file")
    df = pq.read_table(p).to_pandas()
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


def _keys_from_strings(items: Iterable[str], source: str) -> list[Any]:
    from tables.key import parse_key

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


def _architecture_from_file(path: Path) -> Any:
    from profiler.spaces import Architecture

    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReportError(f"{str(path)!r} is not valid JSON ({exc})") from None
        if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
            from profiler.networks import load_gpunet_config

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


def resolve_architecture(text: str, base_dir: Path | None = None) -> Any:
    """Turn a reference-network name, a GPUNet encoding or a file into a ``profiler.spaces.Architecture``.

    ``text`` is one of: a 41-integer GPUNet encoding (JSON list, or integers
    separated by spaces or commas); a file (relative to ``base_dir`` or to the
    current folder) holding a GPUNet layer list (JSON) or block-key strings (a
    JSON list, or one per line); otherwise the name of a reference network of
    ``profiler.networks``. Imports ``profiler`` only when called.
    """
    text = str(text).strip()
    if not text or text.lower() == "nan":
        raise ReportError("empty architecture: give a network name, an encoding or a file")
    encoding = parse_encoding(text)
    if encoding is not None:
        from profiler.spaces.gpunet import architecture

        try:
            return architecture(encoding)
        except (ValueError, LookupError) as exc:
            raise ReportError(f"GPUNet encoding {text!r}: {one_line(exc)}") from None
    for candidate in ([base_dir / text] if base_dir is not None else []) + [Path(text)]:
        if candidate.is_file():
            return _architecture_from_file(candidate)
    from profiler.networks import get_network

    try:
        return get_network(text)
    except (KeyError, ValueError) as exc:
        raise ReportError(f"{one_line(exc)}; or give a GPUNet encoding or an existing file") from None


def load_latency_table(path: Path | str) -> Any:
    """A ``tables.table.LatencyTable`` for predictions."""
    from tables.table import LatencyTable

    return LatencyTable.load(_existing(path, "latency table"))


def predict_architecture(table: Any, arch: Any, name: str) -> Any:
    """``tables.predictor.predict(table, arch)``; a key the table lacks becomes a ReportError."""
    from tables.predictor import predict

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
