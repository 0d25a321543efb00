"""Crash-safe storage for long table builds: Parquet parts, compaction and a build lock.

A build appends its rows in small Parquet parts under ``<out_dir>/<table_name>.parts/``,
each written atomically (temporary file, fsync, ``os.replace``). Killing the
process at any moment loses at most the rows not yet appended: a part is either
complete or absent, and a leftover temporary file is ignored. :meth:`PartStore.compact`
merges the final table and all parts into ``<out_dir>/<table_name>``, again
atomically, and only then deletes the merged parts; a crash between the two steps
leaves rows both in the table and in a part, and the next read or compaction keeps
one row per key (see :func:`dedup_rows`).

:class:`BuildLock` keeps two builds from writing the same output.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tables.atomic import fault_point, pid_alive, remove_stale_temporaries
from tables.errors import TRANSIENT, one_line
from tables.host import hostname
from tables.paths import lock_path, parts_dir
from tables.schema import (
    PHASE_COLUMNS,
    ROUND_COLUMN,
    STATUS_OK,
    empty_frame,
    fill_added_columns,
    read_metadata,
    read_table,
    utc_now,
    validate_metadata,
    write_table,
)
from tables.settings import check_same_settings

try:  # fcntl is POSIX only; the O_EXCL lock file works everywhere
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Metadata fields that must agree between a table, its parts and a build resuming it.
IDENTITY_FIELDS: tuple[str, ...] = ("device_profile", "backend", "precision", "batch")

_PART_GLOB = "part-*.parquet"


def dedup_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per key: an "ok" row beats a "failed" one, then the newer ``measured_at``, then the later row.

    ``frame`` has the table's columns, rows in the order they were written
    (older first). Returns a new frame sorted by key.
    """
    if frame.empty:
        return frame.reset_index(drop=True)
    work = frame.reset_index(drop=True)
    rank = pd.DataFrame(
        {
            "key": work["key"].to_numpy(),
            "ok": (work["status"] == STATUS_OK).to_numpy(),
            "at": pd.to_datetime(work["measured_at"], utc=True).to_numpy(),
            "order": range(len(work)),
        }
    )
    rank = rank.sort_values(["key", "ok", "at", "order"], kind="stable", na_position="first")
    keep = rank.drop_duplicates("key", keep="last")["order"].to_numpy()
    out = work.iloc[keep].sort_values("key", kind="stable").reset_index(drop=True)
    return out


