"""TensorRT timing caches: one cache shared by every engine build of a backend, and a build's cache files.

TensorRT times candidate tactics for every layer while it builds an engine; a
timing cache keeps those timings so the next build with the same layers skips
them. :class:`TimingCache` is one cache object shared by all builds of a
backend and kept in a file; :class:`TimingCacheFiles` is the policy of a build
folder: one file per worker, combined into one file when the build ends, each
keyed by TensorRT version and GPU (a cache written by another version or on
another GPU is refused by the builder). Pure Python around the ``trt``
objects it is given, so the tests drive it with stand-ins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tables.atomic import write_bytes


class TimingCache:
    """One TensorRT timing cache shared by every engine build, kept in a file.

    The first :meth:`attach` creates the cache from the file's bytes (or empty);
    every later build config gets the same cache object, so tactics timed for one
    key are reused by the next. :meth:`save` first merges what is on disk when
    another process changed the file since it was read, then writes atomically.

    Args:
        path: the cache file; ``None`` keeps the cache in memory only.
        ignore_mismatch: accept a cache written on a different device (not advised).
    """

    def __init__(self, path: str | Path | None = None, *, ignore_mismatch: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.ignore_mismatch = ignore_mismatch
        self._cache: Any = None
        self._config: Any = None  # creates caches from bytes (create_timing_cache lives on IBuilderConfig)
        self._disk_bytes: bytes | None = None
        self.loaded_bytes = 0
        self.load_problem: str | None = None

    @property
    def cache(self) -> Any:
        """The shared ``ITimingCache`` (None before the first :meth:`attach`)."""
        return self._cache

    def _read_disk(self) -> bytes:
        if self.path is not None and self.path.is_file():
            return self.path.read_bytes()
        return b""

    def attach(self, config: Any) -> None:
        """Give ``config`` the shared cache, creating it from the file on first use."""
        if self._cache is None:
            data = self._read_disk()
            cache = config.create_timing_cache(data)
            if cache is None and data:
                self.load_problem = f"{self.path} is not a usable timing cache; starting from an empty one"
                cache = config.create_timing_cache(b"")
            if cache is None:
                raise RuntimeError("TensorRT could not create an empty timing cache")
            self._cache, self._config = cache, config
            self._disk_bytes = data
            self.loaded_bytes = len(data) if self.load_problem is None else 0
        if config.set_timing_cache(self._cache, self.ignore_mismatch) is False:
            raise RuntimeError(
                f"TensorRT refused the timing cache {self.path}: it was written on another device or "
                "TensorRT version; delete it or pass ignore_mismatch=True"
            )

    def merge_bytes(self, data: bytes) -> bool:
        """Combine a serialized cache into the shared one; returns whether TensorRT accepted it."""
        if self._config is None:
            raise RuntimeError("attach the timing cache to a builder config before merging into it")
        if not data:
            return True
        other = self._config.create_timing_cache(data)
        if other is None:
            return False
        return bool(self._cache.combine(other, self.ignore_mismatch))

    def merge_file(self, path: str | Path) -> bool:
        """Combine a cache file (for example another machine's) into the shared cache."""
        return self.merge_bytes(Path(path).read_bytes())

    def serialize(self) -> bytes:
        """The shared cache's bytes (empty before the first :meth:`attach`)."""
        if self._cache is None:
            return b""
        return bytes(memoryview(self._cache.serialize()))

    def save(self) -> None:
        """Merge concurrent changes on disk, then write the cache atomically (no-op without a path)."""
        if self.path is None or self._cache is None:
            return
        on_disk = self._read_disk()
        if on_disk and on_disk != self._disk_bytes:
            self.merge_bytes(on_disk)
        data = self.serialize()
        write_bytes(self.path, data)
        self._disk_bytes = data


#: Folder of a build's TensorRT timing caches, inside its cache folder (or its output folder).
TIMING_CACHE_FOLDER = "timing-cache"


def timing_cache_tag(version_text: str, device_name: str | None, compute_capability: str | None) -> str:
    """The part of a timing-cache file name that says which TensorRT and GPU wrote it.

    A cache written by another TensorRT version or on another GPU is refused by
    the builder, so each (version, GPU, compute capability) keeps its own files:
    ``tensorrt-10.3.0-nvidia-h100-80gb-hbm3-sm90``.
    """
    gpu = re.sub(r"[^a-z0-9.]+", "-", str(device_name or "gpu").lower()).strip("-") or "gpu"
    cc = str(compute_capability or "").replace(".", "")
    return f"tensorrt-{version_text}-{gpu}" + (f"-sm{cc}" if cc else "")


class TimingCacheFiles:
    """The timing-cache files of one build folder for one TensorRT version and GPU.

    Every worker of a build keeps its own file (``<tag>.worker-<i>.timing-cache``),
    saved after each engine build; when the build ends the workers' caches are
    combined into ``<tag>.timing-cache``, which seeds every worker of the next
    build (see :meth:`TensorRTBackend.combine_timing_caches`).
    """

    def __init__(self, folder: str | Path, tag: str) -> None:
        self.folder = Path(folder)
        self.tag = tag

    def worker(self, index: int) -> Path:
        """The file of worker ``index``."""
        return self.folder / f"{self.tag}.worker-{int(index)}.timing-cache"

    @property
    def combined(self) -> Path:
        """The file that combines every worker's cache."""
        return self.folder / f"{self.tag}.timing-cache"

    @staticmethod
    def seeds(folder: str | Path | None) -> dict[str, bytes]:
        """The combined caches of earlier builds in ``folder`` (file name -> bytes), for workers elsewhere."""
        if folder is None or not Path(folder).is_dir():
            return {}
        return {
            p.name: p.read_bytes()
            for p in sorted(Path(folder).glob("*.timing-cache"))
            if ".worker-" not in p.name and p.is_file()
        }

    def prepare_worker(self, index: int, seeds: Mapping[str, bytes] | None = None) -> Path:
        """Worker ``index``'s file, started from the combined cache (on disk, or among ``seeds``) when it is new."""
        path = self.worker(index)
        if not path.exists():
            seed = (seeds or {}).get(self.combined.name)
            if seed is None and self.combined.is_file():
                seed = self.combined.read_bytes()
            if seed:
                write_bytes(path, seed)
        return path


__all__ = ["TIMING_CACHE_FOLDER", "TimingCache", "TimingCacheFiles", "timing_cache_tag"]
