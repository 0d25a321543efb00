"""What makes a GPU sample hold GPU time only: a GPU-side hold, an L2 flush, and the clocks read through NVML.

**The launch offset.** A GPU runner records its start event and then enqueues
``iters`` inferences from Python; when an inference is shorter on the GPU than
its enqueue is on the host, the GPU waits for the host between inferences and
that wait falls inside the sample (2-6% for microsecond blocks). A
:class:`SpinHold` enqueues a spin kernel (``torch.cuda._sleep``) right before the
start event, long enough to outlast the host's enqueue of the whole sample, so
the GPU starts the sample with every inference already queued and the events
time GPU work only. How long to spin is learned from the host time the previous
samples' enqueues took (:meth:`SpinHold.spin_ms`); each sample records whether
its spin covered the enqueue (``hold_short`` counts those that did not).

**Cold L2.** By default every sample runs with the L2 cache warm (the previous
sample's weights and activations are still in it), as a network's layers see
each other's outputs. With ``cold_l2`` a runner writes a scratch buffer of
:func:`flush_bytes` (twice the L2's size) before each sample, for the
cold-cache figure of a block that is the first to touch its weights.

**Clocks.** :func:`device_state` reads the SM clock, the temperature and the
clock-throttle reasons through NVML (``libnvidia-ml``, which comes with the
driver; no Python package needed), ``None`` where there is no NVML.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

#: How much longer than the host's expected enqueue time a hold spins (and a floor, ms).
SPIN_MARGIN = 1.5
SPIN_FLOOR_MS = 0.05
#: Longest spin, ms (a hold never delays a sample by more).
SPIN_CEILING_MS = 200.0


class SpinHold:
    """A spin kernel on a torch CUDA stream, enqueued before a sample's start event.

    Args:
        torch: the torch module (with CUDA).
        stream: the ``torch.cuda.Stream`` (or ``ExternalStream``) the sample runs on.
    """

    method = "spin kernel (torch.cuda._sleep) before the start event"

    def __init__(self, torch: Any, stream: Any) -> None:
        self._torch = torch
        self._stream = stream
        self._per_iter_ms: float | None = None
        self.cycles_per_ms = self._calibrate()
        self.short = 0
        self.last_spin_ms = 0.0

    def _calibrate(self) -> float:
        """GPU cycles ``torch.cuda._sleep`` spins per ms on this device, timed with events."""
        torch = self._torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        cycles = 2_000_000
        with torch.cuda.stream(self._stream):
            torch.cuda._sleep(cycles)  # wakes the clocks
            start.record(self._stream)
            torch.cuda._sleep(cycles)
            end.record(self._stream)
        end.synchronize()
        ms = float(start.elapsed_time(end))
        return cycles / ms if ms > 0 else 1e6

    def spin_ms(self, iters: int) -> float:
        """How long to hold the GPU before a sample of ``iters`` inferences, ms."""
        if self._per_iter_ms is None:
            return SPIN_FLOOR_MS
        return min(SPIN_CEILING_MS, max(SPIN_FLOOR_MS, SPIN_MARGIN * iters * self._per_iter_ms))

    def engage(self, iters: int) -> float:
        """Enqueue the spin on the stream (call right before recording the start event); returns its ms."""
        spin = self.spin_ms(iters)
        with self._torch.cuda.stream(self._stream):
            self._torch.cuda._sleep(max(1, int(spin * self.cycles_per_ms)))
        self.last_spin_ms = spin
        return spin

    def note_enqueue(self, host_ms: float, iters: int) -> None:
        """The host time the sample's enqueue took, ms: learns the next spin and counts a spin that was short."""
        per_iter = host_ms / max(1, iters)
        self._per_iter_ms = per_iter if self._per_iter_ms is None else max(per_iter, 0.8 * self._per_iter_ms)
        if host_ms > self.last_spin_ms:
            self.short += 1

    def info(self) -> dict[str, Any]:
        """What the runner records about its hold."""
        return {"gpu_hold": self.method, "hold_short": self.short, "spin_cycles_per_ms": round(self.cycles_per_ms)}


def make_hold(stream_handle: int, device: int = 0) -> SpinHold | None:
    """A :class:`SpinHold` on the CUDA stream ``stream_handle`` through torch, or ``None`` without a CUDA torch."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or not hasattr(torch.cuda, "_sleep"):
        return None
    stream = torch.cuda.ExternalStream(int(stream_handle), device=device)
    return SpinHold(torch, stream)


def flush_bytes(l2_bytes: int) -> int:
    """Size of the scratch buffer written before a cold-L2 sample: twice the L2 cache, at least 64 MiB."""
    return max(2 * int(l2_bytes), 64 << 20)


# ----- NVML through ctypes -------------------------------------------------------------

_NVML: Any = None
_NVML_CLOCK_SM = 1
_NVML_TEMPERATURE_GPU = 0

#: Clock-throttle reason bits (nvml.h, nvmlClocksEventReasons / nvmlClocksThrottleReasons).
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def throttle_names(mask: int) -> list[str]:
    """The names of the set bits of an NVML clock-throttle mask (unknown bits as hex)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    return names + ([hex(rest)] if rest else [])


def _nvml() -> Any:
    """The NVML library, initialised once; ``None`` where it cannot be loaded."""
    global _NVML
    if _NVML is None:
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            if lib.nvmlInit_v2() != 0:
                raise OSError("nvmlInit failed")
            _NVML = lib
        except (OSError, AttributeError):
            _NVML = False
    return _NVML or None


def nvml_index(cuda_index: int = 0) -> int:
    """The NVML index of CUDA device ``cuda_index`` (through ``CUDA_VISIBLE_DEVICES`` when it lists indices)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and all(v.isdigit() for v in visible) and cuda_index < len(visible):
        return int(visible[cuda_index])
    return cuda_index


def device_state(cuda_index: int = 0) -> dict[str, Any] | None:
    """SM clock (MHz), temperature (C) and clock-throttle reasons of a GPU now, or ``None`` without NVML."""
    lib = _nvml()
    if lib is None:
        return None
    handle = ctypes.c_void_p()
    if lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(nvml_index(cuda_index)), ctypes.byref(handle)) != 0:
        return None
    clock = ctypes.c_uint()
    temp = ctypes.c_uint()
    reasons = ctypes.c_ulonglong()
    out: dict[str, Any] = {}
    if lib.nvmlDeviceGetClockInfo(handle, _NVML_CLOCK_SM, ctypes.byref(clock)) == 0:
        out["sm_clock_mhz"] = int(clock.value)
    if lib.nvmlDeviceGetTemperature(handle, _NVML_TEMPERATURE_GPU, ctypes.byref(temp)) == 0:
        out["temperature_c"] = int(temp.value)
    getter = getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        lib, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    if getter is not None and getter(handle, ctypes.byref(reasons)) == 0:
        out["throttle_reasons"] = throttle_names(int(reasons.value))
    return out


__all__ = [
    "SPIN_CEILING_MS",
    "SPIN_FLOOR_MS",
    "SPIN_MARGIN",
    "THROTTLE_REASONS",
    "SpinHold",
    "device_state",
    "flush_bytes",
    "make_hold",
    "nvml_index",
    "throttle_names",
]
