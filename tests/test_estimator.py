"""Profile less, know more: the key-level estimator, estimates used only when asked, and prediction intervals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fake_timing import constant_timing

from profiler.spaces import gpunet
from tables.estimator import MIN_KEYS, MODELS, fit_estimator, interval, key_features, z_for
from tables.key import BlockKey
from tables.predictor import ManyPredictions, MissingKeysError, predict, predict_many
from tables.schema import build_metadata, result_row
from tables.table import LatencyTable


def law_ms(key: BlockKey) -> float:
    """A made-up but smooth latency law of the key's cost: what an estimator should learn."""
    from tables.cost import key_cost

    c = key_cost(key, 1, "fp32")
    return 0.02 + c.flops / 4e10 + c.bytes_moved / 8e9


def spread_timing(ms: float, rel: float = 0.01, samples: int = 30) -> SimpleNamespace:
    """A timing result of ``samples`` samples spread evenly over ``ms`` +- ``rel``: a key measured with noise."""
    values = ms * (1 + rel * np.linspace(-1.0, 1.0, samples))
    t = constant_timing(ms, samples=samples)
    t.samples_ms = values.tolist()
    t.min_ms, t.max_ms = float(values.min()), float(values.max())
    t.std_ms = float(np.std(values, ddof=1))
    t.cv = t.std_ms / ms
    return t


def table_of(keys, noise: float = 0.0, seed: int = 0) -> LatencyTable:
    rng = np.random.default_rng(seed)
    rows = [result_row(k, spread_timing(law_ms(k) * (1 + noise * rng.standard_normal()))) for k in dict.fromkeys(keys)]
    md = build_metadata(device_profile="cpu", backend="onnxruntime", precision="fp32", batch=1)
    return LatencyTable(pd.DataFrame(rows), md)


@pytest.fixture(scope="module")
def space_keys():
    rows = gpunet.sample(60, seed=3)
    rows[:, 0] = 224
    keys = [k for row in rows for k in gpunet.SPACE.arch_keys(row)]
    return list(dict.fromkeys(keys)), rows


def test_the_estimator_learns_a_cost_law_and_reports_its_held_out_error_per_block_type(space_keys):
    keys, _ = space_keys
    est = fit_estimator(keys, [law_ms(k) for k in keys], batch=1, precision="fp32")
    assert est.model in MODELS and set(est.cv) == set(MODELS)
    assert est.overall["median_ape_pct"] < 5.0  # a smooth law is learned well
    assert set(est.errors) == {k.block for k in keys}
    for errors in est.errors.values():
        assert errors["n"] > 0 and errors["p90_ape_pct"] >= errors["median_ape_pct"] >= 0
    fresh = [BlockKey("irb", 48, 28, 28, 48, k=5, s=1, e=4, se=True, act="swish")]
    assert est.estimate(fresh)[0] == pytest.approx(law_ms(fresh[0]), rel=0.25)
    assert "held-out median |error|" in est.summary()


def test_estimation_refusals_are_one_line():
    keys = [BlockKey("conv", 3, 32 + 8 * i, 32, 16, k=3, s=2) for i in range(5)]
    with pytest.raises(
        ValueError, match=r"5 measured keys, too few to cross-validate an estimator: measure at least 15"
    ):
        fit_estimator(keys, [1.0] * 5, batch=1, precision="fp32")
    many = [BlockKey("conv", 3, 16 + 8 * i, 16 + 8 * i, 16, k=3, s=2) for i in range(MIN_KEYS)]
    est = fit_estimator(many, [law_ms(k) for k in many], batch=1, precision="fp32")
    with pytest.raises(ValueError, match="the table measured no irb key; measure at least 6 keys of type irb"):
        est.estimate([BlockKey("irb", 16, 16, 16, 16, k=3, s=1, e=3)])


