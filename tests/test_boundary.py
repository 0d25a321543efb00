"""A key's boundary: the graphs each method times, the arithmetic, sharing, and what the predictor does with it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from kernels_bench import boundary as bd
from tables.key import BlockKey

IRB = BlockKey("irb", 24, 16, 16, 24, k=3, s=1, e=3)  # follows itself
DOWN = BlockKey("irb", 24, 16, 16, 40, k=3, s=2, e=3)  # does not
HEAD = BlockKey("pool_fc", 512, 7, 7, 1000, k=1, s=1)  # a classifier


def test_each_method_times_the_graphs_it_says():
    pre = bd.neighbour((24, 16, 16))
    assert pre == BlockKey("conv", 24, 16, 16, 24, k=1, s=1, act="relu")
    assert bd.graphs_for(IRB, "in_context") == [("chain", (pre, IRB)), ("chain", (pre,))]
    assert bd.graphs_for(IRB, "differential") == [("chain", (IRB, IRB))]
    post = bd.neighbour((40, 8, 8))
    assert bd.graphs_for(DOWN, "differential") == [("chain", (DOWN, post)), ("chain", (post,))]
    assert bd.graphs_for(HEAD, "differential") == bd.graphs_for(HEAD, "in_context")
    assert bd.graphs_for(DOWN, "identity") == [("identity", (40, 8, 8))]
    assert bd.graphs_for(IRB, "none") == []
    with pytest.raises(ValueError, match="unknown boundary method 'fast': use one of in_context, differential"):
        bd.graphs_for(IRB, "fast")


def test_the_boundary_is_the_time_alone_minus_the_time_in_a_network():
    pre = bd.neighbour((24, 16, 16))
    timed = {("chain", (pre, IRB)): 1.30, ("chain", (pre,)): 0.50}
    assert bd.boundary_of(IRB, "in_context", 1.00, timed) == pytest.approx(1.00 - (1.30 - 0.50))
    assert bd.boundary_of(IRB, "differential", 1.00, {("chain", (IRB, IRB)): 1.75}) == pytest.approx(0.25)
    assert bd.boundary_of(DOWN, "identity", 1.0, {("identity", (40, 8, 8)): 0.07}) == pytest.approx(0.07)


def test_the_meter_times_a_shared_graph_once_and_brings_it_to_each_keys_speed(monkeypatch):
    import kernels_bench.measure as measure

    calls: list[tuple[str, ...]] = []

    def fake_keys(backend, keys, batch, precision, settings, *, reference=None):
        calls.append(tuple(str(k) for k in keys))
        return SimpleNamespace(trimmed_mean_ms=0.5 * len(keys) + 0.3, reference_ms=10.0 if reference else None)

    monkeypatch.setattr(measure, "measure_keys", fake_keys)
    meter = bd.BoundaryMeter(backend=None, method="in_context", settings=None)
    other = BlockKey("irb", 24, 16, 16, 24, k=5, s=1, e=3)  # same input shape: the neighbour alone is shared
    alone = SimpleNamespace(trimmed_mean_ms=1.0, reference_ms=None)
    b1 = meter.measure(IRB, 1, "fp32", alone)
    b2 = meter.measure(other, 1, "fp32", alone)
    assert b1 == pytest.approx(1.0 - (1.3 - 0.8)) and b2 == pytest.approx(b1)
    assert len(calls) == 3  # (pre, IRB), (pre,), (pre, other): the neighbour alone once
    # with a drift reference the shared figure is brought to the speed of the key that uses it
    drifting = bd.BoundaryMeter(backend=None, method="in_context", settings=None)
    fast = drifting.measure(IRB, 1, "fp32", SimpleNamespace(trimmed_mean_ms=1.0, reference_ms=10.0), reference=1)
    slow = drifting.measure(other, 1, "fp32", SimpleNamespace(trimmed_mean_ms=2.0, reference_ms=20.0), reference=1)
    assert fast == pytest.approx(0.5)
    # (pre, other) timed at reference 10 -> 1.3 * 2 = 2.6; the shared (pre,) 0.8 at reference 10 -> 1.6
    assert slow == pytest.approx(2.0 - (2.6 - 1.6))


KEYS = ["conv_i3x32x32_o16_k3_s2_e1_se0_relu", "irb_i16x16x16_o24_k3_s2_e3_se0_relu"]


def table_with(boundary, floor_ms=0.05):
    from fake_timing import constant_timing

    from tables.schema import build_metadata, result_row
    from tables.table import LatencyTable

    rows = [
        result_row(k, constant_timing(ms, samples=1, warmup_runs=1), boundary_ms=b)
        for k, ms, b in zip(KEYS, (1.0, 2.0), boundary)
    ]
    md = build_metadata(
        device_profile="cpu", backend="onnxruntime", precision="fp32", batch=1, floor={"latency_ms": floor_ms}
    )
    return LatencyTable(pd.DataFrame(rows), md)


def test_the_predictor_sums_in_network_latencies_and_adds_the_floor_once():
    from tables.predictor import predict

    keys = KEYS
    table = table_with([0.2, 0.5])
    assert table.boundary_corrected
    np.testing.assert_allclose(table.block_array, [0.8, 1.5])
    p = predict(table, keys, calibrated=False)
    assert p.sum_ms == pytest.approx(0.8 + 1.5 + 0.05)
    assert p.breakdown["alone_ms"].tolist() == [1.0, 2.0]
    # a key without its boundary makes the whole table the plain sum: never a mix
    mixed = table_with([0.2, np.nan])
    assert not mixed.boundary_corrected and mixed.network_ms == 0.0
    assert predict(mixed, keys, calibrated=False).sum_ms == pytest.approx(3.0)
    # a boundary is bounded to [0, the time alone]: noise never makes a block negative, nor slower than alone
    np.testing.assert_allclose(table_with([1.5, -0.5]).block_array, [0.0, 2.0])


def test_an_older_table_without_the_column_loads_as_the_plain_sum(tmp_path):
    from tables.schema import read_table, write_table
    from tables.table import LatencyTable

    table = table_with([0.2, 0.5])
    path = tmp_path / "t.parquet"
    write_table(table.to_frame(), path, table.metadata)
    frame, md = read_table(path)
    write_table(frame.drop(columns=["boundary_ms"]), path, md)
    again = LatencyTable.load(path)
    assert not again.boundary_corrected and pd.isna(again.to_frame()["boundary_ms"]).all()
