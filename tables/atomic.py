"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every file this project writes (tables, build parts, calibrations, validation
files, timing caches, exported graphs, archs files) is written to a temporary
file in the same folder (``.<name>.<pid>.tmp``), flushed to disk, renamed over
the target with ``os.replace`` and the folder entry synced. A crash leaves at
most a temporary file, which :func:`remove_stale_temporaries` cleans up.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def temporary_path(path: str | os.PathLike[str]) -> Path:
    """The temporary file a write of ``path`` goes through (same folder, hidden, named by this process)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.tmp")


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Test hook: ``POINT`` or ``POINT:N`` kills this process (SIGKILL) at the N-th (default first) pass through
#: a named write point (see :func:`fault_point`). Points: ``lock`` (a build lock just taken), ``part`` (a
#: part written, not yet renamed), ``compact`` (the compacted table written, not yet renamed), ``rename``
#: (the compacted table renamed, its parts not yet deleted).
FAULT_ENV = "LATENCY_FAULT_KILL_AT"

_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here, as a power cut or ``kill -9`` would, when :data:`FAULT_ENV` names this point (tests)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] >= int(nth or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fault: str | None = None) -> Iterator[Path]:
    """Write ``path`` atomically: yields the temporary path to write; on a clean exit it replaces ``path``.

    The parent folder is created. On an exception the temporary file is removed
    and ``path`` is left as it was; an ``OSError`` without a file name (a full
    disk while writing) gets ``path`` as its file name, so its message names it::

        with atomic_path(out) as tmp:
            pyarrow.parquet.write_table(table, tmp)

    ``fault`` names the write point (see :func:`fault_point`) passed between the
    write and the rename.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
    try:
        yield tmp
        _fsync_file(tmp)
        if fault is not None:
            fault_point(fault)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of writes whose process is gone; returns what was removed.

    Only files named like :func:`temporary_path` names them are touched, and
    never one of a process that is still alive (it may be writing).
    """
    folder = Path(directory)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TMP_RE.match(entry.name)
        if m is None:
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


__all__ = [
    "FAULT_ENV",
    "atomic_path",
    "fault_point",
    "fsync_dir",
    "pid_alive",
    "remove_stale_temporaries",
    "temporary_path",
    "write_bytes",
    "write_text",
]
