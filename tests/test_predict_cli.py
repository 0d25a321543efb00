"""python -m profiler.predict and predict_model: whole models predicted from a table, refusals in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_onnx_map import HardSwishNet, MatMulHead, ResNet, export

from profiler import predict as cli
from profiler.nas import synthetic_table
from profiler.networks import get_network
from profiler.onnx_map import UnmappableModel
from tables.calibration import Calibration
from tables.key import parse_key
from tables.predictor import predict
from tables.schema import write_table
from tables.table import LatencyTable, MissingKeysError

SMALL_KEYS = ["conv_i3x32x32_o32_k3_s2_e1_se0_relu", "pool_fc_i32x16x16_o1000_k1_s1_e1_se0_relu"]


def table_file(path: Path, keys) -> Path:
    table = synthetic_table([parse_key(str(k)) for k in keys])
    return write_table(table.to_frame(), path, table.metadata)


@pytest.fixture()
def small(tmp_path) -> tuple[Path, Path]:
    """A table of the small model's keys and the model exported with torch."""
    torch.manual_seed(0)
    return table_file(tmp_path / "t.parquet", SMALL_KEYS), export(MatMulHead(), tmp_path / "small.onnx", (3, 32, 32))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_mapped_model_prints_calibrated_and_raw_ms_per_batch_and_per_image(small, capsys) -> None:
    table, model = small
    code, out, err = run(capsys, "--table", table, model)
    expected = predict(LatencyTable.load(table), SMALL_KEYS).ms_per_batch
    assert code == 0 and err == ""
    assert f"{expected:.4g} ms per batch" in out and "ms per image" in out and "raw block sum" in out
    assert SMALL_KEYS[0] in out and SMALL_KEYS[1] in out


def test_json_gives_both_predictions_and_the_per_block_breakdown(small, capsys) -> None:
    table, model = small
    code, out, _ = run(capsys, "--table", table, model, "--json")
    doc = json.loads(out)["models"][0]
    assert code == 0 and doc["mapped"] is True
    assert [b["key"] for b in doc["breakdown"]] == SMALL_KEYS
    assert doc["raw_ms_per_batch"] == pytest.approx(sum(b["latency_ms"] for b in doc["breakdown"]))
    assert doc["ms_per_image"] == pytest.approx(doc["ms_per_batch"] / doc["batch"])
    assert all(b["nodes"] for b in doc["breakdown"])


def test_an_unmappable_model_lists_its_nodes_and_exits_1_with_one_line(tmp_path, capsys) -> None:
    table = table_file(tmp_path / "t.parquet", SMALL_KEYS)
    model = export(HardSwishNet(), tmp_path / "hswish.onnx", (3, 64, 64))
    code, out, err = run(capsys, "--table", table, model)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "HardSwish" in out and "hard-swish" in err
    assert "ms per batch" not in out  # no partial sum


def test_keys_the_table_lacks_give_the_archs_file_and_the_build_command(small, tmp_path, capsys) -> None:
    _, model = small
    table = table_file(tmp_path / "partial.parquet", SMALL_KEYS[:1])
    code, _, err = run(capsys, "--table", table, model)
    archs = Path(f"{model}.missing_archs.json")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "python -m profiler.build" in err and "--archs" in err and str(archs) in err
    assert json.loads(archs.read_text())["architectures"][0]["blocks"] == [SMALL_KEYS[1]]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a model at all\n", "not an ONNX model"), (None, "truncated")],
    ids=["not-onnx", "truncated"],
)
def test_a_file_that_is_not_a_whole_onnx_model_exits_2_with_one_line(small, tmp_path, capsys, content, message) -> None:
    table, model = small
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content if content is not None else model.read_bytes()[:5000])
    code, out, err = run(capsys, "--table", table, bad)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err


def test_dynamic_spatial_sizes_exit_2_and_input_shape_fixes_them(tmp_path, capsys) -> None:
    table = table_file(tmp_path / "t.parquet", SMALL_KEYS)
    model = export(MatMulHead(), tmp_path / "dyn.onnx", (3, 32, 32), dynamic_axes={"image": {2: "h", 3: "w"}})
    code, _, err = run(capsys, "--table", table, model)
    assert code == 2 and "input 'image' has a dynamic height" in err and "--input-shape" in err
    assert run(capsys, "--table", table, model, "--input-shape", "3x32x32")[0] == 0


