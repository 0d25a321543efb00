"""--measure-fraction: coverage first, then the estimator's least sure keys; resumable; bad fractions refused."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fake_timing import constant_timing
from quick import quick_flags

from profiler import build, selection
from tables.estimator import MODELS
from tables.key import BlockKey
from tables.schema import build_metadata, result_row
from tables.table import LatencyTable

FAST = quick_flags(3)
TABLE = "cpu_onnxruntime_fp32_b1.parquet"


def many_keys() -> list[BlockKey]:
    keys = []
    for c in (8, 16, 24, 32):
        for hw in (8, 12, 16, 20):
            keys.append(BlockKey("irb", c, hw, hw, c, k=3, s=1, e=2))
            keys.append(BlockKey("irb", c, hw, hw, c + 8, k=5, s=2, e=3))
            keys.append(BlockKey("conv", c, hw, hw, c, k=3, s=1))
            keys.append(BlockKey("conv", c, hw, hw, 2 * c, k=1, s=1))
            keys.append(BlockKey("xx", c, hw, hw, c, k=3, s=1))
    return keys


def archs_file(path, keys):
    path.write_text(json.dumps({"architectures": [{"name": f"k{i}", "blocks": [str(k)]} for i, k in enumerate(keys)]}))
    return path


def test_coverage_spreads_over_every_block_type_and_flops_range():
    keys = many_keys()
    picked = selection.coverage_keys(keys, 20, set(), 1, "fp32", seed=0)
    assert len(picked) == 20 and len(set(picked)) == 20
    assert {k.block for k in picked} == {"irb", "conv", "xx"}
    irb = sorted(k.h * k.cin for k in picked if k.block == "irb")
    assert irb[0] <= 8 * 16 and irb[-1] >= 20 * 24  # both ends of the range
    assert selection.coverage_keys(keys, 20, set(), 1, "fp32", seed=0) == picked  # deterministic


def test_a_fraction_build_measures_its_share_reports_the_rest_and_resumes_with_a_larger_one(tmp_path, capsys):
    keys = many_keys()
    archs = archs_file(tmp_path / "archs.json", keys)
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main([*argv, *FAST, "--measure-fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    table = LatencyTable.load(tmp_path / TABLE, calibration=False)
    assert len(table) == 40
    meta = json.loads(pq.read_metadata(tmp_path / TABLE).metadata[b"nas_latency"])["partial"]
    assert meta["keys_total"] == 80 and meta["keys_measured"] == 40 and meta["stages"]["budget"] == 40
    assert meta["stages"]["coverage"] == 20 and meta["stages"]["least_sure"] == 20
    assert meta["estimator"]["model"] in MODELS and set(meta["estimator"]["cv_median_ape_pct"]) == set(MODELS)
    assert "measured 40 of 80 keys (50%); the other 40 are estimated on demand" in out
    assert "40 ok of 80 keys, 0 failed" in out  # the summary counts what the table holds, not what was wanted
    before = table.to_frame().set_index("key")["measured_at"]
    assert build.main([*argv, *FAST, "--measure-fraction", "0.75"]) == 0
    capsys.readouterr()
    again = LatencyTable.load(tmp_path / TABLE, calibration=False)
    assert len(again) == 60
    kept = again.to_frame().set_index("key")["measured_at"]
    assert (kept.loc[before.index] == before).all()  # nothing measured twice


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_a_fraction_outside_zero_one_is_one_line(tmp_path, capsys, value):
    archs = archs_file(tmp_path / "archs.json", many_keys()[:3])
    argv = ["--device", "cpu", "--batch", "1", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main([*argv, "--measure-fraction", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--measure-fraction must be a fraction in (0, 1]" in err


def test_a_block_type_with_a_single_key_is_still_covered():
    keys = many_keys() + [BlockKey("conv_pool", 3, 224, 224, 64, k=7, s=2)]
    picked = selection.coverage_keys(keys, 10, set(), 1, "fp32", seed=0)
    assert len(picked) == 10 and "conv_pool" in {k.block for k in picked}


def test_a_key_whose_boundary_took_its_whole_latency_does_not_stop_the_committee():
    """A measured key whose in-network figure is 0 (its boundary took all of it) says nothing about how latency
    grows; the models are fitted without it, as the estimator's own fit is, instead of failing on a division."""
    from tables.cost import key_cost
    from tables.estimator import disagreement, fit_estimator

    keys = many_keys()
    values = [0.01 + key_cost(k, 1, "fp32").flops / 1e10 for k in keys]
    values[3] = 0.0
    spread = disagreement(keys[:60], values[:60], keys[60:], batch=1, precision="fp32")
    assert spread is not None and spread.shape == (len(keys) - 60,)
    assert fit_estimator(keys, values, batch=1, precision="fp32").n_keys == len(keys) - 1


def test_when_every_key_left_fits_the_budget_no_committee_is_asked(monkeypatch):
    import tables.estimator as estimator

    keys = many_keys()
    rows = [result_row(k, constant_timing(1.0)) for k in keys[:30]]
    md = build_metadata(device_profile="cpu", backend="onnxruntime", precision="fp32", batch=1)
    table = LatencyTable(pd.DataFrame(rows), md)
    monkeypatch.setattr(estimator, "disagreement", lambda *a, **k: pytest.fail("no committee needed"))
    picked, notes = selection.uncertain_keys(table, keys, len(keys), seed=0)
    assert picked == keys[30:] and notes == {}
