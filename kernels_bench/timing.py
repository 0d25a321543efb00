"""The timing protocol shared by every backend, and its statistics.

A backend hands :func:`time_runner` a :class:`Runner`: something that can run
``iters`` back-to-back inferences of one whole batch and say how long they took,
timed correctly for its device (a host clock around synchronous CPU runs, CUDA
events on the runner's own stream on a GPU). The protocol is the same for all:

1. warm up: at least ``warmup_runs`` inferences *and* at least ``warmup_min_ms``
   of wall time (a GPU runner back to back, so its clocks rise as under load;
   ``profiler.build`` defaults ``warmup_min_ms`` to :data:`GPU_WARMUP_MS` on a GPU);
2. estimate the time of one inference;
3. choose an inner loop so that one sample lasts at least ``min_sample_ms`` and at
   least 1000 times the timer's resolution (a kernel shorter than the resolution of
   CUDA events is timed over many back-to-back runs and divided);
4. take ``repeats`` samples; each is the time of ``inner`` inferences divided by
   ``inner``, in ms per inference of the batch.

The reported figure is the trimmed mean (drop ``trim`` of the samples at each
end, average the rest); the raw samples, median, min, max and standard deviation
are kept so that a table can be re-analysed later.

**Drift reference.** On a machine whose speed drifts (a shared cloud VM, a GPU
whose clocks follow its temperature), :func:`time_runner` can take a second
runner, a fixed *reference graph*, and time one sample of it right before every
sample of the graph being measured, each reference sample about as long as the
measured one (``reference_ratio``). Both see the same machine speed, so the
reference's trimmed mean over those samples (:attr:`TimingResult.reference_ms`)
says how fast the machine was while this graph was timed; the caller turns that
into a correction (see :func:`tables.schema.drift_corrected`). The graph's own samples and
statistics are never changed.

This module imports nothing heavier than the standard library.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

#: Phase names of :attr:`TimingResult.phases`, all in seconds.
PHASES: tuple[str, ...] = ("export_s", "compile_s", "warmup_s", "timed_s")

#: Timer kinds a runner may report in :attr:`Runner.clock`.
CLOCKS: tuple[str, ...] = ("host", "cuda_events")

#: A sample must last at least this many timer resolutions (0.1% quantisation).
RESOLUTION_FACTOR = 1000

#: Default minimum warm-up of GPU runs, ms of back-to-back work (trtexec warms up 200 ms): an idle GPU's
#: clocks take that long to rise (345 MHz idle against 1980 MHz under load on an H200).
GPU_WARMUP_MS = 200.0

#: Length of one back-to-back chunk of a GPU warm-up, ms.
_GPU_WARMUP_CHUNK_MS = 10.0


#: Upper limits of the timing settings: a protocol beyond them would run for days per key, or never end.
LIMITS: dict[str, float] = {
    "repeats": 10_000,
    "warmup_runs": 100_000,
    "max_inner": 1_000_000,
    "warmup_min_ms": 600_000.0,  # 10 minutes
    "min_sample_ms": 60_000.0,  # 1 minute
}


@dataclass
class TimingSettings:
    """Settings of the timing protocol (every one of them changes the numbers).

    Attributes:
        repeats: number of timed samples (>= 1).
        warmup_runs: minimum number of warm-up inferences (>= 0).
        warmup_min_ms: minimum wall time of the warm-up, ms (>= 0).
        trim: fraction of the samples dropped at *each* end by the trimmed mean
            (0 <= trim < 0.5); 0.1 of 30 samples drops 3 + 3.
        min_sample_ms: minimum duration of one sample, ms (>= 0); short
            inferences are repeated ``inner`` times per sample to reach it.
        max_inner: upper bound of the inner loop (>= 1).
        cold_l2: GPU runners write a buffer twice the L2 cache's size before each sample, so every
            sample starts with a cold L2 (default False: L2-warm, as layers of a network see each other).
    """

    repeats: int = 30
    warmup_runs: int = 5
    warmup_min_ms: float = 20.0
    trim: float = 0.1
    min_sample_ms: float = 0.0
    max_inner: int = 1000
    cold_l2: bool = False

    @property
    def samples_kept(self) -> int:
        """How many samples the trimmed mean keeps: ``repeats`` less ``floor(repeats * trim)`` at each end."""
        return self.repeats - 2 * math.floor(self.repeats * self.trim)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field outside its allowed range (see :data:`LIMITS`)."""
        _check_int("repeats", self.repeats, 1, LIMITS["repeats"])
        _check_int("warmup_runs", self.warmup_runs, 0, LIMITS["warmup_runs"])
        _check_int("max_inner", self.max_inner, 1, LIMITS["max_inner"])
        _check_float("warmup_min_ms", self.warmup_min_ms, LIMITS["warmup_min_ms"])
        _check_float("min_sample_ms", self.min_sample_ms, LIMITS["min_sample_ms"])
        if not _is_number(self.trim) or not 0.0 <= float(self.trim) < 0.5:
            raise ValueError(f"invalid timing setting trim={self.trim!r}: use a fraction with 0 <= trim < 0.5")
        if not isinstance(self.cold_l2, bool):
            raise ValueError(f"invalid timing setting cold_l2={self.cold_l2!r}: use true or false")

    def inner_loop(self, single_run_ms: float, resolution_ms: float) -> int:
        """Number of back-to-back inferences per sample.

        Args:
            single_run_ms: estimated time of one inference, ms.
            resolution_ms: the timer's resolution, ms.

        Returns:
            ``max(1, ceil(max(min_sample_ms, 1000 * resolution_ms) / single_run_ms))``,
            capped at ``max_inner``. A non-positive estimate (the clock did not
            tick) counts as one resolution.
        """
        target_ms = max(self.min_sample_ms, RESOLUTION_FACTOR * resolution_ms)
        single = single_run_ms if single_run_ms > 0 else max(resolution_ms, 1e-9)
        inner = max(1, math.ceil(target_ms / single))
        return min(inner, self.max_inner)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for table metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingSettings:
        """Settings from a dict as written by :meth:`to_dict`; unknown names raise ``ValueError``."""
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown timing settings {unknown}: allowed are {sorted(allowed)}")
        return cls(**data)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: object, minimum: int, maximum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"invalid timing setting {name}={value!r}: use an integer from {minimum} to {maximum:g}")