def test_a_model_of_another_batch_than_the_table_exits_2(tmp_path, capsys) -> None:
    table = table_file(tmp_path / "t.parquet", SMALL_KEYS)
    model = export(MatMulHead(), tmp_path / "b8.onnx", (3, 32, 32), batch=8)
    code, _, err = run(capsys, "--table", table, model)
    assert code == 2 and "batch 8" in err and "batch 1" in err


def test_a_missing_table_exits_2(small, tmp_path, capsys) -> None:
    code, _, err = run(capsys, "--table", tmp_path / "none.parquet", small[1])
    assert code == 2 and "latency table not found" in err


# --------------------------------------------------------------------------- Python
def test_predict_model_of_a_torch_module_is_predict_of_the_reference_keys() -> None:
    keys = list(get_network("resnet-18").keys)
    table = synthetic_table(keys)
    result = cli.predict_model(table, ResNet(), input_shape=(3, 224, 224))
    assert result.ms_per_batch == predict(table, keys).ms_per_batch and result.mapping.keys == keys


def test_predict_model_applies_the_calibration_and_keeps_the_raw_sum(small) -> None:
    table = LatencyTable.load(small[0])
    table.calibration = Calibration("linear", a=2.0, b=0.5)
    result = cli.predict_model(table, small[1])
    assert result.calibrated and result.ms_per_batch == pytest.approx(2.0 * result.raw_ms_per_batch + 0.5)


def test_predict_model_refuses_an_unmappable_model(tmp_path) -> None:
    model = export(HardSwishNet(), tmp_path / "hswish.onnx", (3, 64, 64))
    with pytest.raises(UnmappableModel):
        cli.predict_model(synthetic_table([parse_key(SMALL_KEYS[0])]), model)


def test_predict_model_raises_the_tables_missing_keys_error(small) -> None:
    with pytest.raises(MissingKeysError):
        cli.predict_model(synthetic_table([parse_key(SMALL_KEYS[0])]), small[1])


def test_estimate_missing_estimates_what_the_table_lacks_and_says_so(small, tmp_path, capsys) -> None:
    _, model = small
    # many measured keys of both block types of the model, but not the model's own pool_fc key
    keys = [f"conv_i3x{s}x{s}_o{c}_k3_s2_e1_se0_relu" for s in (16, 24, 32, 48, 64) for c in (16, 24, 32, 48)]
    keys += [f"pool_fc_i{c}x{s}x{s}_o1000_k1_s1_e1_se0_relu" for c in (16, 24, 48, 64) for s in (8, 12, 20)]
    table = table_file(tmp_path / "most.parquet", keys)
    code, _, err = run(capsys, "--table", table, model)
    assert code == 2 and "--estimate-missing" in err
    code, out, err = run(capsys, "--table", table, model, "--estimate-missing")
    assert code == 0 and err == ""
    assert "1 of 2 blocks estimated, not measured" in out and "90% interval" in out
    line = next(x for x in out.splitlines() if SMALL_KEYS[1] in x)
    assert "*" in line
    code, out, _ = run(capsys, "--table", table, model, "--estimate-missing", "--json", "--level", "0.8")
    doc = json.loads(out)["models"][0]
    assert doc["n_estimated"] == 1 and doc["estimated_keys"] == [SMALL_KEYS[1]]
    assert (
        doc["interval"]["level"] == 0.8 and doc["interval"]["low_ms"] < doc["ms_per_batch"] < doc["interval"]["high_ms"]
    )


def test_estimate_missing_on_too_small_a_table_and_a_bad_level_are_one_line(small, tmp_path, capsys) -> None:
    _, model = small
    table = table_file(tmp_path / "partial.parquet", SMALL_KEYS[:1])
    code, _, err = run(capsys, "--table", table, model, "--estimate-missing")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "too few to cross-validate" in err
    code, _, err = run(capsys, "--table", table, model, "--level", "1.5")
    assert code == 2 and "--level must be a fraction in (0, 1)" in err
