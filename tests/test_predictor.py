"""Specification of the predictor: one architecture, many encodings, calibration and missing keys."""

from __future__ import annotations

import itertools
import json
import zlib
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fake_timing import constant_timing

from profiler.enumeration import keys_for_archs_file
from profiler.spaces import genet, gpunet
from tables.calibration import Calibration
from tables.key import BlockKey
from tables.predictor import MissingKeysError, fit_for_table, predict, predict_many, write_archs_file
from tables.schema import build_metadata, result_row
from tables.settings import settings_id
from tables.table import LatencyTable


def timing(ms: float) -> SimpleNamespace:
    return constant_timing(ms, samples=1, warmup_runs=1)


def synthetic_ms(key: BlockKey) -> float:
    # deterministic per key; multiples of 1/256 so that every sum is exact in float64
    return (zlib.crc32(str(key).encode()) % 4096 + 1) / 256


def make_table(keys, batch: int = 8, exclude=()) -> LatencyTable:
    rows = [result_row(k, timing(synthetic_ms(k))) for k in set(keys) if k not in exclude]
    md = build_metadata(device_profile="cpu", backend="onnxruntime", precision="fp32", batch=batch)
    return LatencyTable(pd.DataFrame(rows), md)


STEM = BlockKey("conv", 3, 64, 64, 16, 3, 2, act="swish")
IRB1 = BlockKey("irb", 16, 32, 32, 24, 3, 2, 4, True, "swish")
IRB2 = BlockKey("irb", 24, 16, 16, 24, 3, 1, 4, True, "swish")
TAIL = BlockKey("tail", 24, 16, 16, 1280, 1)
ARCH = [STEM, IRB1, IRB2, IRB2, TAIL]


@pytest.fixture(scope="module")
def gpunet_case():
    enc = gpunet.sample(64, seed=7)
    keys = {k for e in enc for k in gpunet.arch_keys(e)}
    return enc, make_table(keys)


def test_predict_sums_block_latencies_per_batch_and_per_image():
    table = make_table(ARCH, batch=8)
    p = predict(table, ARCH)
    expected = sum(synthetic_ms(k) for k in ARCH)
    assert p.sum_ms == expected and p.ms_per_batch == expected
    assert p.ms_per_image == expected / 8
    assert not p.calibrated


def test_breakdown_lists_each_block_with_its_stage():
    p = predict(make_table(ARCH), [str(k) for k in ARCH])
    assert p.breakdown["key"].tolist() == [str(k) for k in ARCH]
    assert p.breakdown["block"].tolist() == ["conv", "irb", "irb", "irb", "tail"]
    assert p.breakdown["stage"].tolist() == [0, 1, 1, 1, 2]  # repeated layers stay in their stage
    assert p.breakdown["latency_ms"].sum() == p.sum_ms


def test_predict_accepts_an_object_with_keys():
    table = make_table(ARCH)
    assert predict(table, SimpleNamespace(keys=tuple(ARCH))).sum_ms == predict(table, ARCH).sum_ms


def test_missing_keys_are_counted_listed_and_written_as_an_archs_file(tmp_path):
    table = make_table(ARCH, exclude={IRB2, TAIL})
    with pytest.raises(MissingKeysError) as err:
        predict(table, ARCH)
    message = str(err.value)
    assert message.startswith("2 block key(s) not in the latency table")
    assert str(IRB2) in message and "python -m profiler.build --archs FILE" in message
    path = err.value.write_archs(tmp_path / "missing.json")
    doc = json.loads(path.read_text())
    assert sorted(k for a in doc["architectures"] for k in a["blocks"]) == sorted([str(IRB2), str(TAIL)])
    assert set(keys_for_archs_file(path)) == {IRB2, TAIL}  # what profiler.build --archs reads


def test_write_archs_file_deduplicates_keys(tmp_path):
    doc = json.loads(write_archs_file([IRB2, str(IRB2)], tmp_path / "a.json").read_text())
    assert len(doc["architectures"]) == 1


