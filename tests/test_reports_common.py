"""Report plumbing: one-line errors, figure files, input helpers; and the small inputs the report tests share."""

from __future__ import annotations

import importlib
import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reports import style
from reports.inputs import ReportError, filter_rows, parse_encoding, resolve_architecture
from tables.calibration import Calibration
from tables.cli import CliParser, run_cli
from tables.errors import one_line
from tables.key import BlockKey
from tables.schema import build_metadata, result_row, write_table

REPO = Path(__file__).resolve().parents[1]

# ----- inputs shared by the report tests ---------------------------------------------


def timing(ms: float, spread: float = 0.02) -> types.SimpleNamespace:
    """A timing result of 10 samples around ``ms`` (ms per batch)."""
    samples = list(ms * (1 + spread * np.linspace(-1, 1, 10)))
    return types.SimpleNamespace(
        samples_ms=samples,
        trimmed_mean_ms=ms,
        median_ms=ms,
        min_ms=min(samples),
        max_ms=max(samples),
        std_ms=float(np.std(samples)),
        cv=float(np.std(samples)) / ms,
        inner_loop=1,
        warmup_runs=5,
        phases={},
    )


def write_latency_table(
    path: Path,
    latencies: dict[BlockKey, float | None],
    *,
    device: str = "v100",
    precision: str = "fp16",
    batch: int = 8,
) -> Path:
    """A table file with one row per key; ``None`` makes a failed row."""
    rows = [
        result_row(k, timing(ms)) if ms is not None else result_row(k, None, error="engine build failed")
        for k, ms in latencies.items()
    ]
    md = build_metadata(
        device_profile=device,
        backend="tensorrt",
        precision=precision,
        batch=batch,
        device={"name": f"Tesla {device.upper()}"},
        engine={"name": "tensorrt", "version": "10.3.0"},
        timing={"warmup_ms": 200, "runs": 30, "trim": 0.1},
        floor={"latency_ms": 0.01},
    )
    return write_table(rows, path, md)


def width_keys() -> dict[BlockKey, float]:
    """XX, BL and DW keys at 28x28, kernel 3, several widths; plus a sparser 14x14 slice."""
    out: dict[BlockKey, float] = {}
    for c in (32, 64, 96, 128):
        for block, e, f in (("xx", 1.0, 2.0), ("bl", 0.25, 1.0), ("dw", 3.0, 1.5)):
            out[BlockKey(block, c, 28, 28, c, k=3, e=e)] = 0.001 * c * f
    out[BlockKey("xx", 32, 14, 14, 32, k=5)] = 0.05
    return out


def write_validation(path: Path, *, n: int = 12, metrics: bool = True, batch: int = 8) -> Path:
    """A validation file as written by ``python -m profiler.validate``."""
    measured = np.linspace(1.0, 12.0, n)
    sums = measured * 1.15 + 0.2
    predicted = measured * (1 + 0.03 * np.sin(np.arange(n)))
    df = pd.DataFrame(
        {
            "network": [f"net{i}" for i in range(n)],
            "source": "gpunet",
            "encoding": "[]",
            "n_blocks": np.full(n, 20, dtype=np.int64),
            "sum_ms": sums,
            "predicted_ms": predicted,
            "measured_ms": measured,
            "measured_std_ms": 0.01,
            "split": ["fit" if i % 2 == 0 else "holdout" for i in range(n)],
            "error_pct": (predicted - measured) / measured * 100,
            "error_uncal_pct": (sums - measured) / measured * 100,
        }
    )
    meta = {
        "device_profile": "v100",
        "device": {"name": "Tesla V100"},
        "engine": {"name": "tensorrt", "version": "10.3.0"},
        "precision": "fp16",
        "batch": batch,
        "calibration": Calibration(
            "linear", a=0.87, b=0.05, n_fit=6, accuracy={"calibrated_cv": {"mape_pct": 1.5}}
        ).to_dict(),
    }
    if metrics:
        block = {"n": n // 2, "mape_pct": 2.5, "max_ape_pct": 4.0, "rmspe_pct": 2.8, "within_5_pct": 100.0}
        meta["metrics"] = {
            "uncalibrated": {**block, "mape_pct": 17.0, "within_5_pct": 0.0, "kendall_tau": 1.0},
            "calibrated": {**block, "within_10_pct": 100.0, "kendall_tau": 0.9, "spearman_rho": 0.97},
        }
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({b"nas_latency": json.dumps(meta)}), path)
    return path


def assert_one_line_error(code: int, capsys: pytest.CaptureFixture[str], *needles: str, status: int = 2) -> str:
    """The command failed with exit ``status`` (2: bad input) and exactly one line on stderr, mentioning each needle."""
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def assert_figure_files(out: Path, stem: str) -> None:
    """PNG and SVG of ``stem`` exist in ``out`` and are real images."""
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text(encoding="utf-8")[:2000]


# ----- the plumbing itself ------------------------------------------------------------


