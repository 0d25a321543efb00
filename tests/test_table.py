"""Specification of LatencyTable: loading, identity checks, lookups, coverage and validation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from fake_timing import constant_timing

from tables.calibration import Calibration
from tables.key import BlockKey
from tables.paths import calibration_path
from tables.schema import build_metadata, result_row, rows_to_arrow, write_table
from tables.settings import settings_id
from tables.store import PartStore
from tables.table import LatencyTable, MissingKeysError

NAME = "v100_tensorrt_fp16_b64.parquet"
A = BlockKey("conv", 3, 64, 64, 16, 3, 2, act="swish")
B = BlockKey("irb", 16, 32, 32, 24, 3, 2, 4, True, "swish")
C = BlockKey("irb", 24, 16, 16, 24, 5, 1, 4, False, "swish")
D = BlockKey("tail", 24, 16, 16, 1280, 1)


def timing(ms: float) -> SimpleNamespace:
    return constant_timing(ms)


def metadata(**changes):
    md = build_metadata(
        device_profile="v100",
        backend="tensorrt",
        precision="fp16",
        batch=64,
        device={"name": "Tesla V100-SXM2-16GB"},
        floor={"latency_ms": 0.05},
    )
    md.update(changes)
    return md


@pytest.fixture
def table_path(tmp_path):
    rows = [
        result_row(A, timing(0.5)),
        result_row(B, timing(1.25)),
        result_row(C, timing(2.0)),
        result_row(D, error="engine build failed"),
    ]
    return write_table(rows, tmp_path / NAME, metadata())


def test_lookup_by_key_or_string_in_ms_per_batch(table_path):
    table = LatencyTable.load(table_path)
    assert table.lookup(B) == 1.25
    assert table.lookup(str(C)) == 2.0
    assert table.lookup("irb_i16x32x32_o24_k3_s2_e4.0_se1_swish") == 1.25  # non-canonical ratio text


def test_contains_and_len_count_only_usable_keys(table_path):
    table = LatencyTable.load(table_path)
    assert A in table and str(B) in table
    assert D not in table  # failed when measured
    assert len(table) == 3


def test_missing_key_lookup_names_the_key_and_the_build_command(table_path):
    table = LatencyTable.load(table_path)
    with pytest.raises(MissingKeysError) as err:
        table.lookup(D)
    assert isinstance(err.value, KeyError)
    assert str(D) in str(err.value) and "python -m profiler.build --archs FILE --device v100" in str(err.value)


def test_metadata_properties(table_path):
    table = LatencyTable.load(table_path)
    assert (table.device, table.backend, table.precision, table.batch) == ("v100", "tensorrt", "fp16", 64)
    assert table.floor_ms == 0.05
    assert table.device_info["name"] == "Tesla V100-SXM2-16GB"


def test_expected_device_precision_batch_and_backend_are_checked(table_path):
    LatencyTable.load(
        table_path, expect_device="V100", expect_precision="fp16", expect_batch=64, expect_backend="tensorrt"
    )
    LatencyTable.load(table_path, expect_device="Tesla V100-SXM2-16GB")
    with pytest.raises(ValueError, match="built for device 'v100', not 'a100'"):
        LatencyTable.load(table_path, expect_device="a100")
    with pytest.raises(ValueError, match="built for precision 'fp16', not 'int8'"):
        LatencyTable.load(table_path, expect_precision="int8")
    with pytest.raises(ValueError, match="built for batch 64, not 1"):
        LatencyTable.load(table_path, expect_batch=1)


def test_vectorized_view_aligns_keys_and_latencies(table_path):
    table = LatencyTable.load(table_path)
    idx = table.indices([C, A])
    assert table.latency_array[idx].tolist() == [2.0, 0.5]
    assert table.keys[table.key_index[str(B)]] == str(B)
    assert table.indices([A, D], missing="ignore").tolist() == [table.key_index[str(A)], -1]
    with pytest.raises(ValueError):
        table.latency_array[0] = 1.0


def test_coverage_of_keys_and_architectures(table_path):
    table = LatencyTable.load(table_path)
    report = table.coverage([[A, B], SimpleNamespace(keys=(A, C, D))])
    assert (report.n_total, report.n_present, report.missing) == (4, 3, [D])
    assert not report.complete and math.isclose(report.fraction, 0.75)


def test_validate_lists_failed_keys_and_raises_on_request(table_path):
    table = LatencyTable.load(table_path)
    report = table.validate()
    assert report.failed_keys == {str(D): "engine build failed"}
    assert report.duplicate_keys == [] and report.bad_latency_keys == []
    with pytest.raises(ValueError, match="1 failed"):
        table.validate(raise_on_error=True)


def test_validate_reports_duplicates_and_non_positive_latencies(tmp_path):
    rows = [result_row(A, timing(0.5)), result_row(A, timing(0.6)), {**result_row(B, timing(0.5)), "latency_ms": 0.0}]
    frame = rows_to_arrow(rows).to_pandas()
    table = LatencyTable(frame, metadata(), duplicate_keys=[str(A)])
    report = table.validate()
    assert report.duplicate_keys == [str(A)]
    assert report.bad_latency_keys == [str(B)]
    assert B not in table


def test_a_timing_without_a_usable_latency_is_stored_as_a_failed_key():
    row = result_row(B, timing(0.0))
    assert row["status"] == "failed" and "no usable latency" in row["error"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latency_ms": float("nan")}, "latency_ms is not a finite positive number"),
        ({"latency_ms": -1.0}, "latency_ms is not a finite positive number"),
        ({"latency_ms": float("inf")}, "latency_ms is not a finite positive number"),
        ({"key": "irb_i16x32x32_o24_k3_s2_e4_se1_relu"}, "does not match its columns"),
        ({"key": "not a key"}, "does not match its columns"),
        ({"block": "lstm"}, "unknown block type"),
        ({"status": "maybe"}, "status other than ok or failed"),
    ],
)
def test_a_file_with_a_row_this_tool_never_writes_is_refused_in_one_line(tmp_path, change, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = rows_to_arrow([result_row(A, timing(0.5)), result_row(B, timing(0.5))], metadata())
    frame = good.to_pandas()
    for column, value in change.items():
        frame.loc[1, column] = value
    bad = pa.Table.from_pandas(frame, schema=good.schema, preserve_index=False)
    pq.write_table(bad.replace_schema_metadata(good.schema.metadata), tmp_path / NAME)
    with pytest.raises(ValueError, match=message) as err:
        LatencyTable.load(tmp_path / NAME)
    assert "\n" not in str(err.value) and "row 1" in str(err.value)


def test_a_latency_column_stored_as_text_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = rows_to_arrow([result_row(A, timing(0.5))], metadata())
    i = good.schema.get_field_index("latency_ms")
    bad = good.set_column(i, pa.field("latency_ms", pa.string()), pa.array(["0.5"]))
    pq.write_table(bad.replace_schema_metadata(good.schema.metadata), tmp_path / NAME)
    with pytest.raises(ValueError, match="column latency_ms is stored as string"):
        LatencyTable.load(tmp_path / NAME)


def test_folder_of_table_and_parts_loads_as_one_table(tmp_path):
    store = PartStore(tmp_path, NAME, metadata())
    store.append([result_row(A, timing(0.5))])
    store.compact()
    store.append([result_row(B, timing(1.0))])
    table = LatencyTable.load(tmp_path)
    assert len(table) == 2 and table.lookup(B) == 1.0


def test_folder_mixing_batches_is_refused(tmp_path):
    write_table([result_row(A, timing(0.5))], tmp_path / NAME, metadata())
    write_table([result_row(B, timing(0.5))], tmp_path / "v100_tensorrt_fp16_b1.parquet", metadata(batch=1))
    with pytest.raises(ValueError, match=r"batch 1 vs 64|batch 64 vs 1"):
        LatencyTable.load(tmp_path)


def linked(table_path) -> dict:
    """The ``table`` entry of a calibration fitted for the table at ``table_path``."""
    md = LatencyTable.load(table_path, calibration=False).metadata
    return {"device_profile": "v100", "batch": 64, "settings_id": settings_id(md)}


def test_calibration_next_to_the_table_is_loaded(table_path):
    Calibration("linear", a=1.0, b=0.5, table=linked(table_path)).save(calibration_path(table_path))
    assert LatencyTable.load(table_path).calibration.b == 0.5
    assert LatencyTable.load(table_path, calibration=False).calibration is None


def test_a_calibration_file_without_a_link_to_its_table_is_refused(table_path):
    Calibration("linear", a=1.0, b=0.5, table={"device_profile": "v100", "batch": 64}).save(
        calibration_path(table_path)
    )
    with pytest.raises(ValueError, match="records no link to its table"):
        LatencyTable.load(table_path)


def test_a_calibration_of_a_table_rebuilt_with_other_settings_is_refused(table_path):
    Calibration("linear", a=1.0, b=0.5, table={**linked(table_path), "settings_id": "0123456789ab"}).save(
        calibration_path(table_path)
    )
    with pytest.raises(ValueError, match=r"belongs to another table.*settings 0123456789ab"):
        LatencyTable.load(table_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"a": float("nan")}, "a=nan is not a finite number"),
        ({"a": -1.0}, "outside the sane range"),
        ({"b": 1e12}, "outside the sane range"),
        ({"model": "per_type", "type_scales": {"irb": -2.0}}, "type_scales\\[irb\\]"),
        ({"model": "cubic"}, "unknown calibration model"),
        ({"type_scales": [1, 2]}, "type_scales must be a JSON object"),
        ({"n_fit": "many"}, "n_fit"),
    ],
)
def test_a_calibration_file_with_damaged_values_is_refused_in_one_line(table_path, change, message):
    import json

    doc = {**Calibration("linear", a=1.0, b=0.5, table=linked(table_path)).to_dict(), **change}
    calibration_path(table_path).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message) as err:
        LatencyTable.load(table_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"text"', "{not json", ""])
def test_a_calibration_file_that_is_not_a_calibration_document_is_a_one_line_value_error(table_path, content):
    calibration_path(table_path).write_text(content)
    with pytest.raises(ValueError) as err:
        LatencyTable.load(table_path)
    assert "\n" not in str(err.value) and "calibration" in str(err.value)


def test_a_calibration_path_that_is_a_folder_is_a_one_line_value_error(table_path):
    calibration_path(table_path).mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        LatencyTable.load(table_path)


def test_calibration_of_another_table_is_refused(table_path):
    Calibration("linear", table={"batch": 1}).save(calibration_path(table_path))
    with pytest.raises(ValueError, match="belongs to another table"):
        LatencyTable.load(table_path)


def test_to_frame_has_one_row_per_key(table_path):
    frame = LatencyTable.load(table_path).to_frame()
    assert sorted(frame["key"]) == sorted(str(k) for k in (A, B, C, D))
    assert np.isnan(frame.loc[frame["key"] == str(D), "latency_ms"]).all()
