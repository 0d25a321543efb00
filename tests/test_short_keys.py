"""Short keys measured in further rounds: which keys, the median kept, resume, identity, flags, dry run."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from fake_timing import constant_timing

import profiler.tablebuild as tablebuild
from kernels_bench.config import BackendConfig
from kernels_bench.timing import TimingSettings
from profiler import build
from profiler.devices import get_profile
from profiler.executors.base import Executor
from profiler.tablebuild import TableJob, build_command, build_table, short_keys
from tables.key import BlockKey
from tables.schema import floor_entry, read_table, result_row
from tables.settings import SettingsMismatch, describe, differences, settings_id, table_settings

A = BlockKey("conv", 8, 16, 16, 8, k=3, s=1)
B = BlockKey("conv", 8, 16, 16, 16, k=3, s=1)
C = BlockKey("conv", 16, 16, 16, 16, k=3, s=1)
TABLE = "cpu_onnxruntime_fp32_b1.parquet"


class Scripted(Executor):
    """Each call of a key returns its next scripted latency; ``stop_after`` calls raise KeyboardInterrupt."""

    name = "scripted"

    def __init__(self, script: dict[BlockKey, list[float]], stop_after: int | None = None) -> None:
        self.script = {str(k): list(v) for k, v in script.items()}
        self.calls: list[str] = []
        self.stop_after = stop_after

    def start(self, precisions: Sequence[str]) -> dict[str, Any]:
        return {"environment": {"engine": "onnxruntime", "engine_version": "1.0"}, "settings": {}, "opset": 17}

    def floor(self, shape: Sequence[int], batch: int, precision: str) -> dict[str, Any]:
        return floor_entry(constant_timing(0.01), shape)

    def reference(self, batch: int, precision: str) -> dict[str, Any]:
        raise AssertionError("no drift reference in these tests")

    def measure(self, keys: Sequence[str], batch: int, precision: str) -> Iterator[list[dict[str, Any]]]:
        for key in keys:
            if self.stop_after is not None and len(self.calls) >= self.stop_after:
                raise KeyboardInterrupt
            self.calls.append(key)
            yield [result_row(key, constant_timing(self.script[key].pop(0)))]

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def no_peaks(monkeypatch):
    monkeypatch.setattr(tablebuild, "peaks_or_warn", lambda job: None)


def job_for(tmp_path: Path, **changes: Any) -> TableJob:
    job = TableJob(
        profile=get_profile("cpu"),
        config=BackendConfig(backend="onnxruntime", device="cpu"),
        precision="fp32",
        batch=1,
        timing=TimingSettings(repeats=3),
        keys=(A, B, C),
        out_dir=tmp_path,
        table_name=TABLE,
        order_seed=None,
        progress=False,
        speed_probe=False,
        short_rounds=3,
    )
    return job.replace(**changes)


def rows_by_key(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    frame, md = read_table(path)
    return {row["key"]: row for row in frame.to_dict("records")}, md


def test_short_keys_get_further_rounds_and_the_table_keeps_each_ones_median(tmp_path):
    executor = Scripted({A: [1.0, 1.5, 1.1], B: [0.5, 0.4, 0.9], C: [5.0]})
    outcome = build_table(job_for(tmp_path), executor, executor.start(["fp32"]))
    # every key once, then the two short ones (under 2 ms in the first round) in each further round
    assert executor.calls == [str(A), str(B), str(C), str(A), str(B), str(A), str(B)]
    assert outcome.measured == 7 and not outcome.failures
    rows, md = rows_by_key(outcome.path)
    assert rows[str(A)]["latency_ms"] == pytest.approx(1.1)
    assert rows[str(B)]["latency_ms"] == pytest.approx(0.5)
    assert list(rows[str(A)]["round_latency_ms"]) == pytest.approx([1.0, 1.5, 1.1])
    assert rows[str(C)]["latency_ms"] == pytest.approx(5.0)
    assert list(rows[str(C)]["round_latency_ms"]) == pytest.approx([5.0])
    assert md["short_keys"] == {"rounds": 3, "below_ms": 2.0} and md["rounds"] == 1


def test_the_threshold_decides_which_keys_are_short(tmp_path):
    executor = Scripted({A: [1.0], B: [0.5, 0.6], C: [5.0]})
    build_table(job_for(tmp_path, short_rounds=2, short_below_ms=0.8), executor, executor.start(["fp32"]))
    assert executor.calls == [str(A), str(B), str(C), str(B)]
    frame, _ = read_table(tmp_path / TABLE)
    assert short_keys(frame, 0.8) == {str(B)} and short_keys(frame.iloc[:0], 0.8) == set()


def test_an_interrupted_build_resumes_the_same_short_keys_and_measures_only_what_is_missing(tmp_path):
    script = {A: [1.0, 1.5, 1.1], B: [0.5, 0.4, 0.9], C: [5.0]}
    first = Scripted(script, stop_after=4)  # round 1 done, round 2 stopped after A
    with pytest.raises(KeyboardInterrupt):
        build_table(job_for(tmp_path), first, first.start(["fp32"]))
    again = Scripted({A: first.script[str(A)], B: first.script[str(B)], C: []})
    outcome = build_table(job_for(tmp_path), again, again.start(["fp32"]))
    assert again.calls == [str(B), str(A), str(B)]
    assert outcome.measured == 3
    rows, _ = rows_by_key(outcome.path)
    assert list(rows[str(A)]["round_latency_ms"]) == pytest.approx([1.0, 1.5, 1.1])
    assert list(rows[str(B)]["round_latency_ms"]) == pytest.approx([0.5, 0.4, 0.9])
    # run again: nothing left to measure, the same table
    third = Scripted({A: [], B: [], C: []})
    assert build_table(job_for(tmp_path), third, third.start(["fp32"])).measured == 0 and not third.calls


def test_resuming_with_another_short_key_setting_is_refused_in_words(tmp_path):
    executor = Scripted({A: [1.0, 1.5, 1.1], B: [0.5, 0.4, 0.9], C: [5.0]})
    build_table(job_for(tmp_path), executor, executor.start(["fp32"]))
    other = Scripted({A: [1.0], B: [1.0], C: [1.0]})
    with pytest.raises(SettingsMismatch, match="--short-rounds 3 vs 1"):
        build_table(job_for(tmp_path, short_rounds=1), other, other.start(["fp32"]))
    with pytest.raises(SettingsMismatch, match=r"--short-below 2\.0 vs 1\.0"):
        build_table(job_for(tmp_path, short_below_ms=1.0), other, other.start(["fp32"]))
    assert not other.calls


def test_short_keys_are_part_of_the_identity_and_older_ids_stay_as_they_were():
    base = {"device_profile": "cpu", "backend": "onnxruntime", "precision": "fp32", "batch": 1, "rounds": 1}
    assert "short rounds" not in table_settings(base)
    with_short = {**base, "short_keys": {"rounds": 3, "below_ms": 2.0}}
    assert settings_id(base) != settings_id(with_short)
    assert describe(differences(base, with_short)) == "--short-rounds 1 vs 3"
    assert differences(base, dict(base)) == []
    # no more rounds for the short keys than for every key: no short_keys entry at all
    assert job_for(Path("."), short_rounds=3, rounds=3).short_keys is None
    assert job_for(Path("."), short_rounds=3, rounds=2).stored_rounds == 3


def test_the_build_command_repeats_the_short_key_setting():
    md = {"device_profile": "cpu", "backend": "onnxruntime", "precision": "fp32", "batch": 1, "rounds": 1}
    short = {**md, "short_keys": {"rounds": 3, "below_ms": 2.0}}
    assert "--short-rounds 3 --short-below 2" in build_command(short, "a", "o")
    assert "--short-rounds 1" in build_command(md, "a", "o")  # a cpu table measured without: say so
    assert "--short-rounds" not in build_command({**md, "device_profile": "h100", "backend": "torch"}, "a", "o")


def test_the_cpu_profile_measures_short_keys_three_times_by_default_and_gpu_profiles_once():
    args = build.build_parser().parse_args(["--device", "cpu", "--batch", "1"])
    assert build.short_rounds(args, get_profile("cpu")) == 3
    assert build.short_rounds(args, get_profile("h100")) == 1
    given = build.build_parser().parse_args(["--device", "h100", "--batch", "1", "--short-rounds", "2"])
    assert build.short_rounds(given, get_profile("h100")) == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--short-rounds", "0"], "error: --short-rounds must be from 1 to 100, got 0: 1 measures short keys once"),
        (["--short-below", "0"], "error: --short-below must be a latency in ms from 0 to 1000, got 0"),
        (["--short-below", "nan"], "error: --short-below must be a latency in ms from 0 to 1000, got nan"),
    ],
)
def test_bad_short_key_flags_are_one_line(tmp_path, capsys, flags, message):
    assert build.main(["--device", "cpu", "--batch", "1", *flags, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == message


def test_the_dry_run_counts_the_short_keys_rounds(tmp_path, capsys):
    keys = [A, B, C]
    archs = tmp_path / "archs.json"
    archs.write_text(json.dumps({"architectures": [{"name": f"a{i}", "blocks": [str(k)]} for i, k in enumerate(keys)]}))
    argv = ["--device", "cpu", "--batch", "1", "--archs", str(archs), "--out", str(tmp_path), "--precision", "fp32"]
    assert build.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0 done (short keys' further rounds: 0+0 done), 3 to measure" in out
    assert "keys under 2 ms measured 3 times in all (0 known so far, up to 3 more once measured)" in out
    assert "plus at most" in out
    executor = Scripted({A: [1.0], B: [0.5], C: [5.0]}, stop_after=3)  # round 1 only
    with pytest.raises(KeyboardInterrupt):
        build_table(job_for(tmp_path), executor, executor.start(["fp32"]))
    assert build.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 done (short keys' further rounds: 0+0 done), 4 to measure" in out
    assert "(2 known so far)" in out and "plus at most" not in out


def many(n: int) -> list[BlockKey]:
    return [BlockKey("conv", 8 + 8 * (i % 6), 16, 16, 8 + 8 * (i // 6), k=3, s=1) for i in range(n)]


def test_the_further_rounds_are_mixed_into_the_build_minutes_apart_not_a_pass_at_its_end(tmp_path):
    keys = many(24)
    short = {str(k) for k in keys[::2]}
    script = {k: ([0.5, 0.7, 0.6] if str(k) in short else [5.0]) for k in keys}
    executor = Scripted(script)
    job = job_for(tmp_path, keys=tuple(keys), order_seed=3)
    outcome = build_table(job, executor, executor.start(["fp32"]))
    calls = executor.calls
    assert outcome.measured == len(calls) == 24 + 2 * 12
    assert all(calls.count(t) == (3 if t in short else 1) for t in map(str, keys))
    last_first = max(calls.index(str(k)) for k in keys)
    first_repeat = min(i for i, t in enumerate(calls) if calls[:i].count(t))
    assert first_repeat < last_first / 2  # the further rounds begin while the first is under way
    gaps = []
    for t in short:  # a short key's rounds are segments apart (2 keys of the first round a segment here)
        at = [i for i, c in enumerate(calls) if c == t]
        gaps += [b - a for a, b in pairwise(at)]
    assert min(gaps) >= 2 and sorted(gaps)[len(gaps) // 2] >= 4
    rows, _ = rows_by_key(outcome.path)
    assert all(rows[t]["latency_ms"] == pytest.approx(0.6) for t in short)
    # shuffled with the seed: the same build again measures in the same order
    again = Scripted({k: ([0.5, 0.7, 0.6] if str(k) in short else [5.0]) for k in keys})
    build_table(job.replace(out_dir=tmp_path / "again"), again, again.start(["fp32"]))
    assert again.calls == calls


def test_with_rounds_over_every_key_the_short_keys_rounds_join_the_last_one(tmp_path):
    keys = many(12)
    short = {str(k) for k in keys[:4]}
    script = {k: ([0.5, 0.6, 0.7] if str(k) in short else [5.0, 5.1]) for k in keys}
    executor = Scripted(script)
    job = job_for(tmp_path, keys=tuple(keys), rounds=2, short_rounds=3, order_seed=None)
    outcome = build_table(job, executor, executor.start(["fp32"]))
    calls = executor.calls
    assert calls[:12] == [str(k) for k in keys]  # round 1 over every key, alone
    assert sorted(calls[12:]) == sorted([str(k) for k in keys] + sorted(short))
    assert calls[-1] not in short or calls.count(calls[-1]) == 3
    rows, md = rows_by_key(outcome.path)
    assert md["short_keys"] == {"rounds": 3, "below_ms": 2.0} and md["rounds"] == 2
    assert all(len(rows[t]["round_latency_ms"]) == (3 if t in short else 2) for t in rows)
