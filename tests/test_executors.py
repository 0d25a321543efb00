"""Executors: serial, local worker processes and Ray actors measure the same keys; dead workers lose nothing.

Fault injection: ``LATENCY_BUILD_FAULT_KILL=W:N`` makes worker W exit abruptly
before its key N+1 (first incarnation only); see :mod:`profiler.executors`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from quick import quick_flags

from profiler import build, plan
from profiler.executors import (
    FAULT_ENV,
    MAX_WORKER_DEATHS_PER_KEY,
    ChunkQueue,
    FaultInjection,
    KeyWorker,
    fault_from_environment,
)
from tables.key import BlockKey
from tables.schema import read_table

FAST = quick_flags(3)
TABLE = "cpu_onnxruntime_fp32_b1.parquet"


def tiny_keys(n: int) -> list[BlockKey]:
    return list(
        dict.fromkeys(
            BlockKey("irb", 8, 16, 16, 8 + 8 * (i % 4), k=3 if i % 2 else 5, s=1 + (i // 4) % 2, e=2 + i // 8)
            for i in range(n)
        )
    )


KEYS = tiny_keys(10)


@pytest.fixture(scope="module")
def archs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("archs") / "archs.json"
    path.write_text(json.dumps({"architectures": [{"name": f"a{i}", "blocks": [str(k)]} for i, k in enumerate(KEYS)]}))
    return path


def build_args(archs: Path, out: Path, *extra: str) -> list[str]:
    return ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(out)] + [
        *FAST,
        *extra,
    ]


@pytest.fixture(scope="module")
def serial_keys(archs, tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("serial")
    assert build.main(build_args(archs, out)) == 0
    return sorted(read_table(out / TABLE)[0]["key"])


def table_keys(out: Path) -> list[str]:
    frame, _ = read_table(out / TABLE)
    assert not frame["key"].duplicated().any(), "a key was written twice"
    assert (frame["status"] == "ok").all(), frame[frame["status"] != "ok"][["key", "error"]]
    return sorted(frame["key"])


# --------------------------------------------------------------------------- the retry rule
def test_chunks_cover_every_key_once_in_order():
    queue = ChunkQueue([f"k{i}" for i in range(10)], 4)
    chunks = []
    while (c := queue.take()) is not None:
        chunks.append(c.keys)
    assert chunks == [("k0", "k1", "k2", "k3"), ("k4", "k5", "k6", "k7"), ("k8", "k9")]


def test_chunks_shrink_near_the_end_so_that_no_worker_idles_while_another_holds_keys():
    queue = ChunkQueue([f"k{i}" for i in range(12)], 4)
    sizes = []
    while (c := queue.take(spread=4)) is not None:  # 2 workers x 2 chunks in flight
        sizes.append(len(c.keys))
    assert sizes[0] == 3 and sizes[-1] == 1 and sum(sizes) == 12


def test_a_second_row_for_a_key_is_refused():
    queue = ChunkQueue(["a", "b"], 2)
    assert queue.accept("a") is True
    assert queue.accept("a") is False
    assert queue.remaining == 1


def test_keys_of_a_dead_worker_come_back_suspects_one_per_chunk_and_untouched_keys_uncharged():
    queue = ChunkQueue(["a", "b", "c", "d", "e"], 5)
    queue.take()
    queue.accept("a")
    given_up = queue.worker_died(suspects=["b"], untouched=["c", "d", "e"], reason="worker 0 exited")
    assert given_up == []
    assert queue.take().keys == ("b",)
    assert queue.take().keys == ("c", "d", "e")
    assert queue.deaths == {"b": 1}


def test_a_key_whose_worker_dies_twice_is_given_up_with_the_reason():
    queue = ChunkQueue(["a", "b"], 2)
    queue.take()
    assert queue.worker_died(["a", "b"], [], "worker 0 exited with status 137") == []
    queue.take()
    given_up = queue.worker_died(["a"], [], "worker 1 exited with status 137")
    assert [k for k, _ in given_up] == ["a"]
    assert f"died {MAX_WORKER_DEATHS_PER_KEY} times" in given_up[0][1] and "status 137" in given_up[0][1]
    assert queue.remaining == 1 and queue.take().keys == ("b",)


def test_a_key_that_raises_is_recorded_failed_at_once_with_its_error(monkeypatch):
    import kernels_bench.measure as measure

    def broken(*args, **kwargs):
        raise RuntimeError("engine build failed: no int8 kernel")

    monkeypatch.setattr(measure, "measure_keys", broken)
    worker = KeyWorker(backend=None, backend_name="onnxruntime", timing=None)
    row = worker.measure_one(str(KEYS[0]), 1, "fp32")
    assert row["status"] == "failed" and row["error"] == "RuntimeError: engine build failed: no int8 kernel"


def test_the_fault_injection_hook_is_read_from_the_environment():
    assert fault_from_environment({FAULT_ENV: "1:4"}) == FaultInjection(1, 4)
    assert fault_from_environment({}) is None
    with pytest.raises(ValueError, match="W:N"):
        fault_from_environment({FAULT_ENV: "one"})


# --------------------------------------------------------------------------- command line
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--address", "auto"], "--executor ray"),
        (["--gpus", "0,1"], "--executor local"),
        (["--executor", "local", "--gpus", "0"], "GPU device profile"),
        (["--workers", "2"], "--executor local or --executor ray"),
        (["--executor", "local", "--chunk-size", "0"], "--chunk-size"),
        (["--executor", "local", "--workers", "0"], "--workers"),
        (["--executor", "ray", "--cpus", "0"], "--cpus is for the serial and local executors"),
        (["--executor", "local", "--workers", "3", "--cpus", "0,1"], "name at least one per worker"),
        (["--cpus", "1-0"], "--cpus: invalid CPU list"),
    ],
)
def test_inconsistent_scale_out_options_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    code = build.main(["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--dry-run", *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_dry_run_with_an_executor_shows_workers_chunks_and_the_divided_estimate(capsys):
    args = ["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--precision", "fp32", "--dry-run"]
    assert build.main([*args, "--executor", "local", "--workers", "4", "--chunk-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "plan: --executor local, 4 workers, chunks of 3 keys" in out
    assert "estimated wall time" in out and "divided across 4 workers" in out


def test_without_ray_the_ray_executor_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys, archs):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = build.main(build_args(archs, tmp_path / "o", "--executor", "ray", "--workers", "2"))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[ray]'" in err[0]


# --------------------------------------------------------------------------- local processes
def test_two_local_workers_measure_the_same_keys_as_a_serial_build(tmp_path, archs, serial_keys):
    out = tmp_path / "local"
    assert build.main(build_args(archs, out, "--executor", "local", "--workers", "2", "--chunk-size", "2")) == 0
    assert table_keys(out) == serial_keys


def test_a_local_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, archs, serial_keys, monkeypatch, capsys):
    monkeypatch.setenv(FAULT_ENV, "1:1")  # worker 1 dies after one key, holding the rest of its chunks
    out = tmp_path / "local-fault"
    assert build.main(build_args(archs, out, "--executor", "local", "--workers", "2", "--chunk-size", "2")) == 0
    assert table_keys(out) == serial_keys
    assert "worker 1 exited with status 70" in capsys.readouterr().err


# --------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.ray
def test_two_ray_workers_measure_the_same_keys_as_a_serial_build(tmp_path, archs, serial_keys, local_ray):
    out = tmp_path / "ray"
    assert build.main(build_args(archs, out, "--executor", "ray", "--workers", "2", "--chunk-size", "2")) == 0
    assert table_keys(out) == serial_keys


@pytest.mark.ray
def test_a_ray_actor_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path, archs, serial_keys, local_ray, monkeypatch, capsys
):
    monkeypatch.setenv(FAULT_ENV, "0:1")  # actor 0 dies after one key, holding the rest of its chunks
    out = tmp_path / "ray-fault"
    assert build.main(build_args(archs, out, "--executor", "ray", "--workers", "2", "--chunk-size", "2")) == 0
    assert table_keys(out) == serial_keys
    assert "Ray worker 0 died" in capsys.readouterr().err


def test_cpus_are_shared_out_to_workers_in_contiguous_shares():
    assert plan.cpu_shares([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
    assert plan.cpu_shares([5], 1) == [[5]]


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs"
)
def test_local_workers_are_pinned_to_their_own_cpus(tmp_path, archs, serial_keys):
    before = os.sched_getaffinity(0)
    cpus = sorted(before)[:2]
    out = tmp_path / "pinned"
    extra = ("--executor", "local", "--workers", "2", "--cpus", f"{cpus[0]},{cpus[1]}")
    assert build.main(build_args(archs, out, *extra)) == 0
    assert table_keys(out) == serial_keys
    _, meta = read_table(out / TABLE)
    assert meta["backend_settings"]["cpus"] == cpus  # every worker's share is recorded
    assert meta["backend_settings"]["cpus_per_worker"] == [[cpus[0]], [cpus[1]]]
    assert os.sched_getaffinity(0) == before  # the driver itself is not pinned


# --------------------------------------------------------------------------- drift reference
def drift_rows_are_corrected(out: Path) -> None:
    frame, meta = read_table(out / TABLE)
    ref = meta["drift_reference"]["latency_ms"]
    assert (frame["reference_ms"] > 0).all()
    for row in frame.itertuples():
        assert row.latency_ms == pytest.approx(row.raw_latency_ms * ref / row.reference_ms)


def test_two_local_workers_each_time_their_own_drift_reference(tmp_path, archs, serial_keys):
    out = tmp_path / "local-drift"
    extra = ("--executor", "local", "--workers", "2", "--chunk-size", "2", "--drift-correct")
    assert build.main(build_args(archs, out, *extra)) == 0
    assert table_keys(out) == serial_keys
    drift_rows_are_corrected(out)


@pytest.mark.ray
def test_ray_workers_time_the_drift_reference_too(tmp_path, archs, serial_keys, local_ray):
    out = tmp_path / "ray-drift"
    extra = ("--executor", "ray", "--workers", "2", "--chunk-size", "2", "--drift-correct")
    assert build.main(build_args(archs, out, *extra)) == 0
    assert table_keys(out) == serial_keys
    drift_rows_are_corrected(out)


def test_a_worker_without_a_drift_reference_times_the_default_one_as_a_speed_probe():
    from kernels_bench.backends import get_backend
    from kernels_bench.measure import DEFAULT_DRIFT_REFERENCE
    from kernels_bench.timing import TimingSettings

    with get_backend("onnxruntime", device="cpu", threads=1) as backend:
        worker = KeyWorker(backend, "onnxruntime", TimingSettings(repeats=3, warmup_runs=1, warmup_min_ms=0))
        entry = worker.reference(1, "fp32")
        worker.close()
    assert entry["key"] == DEFAULT_DRIFT_REFERENCE and entry["latency_ms"] > 0 and entry["n_samples"] == 9
    assert worker.drift_reference is None  # a probe corrects nothing