def test_estimates_are_used_only_when_asked_and_are_counted(space_keys):
    keys, rows = space_keys
    arch = gpunet.SPACE.arch_keys(rows[0])
    missing = set(arch[1:3])
    # a noisy table: the estimator's cross-validated error (hence the estimate's spread) is then not zero
    table = table_of([k for k in keys if k not in missing], noise=0.03)
    with pytest.raises(MissingKeysError):
        predict(table, arch)
    p = predict(table, arch, estimate_missing=True)
    assert p.n_estimated == sum(1 for k in arch if k in missing)
    assert set(p.estimated_keys) == {str(k) for k in missing}
    full = predict(table_of(keys, noise=0.03), arch)
    assert p.ms_per_batch == pytest.approx(full.ms_per_batch, rel=0.1)
    # the estimate widens the interval
    assert p.high_ms - p.low_ms > full.high_ms - full.low_ms
    many = predict_many(table, rows[:5], gpunet.SPACE, estimate_missing=True)
    assert isinstance(many, ManyPredictions) and many.n_estimated[0] == p.n_estimated
    assert many.ms_per_batch[0] == pytest.approx(p.ms_per_batch)
    with pytest.raises(MissingKeysError):
        predict_many(table, rows[:5], gpunet.SPACE)


def test_intervals_of_predict_and_predict_many_agree_and_say_their_basis(space_keys):
    keys, rows = space_keys
    table = table_of(keys, noise=0.02)
    p = predict(table, gpunet.SPACE.arch_keys(rows[1]), level=0.9)
    assert p.low_ms < p.ms_per_batch < p.high_ms and p.interval_basis == "measurement only"
    many = predict_many(table, rows[:8], gpunet.SPACE, interval=True)
    assert many.low_ms[1] == pytest.approx(p.low_ms) and many.high_ms[1] == pytest.approx(p.high_ms)
    plain = predict_many(table, rows[:8], gpunet.SPACE)
    assert isinstance(plain, np.ndarray) and np.array_equal(plain, many.ms_per_batch)
    # a validated table's interval holds its whole-network error
    table.metadata  # noqa: B018 - the metadata is a copy; the validation entry is set through a new table
    md = dict(table.metadata)
    md["validation"] = {"uncalibrated": {"rmspe_pct": 3.0}}
    validated = LatencyTable(table.to_frame(), md)
    q = predict(validated, gpunet.SPACE.arch_keys(rows[1]), calibrated=False)
    assert q.interval_basis == "validated"
    assert (q.high_ms - q.ms_per_batch) == pytest.approx(z_for(0.9) * np.hypot(p.sigma_ms, 0.03 * q.ms_per_batch))


def test_interval_helpers():
    assert z_for(0.9) == pytest.approx(1.6448536, rel=1e-6)
    assert interval(10.0, 1.0, 2.0) == (8.0, 12.0)
    assert interval(1.0, 1.0, 2.0) == (0.0, 3.0)
    with pytest.raises(ValueError, match="interval level must be a fraction"):
        z_for(1.5)
    f = key_features([BlockKey("conv", 3, 32, 32, 16, k=3, s=2)], 1, "fp32")
    assert f["flops"][0] > 0 and f["block"][0] >= 0


def test_without_scikit_learn_the_shaped_models_are_compared_and_the_estimator_says_so(space_keys, monkeypatch):
    import importlib.util

    from tables import estimator

    keys, _ = space_keys
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    assert estimator.available_models() == ("roofline", "layers")
    est = fit_estimator(keys, [law_ms(k) for k in keys], batch=1, precision="fp32")
    assert est.model in ("roofline", "layers") and set(est.cv) == {"roofline", "layers"}
    assert "the tree models not compared: they need scikit-learn" in est.summary()
    values = [law_ms(k) for k in keys[:30]]
    spread = estimator.disagreement(keys[:30], values, keys[30:], batch=1, precision="fp32")
    assert spread is not None and spread.shape == (len(keys) - 30,) and (spread >= 0).all()
    monkeypatch.setattr(estimator, "available_models", lambda: ("roofline",))
    assert estimator.disagreement(keys[:30], values, keys[30:], batch=1, precision="fp32") is None