def combine_rounds(rounds: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per key from the rows of several rounds of one build (each round one row per key at most).

    A key measured ok in at least one round gets one ok row: ``latency_ms``,
    ``raw_latency_ms``, ``reference_ms`` and ``boundary_ms`` are the medians over its ok rounds,
    ``round_latency_ms`` lists each ok round's ``latency_ms`` in round order,
    the samples of every ok round are pooled (``samples_ms``, ``n_samples``) and
    ``median_ms``, ``min_ms``, ``max_ms``, ``std_ms`` and ``cv`` describe the pooled
    samples; phases are summed, ``inner_loop`` and ``warmup_runs`` are the first
    ok round's, ``measured_at`` the last. A key that failed in every round keeps
    its newest failed row. Rows come back sorted by key.
    """
    frames = []
    for r, frame in enumerate(rounds):
        if len(frame):
            f = dedup_rows(frame).copy()
            f["_round"] = r
            frames.append(f)
    if not frames:
        return empty_frame()
    work = pd.concat(frames, ignore_index=True)
    ok = work[work["status"] == STATUS_OK].sort_values(["key", "_round"], kind="stable")
    out_rows: list[dict[str, Any]] = []
    for _, group in ok.groupby("key", sort=True):
        first = group.iloc[0]
        row = {name: first[name] for name in work.columns if name != "_round"}
        if len(group) > 1:
            samples = [float(x) for v in group["samples_ms"] for x in v]
            pooled = pd.Series(samples, dtype=float)
            mean = float(pooled.mean())
            std = float(pooled.std(ddof=1)) if len(samples) > 1 else 0.0
            row.update(
                latency_ms=float(group["latency_ms"].median()),
                raw_latency_ms=float(group["raw_latency_ms"].median()),
                reference_ms=float(group["reference_ms"].median()) if group["reference_ms"].notna().any() else None,
                boundary_ms=float(group["boundary_ms"].median())
                if "boundary_ms" in group and group["boundary_ms"].notna().any()
                else math.nan,
                median_ms=float(pooled.median()),
                min_ms=float(pooled.min()),
                max_ms=float(pooled.max()),
                std_ms=std,
                cv=std / mean if mean > 0 else 0.0,
                n_samples=len(samples),
                samples_ms=samples,
                measured_at=group["measured_at"].max(),
                **{
                    name: float(group[name].sum(min_count=1))
                    for name in (*PHASE_COLUMNS, "boundary_s")
                    if name in group
                },
            )
        row[ROUND_COLUMN] = [float(v) for v in group["latency_ms"]]
        out_rows.append(row)
    combined = pd.DataFrame(out_rows, columns=[c for c in work.columns if c != "_round"])
    failed = work[~work["key"].isin(set(ok["key"]))].drop(columns="_round")
    merged = pd.concat([combined, failed], ignore_index=True) if len(failed) else combined
    return dedup_rows(merged)


#: What to do when a build's settings are not those of the table it would resume.
RESUME_ADVICE = "repeat the table's settings (the same flags) to resume it, or write to another output (--out)"


def check_same_identity(
    a: Mapping[str, Any], b: Mapping[str, Any], what_a: str, what_b: str, advice: str = RESUME_ADVICE
) -> None:
    """Raise :class:`~tables.settings.SettingsMismatch` when two metadata documents differ in any setting
    that changes numbers (see :mod:`tables.settings`), naming each with both values, then ``advice``."""
    check_same_settings(a, b, what_a, what_b, advice)


class PartStore:
    """Rows of one table being built, kept as atomic Parquet parts until compaction.

    Parameters
    ----------
    out_dir:
        Folder of the final table.
    table_name:
        File name of the final table, e.g. ``v100_tensorrt_fp16_b64.parquet``;
        parts go to ``out_dir/<table_name>.parts/``.
    metadata:
        The table's metadata document (see :func:`tables.schema.build_metadata`).
        May be ``None`` to read an existing store. When a table or parts already
        exist, their metadata is kept (the first part's wins) and must name the
        same device profile, backend, precision and batch, else ``ValueError``.
    max_parts:
        :meth:`append` merges the parts into one when there are more than this
        many (``None`` turns that off), so that builds of 10^5 keys do not leave
        10^5 files.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        table_name: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        max_parts: int | None = 256,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.table_path = self.out_dir / table_name
        self.parts_dir = parts_dir(self.out_dir, table_name)
        self.max_parts = max_parts
        self._seq = 0
        # frames already read, by file identity: a part never changes once written and the table is
        # replaced (a new file) by each compaction, so a file whose identity is unchanged is read once
        self._read_cache: dict[tuple[Any, ...], pd.DataFrame] = {}
        self._given = dict(metadata) if metadata is not None else None
        if self._given is not None:
            validate_metadata(self._given)
        stored = self._stored_metadata()
        if stored is not None and self._given is not None:
            check_same_identity(stored, self._given, f"existing table {self.table_path}", "this build")

    # ----- metadata ---------------------------------------------------------
    def _stored_metadata(self) -> dict[str, Any] | None:
        """Metadata of the final table, else of the first readable part; floor from later parts."""
        sources: list[Path] = []
        if self.table_path.exists():
            sources.append(self.table_path)
        sources.extend(self.part_paths())
        base: dict[str, Any] | None = None
        for path in sources:
            try:
                md = read_metadata(path)
            except ValueError as exc:
                if path == self.table_path:
                    raise
                warnings.warn(f"ignoring unreadable part: {exc}", stacklevel=3)
                continue
            if base is None:
                base = dict(md)
                continue
            check_same_identity(base, md, f"table {sources[0]}", f"part {path}")
            if base.get("floor") is None and md.get("floor") is not None:
                base["floor"] = md["floor"]
        return base

    def metadata(self) -> dict[str, Any] | None:
        """The metadata the final table gets: the stored one (first part wins), else the given one.

        A floor measurement missing there is taken from a later part or from the
        metadata given to this store. ``None`` when nothing is stored and none was given.
        """
        stored = self._stored_metadata()
        if stored is None:
            return dict(self._given) if self._given is not None else None
        if stored.get("floor") is None and self._given is not None and self._given.get("floor") is not None:
            stored["floor"] = self._given["floor"]
        return stored

    def set_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Give the metadata of this build (validated; must name the same table as what is stored)."""
        md = dict(metadata)
        validate_metadata(md)
        stored = self._stored_metadata()
        if stored is not None:
            check_same_identity(stored, md, f"existing table {self.table_path}", "this build")
        self._given = md

    def set_floor(self, floor: Mapping[str, Any]) -> None:
        """Record the floor (identity-graph measurement, ms per batch) for the parts written from now on."""
        md = self._given if self._given is not None else self.metadata()
        if md is None:
            raise ValueError(f"no metadata for {self.table_path}: call set_metadata() before set_floor()")
        md = dict(md)
        md["floor"] = dict(floor)
        validate_metadata(md)
        self._given = md

    def _require_metadata(self) -> dict[str, Any]:
        md = self._given if self._given is not None else self.metadata()
        if md is None:
            raise ValueError(
                f"no metadata for {self.table_path}: nothing stored yet; give it to PartStore or set_metadata()"
            )
        return md

    def _table_metadata(self) -> dict[str, Any]:
        md = self.metadata()
        if md is None:
            raise ValueError(
                f"no metadata for {self.table_path}: nothing stored yet; give it to PartStore or set_metadata()"
            )
        return md

    # ----- parts ------------------------------------------------------------
    def part_paths(self) -> list[Path]:
        """Complete parts, oldest first (temporary files of an interrupted write are not listed)."""
        if not self.parts_dir.is_dir():
            return []
        return sorted(self.parts_dir.glob(_PART_GLOB))

    def _new_part_path(self) -> Path:
        self._seq += 1
        return self.parts_dir / f"part-{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.parquet"

    def append(self, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> Path | None:
        """Write ``rows`` (from :func:`tables.schema.result_row`) as one new part, atomically.

        Returns the part's path, or ``None`` when there were no rows.
        """
        frame = rows if isinstance(rows, pd.DataFrame) else list(rows)
        if len(frame) == 0:
            return None
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        path = write_table(frame, self._new_part_path(), self._require_metadata(), fault="part")
        if self.max_parts is not None and len(self.part_paths()) > self.max_parts:
            self.compact_parts(self.max_parts)
        return path

    def _read(self, path: Path, columns: list[str] | None) -> pd.DataFrame | None:
        try:
            st = path.stat()
            memo = (str(path), st.st_ino, st.st_mtime_ns, st.st_size, tuple(columns) if columns else None)
            cached = self._read_cache.get(memo)
            if cached is not None:
                return cached.copy()
            if columns is None:
                frame, _ = read_table(path)
            else:
                read_metadata(path)
                present = set(pq.read_schema(path).names)
                frame = pq.read_table(path, columns=[c for c in columns if c in present]).to_pandas()
                if any(c not in present for c in columns):
                    frame = fill_added_columns(frame)
            for older in [m for m in self._read_cache if m[0] == memo[0] and m[4] == memo[4]]:  # replaced since
                del self._read_cache[older]
            self._read_cache[memo] = frame.copy()
            return frame
        except (ValueError, pa.ArrowException, OSError) as exc:
            if path == self.table_path:
                raise ValueError(one_line(exc)) from None
            warnings.warn(f"ignoring unreadable part {path.name}: {one_line(exc)}", stacklevel=3)
            return None

    def _frames(
        self, parts: list[Path], columns: list[str] | None = None, unreadable: list[Path] | None = None
    ) -> list[pd.DataFrame]:
        frames = []
        sources = ([self.table_path] if self.table_path.exists() else []) + parts
        live = {str(path) for path in sources}
        for memo in [m for m in self._read_cache if m[0] not in live]:  # merged or deleted files
            del self._read_cache[memo]
        for path in sources:
            frame = self._read(path, columns)
            if frame is None and unreadable is not None:
                unreadable.append(path)
            if frame is not None and len(frame):
                frames.append(frame)
        return frames

    def done_keys(self, include_failed: bool = True) -> dict[str, str]:
        """Keys already stored -> "ok", "failed" (a permanent failure) or "transient" (a failure a plain
        rerun measures again), from the final table and every part.

        With ``include_failed=False`` only keys with an "ok" row are returned.
        """
        frames = self._frames(self.part_paths(), ["key", "status", "measured_at", "error", "failure_kind"])
        if not frames:
            return {}
        best = dedup_rows(pd.concat(frames, ignore_index=True))
        done = {}
        for key, status, kind in zip(best["key"].tolist(), best["status"].tolist(), best["failure_kind"].tolist()):
            done[key] = TRANSIENT if status != STATUS_OK and kind == TRANSIENT else status
        if not include_failed:
            done = {k: v for k, v in done.items() if v == STATUS_OK}
        return done

    def rows(self) -> pd.DataFrame:
        """Everything stored so far, one row per key (ok beats failed, newer beats older)."""
        frames = self._frames(self.part_paths())
        if not frames:
            return empty_frame()
        return dedup_rows(pd.concat(frames, ignore_index=True))

    def compact(
        self,
        metadata_update: Mapping[str, Any] | None = None,
        transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    ) -> Path:
        """Merge the final table and all parts into ``out_dir/<table_name>`` atomically; delete the merged parts.

        ``metadata_update``: fields replaced in the stored metadata (e.g. a summary of
        the build); the identity fields cannot be changed this way. ``transform``: applied
        to the merged rows before they are written (e.g. drift-corrected latencies brought
        to the build's reference speed). Returns the table's path. Parts written while
        this runs are kept for the next compaction.
        """
        parts = self.part_paths()
        metadata = self._table_metadata()
        if metadata_update:
            changed = [name for name in IDENTITY_FIELDS if name in metadata_update]
            if changed:
                raise ValueError(f"compact() cannot change the table's identity fields ({', '.join(changed)})")
            metadata = {**metadata, **metadata_update}
            validate_metadata(metadata)
        unreadable: list[Path] = []
        frames = self._frames(parts, unreadable=unreadable)
        merged = dedup_rows(pd.concat(frames, ignore_index=True)) if frames else empty_frame()
        if transform is not None:
            merged = transform(merged)
        write_table(merged, self.table_path, metadata, fault="compact")
        fault_point("rename")
        for path in parts:
            if path in unreadable:
                path.rename(path.with_name(path.name + ".corrupt"))  # kept aside for inspection
            else:
                path.unlink(missing_ok=True)
        self._remove_stale_tmp()
        with contextlib.suppress(OSError):
            self.parts_dir.rmdir()  # only when empty
        return self.table_path

    def compact_parts(self, max_parts: int = 256) -> Path | None:
        """When there are more than ``max_parts`` parts, merge them into one part (atomically) and delete them.

        Returns the new part's path, or ``None`` when nothing had to be merged.
        """
        parts = self.part_paths()
        if len(parts) <= max_parts:
            return None
        frames = []
        merged_parts = []
        for path in parts:
            frame = self._read(path, None)
            if frame is not None:
                merged_parts.append(path)
                if len(frame):
                    frames.append(frame)
        metadata = self._table_metadata()
        merged = dedup_rows(pd.concat(frames, ignore_index=True)) if frames else empty_frame()
        new_path = write_table(merged, self._new_part_path(), metadata)
        for path in merged_parts:  # an unreadable part stays for compact() to set aside
            path.unlink(missing_ok=True)
        return new_path

    def _remove_stale_tmp(self) -> None:
        remove_stale_temporaries(self.parts_dir)

    def lock(self) -> BuildLock:
        """A :class:`BuildLock` for this table: ``out_dir/<table_name>.lock``."""
        return BuildLock(lock_path(self.out_dir, self.table_path.name), target=self.table_path)


class BuildLockedError(RuntimeError):
    """Another build holds the lock on the same output: a refusal, exit status 2."""

    exit_status = 2


class BuildLock:
    """Exclusive lock on a build's output: an OS lock (``flock``) held on ``<table>.lock``.

    The kernel drops the lock when its holder dies, however it dies, so a lock
    can never go stale: a killed build, a reused pid or a zombie holder do not
    block the next build. The file also records the holder (pid, host, start
    time), for the refusal's message only. A second build is refused with
    :class:`BuildLockedError` naming the holder. On a platform without ``fcntl``
    the file is created exclusively instead and a lock of a dead process on this
    host is taken over. Use as a context manager::

        with BuildLock(out / "v100_tensorrt_fp16_b64.parquet.lock"):
            ...
    """

    def __init__(self, path: str | os.PathLike[str], *, target: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.target = Path(target) if target is not None else self.path.with_suffix("")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says about its holder (pid, host, started_at), or ``None`` if there is no lock file."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _refusal(self, holder: Mapping[str, Any] | None) -> BuildLockedError:
        holder = holder or {}
        return BuildLockedError(
            f"another build (pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"started {holder.get('started_at', '?')}) is writing to {self.target}; "
            f"wait for it or remove the lock {self.path} if it is dead"
        )

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        fst = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)

    def _record(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": hostname(), "started_at": utc_now().isoformat()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode("utf-8"))
        os.fsync(fd)

    def acquire(self) -> BuildLock:
        """Take the lock or raise :class:`BuildLockedError` naming the holder. Returns ``self``."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            return self._acquire_exclusive()
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._refusal(self.holder()) from None
            if not self._same_file(fd):  # its holder released it (and removed the file) meanwhile: again
                os.close(fd)
                continue
            self._record(fd)
            self._fd = fd
            fault_point("lock")
            return self
        raise self._refusal(self.holder())

    def _acquire_exclusive(self) -> BuildLock:  # pragma: no cover - Windows
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                holder = self.holder() or {}
                pid = holder.get("pid")
                if holder.get("host") == hostname() and isinstance(pid, int) and not pid_alive(pid):
                    self.path.unlink(missing_ok=True)
                    continue
                raise self._refusal(holder) from None
            self._record(fd)
            self._fd = fd
            return self
        raise self._refusal(self.holder())

    def release(self) -> None:
        """Give the lock back: the file is removed while still held, then the OS lock is dropped."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._same_file(fd):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def __enter__(self) -> BuildLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
