"""Specification of crash-safe builds: parts, compaction, deduplication and the build lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from fake_timing import constant_timing

from tables.schema import build_metadata, read_table, result_row
from tables.store import BuildLock, BuildLockedError, PartStore, dedup_rows

NAME = "cpu_onnxruntime_fp32_b8.parquet"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def timing(ms: float) -> SimpleNamespace:
    return constant_timing(ms)


def key(c: int) -> str:
    return f"conv_i{c}x32x32_o16_k3_s1_e1_se0_relu"


def ok(c: int, ms: float, minutes: int = 0) -> dict:
    return result_row(key(c), timing(ms), measured_at=T0 + timedelta(minutes=minutes))


def failed(c: int, minutes: int = 0) -> dict:
    return result_row(key(c), error="boom", measured_at=T0 + timedelta(minutes=minutes))


def metadata(floor=None, **changes):
    md = build_metadata(device_profile="cpu", backend="onnxruntime", precision="fp32", batch=8, floor=floor)
    md.update(changes)
    return md


def test_each_append_writes_one_part_and_rows_are_readable(tmp_path):
    store = PartStore(tmp_path, NAME, metadata())
    store.append([ok(1, 1.0), ok(2, 2.0)])
    store.append([ok(3, 3.0)])
    assert len(store.part_paths()) == 2
    assert store.parts_dir == tmp_path / f"{NAME}.parts"
    assert dict(zip(store.rows()["key"], store.rows()["latency_ms"])) == {key(1): 1.0, key(2): 2.0, key(3): 3.0}


def test_a_file_is_read_once_until_it_changes_and_callers_cannot_change_what_is_kept(tmp_path, monkeypatch):
    import tables.store as store_module

    reads: list[str] = []
    real = store_module.read_table

    def counting(path, *args, **kwargs):
        reads.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(store_module, "read_table", counting)
    store = PartStore(tmp_path, NAME, metadata())
    store.append([ok(1, 1.0)])
    first = store.rows()
    first.loc[:, "latency_ms"] = -1.0  # a caller's change stays its own
    assert store.rows()["latency_ms"].tolist() == [1.0] and len(reads) == 1
    store.append([ok(2, 2.0)])
    assert sorted(store.rows()["latency_ms"].tolist()) == [1.0, 2.0] and len(reads) == 2  # only the new part
    store.compact()  # the table is a new file, the parts are gone
    reads.clear()
    assert sorted(store.rows()["latency_ms"].tolist()) == [1.0, 2.0] and reads == [NAME]
    assert sorted(store.rows()["latency_ms"].tolist()) == [1.0, 2.0] and reads == [NAME]


def test_done_keys_reports_status_and_can_leave_out_failed_keys(tmp_path):
    store = PartStore(tmp_path, NAME, metadata())
    store.append([ok(1, 1.0), failed(2)])
    assert store.done_keys() == {key(1): "ok", key(2): "failed"}
    assert store.done_keys(include_failed=False) == {key(1): "ok"}


def test_ok_row_beats_failed_row_even_when_older(tmp_path):
    store = PartStore(tmp_path, NAME, metadata())
    store.append([ok(1, 1.0, minutes=0)])
    store.append([failed(1, minutes=5)])
    assert store.done_keys() == {key(1): "ok"}


def test_newer_ok_row_beats_older_ok_row():
    import pandas as pd

    frame = pd.DataFrame([ok(1, 5.0, minutes=9), ok(1, 1.0, minutes=0)])
    assert dedup_rows(frame)["latency_ms"].tolist() == [5.0]


def test_compaction_writes_the_table_with_one_row_per_key_and_removes_parts(tmp_path):
    store = PartStore(tmp_path, NAME, metadata())
    store.append([ok(1, 1.0), failed(2)])
    store.append([ok(2, 2.0, minutes=1), ok(1, 1.5, minutes=1)])
    path = store.compact()
    frame, md = read_table(path)
    assert path == tmp_path / NAME
    assert sorted(frame["key"]) == [key(1), key(2)]
    assert dict(zip(frame["key"], frame["status"])) == {key(1): "ok", key(2): "ok"}
    assert md["backend"] == "onnxruntime"
    assert not store.parts_dir.exists()


def test_later_appends_merge_with_the_compacted_table(tmp_path):
    store = PartStore(tmp_path, NAME, metadata())
    store.append([ok(1, 1.0)])
    store.compact()
    store.append([ok(2, 2.0)])
    assert store.done_keys() == {key(1): "ok", key(2): "ok"}
    assert len(read_table(store.compact())[0]) == 2


def test_crash_leftovers_recover_without_loss_or_duplicates(tmp_path):
    # a build killed mid-write leaves a partial temporary file and uncompacted parts;
    # one killed between writing the table and deleting parts leaves rows in both
    store = PartStore(tmp_path, NAME, metadata())
    store.append([ok(1, 1.0)])
    store.compact()
    store.append([ok(1, 1.0), ok(2, 2.0)])  # as if the parts outlived a compaction
    store.append([ok(3, 3.0)])
    tmp = store.parts_dir / ".part-00000000000000000001-999999-000001.parquet.999999.tmp"
    tmp.write_bytes(b"PAR1 half a part")

    resumed = PartStore(tmp_path, NAME, None)
    assert resumed.done_keys() == {key(1): "ok", key(2): "ok", key(3): "ok"}
    frame, _ = read_table(resumed.compact())
    assert sorted(frame["key"]) == [key(1), key(2), key(3)]
    assert not tmp.exists()


def test_many_parts_are_merged_into_one_part(tmp_path):
    store = PartStore(tmp_path, NAME, metadata(), max_parts=None)
    for c in range(1, 7):
        store.append([ok(c, float(c))])
    merged = store.compact_parts(max_parts=4)
    assert merged is not None and store.part_paths() == [merged]
    assert len(store.done_keys()) == 6
    assert store.compact_parts(max_parts=4) is None


def test_append_compacts_parts_past_the_limit(tmp_path):
    store = PartStore(tmp_path, NAME, metadata(), max_parts=3)
    for c in range(1, 6):
        store.append([ok(c, float(c))])
    assert len(store.part_paths()) <= 3
    assert len(store.done_keys()) == 5


def test_first_parts_metadata_is_kept_and_a_later_floor_is_added(tmp_path):
    PartStore(tmp_path, NAME, metadata(timing={"repeats": 30})).append([ok(1, 1.0)])
    later = PartStore(tmp_path, NAME, metadata(floor={"latency_ms": 0.02}, timing={"repeats": 30}))
    later.append([ok(2, 2.0)])
    _, md = read_table(later.compact())
    assert md["timing"] == {"repeats": 30}
    assert md["floor"] == {"latency_ms": 0.02}


def test_a_build_for_another_precision_is_refused(tmp_path):
    PartStore(tmp_path, NAME, metadata()).append([ok(1, 1.0)])
    with pytest.raises(ValueError, match="--precision fp32 vs fp16"):
        PartStore(tmp_path, NAME, metadata(precision="fp16"))


def test_a_build_with_other_timing_or_backend_settings_is_refused_naming_each_with_both_values(tmp_path):
    store = PartStore(tmp_path, NAME, metadata(timing={"repeats": 10}))
    store.append([ok(1, 1.0)])
    other = metadata(timing={"repeats": 20}, backend_settings={"backend": "onnxruntime", "threads": 2})
    with pytest.raises(ValueError) as err:
        PartStore(tmp_path, NAME, other)
    message = str(err.value)
    assert "--repeats 10 vs 20" in message and "--threads" in message and "--out" in message
    assert "\n" not in message
    assert len(read_table(store.compact())[0]) == 1  # nothing of the table was touched


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    path = tmp_path / f"{NAME}.lock"
    with BuildLock(path) as first:
        assert first.held
        with pytest.raises(BuildLockedError) as err:
            BuildLock(path).acquire()
    message = str(err.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "wait for it or remove the lock" in message and "\n" not in message
    assert not path.exists()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / f"{NAME}.lock"
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started_at": "2026-01-01"}))
    with BuildLock(path) as lock:
        assert lock.holder()["pid"] == os.getpid()


@pytest.mark.parametrize(
    "holder",
    [
        {"pid": 1, "host": "elsewhere", "started_at": "2026-01-01"},  # another host's leftover
        {"pid": 1, "host": socket.gethostname(), "started_at": "2026-01-01"},  # a live pid of another program
        {"pid": os.getppid(), "host": socket.gethostname(), "started_at": "2026-01-01"},  # a reused pid
    ],
)
def test_a_lock_file_that_no_live_process_holds_is_taken_over_whatever_it_says(tmp_path, holder):
    path = tmp_path / f"{NAME}.lock"
    path.write_text(json.dumps(holder))
    with BuildLock(path) as lock:
        assert lock.holder()["pid"] == os.getpid()


def test_a_lock_held_by_a_live_process_is_refused_and_free_once_it_is_killed(tmp_path):
    import signal

    path = tmp_path / f"{NAME}.lock"
    code = (
        "import sys, time; from tables.store import BuildLock\n"
        f"lock = BuildLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(BuildLockedError, match=f"pid {child.pid}"):
            BuildLock(path).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with BuildLock(path) as lock:  # the kernel dropped the dead holder's lock; its file is still there
        assert lock.held


def test_an_unreadable_part_is_skipped_with_a_warning_and_set_aside_at_compaction(tmp_path):
    store = PartStore(tmp_path, NAME, metadata())
    store.append([ok(1, 1.0)])
    bad = store.append([ok(2, 2.0)])
    bad.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ignoring unreadable part"):
        assert store.done_keys() == {key(1): "ok"}
    with pytest.warns(UserWarning):
        store.compact()
    assert bad.with_name(bad.name + ".corrupt").exists()
    assert read_table(tmp_path / NAME)[0]["key"].tolist() == [key(1)]


def test_compaction_can_update_metadata_fields_but_not_the_tables_identity(tmp_path):
    store = PartStore(tmp_path, NAME, metadata())
    store.append([ok(1, 1.0)])
    path = store.compact({"drift_reference": {"key": "k", "latency_ms": 1.0, "during_build": {"n": 1}}})
    _, md = read_table(path)
    assert md["drift_reference"]["during_build"] == {"n": 1}
    with pytest.raises(ValueError, match="identity"):
        store.compact({"batch": 4})
    assert read_table(path)[1]["batch"] == 8


def test_combine_rounds_keeps_the_median_of_each_keys_rounds_and_pools_their_samples():
    import pandas as pd

    from tables.store import combine_rounds

    def row(c, ms, minutes, reference=None, samples=None):
        r = ok(c, ms, minutes)
        r["samples_ms"] = samples or [ms, ms]
        r["n_samples"] = len(r["samples_ms"])
        r["reference_ms"] = reference
        r["timed_s"] = 0.5
        return r

    rounds = [
        pd.DataFrame([row(1, 1.0, 0, 2.0, [1.0, 1.5]), row(2, 5.0, 1), failed(3, 2)]),
        pd.DataFrame([row(1, 3.0, 10, 4.0, [3.0]), failed(2, 11), failed(3, 12)]),
        pd.DataFrame([row(1, 2.0, 20, 3.0, [2.0, 2.5])]),
    ]
    combined = combine_rounds(rounds).set_index("key")
    one = combined.loc[key(1)]
    assert one["status"] == "ok" and list(one["round_latency_ms"]) == [1.0, 3.0, 2.0]
    assert one["latency_ms"] == 2.0 and one["reference_ms"] == 3.0
    assert list(one["samples_ms"]) == [1.0, 1.5, 3.0, 2.0, 2.5] and one["n_samples"] == 5
    assert (one["min_ms"], one["max_ms"], one["median_ms"]) == (1.0, 3.0, 2.0)
    assert one["timed_s"] == pytest.approx(1.5)
    assert one["measured_at"] == T0 + timedelta(minutes=20)
    # an ok round beats failed ones; a key that failed in every round keeps its newest failed row
    two = combined.loc[key(2)]
    assert two["status"] == "ok" and list(two["round_latency_ms"]) == [5.0] and two["latency_ms"] == 5.0
    three = combined.loc[key(3)]
    assert three["status"] == "failed" and three["measured_at"] == T0 + timedelta(minutes=12)
    assert list(combined.index) == sorted(combined.index)
    assert combine_rounds([]).empty
