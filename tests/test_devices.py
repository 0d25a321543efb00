"""Device profiles, detection without a GPU, and the profile-versus-machine check."""

from __future__ import annotations

import pytest

from kernels_bench import gpu
from profiler import devices
from profiler.devices import DEVICE_PROFILES, check_device, detect_device, get_profile

NAMES = ("v100", "t4", "a10", "a10g", "a100", "h100", "h200", "l4", "l40s", "rtx4090", "orin", "xavier", "cpu")
H100 = {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}], "gpu_name": "NVIDIA H100 80GB HBM3"}
NO_GPU = {"gpus": [], "gpu_name": None}


def test_every_listed_profile_exists_with_a_backend() -> None:
    assert set(DEVICE_PROFILES) == set(NAMES)
    assert get_profile("cpu").kind == "cpu" and get_profile("cpu").default_backend == "onnxruntime"
    assert all(p.default_backend == "tensorrt" for p in DEVICE_PROFILES.values() if p.kind == "gpu")


def test_v100_notes_state_the_tensorrt_limit() -> None:
    assert "10.4" in get_profile("v100").notes


def test_profile_lookup_is_case_insensitive_and_unknown_lists_the_known() -> None:
    assert get_profile("V100").name == "v100"
    with pytest.raises(ValueError, match=r"unknown device profile 'p100'; known profiles: v100, t4, .*cpu"):
        get_profile("p100")


@pytest.mark.parametrize(
    ("profile", "gpu", "expected"),
    [
        ("v100", "Tesla V100-SXM2-16GB", True),
        ("v100", "Quadro GV100", True),
        ("a10", "NVIDIA A10", True),
        ("a10", "NVIDIA A100-SXM4-80GB", False),
        ("a10", "NVIDIA A10G", False),
        ("a10g", "NVIDIA A10G", True),
        ("l4", "NVIDIA L4", True),
        ("l4", "NVIDIA L40S", False),
        ("t4", "Tesla T4", True),
        ("rtx4090", "NVIDIA GeForce RTX 4090", True),
        ("orin", "Orin (nvgpu)", True),
    ],
)
def test_gpu_names_match_their_profile_only(profile: str, gpu: str, expected: bool) -> None:
    assert get_profile(profile).matches(gpu) is expected


def test_gpu_profile_on_a_machine_without_gpu_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        check_device("v100", NO_GPU)
    msg = str(info.value)
    assert msg.startswith("device profile v100 expects a GPU named like 'V100'")
    assert "this machine has none" in msg and "--force-device" in msg


def test_gpu_profile_on_another_gpu_names_that_gpu() -> None:
    with pytest.raises(ValueError, match="but this machine has 'NVIDIA H100 80GB HBM3'"):
        check_device("v100", H100)


def test_force_returns_the_mismatch_instead_of_raising() -> None:
    assert "expects a GPU named like" in str(check_device("v100", NO_GPU, force=True))


def test_matching_gpu_and_cpu_profile_pass() -> None:
    assert check_device("h100", H100) is None
    assert check_device("cpu", NO_GPU) is None


def test_detect_device_without_gpu_tools_reports_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu.shutil, "which", lambda name: None)
    monkeypatch.setattr(gpu, "torch_cuda", lambda: None)
    info = detect_device()
    assert info["gpu_count"] == 0 and info["gpu_name"] is None and info["source"] is None
    assert isinstance(info["cpu_model"], str) and int(info["cpu_count"]) >= 1  # type: ignore[call-overload]


def test_detect_device_parses_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = {
        "--query-gpu=name,driver_version,compute_cap": "Tesla V100-SXM2-16GB, 535.104.05, 7.0\n" * 2,
        "": "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |\n",
    }
    monkeypatch.setattr(gpu.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(gpu, "_run", lambda cmd: outputs.get(cmd[1] if len(cmd) > 1 else ""))
    info = detect_device()
    assert info["gpu_count"] == 2 and info["gpu_name"] == "Tesla V100-SXM2-16GB"
    assert info["driver_version"] == "535.104.05" and info["compute_capability"] == "7.0"
    assert info["cuda_version"] == "12.2" and info["source"] == "nvidia-smi"
    assert check_device("v100", info) is None


def test_the_cpu_profile_looks_for_no_gpu_and_imports_no_engine(fresh_imports, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the cpu profile looked for a GPU")

    monkeypatch.setattr(gpu, "detect_gpus", refuse)
    monkeypatch.setattr(devices, "detect_gpus", refuse)
    assert devices.detect_for("cpu")["gpu_count"] == 0
    assert fresh_imports["detect cpu"] == []


def test_every_gpu_profile_carries_published_peaks_and_the_cpu_none() -> None:
    for profile in DEVICE_PROFILES.values():
        if profile.kind == "cpu":
            assert profile.peaks is None and devices.profile_peaks(profile) is None
        else:
            assert profile.peaks is not None and profile.peaks["bytes_per_s"] > 0, profile.name
            assert str(profile.peaks["source"]).startswith("published"), profile.name


def test_a_profile_built_positionally_as_before_has_no_peaks_and_stays_hashable() -> None:
    profile = devices.DeviceProfile("mine", ("MyGPU",), "gpu", "tensorrt", "notes")
    assert profile.peaks is None and profile.matches("Acme MyGPU")
    with_peaks = devices.DeviceProfile("mine", ("MyGPU",), "gpu", "tensorrt", "notes", peaks={"bytes_per_s": 1.0})
    assert with_peaks == profile and hash(with_peaks) == hash(profile)  # the peaks are no part of identity
    assert hash(get_profile("v100")) == hash(get_profile("v100"))
