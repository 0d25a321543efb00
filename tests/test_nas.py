"""Specification of profiler.nas: budget buckets, candidates under a budget, the screening CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from profiler import nas
from profiler.enumeration import architectures_for_sample, keys_for_sample
from tables.key import BlockKey
from tables.predictor import predict
from tables.schema import write_table


def test_bucket_by_budget_counts_candidates_at_or_under_each_budget():
    lat = [0.2, 0.5, 0.7, 1.0, 3.0]
    got = nas.bucket_by_budget(lat, [2, 0.5, 1])
    expected = pd.DataFrame({"budget_ms": [0.5, 1.0, 2.0], "count": [2, 4, 4], "share": [0.4, 0.8, 0.8]})
    pd.testing.assert_frame_equal(got, expected)
    assert nas.bucket_by_budget(lat, [0.1, 10])["count"].tolist() == [0, 5]


@pytest.mark.parametrize(
    ("lat", "budgets", "message"),
    [([], [1.0], "no candidate"), ([1.0, np.nan], [1.0], "NaN"), ([1.0], [], "at least one"), ([1.0], [0], "positive")],
)
def test_bucket_by_budget_refuses_bad_input(lat, budgets, message):
    with pytest.raises(ValueError, match=message):
        nas.bucket_by_budget(lat, budgets)


def test_candidates_under_returns_the_encodings_within_budget_fastest_first():
    enc = np.arange(10).reshape(5, 2)
    lat = np.array([0.9, 0.2, 1.5, 0.4, 0.6])
    rows, ms = nas.candidates_under(enc, lat, 0.6)
    assert rows.tolist() == [[2, 3], [6, 7], [8, 9]]
    assert ms.tolist() == [0.2, 0.4, 0.6]
    with pytest.raises(ValueError, match="encodings must be"):
        nas.candidates_under(enc[:3], lat, 1.0)


def test_synthetic_latency_grows_with_work_and_is_labelled():
    small = BlockKey("conv", 3, 32, 32, 16, 3, 2)
    big = BlockKey("conv", 3, 64, 64, 16, 3, 2)
    assert nas.synthetic_latency_ms(small) == pytest.approx(0.01 + 0.5 * (3 * 16 * 9 * 16 * 16) / 1e9)
    assert nas.synthetic_latency_ms(big) > nas.synthetic_latency_ms(small)
    table = nas.synthetic_table([small, big, small])
    assert len(table) == 2 and table.device == "synthetic" and table.metadata["synthetic"] is True
    assert "not measured" in table.metadata["source"]["synthetic"]


@pytest.mark.parametrize("space", ["gpunet", "genet"])
def test_screen_predicts_each_sampled_candidate_like_predict(space):
    table = nas.synthetic_table(keys_for_sample(space, 64, 1))
    result = nas.screen(table, space, 64, seed=1)
    assert result.encodings.shape[0] == 64 and not result.calibrated
    archs = architectures_for_sample(space, 64, 1)
    expected = [predict(table, a).ms_per_batch for a in archs]
    np.testing.assert_allclose(result.latencies_ms, expected, rtol=1e-12)
    budget = float(np.median(result.latencies_ms))
    under = result.candidates_under(budget)
    assert len(under) == result.buckets([budget])["count"].iloc[0] == 32


@pytest.fixture
def table_file(tmp_path):
    table = nas.synthetic_table(keys_for_sample("genet", 50, 0))
    return write_table(table.to_frame(), tmp_path / "synthetic_genet.parquet", table.metadata)


def test_cli_prints_buckets_and_writes_candidates(table_file, tmp_path, capsys):
    out = tmp_path / "under.parquet"
    argv = ["--table", str(table_file), "--space", "genet", "--sample", "50", "--budgets", "1,0.05,1000"]
    assert nas.main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "50 genet-normal candidates" in text
    lines = [ln.split() for ln in text.splitlines() if ln.strip().startswith(("0.05 ", "1 ", "1000 "))]
    assert [ln[0] for ln in lines] == ["0.05", "1", "1000"]
    assert lines[-1][1:] == ["50", "100.00%"]
    under = pd.read_parquet(out)
    assert len(under) == 50 and under["predicted_ms"].is_monotonic_increasing


def test_cli_missing_keys_is_one_line_and_writes_archs(table_file, tmp_path, capsys):
    rc = nas.main(["--table", str(table_file), "--space", "gpunet", "--sample", "20", "--budgets", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "block key(s) of the sampled candidates are not in the table" in err
    archs = tmp_path / "synthetic_genet.missing_archs.json"
    assert archs.exists() and f"--archs {archs}" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--budgets", "a"], "not a number"), (["--budgets", "-1"], "positive"), (["--sample", "0"], "--sample")],
)
def test_cli_bad_arguments_are_one_line(table_file, capsys, args, message):
    argv = ["--table", str(table_file), "--space", "genet", "--sample", "5", "--budgets", "1"]
    assert nas.main(argv + args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
