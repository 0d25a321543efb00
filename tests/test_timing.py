"""The timing protocol: trimmed mean, statistics, inner loop, settings and the runner loop."""

from __future__ import annotations

import json
import math
import statistics
import time

import pytest

from kernels_bench.timing import (
    PHASES,
    Runner,
    TimingResult,
    TimingSettings,
    host_clock_resolution_ms,
    summarize,
    time_runner,
    trimmed_mean,
)


class FakeRunner:
    """A runner whose every inference takes ``per_run_ms`` by its own clock."""

    clock = "cuda_events"

    def __init__(self, per_run_ms: float, resolution_ms: float = 0.0005, sleep_s: float = 0.0) -> None:
        self.per_run_ms = per_run_ms
        self.timer_resolution_ms = resolution_ms
        self.sleep_s = sleep_s
        self.calls: list[int] = []
        self.closed = False

    def timed(self, iters: int) -> float:
        self.calls.append(iters)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return iters * self.per_run_ms

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----- trimmed_mean ----------------------------------------------------------


def test_trimmed_mean_of_30_samples_drops_exactly_three_at_each_end() -> None:
    middle = [float(v) for v in range(10, 34)]  # 24 values
    samples = [-1e9, -1e6, -1e3, *middle, 1e3, 1e6, 1e9]
    assert len(samples) == 30
    assert trimmed_mean(samples, 0.1) == pytest.approx(statistics.mean(middle))


def test_trimmed_mean_keeps_a_fourth_outlier_at_one_end() -> None:
    middle = [1.0] * 23
    samples = [0.0, 0.0, 0.0, *middle, 5.0, 100.0, 100.0, 100.0]
    assert len(samples) == 30
    assert trimmed_mean(samples, 0.1) == pytest.approx((23 * 1.0 + 5.0) / 24)


def test_trimmed_mean_does_not_depend_on_sample_order() -> None:
    samples = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0]
    assert trimmed_mean(samples, 0.1) == pytest.approx(statistics.mean(range(2, 10)))


def test_trimmed_mean_with_zero_trim_is_the_mean() -> None:
    assert trimmed_mean([1.0, 2.0, 6.0], 0.0) == pytest.approx(3.0)


def test_trimmed_mean_drops_nothing_when_floor_of_n_times_trim_is_zero() -> None:
    assert trimmed_mean([1.0, 2.0, 100.0], 0.1) == pytest.approx(103.0 / 3)


def test_trimmed_mean_rejects_no_samples() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        trimmed_mean([])


@pytest.mark.parametrize("trim", [-0.1, 0.5, 0.7])
def test_trimmed_mean_rejects_trim_outside_zero_to_half(trim: float) -> None:
    with pytest.raises(ValueError, match="trim"):
        trimmed_mean([1.0, 2.0], trim)


# ----- summarize -------------------------------------------------------------


def test_summarize_known_numbers() -> None:
    stats = summarize([1.0, 2.0, 3.0, 4.0, 5.0], trim=0.0)
    std = math.sqrt(2.5)  # sample standard deviation of 1..5
    assert stats == pytest.approx(
        {"trimmed_mean_ms": 3.0, "median_ms": 3.0, "min_ms": 1.0, "max_ms": 5.0, "std_ms": std, "cv": std / 3.0}
    )


def test_summarize_trims_only_the_trimmed_mean() -> None:
    samples = [1.0] * 8 + [0.0, 100.0]
    stats = summarize(samples, trim=0.1)
    assert stats["trimmed_mean_ms"] == pytest.approx(1.0)
    assert stats["min_ms"] == 0.0
    assert stats["max_ms"] == 100.0


def test_summarize_single_sample_has_zero_spread() -> None:
    stats = summarize([2.5])
    assert stats["std_ms"] == 0.0
    assert stats["cv"] == 0.0
    assert stats["median_ms"] == 2.5


# ----- inner loop --------------------------------------------------------------


def test_inner_loop_reaches_a_thousand_timer_resolutions() -> None:
    # 0.5 us events -> a sample must last 0.5 ms; a 2 us kernel needs 250 runs
    assert TimingSettings().inner_loop(single_run_ms=0.002, resolution_ms=0.0005) == 250


def test_inner_loop_is_one_for_a_kernel_longer_than_the_target() -> None:
    assert TimingSettings().inner_loop(single_run_ms=3.0, resolution_ms=0.0005) == 1


def test_inner_loop_honours_min_sample_ms() -> None:
    settings = TimingSettings(min_sample_ms=2.0)
    assert settings.inner_loop(single_run_ms=0.3, resolution_ms=1e-6) == 7  # ceil(2 / 0.3)


def test_inner_loop_is_capped_by_max_inner() -> None:
    assert TimingSettings(max_inner=64).inner_loop(single_run_ms=1e-6, resolution_ms=0.0005) == 64


def test_inner_loop_treats_a_zero_estimate_as_one_resolution() -> None:
    assert TimingSettings().inner_loop(single_run_ms=0.0, resolution_ms=0.0005) == 1000


