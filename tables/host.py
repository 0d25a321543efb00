"""Facts about the host machine (standard library only): name, OS, Python, CPU model and CPUs.

Table metadata, the backends' environment records, device detection and the
benchmarks all read the host through these functions. GPU facts (nvidia-smi,
the driver, the CUDA runtime) live in :mod:`kernels_bench.gpu`.
"""

from __future__ import annotations

import os
import platform
import socket


def hostname() -> str:
    """The host's name."""
    return socket.gethostname()


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def logical_cpus() -> int:
    """Logical CPUs of the machine (at least 1)."""
    return os.cpu_count() or 1


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity on Linux; else every logical CPU)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(logical_cpus()))


def spare_cpu() -> int | None:
    """The last CPU this process may use, when it may use two or more (the rest is left to the OS).

    ``None`` on a single-CPU process or where the platform cannot tell (not Linux):
    the CPU to pin a measurement to, away from the OS and the rest of the process.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    return cpus[-1] if len(cpus) >= 2 else None


def host_memory_bytes() -> int | None:
    """Physical memory of the machine in bytes, or ``None`` where the platform cannot tell."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def host_info() -> dict[str, object]:
    """The ``host`` entry of a table's metadata: name, OS, Python, machine, CPU model and logical CPUs."""
    return {
        "name": hostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "logical_cpus": logical_cpus(),
    }


def host_environment() -> dict[str, object]:
    """Host facts every backend records in its environment: CPU model, logical CPUs, OS, Python."""
    return {
        "host_cpu": cpu_model(),
        "host_logical_cpus": logical_cpus(),
        "host_os": f"{platform.system()} {platform.release()}",
        "python_version": platform.python_version(),
    }


def host_description() -> str:
    """One line for benchmark reports: ``"<CPU model>, <n> logical CPUs"``."""
    return f"{cpu_model()}, {logical_cpus()} logical CPUs"


__all__ = [
    "cpu_model",
    "host_description",
    "host_environment",
    "host_info",
    "hostname",
    "logical_cpus",
    "spare_cpu",
    "usable_cpus",
]
