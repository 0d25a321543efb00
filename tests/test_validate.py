"""Specification of ``python -m profiler.validate`` on the CPU (onnxruntime, fp32, batch 1).

A tiny table is built once with ``profiler.build`` from a hand-written archs
file of eight small chained networks at 32x32; each test validates a copy of it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from profiler import build, validate
from profiler.enumeration import keys_for_archs_file
from tables.key import BlockKey
from tables.paths import calibration_path
from tables.schema import read_table, write_table
from tables.table import LatencyTable

TABLE = "cpu_onnxruntime_fp32_b1.parquet"
FAST = ["--repeats", "5", "--warmup", "1", "--warmup-ms", "0", "--no-progress"]


def tiny_network(c0: int, repeats: int, act: str) -> list[str]:
    """Stem conv 3->c0 (32->16 px), irb c0->24 s2 (16->8 px), ``repeats`` irb 24->24, tail to 64 channels."""
    keys = [BlockKey("conv", 3, 32, 32, c0, 3, 2, act=act), BlockKey("irb", c0, 16, 16, 24, 3, 2, e=3, act=act)]
    keys += [BlockKey("irb", 24, 8, 8, 24, 3, 1, e=3, act=act)] * repeats
    keys.append(BlockKey("tail", 24, 8, 8, 64, 1, 1, act=act))
    return [str(k) for k in keys]


def write_archs(path, extra: list[dict] | None = None):
    archs = [{"name": f"tiny-{c0}-{n}", "blocks": tiny_network(c0, n, "relu")} for c0 in (8, 16) for n in (0, 2, 4)]
    archs += [
        {"name": "tiny-16-1-swish", "blocks": tiny_network(16, 1, "swish")},
        {"name": "tiny-8-3-swish", "blocks": tiny_network(8, 3, "swish")},
    ]
    path.write_text(json.dumps({"architectures": archs + (extra or [])}))
    return path


def build_into(root, *extra: str):
    """Build the test table of ``write_archs`` into ``root`` (with ``extra`` build options); returns ``root``."""
    archs = write_archs(root / "archs.json")
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(root)]
    assert build.main([*argv, *FAST, "--no-validate", "--boundary", "none", "--no-drift-correct", *extra]) == 0
    return root


def copy_table(built, tmp_path):
    """A fresh copy of a built table (and its archs file) in ``tmp_path``; returns the table's path."""
    shutil.copy(built / TABLE, tmp_path / TABLE)
    shutil.copy(built / "archs.json", tmp_path / "archs.json")
    return tmp_path / TABLE


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_into(tmp_path_factory.mktemp("table"))


@pytest.fixture
def table(built, tmp_path):
    """A fresh copy of the built table (and its archs file) in this test's folder."""
    return copy_table(built, tmp_path)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_end_to_end_writes_validation_file_and_calibration(table, tmp_path, capsys):
    out = tmp_path / "val.parquet"
    rc = validate.main(["--table", str(table), "--out", str(out), "--holdout", "0.25", *FAST])
    stdout = capsys.readouterr().out
    assert rc == 0
    df = pq.read_table(out).to_pandas()
    assert list(df.columns) == list(validate.COLUMNS)
    assert len(df) == 8 and set(df["split"]) == {"fit", "holdout"}
    assert (df["split"] == "holdout").sum() == 2
    assert (df["status"] == "ok").all() and (df["measured_ms"] > 0).all()
    # predictions are the block sums of the table, calibrated with the saved calibration
    tab = LatencyTable.load(table)
    assert tab.calibration is not None  # saved next to the table and applied by default
    assert calibration_path(table).exists()
    blocks = json.loads((tmp_path / "archs.json").read_text())["architectures"]
    by_name = {a["name"]: a["blocks"] for a in blocks}
    for _, row in df.iterrows():
        keys = by_name[row["network"]]
        assert row["n_blocks"] == len(keys)
        assert row["sum_ms"] == pytest.approx(float(np.sum(tab.latencies(keys))), rel=1e-12)
        assert row["encoding"] == row["network"]  # file networks without an encoding carry their name
    np.testing.assert_allclose(df["error_pct"], (df["predicted_ms"] - df["measured_ms"]) / df["measured_ms"] * 100)
    np.testing.assert_allclose(df["error_uncal_pct"], (df["sum_ms"] - df["measured_ms"]) / df["measured_ms"] * 100)
    meta = json.loads(pq.read_schema(out).metadata[b"nas_latency"])
    assert (meta["backend"], meta["precision"], meta["batch"], meta["device_profile"]) == (
        "onnxruntime",
        "fp32",
        1,
        "cpu",
    )
    assert meta["calibration"]["model"] == tab.calibration.model
    for stage in ("uncalibrated", "calibrated"):
        m = meta["metrics"][stage]
        assert m["n"] == 2
        assert {"mape_pct", "max_ape_pct", "rmspe_pct", "within_5_pct", "within_10_pct", "kendall_tau"} <= set(m)
    held = df[df["split"] == "holdout"]
    assert meta["metrics"]["calibrated"]["mape_pct"] == pytest.approx(held["error_pct"].abs().mean())
    assert "MAPE" in stdout and "Kendall tau" in stdout and str(out) in stdout
    # the report module reads it as it is
    from reports.inputs import read_validation
    from reports.validation import metrics_for

    rdf, rmeta = read_validation(out)
    assert metrics_for(rdf, rmeta)["calibrated"]["n"] == 2


