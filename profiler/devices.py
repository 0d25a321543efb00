"""Device profiles (``--device v100``), detection of the real hardware, and the check between them.

A profile names a target: the GPU (matched against the real GPU name), its kind
(``gpu`` or ``cpu``) and the default backend. GPU name patterns match
case-insensitively as a token that no letter or digit follows, so ``a10``
(``A10``) matches "NVIDIA A10" but not "NVIDIA A100" or "NVIDIA A10G".

:func:`detect_device` reads the machine without needing a GPU (see
:mod:`kernels_bench.gpu` and :mod:`tables.host`); for the cpu profile it looks
for no GPU at all, so a CPU build's refusals import no engine.

Every GPU profile carries its published peaks (:attr:`DeviceProfile.peaks`,
:func:`profile_peaks`): dense fp32, fp16/bf16 and int8 FLOP/s and the memory
bandwidth from NVIDIA's datasheets, each with its source, kept in
:data:`tables.roofline.PUBLISHED_PEAKS` (the table layer draws the roofline and
may not import this module). The cpu profile has none: a CPU build measures a
short peak (``kernels_bench.peaks.measure_cpu_peaks``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kernels_bench.gpu import detect_gpus
from tables.host import cpu_model, logical_cpus
from tables.roofline import published_peaks


@dataclass(frozen=True)
class DeviceProfile:
    """A build target.

    Attributes:
        name: profile name, e.g. ``"v100"``.
        gpu_name_patterns: tokens of the real GPU name (empty for the CPU profile).
        kind: ``"gpu"`` or ``"cpu"``.
        default_backend: ``"tensorrt"`` or ``"onnxruntime"``.
        notes: constraints worth knowing, e.g. which TensorRT versions support the GPU.
        peaks: published peaks for the roofline (``{"flops_per_s": {"fp32": ..., "fp16": ..., "bf16": ...,
            "int8": ...}, "bytes_per_s": ..., "source": ...}``, dense, ``None`` where unconfirmed; see
            :mod:`tables.roofline`), ``None`` for the cpu profile. Not part of equality or the hash.
    """

    name: str
    gpu_name_patterns: tuple[str, ...]
    kind: str
    default_backend: str
    notes: str = ""
    peaks: Mapping[str, Any] | None = field(default=None, compare=False)

    def matches(self, gpu_name: str) -> bool:
        """True when ``gpu_name`` (e.g. ``"Tesla V100-SXM2-16GB"``) is this profile's GPU."""
        return any(_token_match(p, gpu_name) for p in self.gpu_name_patterns)


def _token_match(pattern: str, text: str) -> bool:
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(pattern) + r"(?![A-Za-z0-9])", text, re.IGNORECASE) is not None


def _gpu(name: str, patterns: tuple[str, ...], notes: str) -> DeviceProfile:
    # The published peaks (datasheet figures, dense) and their sources: tables/roofline.py PUBLISHED_PEAKS.
    return DeviceProfile(name, patterns, "gpu", "tensorrt", notes, peaks=published_peaks(name))


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


def profile_peaks(name: str | DeviceProfile) -> dict[str, Any] | None:
    """A copy of a profile's published peaks (:attr:`DeviceProfile.peaks`); ``None`` for the cpu profile.

    Raises ``ValueError`` for an unknown profile name, as :func:`get_profile` does.
    """
    peaks = get_profile(name).peaks
    return copy.deepcopy(dict(peaks)) if peaks is not None else None


def detect_device(*, gpus: bool = True) -> dict[str, object]:
    """What this machine has; never raises when there is no GPU.

    Returns the GPU facts of :func:`kernels_bench.gpu.detect_gpus` (``gpus``,
    ``gpu_count``, ``gpu_name``, ``driver_version``, ``cuda_version``,
    ``compute_capability``, ``source``) and the host's ``cpu_model`` and
    ``cpu_count`` (logical cores). With ``gpus=False`` (the cpu profile) no GPU
    is looked for: nothing runs ``nvidia-smi`` and nothing imports torch.
    """
    info: dict[str, object]
    if gpus:
        info = dict(detect_gpus())
    else:
        info = {
            "gpus": [],
            "gpu_count": 0,
            "gpu_name": None,
            "driver_version": None,
            "cuda_version": None,
            "compute_capability": None,
            "source": None,
        }
    info["cpu_model"] = cpu_model()
    info["cpu_count"] = logical_cpus()
    return info


def detect_for(profile: str | DeviceProfile) -> dict[str, object]:
    """:func:`detect_device` as a build for ``profile`` needs it: GPUs only for a GPU profile."""
    return detect_device(gpus=get_profile(profile).kind != "cpu")


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


__all__ = [
    "DEVICE_PROFILES",
    "DeviceProfile",
    "check_device",
    "detect_device",
    "detect_for",
    "get_profile",
    "profile_peaks",
]
