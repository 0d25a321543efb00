"""Facts about the machine's NVIDIA GPUs: names, driver, CUDA versions, compute capability.

:func:`detect_gpus` reads what the machine has without needing any engine:
``nvidia-smi`` when it is on the PATH, otherwise ``torch.cuda`` when torch is
installed (imported only then). :func:`gpu_environment` describes one GPU for
a backend's environment record: the driver from ``/proc``, then cuda-python,
then torch. Host facts (CPU, OS, Python) live in :mod:`tables.host`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from typing import Any


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def nvidia_smi() -> dict[str, Any] | None:
    """GPUs as ``nvidia-smi`` lists them (``gpus``, ``cuda_version``, ``source``), or ``None`` without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    text = _run([exe, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"])
    with_cc = text is not None
    if text is None:  # old drivers have no compute_cap field
        text = _run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if text is None:
        return None
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if not parts or not parts[0]:
            continue
        gpus.append(
            {
                "name": parts[0],
                "driver_version": parts[1] if len(parts) > 1 else None,
                "compute_capability": parts[2] if with_cc and len(parts) > 2 else None,
            }
        )
    header = _run([exe]) or ""
    m = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    return {"gpus": gpus, "cuda_version": m.group(1) if m else None, "source": "nvidia-smi"}


def torch_cuda() -> dict[str, Any] | None:
    """GPUs as a CUDA build of torch sees them, or ``None`` (no torch, no CUDA, or a broken install)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        gpus = []
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            gpus.append(
                {
                    "name": torch.cuda.get_device_name(i),
                    "driver_version": None,
                    "compute_capability": f"{major}.{minor}",
                }
            )
        return {"gpus": gpus, "cuda_version": torch.version.cuda, "source": "torch"}
    except Exception:  # a broken CUDA install must not stop a build
        return None


def nvidia_device_present() -> bool:
    """Whether this machine shows any sign of an NVIDIA GPU: the driver's ``/proc`` entry or a device node.

    Where the platform cannot tell (not Linux) the answer is ``True``, so the
    slower ways of looking still run.
    """
    if platform.system() != "Linux":
        return True
    if os.path.exists("/proc/driver/nvidia/version"):
        return True
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/nvhost-*"))


def detect_gpus() -> dict[str, Any]:
    """What GPUs this machine has; never raises.

    Returns ``gpus`` (list of ``{name, driver_version, compute_capability}``),
    ``gpu_count``, ``gpu_name``, ``driver_version``, ``cuda_version`` and
    ``compute_capability`` of the first GPU (``None`` without one) and
    ``source`` (``"nvidia-smi"``, ``"torch"`` or ``None``). torch is asked only
    when nvidia-smi is missing and the machine shows a sign of a GPU
    (:func:`nvidia_device_present`), so a machine without one answers at once.
    """
    info = (
        nvidia_smi()
        or (torch_cuda() if nvidia_device_present() else None)
        or {"gpus": [], "cuda_version": None, "source": None}
    )
    gpus: list[dict[str, Any]] = list(info["gpus"])
    first = gpus[0] if gpus else {}
    return {
        "gpus": gpus,
        "gpu_count": len(gpus),
        "gpu_name": first.get("name"),
        "driver_version": first.get("driver_version"),
        "cuda_version": info.get("cuda_version"),
        "compute_capability": first.get("compute_capability"),
        "source": info.get("source"),
    }


def device_memory_bytes(index: int = 0) -> int | None:
    """Total memory of GPU ``index`` in bytes (through cuda-python, else torch), or ``None`` if unknown."""
    try:
        from kernels_bench.cuda_timer import check, load_cudart

        rt = load_cudart()
        check(rt, rt.cudaSetDevice(index), f"cudaSetDevice({index})")
        _free, total = check(rt, rt.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(total)
    except Exception:  # cuda-python missing or no usable device: try torch
        try:
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.get_device_properties(index).total_memory)
        except ImportError:
            pass
    return None


def nvidia_driver_version() -> str | None:
    """The NVIDIA kernel driver version from ``/proc/driver/nvidia/version`` (Linux), or ``None``."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        return None
    for token in first.split():
        parts = token.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            return token
    return None


def gpu_environment(index: int = 0) -> dict[str, Any]:
    """Device name, compute capability, driver and CUDA versions of GPU ``index``.

    Reads what is available: the driver's ``/proc`` file, then cuda-python, else
    torch; missing facts are simply absent.
    """
    env: dict[str, Any] = {}
    driver = nvidia_driver_version()
    if driver:
        env["driver_version"] = driver
    try:
        from kernels_bench.cuda_timer import device_facts, load_cudart

        env.update(device_facts(load_cudart(), index))
    except Exception:  # cuda-python missing or no usable device: try torch
        try:
            import torch

            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(index)
                env.update(
                    device_name=props.name,
                    compute_capability=f"{props.major}.{props.minor}",
                    cuda_runtime=torch.version.cuda,
                )
        except ImportError:
            pass
    return env


__all__ = [
    "detect_gpus",
    "gpu_environment",
    "nvidia_device_present",
    "nvidia_driver_version",
    "nvidia_smi",
    "torch_cuda",
]
