"""`python -m profiler.build`: tables, metadata, crash safety, failures and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from quick import quick_flags

from profiler import build, tablebuild
from profiler.spaces import gpunet
from tables.key import BlockKey

ROOT = Path(__file__).resolve().parents[1]
FAST = quick_flags(5)
PROBED = quick_flags(5, speed_probe=True)


def tiny_keys(n: int) -> list[BlockKey]:
    """n distinct, cheap keys (16x16 maps, few channels)."""
    keys = []
    for i in range(n):
        keys.append(BlockKey("irb", 8, 16, 16, 8 + 8 * (i % 4), k=3 if i % 2 else 5, s=1 + (i // 4) % 2, e=2))
    return list(dict.fromkeys(keys))


def write_archs(path: Path, keys: list[BlockKey]) -> Path:
    archs = [{"name": f"single-{i}", "blocks": [str(k)]} for i, k in enumerate(keys)]
    path.write_text(json.dumps({"architectures": archs}))
    return path


def read(path: Path):
    table = pq.read_table(path)
    meta = json.loads(pq.read_metadata(path).metadata[b"nas_latency"])
    return table.to_pandas(), meta


@pytest.fixture
def cli(capsys):
    """``python -m profiler.build ARGS`` in this process: its exit status and what it printed."""

    def run(args: list[str]) -> SimpleNamespace:
        capsys.readouterr()
        code = build.main(list(args))
        printed = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err)

    return run


def test_small_cpu_build_writes_the_documented_schema_and_metadata(tmp_path):
    keys = tiny_keys(4)
    archs = write_archs(tmp_path / "archs.json", keys)
    code = build.main(
        ["--device", "cpu", "--batch", "2", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path / "o")]
        + FAST
    )
    assert code == 0
    path = tmp_path / "o" / "cpu_onnxruntime_fp32_b2.parquet"
    frame, meta = read(path)
    assert sorted(frame["key"]) == sorted(str(k) for k in keys)
    for column in ("block", "cin", "h", "w", "cout", "k", "s", "e", "se", "act"):
        assert column in frame.columns
    for column in ("latency_ms", "median_ms", "min_ms", "max_ms", "std_ms", "cv", "samples_ms", "status", "error"):
        assert column in frame.columns
    assert (frame["status"] == "ok").all()
    assert all(len(s) == 5 for s in frame["samples_ms"])
    assert (frame["latency_ms"] > 0).all()
    for field in (
        "schema_version",
        "device_profile",
        "device",
        "engine",
        "backend",
        "precision",
        "batch",
        "timing",
        "floor",
        "host",
        "created_at",
        "tool_version",
    ):
        assert field in meta, field
    assert meta["backend"] == "onnxruntime" and meta["precision"] == "fp32" and meta["batch"] == 2
    assert meta["timing"]["repeats"] == 5
    assert meta["floor"]["latency_ms"] > 0
    assert meta["engine"]["name"] == "onnxruntime"


def test_default_output_directory_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    archs = write_archs(tmp_path / "archs.json", tiny_keys(1))
    code = build.main(["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), *FAST])
    assert code == 0
    assert (tmp_path / "tables_out" / "cpu_onnxruntime_fp32_b1.parquet").is_file()


def test_one_table_per_precision_with_predictable_names(tmp_path):
    archs = write_archs(tmp_path / "archs.json", tiny_keys(2))
    out = tmp_path / "o"
    code = build.main(["--device", "cpu", "--batch", "1", "--archs", str(archs), "--out", str(out), *FAST])
    assert code == 0
    assert sorted(p.name for p in out.glob("*.parquet")) == [
        "cpu_onnxruntime_fp32_b1.parquet",
        "cpu_onnxruntime_int8_b1.parquet",
    ]


def test_a_failing_key_is_recorded_and_the_build_goes_on(tmp_path, monkeypatch, capsys):
    import kernels_bench.measure as measure

    keys = tiny_keys(4)
    bad = keys[1]
    real = measure.measure_keys

    def flaky(backend, ks, *args, **kwargs):
        if list(ks) == [bad]:
            raise RuntimeError("engine build failed: no int8 kernel for this layer")
        return real(backend, ks, *args, **kwargs)

    monkeypatch.setattr(measure, "measure_keys", flaky)
    archs = write_archs(tmp_path / "archs.json", keys)
    out = tmp_path / "o"
    code = build.main(
        ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(out), *FAST]
    )
    assert code == 1
    frame, _ = read(out / "cpu_onnxruntime_fp32_b1.parquet")
    assert len(frame) == 4
    row = frame.set_index("key").loc[str(bad)]
    assert row["status"] == "failed"
    assert "no int8 kernel" in row["error"]
    assert (frame[frame["key"] != str(bad)]["status"] == "ok").all()
    assert "1 failed" in capsys.readouterr().out


def test_a_build_killed_with_sigkill_resumes_complete_without_duplicates(tmp_path, cli):
    keys = tiny_keys(12)
    archs = write_archs(tmp_path / "archs.json", keys)
    out = tmp_path / "o"
    args = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(out)]
    args += ["--repeats", "30", "--warmup", "2", "--warmup-ms", "20", "--no-progress", "--no-validate"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "profiler.build", *args], cwd=ROOT, env=env)
    # the default on the cpu profile: every key once, then the short keys (all of these) twice more, each
    # round its own crash-safe store
    parts = out / "cpu_onnxruntime_fp32_b1.parquet.rounds" / "round-1.parquet.parts"
    deadline = time.time() + 120
    while time.time() < deadline:
        if parts.is_dir() and len(list(parts.glob("*.parquet"))) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("the build finished before it could be killed: make it slower")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    measured_before = len(list(parts.glob("*.parquet")))
    assert 3 <= measured_before < len(keys)
    # the short keys' further rounds (all of these keys) are mixed in: some may have been measured already
    further_before = sum(len(list(parts.parent.glob(f"round-{r}.parquet.parts/*.parquet"))) for r in (2, 3))

    again = cli(args)
    assert again.returncode == 0, again.stderr
    frame, _ = read(out / "cpu_onnxruntime_fp32_b1.parquet")
    assert sorted(frame["key"]) == sorted(str(k) for k in keys)
    assert not frame["key"].duplicated().any()
    assert (frame["status"] == "ok").all()
    assert all(len(r) == 3 for r in frame["round_latency_ms"])
    # only what was missing was measured again (the key being measured at the kill may be redone), with the
    # short keys' two further rounds
    assert f"measured {3 * len(keys) - measured_before - further_before} now" in again.stdout


def test_a_finished_build_run_again_measures_nothing(tmp_path):
    archs = write_archs(tmp_path / "archs.json", tiny_keys(2))
    args = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main(args + FAST) == 0
    before = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")[0]
    assert build.main(args + FAST) == 0
    after = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")[0]
    assert list(after["latency_ms"]) == list(before["latency_ms"])


def test_dry_run_of_the_full_gpunet_space_prints_its_exact_key_count(capsys):
    code = build.main(["--device", "v100", "--batch", "64", "--space", "gpunet", "--dry-run"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"unique keys: {gpunet.count_keys()}" in out
    assert "estimated time" in out


def test_dry_run_builds_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    assert (
        build.main(["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--out", str(out), "--dry-run"]) == 0
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu9", "--batch", "1"], "tpu9"),
        (["--device", "cpu", "--batch", "1", "--space", "nasbench"], "nasbench"),
        (["--device", "cpu", "--batch", "1", "--networks", "resnet-1000"], "resnet-1000"),
        (["--device", "cpu", "--batch", "0"], "--batch"),
        (["--device", "cpu", "--batch", "1", "--precision", "fp8"], "fp8"),
        (["--device", "cpu", "--batch", "1", "--backend", "tensorrt"], "tensorrt"),
        (["--device", "cpu", "--batch", "1", "--precision", "fp16"], "fp16"),
        (["--device", "cpu", "--batch", "1", "--backend", "torch", "--precision", "int8"], "int8"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, args, message, cli):
    result = cli([*args, "--out", str(tmp_path / "o"), *FAST])
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_a_default_precision_the_backend_does_not_run_names_the_flag_to_give(tmp_path, cli):
    # the cpu profile's defaults are fp32,int8; torch runs fp32 and bf16 there
    args = ["--device", "cpu", "--batch", "1", "--backend", "torch", "--out", str(tmp_path / "o")]
    result = cli([*args, *FAST])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "int8 is one of the cpu profile's default precisions (fp32, int8)" in lines[0]
    assert "--precision fp32,bf16" in lines[0]
    asked = cli([*args, "--precision", "int8", *FAST])  # asked for by name: the plain refusal
    assert asked.returncode == 2 and "default precisions" not in asked.stderr


def test_an_unknown_block_in_an_archs_file_is_one_line(tmp_path, cli):
    archs = tmp_path / "a.json"
    archs.write_text(json.dumps({"architectures": [{"name": "x", "blocks": ["lstm_i8x8x8_o8_k3_s1_e1_se0_relu"]}]}))
    result = cli(["--device", "cpu", "--batch", "1", "--archs", str(archs), "--out", str(tmp_path / "o")])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "lstm" in result.stderr


@pytest.mark.parametrize(
    ("entry", "message"),
    [({"gpunet": [320] * 40}, "41"), ({"gpunet": [320, 32, 3, 0, 2] + [0] * 36}, "position")],
)
def test_bad_encodings_are_one_line(tmp_path, entry, message, cli):
    archs = tmp_path / "a.json"
    archs.write_text(json.dumps({"architectures": [{"name": "x", **entry}]}))
    result = cli(["--device", "cpu", "--batch", "1", "--archs", str(archs), "--out", str(tmp_path / "o")])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_a_malformed_space_file_is_one_line(tmp_path, cli):
    space = tmp_path / "space.yaml"
    space.write_text("space: {stages: [ {type: irb, stride: 7} ]\n")
    result = cli(["--device", "cpu", "--batch", "1", "--space", str(space), "--dry-run"])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "space.yaml" in result.stderr


def test_an_output_path_that_is_a_file_is_refused(tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli(["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--out", str(blocker)])
    assert result.returncode == 2
    assert "is a file" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: permissions cannot be tested as root")
def test_an_output_directory_that_is_not_writable_is_refused(tmp_path, cli):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    result = cli(["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--out", str(ro)])
    assert result.returncode == 2
    assert "not writable" in result.stderr


def test_a_gpu_profile_on_a_machine_without_that_gpu_is_refused(tmp_path, cli):
    from profiler.devices import detect_device

    if any("V100" in str(g.get("name")) for g in detect_device().get("gpus", [])):
        pytest.skip("this machine has a V100")
    result = cli(["--device", "v100", "--batch", "64", "--networks", "resnet-18", "--out", str(tmp_path / "o")])
    assert result.returncode == 2
    assert "--force-device" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "o").glob("*.parquet"))


def test_a_second_build_on_the_same_output_is_refused(tmp_path, cli):
    from tables.store import BuildLock

    archs = write_archs(tmp_path / "archs.json", tiny_keys(1))
    out = tmp_path / "o"
    out.mkdir()
    with BuildLock(out / "cpu_onnxruntime_fp32_b1.parquet.lock"):
        result = cli(
            ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs)]
            + ["--out", str(out), *FAST]
        )
    assert result.returncode == 2
    assert "another build" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_output_directory_that_cannot_be_created_is_refused(tmp_path, cli):
    result = cli(["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--out", "/proc/no-such/out"])
    assert result.returncode == 2
    assert "cannot create output directory" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args", [["--device", "cpu", "--batch", "1", "--bogus"], ["--batch", "1"], ["--device", "cpu"]]
)
def test_a_wrong_or_missing_flag_is_one_line(args, cli):
    result = cli(args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--help" in result.stderr


def test_missing_tensorrt_says_how_to_install_it_or_which_backend_to_pick(tmp_path, cli):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    args = ["--device", "v100", "--batch", "64", "--networks", "resnet-18", "--force-device"]
    result = cli([*args, "--out", str(tmp_path / "o"), *FAST])
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.stderr
    assert "pip install -e '.[tensorrt]'" in error[0] and "--backend torch" in error[0]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux affinity")
def test_pinning_and_a_minimum_sample_length_are_applied_and_recorded(tmp_path):
    before = os.sched_getaffinity(0)
    cpu = max(before)
    archs = write_archs(tmp_path / "archs.json", tiny_keys(2))
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main([*argv, *FAST, "--cpus", str(cpu), "--min-sample-ms", "3"]) == 0
    frame, meta = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    assert meta["backend_settings"]["cpus"] == [cpu]
    assert meta["timing"]["min_sample_ms"] == 3.0
    for samples in frame["samples_ms"]:  # each sample averages enough back-to-back runs to last >= 3 ms
        assert len(samples) == 5
    assert (frame["inner_loop"] > 1).all()
    assert os.sched_getaffinity(0) == before  # the backend gave the CPUs back when the build ended


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux affinity")
def test_a_serial_cpu_build_pins_to_a_spare_cpu_by_default_and_none_leaves_it_unpinned(tmp_path):
    from tables.host import spare_cpu

    archs = write_archs(tmp_path / "archs.json", tiny_keys(1))
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), *FAST]
    assert build.main([*argv, "--out", str(tmp_path / "default")]) == 0
    _, meta = read(tmp_path / "default" / "cpu_onnxruntime_fp32_b1.parquet")
    spare = spare_cpu()
    assert meta["backend_settings"].get("cpus", []) == ([] if spare is None else [spare])
    assert build.main([*argv, "--out", str(tmp_path / "none"), "--cpus", "none"]) == 0
    _, meta = read(tmp_path / "none" / "cpu_onnxruntime_fp32_b1.parquet")
    assert not meta["backend_settings"].get("cpus")
    # a resume keeps to the table's pinning: the same flags (none given) find the same spare CPU
    assert build.main([*argv, "--out", str(tmp_path / "default")]) == 0


def test_keys_are_measured_in_a_seeded_shuffled_order_unless_given_order_is_asked(tmp_path):
    keys = tiny_keys(8)
    order = tablebuild.measuring_order(keys, 0)
    assert sorted(map(str, order)) == sorted(map(str, keys))  # a permutation
    assert order == tablebuild.measuring_order(list(reversed(keys)), 0)  # depends on the set and the seed only
    assert order != tablebuild.measuring_order(keys, 1)
    assert tablebuild.measuring_order(keys, None) == keys
    archs = write_archs(tmp_path / "archs.json", keys)
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), *FAST]
    for mode, expected in (("shuffled", order), ("given", keys)):
        out = tmp_path / mode
        assert build.main([*argv, "--out", str(out), "--order", mode]) == 0
        frame, meta = read(out / "cpu_onnxruntime_fp32_b1.parquet")
        measured = list(frame.sort_values("measured_at", kind="stable")["key"])
        assert measured == [str(k) for k in expected]
        assert meta["key_order"]["order"] == mode
    assert order != keys


# ----- drift correction ----------------------------------------------------------


def test_drift_correct_brings_every_key_to_the_tables_reference_speed(tmp_path, capsys):
    keys = tiny_keys(3)
    archs = write_archs(tmp_path / "archs.json", keys)
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main([*argv, *FAST, "--drift-correct"]) == 0
    frame, meta = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    drift = meta["drift_reference"]
    assert drift["key"] == "xx_i128x28x28_o128_k3_s1_e1_se0_relu" and drift["ratio"] == 1.0
    assert drift["latency_ms"] > 0 and drift["n_samples"] == 15  # three times the protocol's 5 repeats
    assert (frame["reference_ms"] > 0).all()
    for row in frame.itertuples():
        assert row.latency_ms == pytest.approx(row.raw_latency_ms * drift["latency_ms"] / row.reference_ms)
    during = drift["during_build"]
    assert during["n"] == 3 and during["p10_ms"] <= during["median_ms"] <= during["p90_ms"]
    assert "drift reference:" in capsys.readouterr().out


def test_without_drift_correct_latency_is_the_raw_trimmed_mean_and_there_is_no_reference(tmp_path):
    archs = write_archs(tmp_path / "archs.json", tiny_keys(2))
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main([*argv, *FAST]) == 0
    frame, meta = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    assert meta["drift_reference"] is None
    assert (frame["latency_ms"] == frame["raw_latency_ms"]).all()
    assert frame["reference_ms"].isna().all()


def test_a_chosen_drift_reference_is_used_and_recorded(tmp_path):
    archs = write_archs(tmp_path / "archs.json", tiny_keys(1))
    ref = "conv_i16x32x32_o16_k3_s1_e1_se0_relu"
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main([*argv, *FAST, "--drift-correct", "--drift-reference", ref]) == 0
    _, meta = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    assert meta["drift_reference"]["key"] == ref


def test_resuming_with_another_drift_setting_is_refused_and_keeps_the_table(tmp_path, cli):
    keys = tiny_keys(3)
    first = write_archs(tmp_path / "first.json", keys[:2])
    both = write_archs(tmp_path / "both.json", keys)
    base = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--out", str(tmp_path / "o"), *FAST]
    assert build.main([*base, "--archs", str(first), "--drift-correct"]) == 0
    table = tmp_path / "o" / "cpu_onnxruntime_fp32_b1.parquet"
    before = table.read_bytes()
    for extra in ([], ["--drift-correct", "--drift-reference", "conv_i16x32x32_o16_k3_s1_e1_se0_relu"]):
        result = cli([*base, "--archs", str(both), *extra])
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "drift" in lines[0] and "--out" in lines[0]
    assert table.read_bytes() == before
    assert build.main([*base, "--archs", str(both), "--drift-correct"]) == 0  # the same options resume
    frame, meta = read(table)
    assert len(frame) == 3 and frame["reference_ms"].notna().all()
    assert meta["drift_reference"]["during_build"]["n"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--drift-reference", "conv_i16x32x32_o16_k3_s1_e1_se0_relu"], "--drift-correct"),
        (["--drift-correct", "--drift-reference", "lstm_i8x8x8_o8_k3_s1_e1_se0_relu"], "--drift-reference"),
    ],
)
def test_bad_drift_options_are_one_line(tmp_path, extra, message, cli):
    result = cli(["--device", "cpu", "--batch", "1", "--out", str(tmp_path / "o"), *FAST, *extra])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_build_on_an_unsteady_machine_says_its_figures_are_unreliable_in_one_line(tmp_path, monkeypatch, cli):
    import tables.steadiness as steadiness

    archs = write_archs(tmp_path / "archs.json", tiny_keys(2))
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    monkeypatch.setattr(steadiness, "UNSTEADY_SE", -1.0)  # any spread counts as unsteady
    run = cli([*argv, *PROBED])
    assert run.returncode == 0
    warnings = [line for line in run.stdout.splitlines() if line.startswith("warning: the machine was unsteady")]
    assert len(warnings) == 1
    assert "median key standard error" in warnings[0] and "absolute figures are unreliable" in warnings[0]
    assert "--drift-correct" in warnings[0] and "--cpus" in warnings[0]
    _, meta = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    entry = meta["steadiness"]
    assert entry["unsteady"] is True and entry["key_cv_median"] > 0
    # FAST times 5 samples with the default trim: each key's figure keeps all five
    assert entry["samples_kept"] == 5 and entry["key_se_median"] == pytest.approx(entry["key_cv_median"] / 5**0.5)
    # without drift correction the default reference is timed alone at the start and the end: the speed probes
    assert len(entry["probes_ms"]) == 2 and all(p > 0 for p in entry["probes_ms"])
    assert entry["swing_from"] == "probes" and entry["speed_ms"] > 0
    monkeypatch.setattr(steadiness, "UNSTEADY_SE", 10.0)
    monkeypatch.setattr(steadiness, "UNSTEADY_SWING_PCT", 1e9)
    quiet = tmp_path / "quiet"
    run = cli([*argv[:-1], str(quiet), *PROBED])
    assert "warning: the machine was unsteady" not in run.stdout
    _, meta = read(quiet / "cpu_onnxruntime_fp32_b1.parquet")
    assert meta["steadiness"]["unsteady"] is False


def test_no_speed_probe_times_no_reference_and_leaves_the_speed_unknown(tmp_path, cli):
    archs = write_archs(tmp_path / "archs.json", tiny_keys(2))
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert cli([*argv, *FAST]).returncode == 0  # FAST holds --no-speed-probe
    _, meta = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    entry = meta["steadiness"]
    assert entry["probes_ms"] == [] and entry["probe_key"] is None
    assert entry["swing_pct"] is None and entry["speed_ms"] is None
    assert entry["key_cv_median"] > 0  # the keys' own spread is still recorded


def test_dry_run_with_drift_correction_estimates_more_time(tmp_path, capsys):
    argv = ["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--out", str(tmp_path), "--dry-run"]
    assert build.main([*argv, "--no-drift-correct"]) == 0
    plain = capsys.readouterr().out
    assert build.main([*argv, "--drift-correct"]) == 0
    corrected = capsys.readouterr().out
    assert "with --drift-correct" in corrected and "with --drift-correct" not in plain


def test_the_cpu_profile_drift_corrects_by_default_and_a_gpu_profile_does_not(tmp_path, capsys):
    argv = ["--batch", "1", "--networks", "resnet-18", "--out", str(tmp_path), "--dry-run"]
    assert build.main(["--device", "cpu", *argv]) == 0
    cpu = capsys.readouterr().out
    assert "with --drift-correct" in cpu and "the default on the cpu profile; --no-drift-correct: off" in cpu
    assert build.main(["--device", "v100", *argv]) == 0
    gpu = capsys.readouterr().out
    assert "with --drift-correct" not in gpu and "drift-corrected to reference" not in gpu
    parser = build.build_parser()
    cpu_profile, gpu_profile = build.get_profile("cpu"), build.get_profile("v100")
    assert build.drift_on(parser.parse_args(["--batch", "1", "--device", "cpu"]), cpu_profile)
    assert not build.drift_on(parser.parse_args(["--batch", "1", "--device", "cpu", "--no-drift-correct"]), cpu_profile)
    assert not build.drift_on(parser.parse_args(["--batch", "1", "--device", "v100"]), gpu_profile)
    assert build.drift_on(parser.parse_args(["--batch", "1", "--device", "v100", "--drift-correct"]), gpu_profile)


@pytest.mark.parametrize(
    "device, extra, why",
    [
        ("cpu", ["--no-drift-correct"], "--no-drift-correct was given"),
        ("v100", [], "GPU profiles default to none"),
    ],
)
def test_a_drift_reference_without_drift_correction_is_one_line(tmp_path, capsys, device, extra, why):
    argv = ["--device", device, "--batch", "1", "--networks", "resnet-18", "--out", str(tmp_path), "--dry-run"]
    key = "xx_i128x28x28_o128_k3_s1_e1_se0_relu"
    assert build.main([*argv, *extra, "--drift-reference", key]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0] and "add --drift-correct" in err[0] and "Traceback" not in err[0]


# ----- rounds ----------------------------------------------------------------------


def test_rounds_measure_every_key_once_per_round_and_keep_the_median(tmp_path, capsys):
    keys = tiny_keys(3)
    archs = write_archs(tmp_path / "archs.json", keys)
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main([*argv, *FAST, "--rounds", "3"]) == 0
    assert "measured 9 now" in capsys.readouterr().out
    frame, meta = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    assert meta["rounds"] == 3 and sorted(frame["key"]) == sorted(map(str, keys))
    rounds = [read(tmp_path / f"cpu_onnxruntime_fp32_b1.parquet.rounds/round-{r}.parquet")[0] for r in (1, 2, 3)]
    for row in frame.itertuples():
        per_round = [float(r.set_index("key").loc[row.key, "latency_ms"]) for r in rounds]
        assert list(row.round_latency_ms) == per_round
        assert row.latency_ms == float(np.median(per_round))
        assert row.n_samples == 15 and len(row.samples_ms) == 15  # every round's 5 samples
    # each round is a pass over all keys in its own shuffled order
    orders = [list(r.sort_values("measured_at", kind="stable")["key"]) for r in rounds]
    assert orders[0] == [str(k) for k in tablebuild.measuring_order(keys, 0)]
    assert orders[1] == [str(k) for k in tablebuild.measuring_order(keys, 1)]


def test_a_table_built_in_one_round_lists_no_round_figures(tmp_path):
    archs = write_archs(tmp_path / "archs.json", tiny_keys(2))
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main([*argv, *FAST]) == 0
    frame, meta = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    assert meta["rounds"] == 1 and (frame["round_latency_ms"].map(len) == 0).all()
    assert not (tmp_path / "cpu_onnxruntime_fp32_b1.parquet.rounds").exists()


def test_rounds_resume_only_what_is_missing_and_refuse_another_count(tmp_path, cli):
    keys = tiny_keys(4)
    first = write_archs(tmp_path / "first.json", keys[:2])
    both = write_archs(tmp_path / "both.json", keys)
    base = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--out", str(tmp_path / "o"), *FAST]
    assert build.main([*base, "--archs", str(first), "--rounds", "2"]) == 0
    again = cli([*base, "--archs", str(both), "--rounds", "2"])
    assert again.returncode == 0, again.stderr
    assert "measured 4 now" in again.stdout  # the two new keys, twice
    frame, _ = read(tmp_path / "o" / "cpu_onnxruntime_fp32_b1.parquet")
    assert len(frame) == 4 and (frame["round_latency_ms"].map(len) == 2).all()
    refused = cli([*base, "--archs", str(both), "--rounds", "3"])
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--rounds 2" in lines[0]


def test_a_key_that_fails_in_a_round_is_not_measured_in_the_next(tmp_path, monkeypatch):
    import kernels_bench.measure as measure

    keys = tiny_keys(3)
    bad = keys[2]
    real = measure.measure_keys
    calls: list[str] = []

    def flaky(backend, ks, *args, **kwargs):
        calls.append(str(ks[0]))
        if list(ks) == [bad]:
            raise RuntimeError("no kernel")
        return real(backend, ks, *args, **kwargs)

    monkeypatch.setattr(measure, "measure_keys", flaky)
    archs = write_archs(tmp_path / "archs.json", keys)
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    assert build.main([*argv, *FAST, "--rounds", "2", "--order", "given"]) == 1
    assert calls.count(str(bad)) == 1 and len(calls) == 5
    frame, _ = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    status = dict(zip(frame["key"], frame["status"]))
    assert status[str(bad)] == "failed" and status[str(keys[0])] == "ok"


def test_dry_run_counts_every_round(tmp_path, capsys):
    archs = write_archs(tmp_path / "archs.json", tiny_keys(3))
    argv = ["--device", "cpu", "--batch", "1", "--archs", str(archs), "--out", str(tmp_path), "--precision", "fp32"]
    assert build.main([*argv, "--rounds", "2", "--short-rounds", "1", "--dry-run"]) == 0
    assert "0+0 done in 2 rounds, 6 to measure" in capsys.readouterr().out


def test_rounds_below_one_are_one_line(tmp_path, cli):
    result = cli(["--device", "cpu", "--batch", "1", "--rounds", "0", "--out", str(tmp_path / "o")])
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --rounds must be at least 1, got 0"


def test_a_disk_full_while_exporting_is_a_transient_failure_that_a_plain_rerun_measures(tmp_path, monkeypatch, cli):
    import errno

    import kernels_bench.export as export

    keys = tiny_keys(3)
    archs = write_archs(tmp_path / "archs.json", keys)
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    argv += [*FAST, "--cache-dir", str(tmp_path / "cache")]
    real = export.write_bytes

    def full(path, data):
        if str(path).endswith(".onnx") and "identity" not in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(export, "write_bytes", full)
    first = cli(argv)
    assert first.returncode == 1
    assert "3 transient" in first.stdout and "a plain rerun measures them again" in first.stdout
    assert str(tmp_path / "cache") in first.stdout  # the summary names where the disk filled
    frame, _ = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    assert (frame["failure_kind"] == "transient").all()
    monkeypatch.setattr(export, "write_bytes", real)
    again = cli(argv)  # no --retry-failed: the machine was the problem, not the keys
    assert again.returncode == 0 and "measured 3 now" in again.stdout


def test_a_key_the_engine_refuses_stays_failed_until_retry_failed(tmp_path, monkeypatch, cli):
    import kernels_bench.measure as measure

    keys = tiny_keys(2)
    archs = write_archs(tmp_path / "archs.json", keys)
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    argv += FAST
    real = measure.measure_keys

    def refuse(backend, ks, *args, **kwargs):
        if list(ks) == [keys[0]]:
            raise RuntimeError("the engine cannot build this graph")
        return real(backend, ks, *args, **kwargs)

    monkeypatch.setattr(measure, "measure_keys", refuse)
    assert cli(argv).returncode == 1
    monkeypatch.setattr(measure, "measure_keys", real)
    again = cli(argv)
    assert again.returncode == 1 and "measured 0 now" in again.stdout and "1 permanent" in again.stdout
    retried = cli([*argv, "--retry-failed"])
    assert retried.returncode == 0 and "measured 1 now" in retried.stdout


def test_a_key_too_large_for_the_machine_is_a_permanent_failure_that_is_never_run(tmp_path, monkeypatch, cli):
    import kernels_bench.measure as measure
    from tables.cost import key_cost
    from tables.host import host_memory_bytes

    huge = BlockKey("conv", 64, 4096, 4096, 64, k=1, s=1)
    assert key_cost(huge, 8).memory_bytes > (host_memory_bytes() or 0)
    keys = [*tiny_keys(1), huge]
    timed: list[str] = []
    real = measure.measure_keys

    def record(backend, ks, *args, **kwargs):
        timed.extend(str(k) for k in ks)
        return real(backend, ks, *args, **kwargs)

    monkeypatch.setattr(measure, "measure_keys", record)
    archs = write_archs(tmp_path / "archs.json", keys)
    argv = ["--device", "cpu", "--batch", "8", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    run = cli([*argv, *FAST])
    assert run.returncode == 1 and "1 permanent" in run.stdout
    assert str(huge) not in timed
    frame, _ = read(tmp_path / "cpu_onnxruntime_fp32_b8.parquet")
    row = frame.set_index("key").loc[str(huge)]
    assert row["status"] == "failed" and row["failure_kind"] == "permanent"
    assert "GiB for its weights and largest tensors at batch 8" in row["error"] and "smaller --batch" in row["error"]


def test_by_default_every_key_gets_its_boundary_and_a_resume_with_another_method_is_refused(tmp_path, cli):
    from tables.table import LatencyTable

    keys = tiny_keys(3)
    archs = write_archs(tmp_path / "archs.json", keys)
    argv = ["--device", "cpu", "--batch", "1", "--precision", "fp32", "--archs", str(archs), "--out", str(tmp_path)]
    fast = [a for a in FAST if a not in ("--boundary", "none")]
    assert cli([*argv, *fast, "--limit", "2"]).returncode == 0
    frame, meta = read(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    assert meta["boundary"] == {"method": "in_context"}
    assert frame["boundary_ms"].notna().all() and (frame["boundary_s"] > 0).all()
    table = LatencyTable.load(tmp_path / "cpu_onnxruntime_fp32_b1.parquet")
    assert table.boundary_corrected and table.network_ms == table.floor_ms
    assert (table.block_array <= table.latency_array).all()
    refused = cli([*argv, *fast, "--boundary", "identity"])
    assert refused.returncode == 2 and "--boundary in_context vs identity" in refused.stderr
    plain = tmp_path / "plain"
    assert cli([*argv[:-1], str(plain), *FAST]).returncode == 0
    frame, meta = read(plain / "cpu_onnxruntime_fp32_b1.parquet")
    assert "boundary" not in meta and frame["boundary_ms"].isna().all()