def test_predict_applies_the_table_calibration_by_default():
    table = make_table(ARCH)
    table.calibration = Calibration("linear", a=0.5, b=1.0)
    raw = predict(table, ARCH, calibrated=False)
    cal = predict(table, ARCH)
    assert cal.calibrated and cal.ms_per_batch == 0.5 * raw.sum_ms + 1.0
    assert cal.sum_ms == raw.sum_ms


def test_a_network_smaller_than_the_calibrations_fit_networks_gets_a_faded_correction_and_says_so():
    table = make_table(ARCH)
    raw = predict(table, ARCH, calibrated=False).sum_ms
    table.calibration = Calibration("linear", a=0.5, b=1.0, fit_sum_ms=(4 * raw, 10 * raw))
    small = predict(table, ARCH)
    assert small.calibrated and small.calibration_weight == pytest.approx(0.25)
    assert small.ms_per_batch == pytest.approx(raw + 0.25 * (0.5 * raw + 1.0 - raw))
    table.calibration = Calibration("linear", a=0.5, b=1.0, fit_sum_ms=(raw / 2, raw * 2))
    inside = predict(table, ARCH)
    assert inside.calibration_weight == 1.0 and inside.ms_per_batch == pytest.approx(0.5 * raw + 1.0)
    assert predict(table, ARCH, calibrated=False).calibration_weight == 0.0


def test_predict_many_fades_a_calibration_beyond_its_fit_range_like_predict(gpunet_case):
    enc, table = gpunet_case
    sums = predict_many(table, enc, gpunet.SPACE, calibrated=False)
    mid = float(np.median(sums))
    table.calibration = Calibration("linear", a=0.9, b=0.25, fit_sum_ms=(mid, mid * 1.01))
    loop = np.array([predict(table, gpunet.arch_keys(e)).ms_per_batch for e in enc])
    np.testing.assert_allclose(predict_many(table, enc, gpunet.SPACE), loop, rtol=1e-12)
    assert not np.allclose(loop, 0.9 * sums + 0.25)  # most networks lie outside that narrow range
    table.calibration = None


def test_predict_many_equals_a_loop_of_predict_on_gpunet(gpunet_case):
    enc, table = gpunet_case
    loop = np.array([predict(table, gpunet.arch_keys(e)).ms_per_batch for e in enc])
    assert np.array_equal(predict_many(table, enc, gpunet.SPACE), loop)


def test_predict_many_equals_a_loop_of_predict_on_genet():
    space = genet.space("light")
    enc = space.sample(48, seed=3)
    table = make_table({k for e in enc for k in space.arch_keys(e)})
    loop = np.array([predict(table, space.arch_keys(e)).ms_per_batch for e in enc])
    assert np.array_equal(predict_many(table, enc, space), loop)


def test_a_second_table_of_one_space_reuses_its_key_strings_and_sums_its_own_latencies():
    from tables.space_grid import space_lookup

    space = genet.space("light")
    enc = space.sample(24, seed=8)
    keys = {k for e in enc for k in space.arch_keys(e)}
    one, two = make_table(keys), odd_table(keys)
    first, second = space_lookup(one, space), space_lookup(two, space)
    # the strings depend on the space alone: built once, shared by both tables' grids
    assert all(a.first_text is b.first_text for a, b in zip(first.stages, second.stages))
    assert first.pairs is second.pairs
    for table in (one, two):
        loop = np.array([predict(table, space.arch_keys(e)).ms_per_batch for e in enc])
        assert np.array_equal(predict_many(table, enc, space), loop)
    assert not np.array_equal(predict_many(one, enc, space), predict_many(two, enc, space))


def test_predict_many_is_stable_across_calls(gpunet_case):
    enc, table = gpunet_case
    first = predict_many(table, enc[:10], gpunet.SPACE)
    assert np.array_equal(predict_many(table, enc[::-1], gpunet.SPACE)[::-1][:10], first)


