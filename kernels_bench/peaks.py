"""The peaks a table's roofline is drawn against: published for GPUs, a short measured probe for this CPU.

:func:`measure_cpu_peaks` is a probe of a second or so, not STREAM and not a
vendor's peak: it reports what numpy reaches on this machine with a fixed
thread count, which is the ceiling that matters for a table timed with the same
threads.

- **Compute**: a float32 matrix product ``c = a @ b`` of ``n x n`` matrices
  (``n`` = 512, 1024 from 8 threads on: three matrices of 1-4 MiB, which the
  BLAS library tiles into cache-sized blocks), FLOPs ``2 n^3`` per product; the
  best of as many repeats as the budget allows. It measures the BLAS library
  numpy links (OpenBLAS, MKL, Accelerate), so it is a little below the
  hardware's FMA peak; it is the fp32 figure only (numpy has no fast fp16, bf16
  or int8 product).
- **Memory bandwidth**: ``np.copyto`` between two arrays of at least four times
  the last-level cache (64 MiB at least, 256 MiB at most), split over the
  threads (numpy releases the GIL while copying); bytes counted are the bytes
  read plus the bytes written (2 x the array), as STREAM's Copy counts them
  (write-allocate traffic, if the CPU has any, is not counted); the best of the
  repeats the budget allows. Pages are touched before anything is timed.

The thread count of numpy's BLAS is set with ``threadpoolctl`` when it is
installed; without it numpy's own thread count is used and ``source`` says so.
:func:`table_peaks` is the entry a build writes into a table's metadata
``peaks`` (see :mod:`tables.roofline`).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tables.host import host_memory_bytes
from tables.roofline import published_peaks as _published_peaks

#: Matrix size of the compute probe (float32: 1 MiB per matrix).
MATMUL_N = 512

#: The copy arrays: at least this many bytes, at least 4 x the last-level cache, at most :data:`MAX_COPY_BYTES`.
MIN_COPY_BYTES = 64 * 2**20
MAX_COPY_BYTES = 256 * 2**20

#: Last-level cache assumed when the machine does not say (bytes).
DEFAULT_LLC_BYTES = 32 * 2**20

#: The dtypes the probe can measure, and the precision name their figure is stored under.
DTYPES: dict[str, str] = {"float32": "fp32"}


def last_level_cache_bytes() -> int | None:
    """Size in bytes of the largest CPU cache this machine reports (Linux sysfs or ``sysconf``), else ``None``."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * scale)
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            value = os.sysconf(name)
            if value and value > 0:
                sizes.append(int(value))
    return max(sizes) if sizes else None


@contextlib.contextmanager
def _blas_threads(threads: int) -> Iterator[str]:
    """Limit numpy's BLAS to ``threads`` threads (threadpoolctl); yields how the count was set."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        yield "numpy's own BLAS thread count (threadpoolctl is not installed)"
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        apis = sorted({str(p.get("internal_api")) for p in threadpool_info() if p.get("user_api") == "blas"})
        yield f"{threads} BLAS thread(s) via threadpoolctl ({', '.join(apis) or 'no BLAS found'})"


def _best_matmul(n: int, deadline: float) -> tuple[float, int]:
    """Best seconds of ``a @ b`` (float32, n x n) over repeats until ``deadline``; and the repeat count."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)  # warm-up: BLAS threads started, matrices in cache
    best, repeats = float("inf"), 0
    while repeats < 1 or time.perf_counter() < deadline:
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - start)
        repeats += 1
    return best, repeats


def _best_copy(nbytes: int, threads: int, deadline: float) -> tuple[float, int]:
    """Best seconds of copying ``nbytes`` (split over ``threads``) over repeats until ``deadline``; and the count."""
    n = nbytes // 8
    src = np.ones(n, dtype=np.float64)  # every page touched
    dst = np.zeros(n, dtype=np.float64)
    bounds = np.linspace(0, n, threads + 1).astype(int)
    parts = [(dst[lo:hi], src[lo:hi]) for lo, hi in itertools.pairwise(bounds)]

    def copy_all(pool: ThreadPoolExecutor | None) -> None:
        if pool is None:
            np.copyto(dst, src)
        else:
            list(pool.map(lambda pair: np.copyto(*pair), parts))

    with ThreadPoolExecutor(max_workers=threads) if threads > 1 else contextlib.nullcontext() as pool:
        copy_all(pool)  # warm-up
        best, repeats = float("inf"), 0
        while repeats < 1 or time.perf_counter() < deadline:
            start = time.perf_counter()
            copy_all(pool)
            best = min(best, time.perf_counter() - start)
            repeats += 1
    return best, repeats