# ----- settings ------------------------------------------------------------------


def test_default_settings_are_the_protocol_defaults() -> None:
    s = TimingSettings()
    assert (s.repeats, s.warmup_runs, s.warmup_min_ms, s.trim) == (30, 5, 20.0, 0.1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repeats", 0),
        ("repeats", 2.5),
        ("repeats", True),
        ("warmup_runs", -1),
        ("warmup_min_ms", -1.0),
        ("warmup_min_ms", float("nan")),
        ("trim", 0.5),
        ("trim", -0.01),
        ("min_sample_ms", -0.5),
        ("max_inner", 0),
    ],
)
def test_settings_reject_out_of_range_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{field}="):
        TimingSettings(**{field: value})  # type: ignore[arg-type]


def test_settings_round_trip_through_a_dict() -> None:
    s = TimingSettings(repeats=5, trim=0.2, min_sample_ms=1.5)
    assert TimingSettings.from_dict(s.to_dict()) == s


def test_settings_from_dict_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown timing settings"):
        TimingSettings.from_dict({"repeat": 3})


# ----- time_runner ----------------------------------------------------------------


def test_time_runner_returns_repeats_per_inference_samples() -> None:
    runner = FakeRunner(per_run_ms=0.002)
    result = time_runner(runner, TimingSettings(warmup_min_ms=0.0))
    assert len(result.samples_ms) == 30
    assert result.samples_ms == pytest.approx([0.002] * 30)
    assert result.trimmed_mean_ms == pytest.approx(0.002)


def test_time_runner_times_each_sample_over_the_chosen_inner_loop() -> None:
    runner = FakeRunner(per_run_ms=0.002)
    result = time_runner(runner, TimingSettings(warmup_min_ms=0.0, repeats=5))
    assert result.inner_loop == 250
    assert runner.calls[-5:] == [250] * 5


def test_a_host_runner_warms_up_one_synchronous_run_at_a_time_for_at_least_warmup_runs() -> None:
    runner = FakeRunner(per_run_ms=5.0)
    runner.clock = "host"
    result = time_runner(runner, TimingSettings(warmup_runs=7, warmup_min_ms=0.0, repeats=3))
    assert result.warmup_runs == 7
    assert runner.calls[:7] == [1] * 7


def test_a_gpu_runner_warms_up_back_to_back_in_chunks_of_about_ten_ms() -> None:
    runner = FakeRunner(per_run_ms=0.5)  # clock cuda_events
    result = time_runner(runner, TimingSettings(warmup_runs=50, warmup_min_ms=0.0, repeats=3))
    assert runner.calls[:3] == [1, 20, 20]  # one run to learn its length, then 20 x 0.5 ms back to back
    assert result.warmup_runs >= 50


def test_time_runner_warms_up_for_at_least_warmup_min_ms_of_wall_time() -> None:
    runner = FakeRunner(per_run_ms=1.0, sleep_s=0.002)
    result = time_runner(runner, TimingSettings(warmup_runs=1, warmup_min_ms=30.0, repeats=2))
    assert result.warmup_runs > 1
    assert result.phases["warmup_s"] >= 0.030


def test_time_runner_records_settings_clock_and_resolution() -> None:
    runner = FakeRunner(per_run_ms=1.0, resolution_ms=0.0005)
    result = time_runner(runner, TimingSettings(warmup_min_ms=0.0, repeats=3, trim=0.0))
    assert result.settings["clock"] == "cuda_events"
    assert result.settings["timer_resolution_ms"] == 0.0005
    assert result.settings["repeats"] == 3
    assert set(result.phases) == set(PHASES)
    assert result.phases["timed_s"] >= 0.0


def test_time_runner_rejects_an_unknown_clock() -> None:
    runner = FakeRunner(per_run_ms=1.0)
    runner.clock = "wall"  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown clock"):
        time_runner(runner, TimingSettings(repeats=1))


def test_fake_runner_satisfies_the_runner_protocol() -> None:
    assert isinstance(FakeRunner(1.0), Runner)


def test_timing_result_has_the_attribute_names_the_table_writer_uses() -> None:
    result = time_runner(FakeRunner(per_run_ms=1.0), TimingSettings(warmup_min_ms=0.0, repeats=4))
    data = result.to_dict()
    assert set(data) == {
        "samples_ms",
        "trimmed_mean_ms",
        "median_ms",
        "min_ms",
        "max_ms",
        "std_ms",
        "cv",
        "inner_loop",
        "warmup_runs",
        "settings",
        "phases",
        "reference_samples_ms",
        "reference_ms",
        "reference_inner_loop",
    }
    assert data["reference_ms"] is None and data["reference_samples_ms"] == []
    assert json.loads(json.dumps(data)) == data
    assert isinstance(result, TimingResult)


def test_host_clock_resolution_is_positive_and_sub_millisecond() -> None:
    assert 0 < host_clock_resolution_ms() < 0.1