def test_predict_many_applies_every_calibration_model_like_predict(gpunet_case):
    enc, table = gpunet_case
    archs = [gpunet.arch_keys(e) for e in enc]
    for cal in (
        Calibration("linear", a=0.9, b=0.25),
        Calibration("floor_linear", a=1.1, b=0.5, floor_ms=0.0625),
        Calibration("per_type", b=0.125, type_scales={"irb": 0.5, "fused_irb": 2.0, "conv": 1.0, "tail": 0.25}),
        Calibration("io_linear", a=1.05, b=0.375, io_ms_per_mel=-0.25),
    ):
        table.calibration = cal
        loop = np.array([predict(table, a).ms_per_batch for a in archs])
        np.testing.assert_allclose(predict_many(table, enc, gpunet.SPACE), loop, rtol=1e-12)
    table.calibration = None


def test_predict_many_lists_all_missing_keys(gpunet_case):
    enc, _ = gpunet_case
    some = gpunet.arch_keys(enc[0])
    smaller = make_table({k for e in enc for k in gpunet.arch_keys(e)}, exclude={some[1], some[-1]})
    with pytest.raises(MissingKeysError) as err:
        predict_many(smaller, enc, gpunet.SPACE)
    assert set(err.value.keys) == {some[1], some[-1]}


@pytest.mark.parametrize(
    ("array", "text"),
    [
        (np.zeros((5, 40), dtype=np.int64), "got shape (5, 40) int64"),
        (np.zeros((5, 41), dtype=np.float64), "got shape (5, 41) float64"),
        (np.zeros(41, dtype=np.int64), "got shape (41,) int64"),
    ],
)
def test_predict_many_refuses_a_wrong_shape_or_dtype(gpunet_case, array, text):
    _, table = gpunet_case
    with pytest.raises(ValueError, match=r"encodings must be an \(N, 41\) integer array") as err:
        predict_many(table, array, gpunet.SPACE)
    assert text in str(err.value)


def test_a_space_name_instead_of_a_space_object_is_refused_saying_how_to_get_one(gpunet_case):
    _, table = gpunet_case
    with pytest.raises(ValueError, match=r"'gpunet' is not a staged search space.*resolve_space"):
        predict_many(table, np.zeros((1, 41), dtype=np.int64), "gpunet")


def test_fit_for_table_recovers_the_calibration_from_whole_network_measurements(gpunet_case):
    enc, table = gpunet_case
    archs = [gpunet.arch_keys(e) for e in enc]
    sums = np.array([predict(table, a, calibrated=False).sum_ms for a in archs])
    cal = fit_for_table(table, archs, 0.75 * sums + 0.2, models=["none", "linear"])
    assert cal.model == "linear" and cal.a == pytest.approx(0.75) and cal.b == pytest.approx(0.2)
    identity = {"device_profile": "cpu", "backend": "onnxruntime", "precision": "fp32", "batch": 8}
    assert cal.table == {**identity, "settings_id": settings_id(table.metadata)}  # linked to its table


# ----- predict_many: exact sums, chunks, values outside the space, key strings --------------------------
def crc_ms(key: BlockKey) -> float:
    # not a multiple of a power of two: sums round, so the order of additions shows
    return 0.01 + (zlib.crc32(str(key).encode()) % 100003) / 7919.0


def odd_table(keys) -> LatencyTable:
    rows = [result_row(k, timing(crc_ms(k))) for k in set(keys)]
    md = build_metadata(device_profile="cpu", backend="onnxruntime", precision="fp32", batch=8)
    return LatencyTable(pd.DataFrame(rows), md)


def merging_gpunet_encodings(n: int, seed: int) -> np.ndarray:
    # random encodings where stage 5 often repeats stage 4's config and stage 7 stage 6's, so that
    # keys run on across stage boundaries (and stage 5/7's first layer equals its repeated layer)
    enc = gpunet.sample(n, seed=seed)
    rng = np.random.default_rng(seed)
    for src, dst in ((17, 23), (29, 35)):
        rows = rng.random(n) < 0.5
        enc[rows, dst + 1 : dst + 5] = enc[rows, src + 1 : src + 5]  # kernel, E, SE, act
        width = enc[rows, src]
        ok = np.isin(width, gpunet.SPACE.positions[dst].codes)
        enc[np.flatnonzero(rows)[ok], dst] = width[ok]
    return enc