def copy_bytes() -> tuple[int, int | None]:
    """Bytes of each array of the bandwidth probe and the last-level cache it was sized against (or ``None``)."""
    llc = last_level_cache_bytes()
    size = max(MIN_COPY_BYTES, 4 * (llc or DEFAULT_LLC_BYTES))
    memory = host_memory_bytes()
    if memory:
        size = min(size, memory // 16)
    return int(min(size, MAX_COPY_BYTES)), llc


def measure_cpu_peaks(seconds: float = 1.0, threads: int = 1, dtype: str = "float32") -> dict[str, Any]:
    """A short measured peak of this CPU for the roofline (module docstring): compute and memory bandwidth.

    About 40% of ``seconds`` goes to the matrix product, the rest to the copy (allocation included);
    each runs at least once after a warm-up, so a tiny budget still returns figures. Returns a peaks
    entry as :mod:`tables.roofline` reads it::

        {"flops_per_s": {"fp32": ...}, "bytes_per_s": ..., "source": "measured: ...",
         "threads": threads, "seconds": spent, "probe": {...}}

    Raises ``ValueError`` for a non-positive budget or thread count, or a dtype other than float32.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"seconds must be a positive number of seconds; got {seconds!r}")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer; got {threads!r}")
    if dtype not in DTYPES:
        raise ValueError(f"measure_cpu_peaks measures {', '.join(DTYPES)} only (numpy has no fast {dtype} product)")
    threads = int(threads)
    start = time.perf_counter()
    n = MATMUL_N if threads < 8 else 2 * MATMUL_N
    with _blas_threads(threads) as how:
        matmul_s, matmul_repeats = _best_matmul(n, start + 0.4 * seconds)
    nbytes, llc = copy_bytes()
    copy_s, copy_repeats = _best_copy(nbytes, threads, start + seconds)
    spent = time.perf_counter() - start
    flops = 2.0 * n**3 / matmul_s
    bandwidth = 2.0 * nbytes / copy_s
    llc_text = f"{llc / 2**20:g} MiB last-level cache" if llc else "last-level cache unknown"
    source = (
        f"measured: numpy float32 matmul n={n}, best of {matmul_repeats}, {how}; "
        f"np.copyto of {nbytes / 2**20:g} MiB ({llc_text}) over {threads} thread(s), read + write, "
        f"best of {copy_repeats}; a {spent:.2g} s probe, not STREAM"
    )
    return {
        "flops_per_s": {DTYPES[dtype]: flops},
        "bytes_per_s": bandwidth,
        "source": source,
        "threads": threads,
        "seconds": spent,
        "probe": {
            "matmul_n": n,
            "matmul_best_s": matmul_s,
            "matmul_repeats": matmul_repeats,
            "copy_bytes": nbytes,
            "copy_best_s": copy_s,
            "copy_repeats": copy_repeats,
            "last_level_cache_bytes": llc,
            "blas_threads": how,
        },
    }


def published_peaks(profile_name: str) -> dict[str, Any] | None:
    """The published (datasheet, dense) peaks of a device profile, ``None`` for the cpu profile or an unknown one.

    The figures and their sources live in :data:`tables.roofline.PUBLISHED_PEAKS`.
    """
    return _published_peaks(profile_name)


#: CPU peaks measured by :func:`table_peaks` in this process, by (threads, seconds, the CPUs it ran on).
_MEASURED: dict[tuple[str, str, tuple[int, ...]], dict[str, Any]] = {}


def _cpus_now() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this OS: one machine-wide entry
        return ()


def table_peaks(
    profile_name: str, *, threads: int = 1, seconds: float = 1.0, reuse: bool = True
) -> dict[str, Any] | None:
    """The ``peaks`` entry a build records in a table's metadata.

    A GPU profile's published peaks; for the ``cpu`` profile a :func:`measure_cpu_peaks` probe with the
    build's thread count (run it where the build measures, pinned as the build is); ``None`` otherwise.
    A CPU's peaks are a property of the machine: the probe runs once per process for each thread count,
    budget and set of CPUs the process may run on, and later builds in the same process (several
    tables of one command, NAS code building tables in a loop, a test suite) get a copy of that entry
    (``reuse=False`` measures again).
    """
    published = published_peaks(profile_name)
    if published is not None:
        return published
    if str(profile_name).strip().lower() == "cpu":
        memo = (repr(threads), repr(seconds), _cpus_now())
        if not reuse or memo not in _MEASURED:
            _MEASURED[memo] = measure_cpu_peaks(seconds=seconds, threads=threads)
        return copy.deepcopy(_MEASURED[memo])
    return None


__all__ = [
    "DTYPES",
    "copy_bytes",
    "last_level_cache_bytes",
    "measure_cpu_peaks",
    "published_peaks",
    "table_peaks",
]
