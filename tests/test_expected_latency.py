"""The differentiable expected latency of a staged space (profiler.expected_latency)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from profiler.expected_latency import ExpectedLatency, one_hot_probabilities, uniform_probabilities
from profiler.nas import synthetic_table
from profiler.spaces import resolve_space
from profiler.spaces.staged import StagedSpace, StageSpec
from tables.calibration import Calibration
from tables.predictor import predict, predict_many
from tables.table import MissingKeysError

#: A tiny space with what the channel bookkeeping must get right: a stage keeping its input width,
#: an optional stage, and SE, expansion, kernel and activation choices.
TINY = StagedSpace(
    "tiny",
    (32, 64),
    (
        StageSpec("conv", 2, (3,), (1,), ("relu",), filters=(8, 16), name="stage 0"),
        StageSpec("conv", 1, (3, 5), (1, 2), ("relu", "swish"), filters=None, name="stage 1"),
        StageSpec("irb", 1, (3,), (0, 1, 2), ("relu",), filters=(16, 24), expansions=(2, 4), se=(0, 1), name="stage 2"),
        StageSpec("tail", 1, (1,), (1,), ("relu",), filters=(64,), name="stage 3"),
    ),
)
MY_SPACE = resolve_space("examples/my_space.yaml")
#: Two unpadded stride-2 stages (as NVIDIA's GPUNet fused convs): later stages' sizes follow their kernels.
UNPADDED = StagedSpace(
    "unpadded",
    (64, 96),
    (
        StageSpec("conv", 2, (3,), (1,), ("relu",), filters=(16,), name="stage 0"),
        StageSpec(
            "fused_irb", 2, (3, 5), (1, 2), ("swish",), filters=(24, 32), expansions=(2,), name="stage 1", pad="valid"
        ),
        StageSpec(
            "fused_irb", 2, (3, 5), (1,), ("swish",), filters=(40,), expansions=(2, 4), name="stage 2", pad="valid"
        ),
        StageSpec("irb", 1, (3, 5), (0, 1, 2), ("relu",), filters=(40, 48), expansions=(3,), se=(0, 1), name="stage 3"),
        StageSpec("tail", 1, (1,), (1,), ("relu",), filters=(64,), name="stage 4"),
    ),
)
SPACES = [TINY, MY_SPACE, UNPADDED]
IDS = ["tiny", "my_space", "unpadded"]


def all_encodings(space: StagedSpace) -> np.ndarray:
    return np.array(list(itertools.product(*[p.codes for p in space.positions])), dtype=np.int64)


def weights_of(space: StagedSpace, encodings: np.ndarray, probs: list[np.ndarray]) -> np.ndarray:
    """Each encoding's probability: the product of its positions' probabilities."""
    w = np.ones(len(encodings))
    for j, p in enumerate(space.positions):
        w *= probs[j][np.searchsorted(p.codes, encodings[:, j])]
    return w


def random_probabilities(space: StagedSpace, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.dirichlet(np.ones(len(p.codes))) for p in space.positions]


@pytest.fixture(scope="module")
def tables():
    return {space.name: synthetic_table(space.space_keys()) for space in SPACES}


@pytest.mark.parametrize("space", SPACES, ids=IDS)
def test_the_expected_latency_is_the_exact_expectation_over_every_architecture(tables, space) -> None:
    table = tables[space.name]
    encodings = all_encodings(space)
    probs = random_probabilities(space, 0)
    exact = float(weights_of(space, encodings, probs) @ predict_many(table, encodings, space))
    value = ExpectedLatency(table, space)([torch.tensor(p) for p in probs])
    assert float(value) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("space", SPACES, ids=IDS)
def test_its_gradient_through_a_softmax_is_the_exact_one(tables, space) -> None:
    table = tables[space.name]
    encodings = all_encodings(space)
    probs = random_probabilities(space, 1)
    w, lat = weights_of(space, encodings, probs), predict_many(table, encodings, space)
    logits = [torch.tensor(np.log(p), requires_grad=True) for p in probs]
    ExpectedLatency(table, space)([torch.softmax(v, 0) for v in logits]).backward()
    for j, (p, pos) in enumerate(zip(probs, space.positions)):
        idx = np.searchsorted(pos.codes, encodings[:, j])
        d_prob = np.bincount(idx, weights=w * lat / p[idx], minlength=len(p))  # dE/dp by enumeration
        np.testing.assert_allclose(logits[j].grad.numpy(), p * (d_prob - p @ d_prob), rtol=1e-9, atol=1e-15)


def test_one_hot_probabilities_give_predict_of_that_architecture(tables) -> None:
    table = tables[MY_SPACE.name]
    term = ExpectedLatency(table, MY_SPACE)
    for encoding in MY_SPACE.sample(8, seed=3):
        expected = predict(table, MY_SPACE.architecture(encoding)).ms_per_batch
        assert float(term(one_hot_probabilities(MY_SPACE, encoding))) == pytest.approx(expected, rel=1e-12)


def test_the_calibration_is_folded_in_like_predict_applies_it() -> None:
    table = synthetic_table(MY_SPACE.space_keys())
    table.calibration = Calibration("floor_linear", a=1.3, b=0.2, floor_ms=0.004)
    term = ExpectedLatency(table, MY_SPACE)
    encoding = MY_SPACE.sample(1, seed=5)[0]
    expected = predict(table, MY_SPACE.architecture(encoding)).ms_per_batch
    assert float(term(one_hot_probabilities(MY_SPACE, encoding))) == pytest.approx(expected, rel=1e-12)
    raw = ExpectedLatency(table, MY_SPACE, calibrated=False)(one_hot_probabilities(MY_SPACE, encoding))
    assert float(raw) == pytest.approx(predict(table, MY_SPACE.architecture(encoding), calibrated=False).ms_per_batch)


def test_probabilities_may_be_given_by_position_label(tables) -> None:
    term = ExpectedLatency(tables[TINY.name], TINY)
    probs = uniform_probabilities(TINY)
    by_label = {p.label: v for p, v in zip(TINY.positions, probs)}
    assert float(term(by_label)) == float(term(probs))


def test_float32_probabilities_give_a_float32_result(tables) -> None:
    term = ExpectedLatency(tables[TINY.name], TINY)
    value = term(uniform_probabilities(TINY, dtype=torch.float32))
    assert value.dtype == torch.float32 and float(value) == pytest.approx(float(term(uniform_probabilities(TINY))))


def test_probabilities_of_the_wrong_length_are_refused(tables) -> None:
    probs = uniform_probabilities(TINY)
    probs[1] = torch.ones(5) / 5
    with pytest.raises(ValueError, match=r"stage 0 filters has 2 choices"):
        ExpectedLatency(tables[TINY.name], TINY)(probs)


def test_a_table_lacking_keys_of_the_space_is_refused_naming_them(tables) -> None:
    keys = sorted(TINY.space_keys(), key=str)
    with pytest.raises(MissingKeysError, match="1 block key"):
        ExpectedLatency(synthetic_table(keys[1:]), TINY)
