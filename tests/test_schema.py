"""Specification of the Parquet table schema, its metadata and its error messages."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tables.key import BlockKey
from tables.paths import table_filename
from tables.schema import (
    METADATA_KEY,
    SCHEMA_VERSION,
    arrow_schema,
    build_metadata,
    read_metadata,
    read_table,
    result_row,
    rows_to_arrow,
    validate_metadata,
    write_table,
)
from tables.settings import settings_id

KEY = BlockKey("irb", 64, 40, 40, 128, 5, 2, 6, True, "swish")


def timing(ms: float = 2.0) -> SimpleNamespace:
    return SimpleNamespace(
        samples_ms=[ms - 0.1, ms, ms + 0.1],
        trimmed_mean_ms=ms,
        median_ms=ms,
        min_ms=ms - 0.1,
        max_ms=ms + 0.1,
        std_ms=0.1,
        cv=0.05,
        inner_loop=4,
        warmup_runs=10,
        settings={"repeats": 3},
        phases={"export_s": 0.5, "compile_s": 1.5, "warmup_s": 0.2, "timed_s": 0.1},
    )


def metadata(**changes):
    md = build_metadata(
        device_profile="v100",
        backend="tensorrt",
        precision="fp16",
        batch=64,
        device={"name": "Tesla V100-SXM2-16GB", "driver": "535.104", "cuda": "12.2", "compute_capability": "7.0"},
        engine={"name": "tensorrt", "version": "10.0.1"},
        timing={"repeats": 30, "warmup": 10},
        floor={"latency_ms": 0.01},
        opset=17,
        source={"space": "gpunet"},
    )
    md.update(changes)
    return md


def test_result_row_takes_statistics_samples_and_phases_from_a_timing_result():
    row = result_row(KEY, timing(2.0))
    assert row["key"] == "irb_i64x40x40_o128_k5_s2_e6_se1_swish"
    assert (row["block"], row["cin"], row["k"], row["e"], row["se"], row["act"]) == ("irb", 64, 5, 6.0, True, "swish")
    assert row["latency_ms"] == 2.0
    assert row["n_samples"] == 3 and row["samples_ms"] == [1.9, 2.0, 2.1]
    assert row["inner_loop"] == 4 and row["compile_s"] == 1.5
    assert row["status"] == "ok" and row["error"] is None


def test_failed_row_has_nan_statistics_no_samples_and_the_error_text():
    row = result_row(str(KEY), error=RuntimeError("out of memory"))
    assert row["status"] == "failed"
    assert row["error"] == "RuntimeError: out of memory"
    assert math.isnan(row["latency_ms"]) and row["samples_ms"] == [] and row["n_samples"] == 0


def test_schema_types_key_columns():
    schema = arrow_schema()
    assert schema.field("cin").type == pa.int32()
    assert schema.field("e").type == pa.float64()
    assert schema.field("se").type == pa.bool_()
    assert schema.field("pad").type == pa.string() and not schema.field("pad").nullable
    assert schema.field("samples_ms").type == pa.list_(pa.float64())
    assert schema.field("measured_at").type == pa.timestamp("us", tz="UTC")


def test_round_trip_keeps_rows_and_metadata(tmp_path):
    path = write_table(
        [result_row(KEY, timing()), result_row("conv_i3x224x224_o32_k3_s2_e1_se0_swish", error="x")],
        tmp_path / "t.parquet",
        metadata(),
    )
    frame, md = read_table(path)
    assert list(frame["key"]) == [str(KEY), "conv_i3x224x224_o32_k3_s2_e1_se0_swish"]
    assert frame["samples_ms"][0] == [1.9, 2.0, 2.1]
    assert list(frame["status"]) == ["ok", "failed"]
    assert math.isnan(frame["latency_ms"][1])
    assert (
        md["device"]["name"] == "Tesla V100-SXM2-16GB" and md["batch"] == 64 and md["schema_version"] == SCHEMA_VERSION
    )


def test_metadata_is_plain_json_readable_with_pyarrow_alone(tmp_path):
    path = write_table([result_row(KEY, timing())], tmp_path / "t.parquet", metadata())
    doc = json.loads(pq.read_metadata(path).metadata[b"nas_latency"])
    assert doc["kind"] == "latency_table" and doc["precision"] == "fp16" and doc["floor"]["latency_ms"] == 0.01
    assert pq.read_table(path).column("latency_ms").to_pylist() == [2.0]


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "t.parquet"
    write_table([result_row(KEY, timing(1.0))], path, metadata())
    write_table([result_row(KEY, timing(3.0))], path, metadata())
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
    assert read_table(path)[0]["latency_ms"].tolist() == [3.0]


def test_validate_metadata_names_missing_fields():
    md = metadata()
    del md["precision"], md["batch"]
    with pytest.raises(ValueError, match="precision, batch"):
        validate_metadata(md)


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="latency table not found") as err:
        read_table(tmp_path / "nope.parquet")
    assert "\n" not in str(err.value)


def test_truncated_file_is_a_one_line_error(tmp_path):
    path = write_table([result_row(KEY, timing())], tmp_path / "t.parquet", metadata())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a Parquet file or truncated") as err:
        read_table(path)
    assert "\n" not in str(err.value)


def test_text_file_is_not_a_parquet_file(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_text("key,latency\n")
    with pytest.raises(ValueError, match="not a Parquet file or truncated"):
        read_table(path)


def test_parquet_file_without_our_metadata_is_refused(tmp_path):
    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(ValueError, match="without latency-table metadata"):
        read_table(path)


def test_other_schema_version_is_refused_with_both_versions_named(tmp_path):
    table = rows_to_arrow([result_row(KEY, timing())]).replace_schema_metadata(
        {METADATA_KEY: json.dumps(metadata(schema_version=4)).encode()}
    )
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"table schema version 4 is not supported by this version \(3\)"):
        read_table(tmp_path / "t.parquet")
    assert SCHEMA_VERSION == 3


def test_a_schema_1_table_still_loads_with_its_later_columns_filled_in(tmp_path):
    rows = [
        result_row(KEY, timing(2.0)),
        result_row(KEY.replace(cout=32), error=OSError(28, "No space left on device")),
    ]
    new = rows_to_arrow(rows)
    added = ["settings_id", "failure_kind", "raw_latency_ms", "reference_ms", "round_latency_ms", "pad"]
    old = new.drop_columns(added)
    md = metadata(schema_version=1)
    pq.write_table(old.replace_schema_metadata({METADATA_KEY: json.dumps(md).encode()}), tmp_path / "v1.parquet")
    frame, got = read_table(tmp_path / "v1.parquet")
    assert got["schema_version"] == 1
    assert frame["raw_latency_ms"][0] == 2.0 and math.isnan(frame["reference_ms"][0])
    assert list(frame["failure_kind"]) == [None, "transient"]  # read from the old error text
    assert set(frame["settings_id"]) == {settings_id(md)}
    assert list(frame["pad"]) == ["same", "same"]


def test_a_schema_2_table_loads_with_pad_same(tmp_path):
    rows = [result_row(KEY, timing(2.0)), result_row(KEY.replace(cout=32), timing(3.0))]
    old = rows_to_arrow(rows).drop_columns(["pad"])
    md = metadata(schema_version=2)
    pq.write_table(old.replace_schema_metadata({METADATA_KEY: json.dumps(md).encode()}), tmp_path / "v2.parquet")
    frame, got = read_table(tmp_path / "v2.parquet")
    assert got["schema_version"] == 2
    assert list(frame["pad"]) == ["same", "same"]
    assert list(frame["key"]) == [str(KEY), str(KEY.replace(cout=32))]  # the key strings of schema 2, unchanged
    assert list(frame.columns) == arrow_schema().names


def test_a_valid_padded_key_round_trips_through_a_table(tmp_path):
    key = BlockKey("fused_irb", 32, 160, 160, 64, 3, 2, 4, False, "swish", "valid")
    frame, _ = read_table(write_table([result_row(key, timing())], tmp_path / "t.parquet", metadata()))
    assert list(frame["key"]) == ["fused_irb_i32x160x160_o64_k3_s2_e4_se0_swish_pv"] and list(frame["pad"]) == ["valid"]


def test_a_row_whose_pad_disagrees_with_its_key_string_is_refused(tmp_path):
    key = BlockKey("fused_irb", 32, 160, 160, 64, 3, 2, 4, False, "swish", "valid")
    table = rows_to_arrow([result_row(key, timing())], metadata())
    pad = table.schema.get_field_index("pad")
    pq.write_table(table.set_column(pad, table.schema.field(pad), pa.array(["same"])), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="does not match its columns"):
        read_table(tmp_path / "t.parquet")


def test_every_row_carries_the_settings_id_of_its_table_unless_it_has_its_own(tmp_path):
    md = metadata()
    rows = [result_row(KEY, timing()), {**result_row(KEY.replace(cout=32), timing()), "settings_id": "aaaaaaaaaaaa"}]
    frame, _ = read_table(write_table(rows, tmp_path / "t.parquet", md))
    assert list(frame["settings_id"]) == [settings_id(md), "aaaaaaaaaaaa"]


def test_read_metadata_reads_only_the_footer(tmp_path):
    path = write_table([result_row(KEY, timing())], tmp_path / "t.parquet", metadata(extra_field="kept"))
    assert read_metadata(path)["extra_field"] == "kept"


def test_table_filename_is_predictable():
    assert table_filename("V100", "tensorrt", "fp16", 64) == "v100_tensorrt_fp16_b64.parquet"
    with pytest.raises(ValueError, match="batch"):
        table_filename("v100", "tensorrt", "fp16", 0)


# ----- drift correction --------------------------------------------------------


def test_row_without_a_drift_reference_has_raw_latency_equal_to_latency_and_no_reference():
    row = result_row(KEY, timing(2.0))
    assert row["raw_latency_ms"] == row["latency_ms"] == 2.0
    assert math.isnan(row["reference_ms"])


def test_row_with_a_drift_reference_is_brought_to_the_table_reference_speed():
    t = timing(2.0)
    t.reference_ms = 1.2  # the reference took 1.2 ms while the key was timed: 20% slower than its 1.0 ms
    row = result_row(KEY, t, reference_ms=1.0)
    assert row["raw_latency_ms"] == 2.0 and row["reference_ms"] == 1.2
    assert row["latency_ms"] == pytest.approx(2.0 / 1.2)
    assert row["median_ms"] == 2.0 and row["samples_ms"] == [1.9, 2.0, 2.1]  # statistics stay as measured


def test_apply_drift_correction_matches_result_row_and_leaves_failed_rows_alone():
    from tables.schema import apply_drift_correction

    t = timing(3.0)
    t.reference_ms = 0.8
    plain = result_row(KEY, t)
    assert plain["latency_ms"] == 3.0 and plain["reference_ms"] == 0.8
    corrected = apply_drift_correction(plain, 1.0)
    assert corrected["latency_ms"] == pytest.approx(result_row(KEY, t, reference_ms=1.0)["latency_ms"])
    assert corrected["latency_ms"] == pytest.approx(3.75) and plain["latency_ms"] == 3.0  # a copy
    failed = result_row(KEY, error="boom")
    assert apply_drift_correction(failed, 1.0) == failed


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), None, True])
def test_drift_corrected_refuses_non_positive_or_non_finite_figures(bad):
    from tables.schema import drift_corrected

    assert drift_corrected(2.0, 1.25, 1.0) == pytest.approx(1.6)
    with pytest.raises(ValueError, match="finite positive"):
        drift_corrected(2.0, bad, 1.0)
    with pytest.raises(ValueError, match="finite positive"):
        drift_corrected(2.0, 1.0, bad)


def test_a_table_written_before_the_drift_columns_reads_with_them_filled(tmp_path):
    path = write_table([result_row(KEY, timing(2.0))], tmp_path / "t.parquet", metadata())
    table = pq.read_table(path)
    old = table.drop_columns(["raw_latency_ms", "reference_ms"])
    pq.write_table(old, tmp_path / "old.parquet")
    frame, _ = read_table(tmp_path / "old.parquet")
    assert frame["raw_latency_ms"].tolist() == [2.0]
    assert frame["reference_ms"].isna().all()
    assert list(frame.columns) == arrow_schema().names