# ----- drift reference ---------------------------------------------------------


class DriftingMachine:
    """A machine whose speed changes over (simulated) time; runners on it advance its clock.

    ``slowdown(t)`` is the factor by which every inference is slower at time ``t``
    (ms since start); a runner's inference costs ``per_run_ms * slowdown(t)``.
    """

    def __init__(self, slowdown) -> None:
        self.now_ms = 0.0
        self.slowdown = slowdown

    def runner(self, per_run_ms: float) -> DriftingRunner:
        return DriftingRunner(self, per_run_ms)


class DriftingRunner(FakeRunner):
    def __init__(self, machine: DriftingMachine, per_run_ms: float) -> None:
        super().__init__(per_run_ms)
        self.machine = machine

    def timed(self, iters: int) -> float:
        self.calls.append(iters)
        total = 0.0
        for _ in range(iters):
            step = self.per_run_ms * self.machine.slowdown(self.machine.now_ms)
            self.machine.now_ms += step
            total += step
        return total


def test_time_runner_interleaves_one_reference_sample_before_each_sample() -> None:
    log: list[tuple[str, int]] = []

    class Tagged(FakeRunner):
        def __init__(self, tag: str, per_run_ms: float) -> None:
            super().__init__(per_run_ms)
            self.tag = tag

        def timed(self, iters: int) -> float:
            log.append((self.tag, iters))
            return super().timed(iters)

    graph, ref = Tagged("g", 2.0), Tagged("r", 0.5)
    settings = TimingSettings(repeats=5, warmup_runs=2, warmup_min_ms=0.0, min_sample_ms=10.0)
    result = time_runner(graph, settings, reference=ref)
    # a 10 ms sample of the graph is 5 runs of 2 ms; the reference's sample as long: 20 runs of 0.5 ms
    assert (result.inner_loop, result.reference_inner_loop) == (5, 20)
    assert log[-10:] == [("r", 20), ("g", 5)] * 5
    assert ("r", 1) in log[:-10]  # warmed up along with the graph
    assert result.reference_samples_ms == [0.5] * 5
    assert result.reference_ms == 0.5
    assert result.samples_ms == [2.0] * 5
    assert result.settings["reference_ratio"] == 1.0


def test_reference_ratio_sets_the_length_of_a_reference_sample() -> None:
    graph, ref = FakeRunner(4.0), FakeRunner(1.0)
    settings = TimingSettings(repeats=3, warmup_min_ms=0.0, min_sample_ms=8.0)
    result = time_runner(graph, settings, reference=ref, reference_ratio=0.5)
    assert result.inner_loop == 2  # 8 ms of graph per sample
    assert result.reference_inner_loop == 4  # half of it: 4 ms of reference


def test_reference_with_another_clock_or_a_bad_ratio_is_refused() -> None:
    graph = FakeRunner(1.0)
    other = FakeRunner(1.0)
    other.clock = "host"
    with pytest.raises(ValueError, match="same device"):
        time_runner(graph, TimingSettings(warmup_min_ms=0.0), reference=other)
    with pytest.raises(ValueError, match="reference_ratio"):
        time_runner(graph, TimingSettings(warmup_min_ms=0.0), reference=FakeRunner(1.0), reference_ratio=0.0)


@pytest.mark.parametrize("slowdown", [1.0, 1.3])
def test_reference_sees_the_machine_speed_the_graph_saw(slowdown: float) -> None:
    # the machine runs at a constant speed during each measurement, another one each time:
    # graph / reference stays the ratio of their latencies
    machine = DriftingMachine(lambda t: slowdown)
    graph, ref = machine.runner(3.0), machine.runner(1.5)
    result = time_runner(graph, TimingSettings(warmup_min_ms=0.0, min_sample_ms=6.0), reference=ref)
    assert result.trimmed_mean_ms == pytest.approx(3.0 * slowdown)
    assert result.reference_ms == pytest.approx(1.5 * slowdown)
    assert result.trimmed_mean_ms / result.reference_ms == pytest.approx(2.0)


def test_interleaving_cancels_a_drift_that_a_separate_reference_measurement_misses() -> None:
    # speed ramps down by 40% over the run: timing the reference before the graph would
    # see the early, faster machine; interleaved samples see the same machine as the graph
    machine = DriftingMachine(lambda t: 1.0 + 0.4 * min(t / 2000.0, 1.0))
    ref = machine.runner(1.0)
    settings = TimingSettings(warmup_min_ms=0.0, min_sample_ms=5.0, trim=0.0)
    before = time_runner(ref, settings).trimmed_mean_ms
    graph = machine.runner(2.0)
    result = time_runner(graph, settings, reference=ref)
    interleaved_ratio = result.trimmed_mean_ms / result.reference_ms
    separate_ratio = result.trimmed_mean_ms / before
    assert interleaved_ratio == pytest.approx(2.0, rel=0.02)
    assert abs(separate_ratio - 2.0) > 0.1