def test_split_is_seeded_and_mixes_sources():
    sources = ["reference"] * 4 + ["gpunet"] * 10 + ["genet"] * 6
    a = validate.split_networks(sources, 0.5, seed=3)
    assert list(a) == list(validate.split_networks(sources, 0.5, seed=3))
    assert list(a) != list(validate.split_networks(sources, 0.5, seed=4))
    for src, n in (("reference", 4), ("gpunet", 10), ("genet", 6)):
        part = a[np.asarray(sources) == src]
        assert (part == "holdout").sum() == n // 2
    assert set(validate.split_networks(["x", "x"], 0.1, 0)) == {"fit", "holdout"}
    assert set(validate.split_networks(sources, 0.0, 0)) == {"fit"}


def test_no_save_calibration_leaves_no_file(table, tmp_path):
    out = tmp_path / "v.parquet"
    assert validate.main(["--table", str(table), "--out", str(out), "--no-save-calibration", *FAST]) == 0
    assert out.exists() and not calibration_path(table).exists()


def test_missing_keys_one_line_with_count_and_archs_file(table, tmp_path, capsys):
    extra = {"name": "bigger", "blocks": tiny_network(32, 1, "relu")}  # conv 3->32 and irb 32->24 are new
    archs = write_archs(tmp_path / "more.json", [extra])
    out = tmp_path / "v.parquet"
    rc = validate.main(["--table", str(table), "--archs", str(archs), "--out", str(out), *FAST])
    err = one_line_error(capsys)
    assert rc == 2
    assert err.startswith("error: 2 block key(s) of 1 of 9 network(s)")
    missing = tmp_path / "v.missing_archs.json"
    assert f"--archs {missing}" in err and "python -m profiler.build --device cpu --backend onnxruntime" in err
    assert {str(k) for k in keys_for_archs_file(missing)} == set(extra["blocks"][:2])
    assert not out.exists()


def test_failed_network_is_recorded_and_reported(table, tmp_path, capsys, monkeypatch):
    import kernels_bench.measure as measure

    real = measure.measure_keys

    def flaky(backend, keys, *args, **kwargs):
        if len(keys) == 7:  # tiny-8-4 and tiny-16-4
            raise RuntimeError("cannot build this graph")
        return real(backend, keys, *args, **kwargs)

    monkeypatch.setattr(measure, "measure_keys", flaky)
    out = tmp_path / "v.parquet"
    rc = validate.main(["--table", str(table), "--out", str(out), *FAST])
    stdout = capsys.readouterr().out
    assert rc == 1
    df = pd.read_parquet(out)
    failed = df[df["status"] == "failed"]
    assert sorted(failed["network"]) == ["tiny-16-4", "tiny-8-4"]
    assert failed["measured_ms"].isna().all() and failed["error"].str.contains("cannot build").all()
    assert "failed tiny-8-4: RuntimeError: cannot build this graph" in stdout


def test_no_network_buildable_is_one_line(table, capsys, monkeypatch):
    import kernels_bench.measure as measure

    def broken(*args, **kwargs):
        raise RuntimeError("no kernels")

    monkeypatch.setattr(measure, "measure_keys", broken)
    assert validate.main(["--table", str(table), *FAST]) == 1  # the work failed, the input was fine
    assert "could not build any of the 8 networks" in one_line_error(capsys)


