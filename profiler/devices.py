"""Device profiles (``--device v100``), detection of the real hardware, and the check between them.

A profile names a target: the GPU (matched against the real GPU name), its kind
(``gpu`` or ``cpu``) and the default backend. GPU name patterns match
case-insensitively as a token that no letter or digit follows, so ``a10``
(``A10``) matches "NVIDIA A10" but not "NVIDIA A100" or "NVIDIA A10G".

:func:`detect_device` reads the machine without needing a GPU: ``nvidia-smi`` when
it is on the PATH, otherwise ``torch.cuda`` when torch is installed (imported
only then), plus the host CPU model and core count.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceProfile:
    """A build target.

    Attributes:
        name: profile name, e.g. ``"v100"``.
        gpu_name_patterns: tokens of the real GPU name (empty for the CPU profile).
        kind: ``"gpu"`` or ``"cpu"``.
        default_backend: ``"tensorrt"`` or ``"onnxruntime"``.
        notes: constraints worth knowing, e.g. which TensorRT versions support the GPU.
    """

    name: str
    gpu_name_patterns: tuple[str, ...]
    kind: str
    default_backend: str
    notes: str = ""

    def matches(self, gpu_name: str) -> bool:
        """True when ``gpu_name`` (e.g. ``"Tesla V100-SXM2-16GB"``) is this profile's GPU."""
        return any(_token_match(p, gpu_name) for p in self.gpu_name_patterns)


def _token_match(pattern: str, text: str) -> bool:
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(pattern) + r"(?![A-Za-z0-9])", text, re.IGNORECASE) is not None


def _gpu(name: str, patterns: tuple[str, ...], notes: str) -> DeviceProfile:
    return DeviceProfile(name, patterns, "gpu", "tensorrt", notes)


#: Known targets by name.
DEVICE_PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        _gpu(
            "v100",
            ("V100", "GV100"),
            "Volta sm_70: TensorRT 8.5/8.6 or 10.0-10.4 (deprecated there); 10.5 and later dropped Volta",
        ),
        _gpu("t4", ("T4",), "Turing sm_75: TensorRT 8.6 and 10.x; check the support matrix for 11.x"),
        _gpu("a10", ("A10",), "Ampere sm_86"),
        _gpu("a10g", ("A10G",), "Ampere sm_86 (AWS g5)"),
        _gpu("a100", ("A100",), "Ampere sm_80"),
        _gpu("h100", ("H100",), "Hopper sm_90"),
        _gpu("h200", ("H200",), "Hopper sm_90"),
        _gpu("l4", ("L4",), "Ada sm_89"),
        _gpu("l40s", ("L40S",), "Ada sm_89"),
        _gpu("rtx4090", ("4090",), "Ada sm_89 (GeForce RTX 4090)"),
        _gpu("orin", ("Orin",), "Jetson AGX/NX Orin, sm_87; TensorRT comes with JetPack"),
        _gpu("xavier", ("Xavier",), "Jetson AGX/NX Xavier, sm_72; TensorRT comes with JetPack"),
        DeviceProfile("cpu", (), "cpu", "onnxruntime", "host CPU; the thread count is fixed and recorded"),
    )
}


def get_profile(name: str | DeviceProfile) -> DeviceProfile:
    """Profile by name (case-insensitive); ``ValueError`` lists the known names."""
    if isinstance(name, DeviceProfile):
        return name
    key = str(name).strip().lower()
    if key not in DEVICE_PROFILES:
        raise ValueError(f"unknown device profile {name!r}; known profiles: {', '.join(DEVICE_PROFILES)}")
    return DEVICE_PROFILES[key]


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def _nvidia_smi() -> dict[str, object] | None:
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


def _torch_cuda() -> dict[str, object] | None:
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
    except Exception:  # a broken CUDA install must not stop a CPU build
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def detect_device() -> dict[str, object]:
    """What this machine has; never raises when there is no GPU.

    Returns a dict: ``gpus`` (list of ``{name, driver_version, compute_capability}``),
    ``gpu_count``, ``gpu_name``, ``driver_version``, ``cuda_version`` and
    ``compute_capability`` of the first GPU (``None`` without one), ``source``
    (``"nvidia-smi"``, ``"torch"`` or ``None``), ``cpu_model`` and ``cpu_count`` (logical cores).
    """
    info = _nvidia_smi() or _torch_cuda() or {"gpus": [], "cuda_version": None, "source": None}
    gpus: list[dict[str, object]] = list(info["gpus"])  # type: ignore[call-overload]
    first = gpus[0] if gpus else {}
    return {
        "gpus": gpus,
        "gpu_count": len(gpus),
        "gpu_name": first.get("name"),
        "driver_version": first.get("driver_version"),
        "cuda_version": info.get("cuda_version"),
        "compute_capability": first.get("compute_capability"),
        "source": info.get("source"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count() or 1,
    }


def check_device(profile: str | DeviceProfile, detected: Mapping[str, object], force: bool = False) -> str | None:
    """Check that ``detected`` (from :func:`detect_device`) is the profile's hardware.

    Returns ``None`` when it is (or the profile is ``cpu``), the mismatch message when
    ``force`` is true, and otherwise raises ``ValueError`` with that message, e.g.
    ``device profile v100 expects a GPU named like 'V100' but this machine has none;
    pass --force-device to build anyway``.
    """
    prof = get_profile(profile)
    if prof.kind == "cpu":
        return None
    names = [str(g.get("name")) for g in detected.get("gpus", []) or [] if isinstance(g, Mapping)]  # type: ignore[union-attr]
    if not names and detected.get("gpu_name"):
        names = [str(detected["gpu_name"])]
    if any(prof.matches(n) for n in names):
        return None
    like = " or ".join(repr(p) for p in prof.gpu_name_patterns)
    has = "none" if not names else ", ".join(repr(n) for n in dict.fromkeys(names))
    message = (
        f"device profile {prof.name} expects a GPU named like {like} but this machine has {has}; "
        "pass --force-device to build anyway"
    )
    if force:
        return message
    raise ValueError(message)


__all__ = ["DEVICE_PROFILES", "DeviceProfile", "check_device", "detect_device", "get_profile"]