def test_the_committee_gives_every_candidate_a_deterministic_disagreement(space_keys):
    from tables.estimator import disagreement

    keys, _ = space_keys
    small = [k for k in keys if k.block == "irb"][:40]
    spread = disagreement(small, [law_ms(k) for k in small], keys, batch=1, precision="fp32")
    assert spread is not None and spread.shape == (len(keys),) and np.all(spread >= 0) and spread.max() > 0
    again = disagreement(small, [law_ms(k) for k in small], keys, batch=1, precision="fp32")
    assert np.array_equal(spread, again)


def test_layer_terms_pad_channels_to_the_engines_blocks_and_keep_per_call_terms_out_of_the_batch():
    from tables.estimator import LAYER_TERMS, layer_terms

    col = {name: i for i, name in enumerate(LAYER_TERMS)}
    # a 1x1 conv block of 24 -> 24 channels at 10x10: 24x24 MACs per pixel, 24x24 at blocks of 8, 32x32 at 16
    conv = BlockKey("conv", 24, 10, 10, 24, k=1, s=1, act="relu")
    one, four = layer_terms([conv], 1)[0], layer_terms([conv], 4)[0]
    assert one[col["conv1_macs"]] == 100 * 24 * 24
    assert one[col["conv1_macs_c8"]] == 100 * 24 * 24 and one[col["conv1_macs_c16"]] == 100 * 32 * 32
    assert one[col["convk_macs"]] == 0 and one[col["stem_macs"]] == 0
    assert one[col["clamp"]] == 24 * 100 and one[col["call"]] == 1 and one[col["nodes"]] == 2
    assert four[col["conv1_macs"]] == 4 * one[col["conv1_macs"]] and four[col["conv_out"]] == 4 * one[col["conv_out"]]
    for per_call in ("call", "nodes", "conv_weights"):
        assert four[col[per_call]] == one[col[per_call]]
    # a first layer (3 input channels) has its own terms; a depthwise 5x5 its kernel's
    stem = layer_terms([BlockKey("conv", 3, 32, 32, 16, k=3, s=2)], 1)[0]
    assert stem[col["stem_macs"]] == 16 * 16 * 16 * 3 * 9 and stem[col["convk_macs"]] == 0
    irb = layer_terms([BlockKey("irb", 16, 16, 16, 16, k=5, s=1, e=3, se=True, act="swish")], 1)[0]
    assert irb[col["dw5_macs"]] == 16 * 16 * 48 * 25 and irb[col["dw3_macs"]] == irb[col["dw7_macs"]] == 0
    assert irb[col["tiny_nodes"]] == 2 and irb[col["sigmoid"]] > 0  # the SE's two 1x1-map convs; swish


def test_the_layers_model_learns_an_engine_that_pads_channels_where_the_block_model_cannot(space_keys):
    from tables.estimator import LAYER_TERMS, layer_terms

    keys, _ = space_keys
    col = {name: i for i, name in enumerate(LAYER_TERMS)}

    def engine_ms(terms: np.ndarray) -> np.ndarray:
        """A made-up engine: convolutions cost by their channels padded to 16, plus a fixed cost per node."""
        padded = terms[:, col["conv1_macs_c16"]] + terms[:, col["convk_macs_c16"]]
        dw = terms[:, col["dw3_macs"]] / 1e9 + terms[:, col["dw5_macs"]] / 6e8
        return padded / 2e9 + dw + 0.004 * terms[:, col["nodes"]]

    est = fit_estimator(keys, engine_ms(layer_terms(keys, 1)), batch=1, precision="fp32", models=("roofline", "layers"))
    assert est.cv["layers"] < 1.0 < est.cv["roofline"]
    assert est.model == "layers"
    fresh = BlockKey("irb", 40, 20, 20, 56, k=3, s=1, e=5, se=False, act="relu")
    assert est.estimate([fresh])[0] == pytest.approx(engine_ms(layer_terms([fresh], 1))[0], rel=0.05)