def _check_float(name: str, value: object, maximum: float) -> None:
    if not _is_number(value) or not math.isfinite(float(value)) or not 0 <= float(value) <= maximum:  # type: ignore[arg-type]
        raise ValueError(f"invalid timing setting {name}={value!r}: use a number from 0 to {maximum:g}")


# ----- statistics ------------------------------------------------------------


def trimmed_mean(samples: Sequence[float], trim: float = 0.1) -> float:
    """Mean of the samples after dropping ``floor(n * trim)`` of them at each end.

    Args:
        samples: times, any unit (the result has the same unit).
        trim: fraction dropped at each end, 0 <= trim < 0.5.

    Returns:
        The mean of the remaining sorted samples; 30 samples with ``trim=0.1``
        average the middle 24.
    """
    if len(samples) == 0:
        raise ValueError("trimmed_mean needs at least one sample")
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"invalid trim={trim!r}: use a fraction with 0 <= trim < 0.5")
    ordered = sorted(float(s) for s in samples)
    cut = math.floor(len(ordered) * trim)
    kept = ordered[cut : len(ordered) - cut]
    return math.fsum(kept) / len(kept)


def summarize(samples: Sequence[float], trim: float = 0.1) -> dict[str, float]:
    """Statistics of timing samples.

    Args:
        samples: per-inference times, ms.
        trim: fraction dropped at each end for the trimmed mean.

    Returns:
        ``trimmed_mean_ms``, ``median_ms``, ``min_ms``, ``max_ms``, ``std_ms``
        (sample standard deviation, 0 for a single sample) and ``cv``
        (``std_ms`` over the arithmetic mean, dimensionless).
    """
    if len(samples) == 0:
        raise ValueError("summarize needs at least one sample")
    values = [float(s) for s in samples]
    mean = math.fsum(values) / len(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "trimmed_mean_ms": trimmed_mean(values, trim),
        "median_ms": float(statistics.median(values)),
        "min_ms": min(values),
        "max_ms": max(values),
        "std_ms": std,
        "cv": std / mean if mean > 0 else 0.0,
    }


# ----- result ----------------------------------------------------------------