def test_predict_many_is_bit_identical_to_predict_with_rounding_latencies(monkeypatch):
    enc = merging_gpunet_encodings(300, seed=11)
    table = odd_table({k for e in enc for k in gpunet.arch_keys(e)})
    loop = np.array([predict(table, gpunet.arch_keys(e)).ms_per_batch for e in enc])
    monkeypatch.setattr("tables.space_grid._CHUNK", 37)  # several blocks, merged rows in each
    assert np.array_equal(predict_many(table, enc, gpunet.SPACE), loop)
    # some networks have a run of one key across stages 4 and 5 (or 6 and 7): the exact path was needed
    crossing = 0
    for e in enc:
        st = gpunet.decode(e).stages
        crossing += any(
            st[a].layers >= 2 and st[b].layers >= 1 and st[a] == replace(st[b], layers=st[a].layers)
            for a, b in ((4, 5), (6, 7))
        )
    assert crossing >= 5


def test_predict_many_is_bit_identical_on_genet_with_rounding_latencies():
    space = genet.space("normal")
    enc = space.sample(200, seed=5)
    table = odd_table({k for e in enc for k in space.arch_keys(e)})
    loop = np.array([predict(table, space.arch_keys(e)).ms_per_batch for e in enc])
    assert np.array_equal(predict_many(table, enc, space), loop)


def test_predict_sums_runs_of_one_key_as_count_times_latency():
    table = odd_table(ARCH)
    lat = {k: crc_ms(k) for k in ARCH}
    expected = 0.0
    for part in (lat[STEM], lat[IRB1], 2 * lat[IRB2], lat[TAIL]):
        expected = expected + part
    assert predict(table, ARCH).sum_ms == expected


def test_predict_many_takes_other_integer_dtypes_and_layouts(gpunet_case):
    enc, table = gpunet_case
    want = predict_many(table, enc, gpunet.SPACE)
    assert np.array_equal(predict_many(table, enc.astype(np.int32), gpunet.SPACE), want)
    assert np.array_equal(predict_many(table, np.asfortranarray(enc), gpunet.SPACE), want)
    assert np.array_equal(predict_many(table, enc.tolist(), gpunet.SPACE), want)
    assert predict_many(table, enc[:0], gpunet.SPACE).shape == (0,)


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        (7, 7, "position 7 (stage 2 expansion) is 7"),
        (5, 40, "position 5 (stage 2 filters) is 40"),
        (0, -224, "position 0 (resolution) is -224"),
        (40, 10**12, "position 40 (stage 7 layers)"),
    ],
)
def test_predict_many_names_a_value_outside_the_space(gpunet_case, monkeypatch, column, value, text):
    enc, table = gpunet_case
    bad = enc.copy()
    bad[50, column] = value
    monkeypatch.setattr("tables.space_grid._CHUNK", 16)
    with pytest.raises(ValueError, match="invalid gpunet encoding in row 50") as err:
        predict_many(table, bad, gpunet.SPACE)
    assert text in str(err.value)


def test_predict_many_needs_no_repeated_layer_key_for_single_layer_stages():
    enc = gpunet.sample(40, seed=2)
    enc[:, 4] = 1  # stage 1 has one layer: its repeated-layer keys are never needed
    table = make_table({k for e in enc for k in gpunet.arch_keys(e)})
    loop = np.array([predict(table, gpunet.arch_keys(e)).ms_per_batch for e in enc])
    assert np.array_equal(predict_many(table, enc, gpunet.SPACE), loop)


def test_predict_many_lists_a_missing_repeated_layer_key(gpunet_case):
    enc, _ = gpunet_case
    keys = gpunet.arch_keys(enc[0])
    repeated = next(k for a, k in itertools.pairwise(keys) if a == k)
    smaller = make_table({k for e in enc for k in gpunet.arch_keys(e)}, exclude={repeated})
    with pytest.raises(MissingKeysError) as err:
        predict_many(smaller, enc, gpunet.SPACE)
    assert err.value.keys == [repeated]


