"""A build proves its table: end-to-end validation by default, on a calibration set chosen for the table."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from profiler import build, proof
from tables.key import BlockKey
from tables.paths import calibration_path, validation_path
from tables.table import LatencyTable

TABLE = "cpu_onnxruntime_fp32_b1.parquet"
FAST = ["--repeats", "5", "--warmup", "1", "--warmup-ms", "0", "--no-progress"]


def tiny_network(c0: int, repeats: int) -> list[str]:
    keys = [BlockKey("conv", 3, 32, 32, c0, 3, 2), BlockKey("irb", c0, 16, 16, 24, 3, 2, e=3)]
    keys += [BlockKey("irb", 24, 8, 8, 24, 3, 1, e=3)] * repeats
    keys.append(BlockKey("tail", 24, 8, 8, 64, 1, 1))
    return [str(k) for k in keys]


def write_archs(path, n: int = 8):
    archs = [{"name": f"tiny-{c0}-{r}", "blocks": tiny_network(c0, r)} for c0 in (8, 16) for r in range(n // 2)]
    path.write_text(json.dumps({"architectures": archs}))
    return path


def argv_for(tmp_path, *extra: str) -> list[str]:
    archs = write_archs(tmp_path / "archs.json")
    return ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), *FAST, *extra]


@pytest.fixture(scope="module")
def proved(tmp_path_factory):
    """A default build (validation included) and what it printed."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("proved")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = build.main([*argv_for(root), "--out", str(root)])
    return root, code, out.getvalue()


def test_a_default_build_ends_with_a_validation_that_writes_its_files_and_records_the_held_out_error(proved):
    root, code, printed = proved
    assert code == 0
    table = root / TABLE
    lines = printed.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith(f"validation of {TABLE}: "))
    assert "8 networks timed end to end" in lines[head] and "held out)" in lines[head]
    assert lines[head + 1].startswith("  held-out error: block sum MAPE ")
    assert calibration_path(table).exists() and validation_path(table).exists()
    meta = json.loads(pq.read_metadata(table).metadata[b"nas_latency"])["validation"]
    assert meta["networks"] == 8 and meta["fit"] + meta["held_out"] == 8 and meta["held_out"] >= 2
    assert meta["file"] == validation_path(table).name and meta["evaluated_on"] == "holdout"
    assert meta["calibrated"]["n"] == meta["held_out"] and meta["uncalibrated"]["mape_pct"] >= 0
    # recording the validation in the metadata keeps the table's identity: its calibration still applies
    loaded = LatencyTable.load(table)
    assert loaded.calibration is not None and loaded.calibration.model == meta["calibration"]
    v = pq.read_table(validation_path(table)).to_pandas()
    assert set(v["network"]) == {f"tiny-{c}-{r}" for c in (8, 16) for r in range(4)}


def test_no_validate_skips_it_and_validate_sample_sizes_it(tmp_path, capsys):
    assert build.main([*argv_for(tmp_path), "--out", str(tmp_path / "a"), "--no-validate"]) == 0
    assert "validation of" not in capsys.readouterr().out
    assert not validation_path(tmp_path / "a" / TABLE).exists()
    assert build.main([*argv_for(tmp_path), "--out", str(tmp_path / "b"), "--validate-sample", "5"]) == 0
    assert "5 networks timed end to end" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["-1", "1001"])
def test_a_validate_sample_outside_its_range_is_one_line(tmp_path, capsys, value):
    assert build.main([*argv_for(tmp_path), "--out", str(tmp_path), "--validate-sample", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--validate-sample must be from 0 to 1000" in err


def test_the_dry_run_says_a_validation_follows(tmp_path, capsys):
    assert build.main(["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--dry-run"]) == 0
    assert "validated end to end" in capsys.readouterr().out


def test_too_few_networks_is_said_and_is_not_a_failure(tmp_path, capsys):
    archs = tmp_path / "one.json"
    archs.write_text(json.dumps({"architectures": [{"name": "only", "blocks": tiny_network(8, 1)}]}))
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), *FAST]
    assert build.main([*argv, "--out", str(tmp_path)]) == 0
    assert "skipped, fewer than 2 networks to time" in capsys.readouterr().out


def test_the_calibration_set_takes_reference_networks_that_fit_and_a_seeded_sample(proved, monkeypatch):
    from profiler.enumeration import architectures_for_networks

    root, _, _ = proved
    table = LatencyTable.load(root / TABLE, calibration=False)
    source = table.metadata["source"]
    first, notes = proof.calibration_set(table, source, 5, seed=0)
    again, _ = proof.calibration_set(table, source, 5, seed=0)
    other, _ = proof.calibration_set(table, source, 5, seed=1)
    assert len(first) == 5 and [a.name for a in first] == [a.name for a in again]
    assert [a.name for a in first] != [a.name for a in other]
    assert notes == []  # no reference network has its keys in this table: nothing to say
    # a reference network whose keys are all in the table joins, unless it is too slow for the batch
    net = architectures_for_networks(["resnet-18"])[0]

    class Covering:
        batch = 1

        def coverage(self, arch):
            return type("R", (), {"complete": arch.name == "resnet-18"})()

        def latencies(self, keys):
            return [40.0] * len(keys)

    chosen, _ = proof.calibration_set(Covering(), {}, 0, seed=0)
    assert [a.name for a in chosen] == [net.name]
    monkeypatch.setattr(proof, "MAX_VALIDATION_RUN_MS", 100.0)
    chosen, notes = proof.calibration_set(Covering(), {}, 0, seed=0)
    assert chosen == [] and notes == ["left out resnet-18: over 100 ms per inference at batch 1"]
