"""`python -m profiler.merge`: shards, tables and part folders into one table; refusals, duplicates, conflicts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from quick import quick_flags

from profiler import build, merge
from tables.key import BlockKey
from tables.schema import build_metadata, read_table, result_row, write_table
from tables.store import PartStore

FAST = quick_flags(3)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def tiny_keys(n: int) -> list[BlockKey]:
    return list(
        dict.fromkeys(
            BlockKey("irb", 8, 16, 16, 8 + 8 * (i % 4), k=3 if i % 2 else 5, s=1 + (i // 4) % 2, e=2 + i // 8)
            for i in range(n)
        )
    )


def write_archs(path: Path, keys: list[BlockKey]) -> Path:
    path.write_text(json.dumps({"architectures": [{"name": f"a{i}", "blocks": [str(k)]} for i, k in enumerate(keys)]}))
    return path


def timing(ms: float, cv: float) -> SimpleNamespace:
    return SimpleNamespace(
        samples_ms=[ms] * 5, trimmed_mean_ms=ms, median_ms=ms, min_ms=ms, max_ms=ms, std_ms=ms * cv, cv=cv,
        inner_loop=1, warmup_runs=1, phases={"export_s": 0.1, "compile_s": 0.1, "warmup_s": 0.01, "timed_s": 0.01},
    )  # fmt: skip


def metadata(precision: str = "fp32", **extra) -> dict:
    extra.setdefault("backend_settings", {"backend": "onnxruntime", "device": "cpu", "threads": 1})
    extra.setdefault("opset", 17)
    return build_metadata(
        device_profile="cpu",
        backend="onnxruntime",
        precision=precision,
        batch=1,
        engine={"name": "onnxruntime", "version": "1.20.0"},
        **extra,
    )


def table(path: Path, rows: list[dict], precision: str = "fp32", **extra) -> Path:
    return write_table(rows, path, metadata(precision, **extra))


KEYS = [str(k) for k in tiny_keys(12)]


def ok(key: str, ms: float, cv: float = 0.01, minutes: int = 0) -> dict:
    return result_row(key, timing(ms, cv), measured_at=T0 + timedelta(minutes=minutes))


def failed(key: str, minutes: int = 0) -> dict:
    return result_row(key, error="RuntimeError: no kernel", measured_at=T0 + timedelta(minutes=minutes))


def test_four_shards_merged_hold_exactly_the_keys_of_one_unsharded_build(tmp_path, capsys):
    keys = tiny_keys(10)
    archs = write_archs(tmp_path / "archs.json", keys)
    common = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), *FAST]
    assert build.main([*common, "--out", str(tmp_path / "whole")]) == 0
    for i in range(1, 5):
        assert build.main([*common, "--out", str(tmp_path / "shards"), "--shard", f"{i}/4"]) == 0
    shards = sorted((tmp_path / "shards").glob("*.shard-*-of-4.parquet"))
    assert [p.name for p in shards] == [f"cpu_onnxruntime_fp32_b1.shard-{i}-of-4.parquet" for i in range(1, 5)]
    for i, path in enumerate(shards, start=1):
        assert read_table(path)[1]["shard"]["index"] == i
    out = tmp_path / "merged.parquet"
    assert merge.main([*map(str, shards), "--out", str(out)]) == 0
    merged, md = read_table(out)
    whole, _ = read_table(tmp_path / "whole" / "cpu_onnxruntime_fp32_b1.parquet")
    assert sorted(merged["key"]) == sorted(whole["key"]) == sorted(str(k) for k in keys)
    assert not merged["key"].duplicated().any()
    assert "shard" not in md and len(md["merged_from"]) == 4
    assert md["floor"] is not None
    assert "0 keys appeared more than once" in capsys.readouterr().out


def test_tables_of_different_precision_are_refused_in_one_line(tmp_path, capsys):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0)], "fp32")
    b = table(tmp_path / "b.parquet", [ok(KEYS[1], 1.0)], "int8")
    out = tmp_path / "m.parquet"
    assert merge.main([str(a), str(b), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "precision" in err[0] and "--force" in err[0]
    assert not out.exists()


def test_force_merges_tables_of_different_precision_and_records_it(tmp_path, capsys):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0)], "fp32")
    b = table(tmp_path / "b.parquet", [ok(KEYS[1], 1.0)], "int8")
    out = tmp_path / "m.parquet"
    assert merge.main([str(a), str(b), "--out", str(out), "--force"]) == 0
    frame, md = read_table(out)
    assert sorted(frame["key"]) == sorted(KEYS[:2])
    assert md["merge_forced"] and "precision" in md["merge_forced"][0]
    assert "precision" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("engine", {"name": "onnxruntime", "version": "1.19.0"}),
        ("batch", 8),
        ("backend", "torch"),
        ("device_profile", "v100"),
    ],
)
def test_tables_of_another_engine_version_batch_backend_or_device_are_refused(tmp_path, field, other):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0)])
    md = metadata()
    md[field] = other
    b = write_table([ok(KEYS[1], 1.0)], tmp_path / "b.parquet", md)
    with pytest.raises(merge.MergeRefused):
        merge.merge_sources([merge.load_source(a), merge.load_source(b)])


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("backend_settings", {"backend": "onnxruntime", "device": "cpu", "threads": 8}, "--threads 1 vs 8"),
        ("backend_settings", {"backend": "onnxruntime", "device": "cpu", "threads": 1, "cpus": [3]}, "--cpus"),
        ("timing", {"repeats": 20, "trim": 0.2}, "--repeats"),
        ("opset", 13, "opset 17 vs 13"),
        ("rounds", 3, "--rounds 1 vs 3"),
    ],
)
def test_tables_measured_with_other_backend_or_timing_settings_are_refused_naming_both_values(
    tmp_path, capsys, field, value, named
):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0)])
    md = metadata()
    md[field] = value
    b = write_table([ok(KEYS[1], 1.0)], tmp_path / "b.parquet", md)
    assert merge.main([str(a), str(b), "--out", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "--force" in err[0]


def test_a_forced_merge_keeps_each_rows_settings_so_the_mix_stays_visible(tmp_path):
    from tables.settings import settings_id

    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0)])
    md = metadata()
    md["backend_settings"] = {"backend": "onnxruntime", "device": "cpu", "threads": 8}
    b = write_table([ok(KEYS[1], 1.0)], tmp_path / "b.parquet", md)
    out = tmp_path / "m.parquet"
    assert merge.main([str(a), str(b), "--out", str(out), "--force"]) == 0
    frame, merged = read_table(out)
    ids = dict(zip(frame["key"], frame["settings_id"]))
    assert ids[KEYS[0]] == settings_id(read_table(a)[1]) and ids[KEYS[1]] == settings_id(md)
    assert set(merged["settings_by_id"]) == set(ids.values())
    assert merged["settings_by_id"][ids[KEYS[1]]]["backend.threads"] == 8


def test_an_input_with_a_nan_or_negative_ok_row_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tables.schema import rows_to_arrow

    good = rows_to_arrow([ok(KEYS[1], 1.0)], metadata())
    for bad_value in (float("nan"), -1.0):
        frame = good.to_pandas()
        frame.loc[0, "latency_ms"] = bad_value
        path = tmp_path / "bad.parquet"
        bad = pa.Table.from_pandas(frame, schema=good.schema, preserve_index=False)
        pq.write_table(bad.replace_schema_metadata(good.schema.metadata), path)
        a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0)])
        with pytest.raises(ValueError, match="not a finite positive number"):
            merge.merge_sources([merge.load_source(a), merge.load_source(path)])


def test_an_ok_row_beats_a_failed_one_whatever_the_order(tmp_path):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0, minutes=0)])
    b = table(tmp_path / "b.parquet", [failed(KEYS[0], minutes=5)])
    frame, _, report = merge.merge_sources([merge.load_source(b), merge.load_source(a)])
    assert len(frame) == 1 and frame.loc[0, "status"] == "ok"
    assert report.duplicated_keys == 1 and not report.conflicts
    assert report.reasons == {"an ok row beats a failed one": 1}


def test_duplicates_within_the_noise_are_not_conflicts_and_the_lower_cv_is_kept(tmp_path):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.00, cv=0.04)])
    b = table(tmp_path / "b.parquet", [ok(KEYS[0], 1.03, cv=0.01)])
    frame, _, report = merge.merge_sources([merge.load_source(a), merge.load_source(b)])
    assert frame.loc[0, "latency_ms"] == pytest.approx(1.03)
    assert report.duplicated_keys == 1 and report.conflicts == []


def test_a_conflicting_duplicate_is_reported_with_the_row_kept_and_why(tmp_path, capsys):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0, cv=0.01)])
    b = table(tmp_path / "b.parquet", [ok(KEYS[0], 1.5, cv=0.02)])
    out = tmp_path / "m.parquet"
    assert merge.main([str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 of them conflicting" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("conflict"))
    assert KEYS[0] in line and "kept 1 ms" in line and str(a) in line and "lowest cv" in line
    assert read_table(out)[0].loc[0, "latency_ms"] == pytest.approx(1.0)


def test_the_conflict_tolerance_is_three_combined_cvs_but_at_least_five_percent():
    assert merge.conflict_tolerance(0.001, 0.001) == pytest.approx(0.05)
    assert merge.conflict_tolerance(0.03, 0.04) == pytest.approx(0.15)


def test_more_than_ten_conflicts_print_ten_lines_and_a_count(tmp_path, capsys):
    a = table(tmp_path / "a.parquet", [ok(k, 1.0) for k in KEYS])
    b = table(tmp_path / "b.parquet", [ok(k, 2.0) for k in KEYS])
    assert merge.main([str(a), str(b), "--out", str(tmp_path / "m.parquet")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(ln.strip().startswith("conflict") for ln in lines) == 10
    assert any(f"and {len(KEYS) - 10} more conflicts" in ln for ln in lines)


def test_a_part_folder_of_an_unfinished_build_merges_with_a_table(tmp_path):
    store = PartStore(tmp_path / "run2", "cpu_onnxruntime_fp32_b1.parquet", metadata())
    store.append([ok(KEYS[1], 1.0)])
    store.append([ok(KEYS[2], 1.0)])
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0)])
    out = tmp_path / "m.parquet"
    assert merge.main([str(a), str(store.parts_dir), "--out", str(out)]) == 0
    assert sorted(read_table(out)[0]["key"]) == sorted(KEYS[:3])
    assert pq.read_metadata(out).metadata[b"nas_latency"]  # stored as JSON metadata, not pickled


def test_an_existing_output_that_is_not_an_input_is_refused(tmp_path, capsys):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0)])
    out = table(tmp_path / "m.parquet", [ok(KEYS[1], 1.0)])
    assert merge.main([str(a), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert merge.main([str(a), str(out), "--out", str(out)]) == 0
    assert sorted(read_table(out)[0]["key"]) == sorted(KEYS[:2])


def test_a_missing_input_is_one_line(tmp_path, capsys):
    assert merge.main([str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.parquet" in err[0]


# ----- drift reference ---------------------------------------------------------


REF = "irb_i64x28x28_o64_k3_s1_e4_se1_swish"


def drift(ms: float, key: str = REF) -> dict:
    return {"key": key, "ratio": 1.0, "latency_ms": ms}


def test_a_drift_corrected_table_and_an_uncorrected_one_are_refused(tmp_path):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 1.0)], drift_reference=drift(1.0))
    b = table(tmp_path / "b.parquet", [ok(KEYS[1], 1.0)])
    with pytest.raises(merge.MergeRefused, match=r"drift.reference"):
        merge.merge_sources([merge.load_source(a), merge.load_source(b)])
    other = drift(1.0, "conv_i8x8x8_o8_k3_s1_e1_se0_relu")
    c = table(tmp_path / "c.parquet", [ok(KEYS[1], 1.0)], drift_reference=other)
    with pytest.raises(merge.MergeRefused, match=r"drift.reference"):
        merge.merge_sources([merge.load_source(a), merge.load_source(c)])


def test_shards_with_their_own_reference_speed_are_brought_to_the_first_inputs(tmp_path, capsys):
    a = table(tmp_path / "a.parquet", [ok(KEYS[0], 2.0)], drift_reference=drift(1.0))
    b = table(tmp_path / "b.parquet", [ok(KEYS[1], 3.0)], drift_reference=drift(1.2))  # a 20% slower reference state
    out = tmp_path / "m.parquet"
    assert merge.main([str(a), str(b), "--out", str(out)]) == 0
    frame, md = read_table(out)
    latency = dict(zip(frame["key"], frame["latency_ms"]))
    assert latency[KEYS[0]] == 2.0
    assert latency[KEYS[1]] == pytest.approx(3.0 / 1.2)
    assert md["drift_reference"]["latency_ms"] == 1.0
    assert len(md["merge_rescaled"]) == 1 and "b.parquet" in md["merge_rescaled"][0]
    assert "brought to the first input's drift reference speed" in capsys.readouterr().out