class _Shifted:
    """GPUNet, but stage 3's keys at 256 pixels get another input width: not the usual key pattern."""

    def __init__(self) -> None:
        self.base = gpunet.SPACE

    def __getattr__(self, name):
        return getattr(self.base, name)

    def stage_layer_keys(self, si, res, cin, filters, kernel, e, se, act, layers):
        first, rest = self.base.stage_layer_keys(si, res, cin, filters, kernel, e, se, act, layers)
        if si == 3 and res == 256:
            first = BlockKey(
                first.block, first.cin + 8, first.h, first.w, first.cout, first.k, first.s, first.e, first.se, first.act
            )
        return first, rest


@pytest.mark.parametrize("space", [gpunet.SPACE, _Shifted()], ids=["pattern", "irregular"])
def test_grid_key_strings_equal_the_space_keys(space):
    from tables.space_grid import _grid_texts

    st = space.stages[3]
    cins, outs = [32, 48], list(st.filters)
    combos = [(k, float(e), s, a) for k in st.kernels for e in st.expansions for s in st.se for a in (0, 1)]
    firsts, rests = _grid_texts(space, 3, cins, outs, combos, True)
    i = 0
    for cin in cins:
        for f in outs:
            for combo in combos:
                for res in sorted(space.resolutions):
                    first, rest = space.stage_layer_keys(3, res, cin, f, *combo, 2)
                    assert firsts[i] == str(first)
                    if cin == cins[0]:
                        assert rests[i] == str(rest)
                    i += 1
    assert i == len(firsts) and len(rests) == len(firsts) // 2


# ----- block input/output (the io_linear calibration) ----------------------------------------------------
def test_predict_reports_the_blocks_input_and_output_and_io_linear_charges_it(gpunet_case):
    enc, table = gpunet_case
    keys = gpunet.arch_keys(enc[0])
    raw = predict(table, keys, calibrated=False)
    expected = table.batch * sum(k.io_elements for k in keys) / 1e6
    assert raw.io_mel == pytest.approx(expected, rel=1e-12)
    table.calibration = Calibration("io_linear", a=0.9, b=0.5, io_ms_per_mel=-0.2)
    try:
        p = predict(table, keys)
        assert p.calibrated and p.ms_per_batch == pytest.approx(0.9 * raw.sum_ms - 0.2 * expected + 0.5, rel=1e-12)
    finally:
        table.calibration = None


def test_predict_many_with_io_linear_is_bit_identical_to_predict():
    keys = {k for e in merging_gpunet_encodings(300, 5) for k in gpunet.arch_keys(e)}
    table = odd_table(keys)
    enc = merging_gpunet_encodings(300, 5)
    table.calibration = Calibration("io_linear", a=1.0 / 3.0, b=0.1, io_ms_per_mel=1.0 / 7.0)
    loop = np.array([predict(table, gpunet.arch_keys(e)).ms_per_batch for e in enc])
    assert np.array_equal(predict_many(table, enc, gpunet.SPACE), loop)


def test_network_features_match_predict(gpunet_case):
    from tables.predictor import network_features

    enc, table = gpunet_case
    archs = [gpunet.arch_keys(e) for e in enc[:20]]
    f = network_features(table, archs)
    for i, a in enumerate(archs):
        p = predict(table, a, calibrated=False)
        assert f.sum_ms[i] == pytest.approx(p.sum_ms, rel=1e-12)
        assert f.io_mel[i] == pytest.approx(p.io_mel, rel=1e-12)
        assert f.n_blocks[i] == p.n_blocks
    assert set(f.type_sums) == {k.block for a in archs for k in a}


def test_a_calibration_that_would_give_a_non_positive_latency_is_refused_not_applied(gpunet_case):
    enc, table = gpunet_case
    table.calibration = Calibration("linear", a=1.0, b=-1e5)  # far below any network's block sum
    try:
        with pytest.raises(ValueError, match=r"gives -?[0-9.e+]+ ms for this network.*calibrated=False"):
            predict(table, gpunet.arch_keys(enc[0]))
        with pytest.raises(ValueError, match=rf"for {len(enc)} of {len(enc)} networks"):
            predict_many(table, enc, gpunet.SPACE)
        assert predict(table, gpunet.arch_keys(enc[0]), calibrated=False).ms_per_batch > 0
    finally:
        table.calibration = None