def test_save_figure_writes_png_and_svg(tmp_path: Path) -> None:
    fig, (ax,) = style.new_figure()
    ax.plot([0, 1], [0, 1])
    paths = style.save_figure(fig, tmp_path / "sub", "line")
    assert [p.name for p in paths] == ["line.png", "line.svg"]
    assert_figure_files(tmp_path / "sub", "line")


def test_latency_axis_labels_carry_the_unit() -> None:
    assert style.latency_label(True) == "latency (ms per image)"
    assert style.latency_label(False, "block latency") == "block latency (ms per batch)"


def test_user_errors_become_one_line_with_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = CliParser(prog="prog", description="test")

    def body(_args: object) -> int:
        raise ReportError("first line\nsecond line")

    code = run_cli(body, parser, [])
    line = assert_one_line_error(code, capsys, "error: first line; second line")
    assert code == 2, line


def test_a_missing_dependency_is_one_line_saying_how_to_install_it(capsys: pytest.CaptureFixture[str]) -> None:
    parser = CliParser(prog="prog", description="test")

    def body(_args: object) -> int:
        raise ModuleNotFoundError("No module named 'pandas'", name="pandas")

    code = run_cli(body, parser, [])
    line = assert_one_line_error(code, capsys, "the Python module 'pandas' is not installed")
    assert code == 2 and "pip install -e ." in line

    def hinted(_args: object) -> int:  # an error that carries its own install hint keeps it
        raise ModuleNotFoundError("matplotlib is needed: pip install -e '.[reports]'", name="matplotlib")

    code = run_cli(hinted, parser, [])
    assert_one_line_error(code, capsys, "pip install -e '.[reports]'")


def test_bad_usage_is_one_line_with_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = CliParser(prog="prog", description="test")
    parser.add_argument("--n", type=int)
    code = run_cli(lambda _a: 0, parser, ["--n", "x"])
    assert code == 2
    assert_one_line_error(code, capsys, "--n")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(lambda _a: 0, CliParser(prog="prog", description="a test parser"), ["--help"]) == 0
    assert "a test parser" in capsys.readouterr().out


def test_key_error_message_loses_its_quotes() -> None:
    assert one_line(KeyError("missing key x")) == "missing key x"


def test_encodings_parse_from_json_or_spaces_but_names_do_not() -> None:
    assert parse_encoding("[1, 2, 3]") == [1, 2, 3]
    assert parse_encoding("1 2 3") == [1, 2, 3]
    assert parse_encoding("GPUNet-0") is None
    assert parse_encoding("7") is None


def test_filter_rows_compares_numbers_as_numbers_and_text_ignoring_case() -> None:
    df = pd.DataFrame({"gpu": ["V100", "T4", "V100"], "batch": [1, 64, 64]})
    out = filter_rows(df, [("gpu", "v100"), ("batch", "64.0")], "the CSV")
    assert out.index.tolist() == [2]


def test_filter_rows_that_match_nothing_name_the_values_present() -> None:
    df = pd.DataFrame({"gpu": ["V100", "T4"]})
    with pytest.raises(ReportError, match="values present: T4, V100"):
        filter_rows(df, [("gpu", "A100")], "the CSV")


@pytest.mark.parametrize("name", ["pareto", "validation", "blocks", "compare", "summary"])
def test_every_report_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"reports.{name}")
    assert module.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: python -m reports.{name}" in out
    assert "--out" in out


def test_every_shipped_reference_model_resolves_to_an_architecture() -> None:
    models = pd.read_csv(REPO / "reports" / "data" / "reference_models.csv")
    for arch in models["arch"]:
        assert len(resolve_architecture(arch).keys) > 3


def test_gpunet_encoding_and_key_file_resolve(tmp_path: Path) -> None:
    from profiler.spaces.gpunet import arch_keys, sample

    encoding = sample(1, seed=0)[0].tolist()
    assert list(resolve_architecture(" ".join(map(str, encoding))).keys) == arch_keys(encoding)
    keys = [BlockKey("xx", 8, 16, 16, 8), BlockKey("xx", 8, 16, 16, 8)]
    (tmp_path / "two.txt").write_text("# two blocks\n" + "\n".join(map(str, keys)) + "\n")
    arch = resolve_architecture("two.txt", tmp_path)
    assert list(arch.keys) == keys
    assert arch.name == "two"


def test_a_file_of_bad_keys_is_a_report_error(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("xx_nonsense\n")
    with pytest.raises(ReportError, match=r"bad\.txt"):
        resolve_architecture(str(tmp_path / "bad.txt"))


def test_an_unexpected_error_is_one_line_with_exit_status_1_and_a_debug_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reports import compare

    def broken(*_args: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(compare, "key_ratios", broken)
    t = write_latency_table(tmp_path / "t.parquet", {BlockKey("xx", 8, 8, 8, 8): 1.0})
    code = compare.main([str(t), str(t), "--out", str(tmp_path)])
    assert_one_line_error(code, capsys, "internal error: ZeroDivisionError", "--debug", status=1)
    with pytest.raises(ZeroDivisionError):
        compare.main([str(t), str(t), "--out", str(tmp_path), "--debug"])