@dataclass
class TimingResult:
    """What one timed graph produced.

    Attributes:
        samples_ms: per-inference time of each sample, ms (sample time / ``inner_loop``).
        trimmed_mean_ms, median_ms, min_ms, max_ms, std_ms: statistics of the samples, ms.
        cv: coefficient of variation of the samples (std / mean).
        inner_loop: back-to-back inferences per sample.
        warmup_runs: warm-up inferences actually done.
        settings: every setting that produced the numbers: the timing settings,
            the runner's ``clock`` and ``timer_resolution_ms``, and (through
            :mod:`kernels_bench.measure`) the backend's settings.
        phases: seconds spent in ``export_s``, ``compile_s``, ``warmup_s``, ``timed_s``.
        reference_samples_ms: with a drift reference: its per-inference time in the
            sample taken right before each of ``samples_ms``, ms; else empty.
        reference_ms: trimmed mean of ``reference_samples_ms`` (``None`` without a reference).
        reference_inner_loop: inferences of the reference per reference sample (``None`` without one).
    """

    samples_ms: list[float]
    trimmed_mean_ms: float
    median_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cv: float
    inner_loop: int
    warmup_runs: int
    settings: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    reference_samples_ms: list[float] = field(default_factory=list)
    reference_ms: float | None = None
    reference_inner_loop: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-compatible data."""
        return {
            "samples_ms": list(self.samples_ms),
            "trimmed_mean_ms": self.trimmed_mean_ms,
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "std_ms": self.std_ms,
            "cv": self.cv,
            "inner_loop": self.inner_loop,
            "warmup_runs": self.warmup_runs,
            "settings": dict(self.settings),
            "phases": dict(self.phases),
            "reference_samples_ms": list(self.reference_samples_ms),
            "reference_ms": self.reference_ms,
            "reference_inner_loop": self.reference_inner_loop,
        }


# ----- runner protocol and the protocol itself --------------------------------


@runtime_checkable
class Runner(Protocol):
    """A loaded graph that can be timed; owns its device resources.

    Attributes:
        timer_resolution_ms: resolution of the clock used by :meth:`timed`, ms.
        clock: ``"host"`` (``time.perf_counter_ns`` around synchronous runs) or
            ``"cuda_events"`` (events recorded on the runner's stream).
    """

    timer_resolution_ms: float
    clock: str

    def timed(self, iters: int, *, cold_l2: bool = False) -> float:
        """Run ``iters`` back-to-back inferences of the batch; return their total time, ms.

        ``cold_l2``: a GPU runner flushes its L2 cache first (host runners ignore it).
        """
        ...

    def close(self) -> None:
        """Release the runner's resources (idempotent)."""
        ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...


def _estimate_single_run_ms(runner: Runner, settings: TimingSettings) -> float:
    """Time of one inference, ms, from runs long enough for the timer to resolve.

    Doubles the number of back-to-back runs until they last 100 timer
    resolutions (or ``max_inner`` runs), then divides.
    """
    floor_ms = 100 * runner.timer_resolution_ms
    iters = 1
    while True:
        elapsed = runner.timed(iters)
        if elapsed >= floor_ms or iters >= settings.max_inner:
            return elapsed / iters
        iters = min(iters * 2, settings.max_inner)


def warm_up(runner: Runner, settings: TimingSettings, reference: Runner | None = None) -> int:
    """Warm ``runner`` (and ``reference``) up; returns the inferences run.

    At least ``warmup_runs`` inferences and ``warmup_min_ms`` of wall time. A GPU
    runner (``clock == "cuda_events"``) warms up back to back, in chunks of about
    10 ms of GPU work, so its clocks rise as they do under load; a host runner
    one synchronous inference at a time.
    """
    t0 = time.perf_counter()

    def warm() -> bool:
        return (time.perf_counter() - t0) * 1e3 >= settings.warmup_min_ms

    done = 0
    if runner.clock != "cuda_events":
        while done < settings.warmup_runs or not warm():
            runner.timed(1)
            if reference is not None:
                reference.timed(1)
            done += 1
        return done
    one = max(runner.timed(1), 1e-6)
    done = 1
    while done < settings.warmup_runs or not warm():
        chunk = max(1, min(settings.max_inner, math.ceil(_GPU_WARMUP_CHUNK_MS / one)))
        one = max(runner.timed(chunk) / chunk, 1e-6)
        if reference is not None:
            reference.timed(chunk)
        done += chunk
    return done


def time_runner(
    runner: Runner,
    settings: TimingSettings | None = None,
    *,
    reference: Runner | None = None,
    reference_ratio: float = 1.0,
) -> TimingResult:
    """Time a runner with the protocol described in this module's docstring.

    Args:
        runner: a loaded graph (see :class:`Runner`); not closed here.
        settings: the protocol's settings; defaults to :class:`TimingSettings()`.
        reference: a drift reference (another loaded graph on the same device and
            clock), timed for one sample right before each of ``runner``'s samples;
            it is warmed up along with ``runner``. Not closed here.
        reference_ratio: length of a reference sample over the length of a
            measured sample (> 0; default 1: equal lengths).

    Returns:
        A :class:`TimingResult` with ``repeats`` per-inference samples, their
        statistics, the inner loop, the warm-up runs done, the settings
        (including the runner's clock and resolution) and the ``warmup_s`` and
        ``timed_s`` phases (``export_s`` and ``compile_s`` are left at 0 for
        the caller to fill); with ``reference``, also the reference's samples,
        their trimmed mean and inner loop.
    """
    settings = settings or TimingSettings()
    settings.validate()
    if runner.clock not in CLOCKS:
        raise ValueError(f"runner reports unknown clock {runner.clock!r}: expected one of {CLOCKS}")
    if reference is not None:
        if reference.clock != runner.clock:
            raise ValueError(
                f"the drift reference uses clock {reference.clock!r} and the graph {runner.clock!r}: "
                "time both on the same device"
            )
        if not (_is_number(reference_ratio) and math.isfinite(reference_ratio) and reference_ratio > 0):
            raise ValueError(f"invalid reference_ratio={reference_ratio!r}: use a number > 0")

    t_warm = time.perf_counter()
    warmup_done = warm_up(runner, settings, reference)
    single_ms = _estimate_single_run_ms(runner, settings)
    inner = settings.inner_loop(single_ms, runner.timer_resolution_ms)
    ref_inner = None
    if reference is not None:
        # one reference sample lasts about reference_ratio x one measured sample
        target_ms = max(reference_ratio * single_ms * inner, RESOLUTION_FACTOR * reference.timer_resolution_ms)
        ref_single = _estimate_single_run_ms(reference, settings)
        ref_inner = math.ceil(target_ms / ref_single) if ref_single > 0 else settings.max_inner
        ref_inner = min(max(1, ref_inner), settings.max_inner)
    warmup_s = time.perf_counter() - t_warm

    state = getattr(runner, "device_state", None)
    before = state() if callable(state) else None
    cold = settings.cold_l2 and runner.clock == "cuda_events"
    t_timed = time.perf_counter()
    samples: list[float] = []
    ref_samples: list[float] = []
    for _ in range(settings.repeats):
        if reference is not None:
            ref_samples.append(
                (reference.timed(ref_inner, cold_l2=True) if cold else reference.timed(ref_inner)) / ref_inner
            )
        samples.append((runner.timed(inner, cold_l2=True) if cold else runner.timed(inner)) / inner)
    timed_s = time.perf_counter() - t_timed
    after = state() if callable(state) else None

    stats = summarize(samples, settings.trim)
    run_settings: dict[str, Any] = settings.to_dict()
    run_settings["clock"] = runner.clock
    run_settings["timer_resolution_ms"] = float(runner.timer_resolution_ms)
    run_settings["l2"] = ("cold" if cold else "warm") if runner.clock == "cuda_events" else "n/a"
    run_settings.update(getattr(runner, "info", {}) or {})
    if before is not None or after is not None:
        run_settings["device_state"] = {"before": before, "after": after}
    result = TimingResult(
        samples_ms=samples,
        inner_loop=inner,
        warmup_runs=warmup_done,
        settings=run_settings,
        phases={"export_s": 0.0, "compile_s": 0.0, "warmup_s": warmup_s, "timed_s": timed_s},
        **stats,
    )
    if reference is not None:
        result.reference_samples_ms = ref_samples
        result.reference_ms = trimmed_mean(ref_samples, settings.trim)
        result.reference_inner_loop = ref_inner
        run_settings["reference_ratio"] = float(reference_ratio)
    return result


def host_clock_resolution_ms(probes: int = 2000) -> float:
    """Effective resolution of ``time.perf_counter_ns``, ms.

    The smallest non-zero difference between consecutive readings: the clock's
    tick plus the cost of reading it, which is what limits a host-clock sample.
    """
    best = None
    last = time.perf_counter_ns()
    for _ in range(probes):
        now = time.perf_counter_ns()
        step = now - last
        if step > 0 and (best is None or step < best):
            best = step
        last = now
    tick_ns = best if best is not None else time.get_clock_info("perf_counter").resolution * 1e9
    return max(float(tick_ns), 1.0) / 1e6