def test_corrupt_table_and_wrong_schema_version_are_one_line(table, tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    assert validate.main(["--table", str(bad), *FAST]) == 2
    assert "not a Parquet file or truncated" in one_line_error(capsys)

    frame, md = read_table(table)
    old = tmp_path / "old.parquet"
    write_table(frame, old, {**md, "schema_version": 99})
    assert validate.main(["--table", str(old), *FAST]) == 2
    assert "schema version 99" in one_line_error(capsys)

    assert validate.main(["--table", str(tmp_path / "none.parquet"), *FAST]) == 2
    assert "not found" in one_line_error(capsys)


def test_bad_arguments_are_one_line(table, capsys):
    assert validate.main(["--table", str(table), "--holdout", "1.5"]) == 2
    assert "--holdout" in one_line_error(capsys)
    assert validate.main(["--table", str(table), "--space", "gpunet"]) == 2
    assert "--space needs --sample" in one_line_error(capsys)


def test_timing_settings_come_from_the_table_unless_overridden(table):
    md = LatencyTable.load(table).metadata
    args = validate.build_parser().parse_args(["--table", str(table)])
    s = validate.settings_for(md, args)
    assert (s.repeats, s.warmup_runs, s.warmup_min_ms) == (5, 1, 0.0)
    args = validate.build_parser().parse_args(["--table", str(table), "--repeats", "7", "--warmup-ms", "3"])
    s = validate.settings_for(md, args)
    assert (s.repeats, s.warmup_runs, s.warmup_min_ms) == (7, 1, 3.0)
    assert validate.backend_config(md, None).threads == md["backend_settings"]["threads"]


def test_rounds_time_every_network_round_robin_and_keep_the_median(table, tmp_path, monkeypatch):
    import kernels_bench.measure as measure

    real = measure.measure_keys
    order: list[int] = []

    def counted(backend, keys, *args, **kwargs):
        order.append(len(keys))
        result = real(backend, keys, *args, **kwargs)
        result.trimmed_mean_ms = float(len(order))  # each call a different, known figure
        return result

    monkeypatch.setattr(measure, "measure_keys", counted)
    out = tmp_path / "v.parquet"
    assert validate.main(["--table", str(table), "--out", str(out), "--rounds", "3", *FAST]) == 0
    assert len(order) == 3 * 8
    assert order[:8] == order[8:16] == order[16:]  # round 1 of every network, then round 2, ...
    df = pd.read_parquet(out)
    for i, row in df.iterrows():
        rounds = [float(i + 1), float(i + 9), float(i + 17)]
        assert list(row["measured_rounds_ms"]) == rounds
        assert row["measured_ms"] == np.median(rounds)
    meta = json.loads(pq.read_schema(out).metadata[b"nas_latency"])
    assert meta["validation"]["rounds"] == 3


def test_a_network_that_fails_is_not_timed_again_in_later_rounds(table, tmp_path, monkeypatch):
    import kernels_bench.measure as measure

    real = measure.measure_keys
    calls: list[int] = []

    def flaky(backend, keys, *args, **kwargs):
        calls.append(len(keys))
        if len(keys) == 7:
            raise RuntimeError("cannot build this graph")
        return real(backend, keys, *args, **kwargs)

    monkeypatch.setattr(measure, "measure_keys", flaky)
    out = tmp_path / "v.parquet"
    assert validate.main(["--table", str(table), "--out", str(out), "--rounds", "2", *FAST]) == 1
    assert calls.count(7) == 2  # tiny-8-4 and tiny-16-4, once each
    df = pd.read_parquet(out)
    assert (df.loc[df["status"] == "ok", "measured_rounds_ms"].map(len) == 2).all()
    assert (df.loc[df["status"] == "failed", "measured_rounds_ms"].map(len) == 0).all()


def test_rounds_below_one_are_refused(table, capsys):
    assert validate.main(["--table", str(table), "--rounds", "0"]) == 2
    assert "--rounds must be at least 1 (or auto)" in one_line_error(capsys)
    assert validate.main(["--table", str(table), "--rounds", "some"]) == 2
    assert "use 'auto' or a whole number of rounds, not 'some'" in one_line_error(capsys)


def test_auto_rounds_give_a_short_network_more_rounds_than_a_long_one():
    assert validate.AUTO_ROUND_SPAN_S == 5.0 and validate.AUTO_MAX_ROUNDS == 5
    assert validate.auto_rounds(0.5) == validate.auto_rounds(1.0) == 5
    assert validate.auto_rounds(1.5) == 4 and validate.auto_rounds(2.4) == 3 and validate.auto_rounds(4.0) == 2
    assert validate.auto_rounds(validate.AUTO_ROUND_SPAN_S) == 1 and validate.auto_rounds(60.0) == 1
    assert validate.auto_rounds(0.0) == validate.auto_rounds(float("nan")) == 5  # no clock reading: the most


def test_by_default_each_network_gets_the_rounds_its_first_one_leaves_room_for(table, tmp_path, monkeypatch, capsys):
    import kernels_bench.measure as measure

    real = measure.measure_keys
    order: list[int] = []

    def timed(backend, keys, *args, **kwargs):
        order.append(len(keys))
        result = real(backend, keys, *args, **kwargs)
        # the longest networks (7 keys) measure for 4 s a round, the shortest (3 keys) 0.8 s, the rest 2 s
        seconds = {7: 4.0, 3: 0.8}.get(len(keys), 2.0)
        result.phases = {"export_s": 0.0, "compile_s": 0.0, "warmup_s": 0.0, "timed_s": seconds}
        result.trimmed_mean_ms = float(len(order))
        return result

    monkeypatch.setattr(measure, "measure_keys", timed)
    out = tmp_path / "v.parquet"
    assert validate.main(["--table", str(table), "--out", str(out), *FAST]) == 0
    df = pd.read_parquet(out)
    sizes = list(df["n_blocks"])  # 3 to 7 keys
    wanted = [{7: 2, 3: 5}.get(n, 3) for n in sizes]  # ceil(5 s / round), at most 5
    assert list(df["measured_rounds_ms"].map(len)) == wanted
    expected = [n for r in range(5) for n, w in zip(sizes, wanted) if r < w]  # round-robin, round by round
    assert order == expected
    for _, row in df.iterrows():
        assert row["measured_ms"] == np.median(row["measured_rounds_ms"])
    meta = json.loads(pq.read_schema(out).metadata[b"nas_latency"])
    assert meta["validation"]["rounds"] == "auto"
    assert meta["validation"]["auto_rounds"] == {"span_s": validate.AUTO_ROUND_SPAN_S, "max": validate.AUTO_MAX_ROUNDS}
    assert "each network timed in 2-5 rounds (median of its rounds)" in capsys.readouterr().out


def test_min_sample_override_and_pinning_follow_the_table(table):
    md = LatencyTable.load(table).metadata
    args = validate.build_parser().parse_args(["--table", str(table), "--min-sample-ms", "25"])
    assert validate.settings_for(md, args).min_sample_ms == 25.0
    own = tuple(md["backend_settings"].get("cpus", ()))  # a build pins to a spare CPU by default
    assert validate.backend_config(md, None).cpus == own  # the table's own pinning
    pinned = {**md, "backend_settings": {**md["backend_settings"], "cpus": [0]}}
    assert validate.backend_config(pinned, None).cpus == (0,)
    assert validate.backend_config(pinned, None, "1").cpus == (1,)  # --cpus wins
    old = {**md, "backend_settings": {"backend": "onnxruntime", "device": "cpu", "cpu_affinity": [0]}}
    assert validate.backend_config(old, None).cpus == (0,)  # the name schema-1 tables used


# ----- drift correction ----------------------------------------------------------


@pytest.fixture(scope="module")
def built_drift(tmp_path_factory):
    return build_into(tmp_path_factory.mktemp("drift-table"), "--drift-correct")


@pytest.fixture
def drift_table(built_drift, tmp_path):
    return copy_table(built_drift, tmp_path)


def test_networks_of_a_drift_corrected_table_are_brought_to_its_reference_speed(drift_table, tmp_path, capsys):
    out = tmp_path / "v.parquet"
    assert validate.main(["--table", str(drift_table), "--out", str(out), "--rounds", "2", *FAST]) == 0
    assert "drift-corrected to the table's reference speed" in capsys.readouterr().out
    ref = LatencyTable.load(drift_table).metadata["drift_reference"]["latency_ms"]
    df = pd.read_parquet(out)
    for row in df.itertuples():
        assert len(row.reference_rounds_ms) == 2 and min(row.reference_rounds_ms) > 0
        # each round's figure is brought to the table's reference speed; the network's is their median
        assert row.measured_ms == pytest.approx(float(np.median(row.measured_rounds_ms)))
        raw = [m * r / ref for m, r in zip(row.measured_rounds_ms, row.reference_rounds_ms)]
        assert row.measured_raw_ms == pytest.approx(float(np.median(raw)))
    meta = json.loads(pq.read_schema(out).metadata[b"nas_latency"])
    assert meta["validation"]["drift_reference"]["latency_ms"] == ref


def test_no_drift_correct_compares_the_raw_figures(drift_table, tmp_path):
    out = tmp_path / "v.parquet"
    assert validate.main(["--table", str(drift_table), "--out", str(out), "--no-drift-correct", *FAST]) == 0
    df = pd.read_parquet(out)
    assert (df["measured_ms"] == df["measured_raw_ms"]).all()
    assert (df["reference_rounds_ms"].map(len) == 0).all()
    meta = json.loads(pq.read_schema(out).metadata[b"nas_latency"])
    assert meta["validation"]["drift_reference"] is None


def test_a_table_without_drift_correction_is_validated_raw(table, tmp_path):
    out = tmp_path / "v.parquet"
    assert validate.main(["--table", str(table), "--out", str(out), *FAST]) == 0
    df = pd.read_parquet(out)
    assert (df["measured_ms"] == df["measured_raw_ms"]).all()
    assert (df["reference_rounds_ms"].map(len) == 0).all()


def test_missing_keys_of_a_drift_corrected_table_suggest_a_build_with_the_same_options(drift_table, tmp_path, capsys):
    extra = [{"name": "bigger", "blocks": tiny_network(32, 1, "relu")}]
    archs = write_archs(tmp_path / "more.json", extra)
    assert validate.main(["--table", str(drift_table), "--archs", str(archs), *FAST]) == 2
    err = one_line_error(capsys)
    assert "--drift-correct --drift-reference xx_i128x28x28_o128_k3_s1_e1_se0_relu" in err


# ----- the machine's speed since the build ---------------------------------------------


def test_validation_reports_how_far_the_machines_speed_moved_since_the_build(table, tmp_path, capsys):
    md = LatencyTable.load(table).metadata
    build_ms = md["steadiness"]["speed_ms"]
    assert build_ms > 0 and len(md["steadiness"]["probes_ms"]) == 2  # the build's speed probes
    out = tmp_path / "v.parquet"
    assert validate.main(["--table", str(table), "--out", str(out), *FAST]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("machine speed since the build:"))
    speed = json.loads(pq.read_schema(out).metadata[b"nas_latency"])["validation"]["machine_speed"]
    assert speed["build_ms"] == build_ms and speed["now_ms"] > 0
    assert speed["change_pct"] == pytest.approx((speed["now_ms"] / build_ms - 1) * 100)
    assert f"{abs(speed['change_pct']):.1f}% {'slower' if speed['change_pct'] > 0 else 'faster'} now" in line


def test_a_drift_corrected_table_compares_the_reference_timed_with_the_networks(drift_table, tmp_path, capsys):
    out = tmp_path / "v.parquet"
    assert validate.main(["--table", str(drift_table), "--out", str(out), *FAST]) == 0
    assert "drift correction brought the networks to the table's speed" in capsys.readouterr().out
    md = LatencyTable.load(drift_table).metadata
    assert md["drift_reference"]["speed"].startswith("fastest sustained")
    assert md["drift_reference"]["latency_ms"] <= md["drift_reference"]["during_build"]["median_ms"]
    speed = json.loads(pq.read_schema(out).metadata[b"nas_latency"])["validation"]["machine_speed"]
    assert speed["drift_corrected"] and speed["build_ms"] == md["steadiness"]["speed_ms"]


def test_an_older_table_without_a_recorded_speed_says_so(table, tmp_path, capsys):
    frame, md = read_table(table)
    md.pop("steadiness")
    write_table(frame, table, md)
    assert validate.main(["--table", str(table), "--out", str(tmp_path / "v.parquet"), *FAST]) == 0
    assert "machine speed since the build: unknown (the table records no speed" in capsys.readouterr().out


def test_a_table_built_without_a_speed_probe_says_which_flag_left_it_out(table, tmp_path, capsys):
    frame, md = read_table(table)
    md["steadiness"] = {**md["steadiness"], "probes_ms": [], "probe_key": None, "speed_ms": None, "swing_pct": None}
    write_table(frame, table, md)
    assert validate.main(["--table", str(table), "--out", str(tmp_path / "v.parquet"), *FAST]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("machine speed since the build:"))
    assert "unknown" in line and "--no-speed-probe" in line
