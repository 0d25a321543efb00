"""A stand-in for kernels_bench.timing.TimingResult: constant samples, for table tests without a backend."""

from types import SimpleNamespace


def constant_timing(ms: float, samples: int = 3, warmup_runs: int = 2) -> SimpleNamespace:
    """A timing result whose every sample is ``ms`` (trimmed mean, median, min and max ``ms``; std 0)."""
    return SimpleNamespace(
        samples_ms=[ms] * samples,
        trimmed_mean_ms=ms,
        median_ms=ms,
        min_ms=ms,
        max_ms=ms,
        std_ms=0.0,
        cv=0.0,
        inner_loop=1,
        warmup_runs=warmup_runs,
        settings={},
        phases={},
    )
