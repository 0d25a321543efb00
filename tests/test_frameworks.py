"""The Optuna, NNI and Archai adapters, each against the real framework (profiler.frameworks)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from profiler.expected_latency import ExpectedLatency
from profiler.frameworks import SpaceLatency
from profiler.nas import synthetic_table
from profiler.spaces import resolve_space
from tables.key import parse_key
from tables.predictor import predict

ROOT = Path(__file__).resolve().parents[1]
SPACE = resolve_space(ROOT / "examples" / "my_space.yaml")


@pytest.fixture(scope="module")
def table():
    return synthetic_table(SPACE.space_keys())


def predicted(table, encoding) -> float:
    return predict(table, SPACE.architecture(encoding)).ms_per_batch


def test_space_latency_of_position_values_is_predict_of_that_architecture(table) -> None:
    encoding = SPACE.sample(1, seed=2)[0]
    values = {p.label: int(v) for p, v in zip(SPACE.positions, encoding)}
    assert SpaceLatency(table, SPACE).values_ms(values) == pytest.approx(predicted(table, encoding), rel=1e-12)


def test_space_latency_names_a_missing_choice(table) -> None:
    with pytest.raises(ValueError, match="no value for 'stage 0 filters'"):
        SpaceLatency(table, SPACE).values_ms({"resolution": 160})


# --------------------------------------------------------------------------- Optuna
optuna = pytest.importorskip("optuna")
from profiler.frameworks.optuna import latency_constraint, predict_trial, suggest_architecture  # noqa: E402


def test_a_trial_suggests_one_choice_per_position_named_by_its_label(table) -> None:
    encoding = SPACE.sample(1, seed=4)[0]
    trial = optuna.trial.FixedTrial({p.label: int(v) for p, v in zip(SPACE.positions, encoding) if len(p.codes) > 1})
    assert suggest_architecture(trial, SPACE) == tuple(int(v) for v in encoding)


def test_predict_trial_is_predict_of_the_trial_architecture_and_is_kept_on_the_trial(table) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    encoding = suggest_architecture(trial, SPACE)
    latency = predict_trial(trial, table, SPACE)
    assert latency == pytest.approx(predicted(table, encoding), rel=1e-12)
    assert trial.user_attrs["latency_ms"] == latency


def _study(table, budget: float, *, constraints_func=None):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(seed=0, population_size=8, constraints_func=constraints_func)
    return optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)


def _budget(table) -> float:
    return float(np.median([predicted(table, e) for e in SPACE.sample(64, seed=0)]))


def test_a_trial_given_the_budget_gets_latency_minus_budget_as_its_constraint(table) -> None:
    budget = _budget(table)
    study = _study(table, budget)

    def objective(trial):
        encoding = suggest_architecture(trial, SPACE)
        return float(sum(encoding)), predict_trial(trial, table, SPACE, budget_ms=budget)

    study.optimize(objective, n_trials=24)
    for trial in study.trials:
        assert trial.system_attrs["constraints:latency_ms"] == pytest.approx(trial.values[1] - budget)
    assert study.best_trials and all(t.values[1] <= budget for t in study.best_trials)


def test_a_study_with_the_constraints_func_keeps_only_feasible_best_trials(table) -> None:
    budget = _budget(table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Optuna 5 deprecates constraints_func
        study = _study(table, budget, constraints_func=latency_constraint(table, SPACE, budget))

    def objective(trial):
        return float(sum(suggest_architecture(trial, SPACE))), predict_trial(trial, table, SPACE)

    study.optimize(objective, n_trials=24)
    assert study.best_trials and all(t.values[1] <= budget for t in study.best_trials)
    assert any(t.values[1] > budget for t in study.trials)


def test_the_constraint_predicts_a_trial_without_a_kept_latency(table) -> None:
    encoding = SPACE.sample(1, seed=6)[0]
    params = {p.label: int(v) for p, v in zip(SPACE.positions, encoding) if len(p.codes) > 1}
    choices = {p.label: optuna.distributions.CategoricalDistribution(list(p.codes)) for p in SPACE.positions}
    trial = optuna.trial.create_trial(params=params, distributions={k: choices[k] for k in params}, value=0.0)
    assert latency_constraint(table, SPACE, 1.0)(trial) == pytest.approx([predicted(table, encoding) - 1.0])


def test_a_budget_that_is_not_a_positive_number_of_ms_is_refused(table) -> None:
    with pytest.raises(ValueError, match="positive number of ms"):
        latency_constraint(table, SPACE, 0.0)


def test_the_example_gpunet_study_runs_in_seconds_and_prints_its_pareto_front() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "optuna_gpunet.py"), "--trials", "40"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Pareto front" in proc.stdout and "ms per batch" in proc.stdout


# --------------------------------------------------------------------------- NNI 3.x
def _nni():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("nni"), pytest.importorskip("nni.nas.nn.pytorch")


@pytest.fixture(scope="module")
def model_space():
    nni, nas_nn = _nni()

    class MySpace(nas_nn.ModelSpace):
        """An NNI model space whose choices are the positions of examples/my_space.yaml."""

        def __init__(self, skip: str = "") -> None:
            super().__init__()
            for p in SPACE.positions:
                if len(p.codes) > 1 and p.label != skip:
                    self.add_mutable(nni.choice(p.label, list(p.codes)))

    return MySpace


def _samples(space, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{label: m.values[rng.integers(len(m.values))] for label, m in space.simplify().items()} for _ in range(n)]


def test_the_nni_profiler_is_an_nni_profiler(model_space, table) -> None:
    from nni.nas.profiler import Profiler

    from profiler.frameworks.nni import TableProfiler

    assert isinstance(TableProfiler(model_space(), table, SPACE), Profiler)


def test_profile_of_a_sample_is_the_predicted_latency(model_space, table) -> None:
    from profiler.frameworks.nni import TableProfiler

    space = model_space()
    profiler = TableProfiler(space, table, SPACE)
    for sample in _samples(space, 5, 0):
        encoding = SpaceLatency(table, SPACE).encoding_of(sample)
        assert profiler.profile(sample) == pytest.approx(predicted(table, encoding), rel=1e-12)


def test_nni_range_filter_keeps_exactly_the_samples_within_the_budget(model_space, table) -> None:
    from nni.nas.oneshot.pytorch.profiler import RangeProfilerFilter

    from profiler.frameworks.nni import TableProfiler

    space = model_space()
    profiler = TableProfiler(space, table, SPACE)
    samples = _samples(space, 40, 1)
    budget = float(np.median([profiler.profile(s) for s in samples]))
    kept = [s for s in samples if RangeProfilerFilter(profiler, max=budget)(s)]
    assert kept and len(kept) < len(samples)
    assert all(profiler.profile(s) <= budget for s in kept)


def test_a_sample_of_distributions_gives_the_expected_latency_with_a_gradient(model_space, table) -> None:
    import torch
    from nni.nas.oneshot.pytorch.profiler import SampleProfilerPenalty

    from profiler.frameworks.nni import TableProfiler

    space = model_space()
    profiler = TableProfiler(space, table, SPACE)
    logits = {
        label: torch.zeros(len(m.values), dtype=torch.float64, requires_grad=True)
        for label, m in space.simplify().items()
    }
    dists = {label: dict(zip(space.simplify()[label].values, torch.softmax(v, 0))) for label, v in logits.items()}
    loss, details = SampleProfilerPenalty(profiler, baseline=1.0)(torch.tensor(0.0, dtype=torch.float64), dists)
    loss.backward()
    uniform = [torch.full((len(p.codes),), 1.0 / len(p.codes), dtype=torch.float64) for p in SPACE.positions]
    assert float(details["penalty"]) == pytest.approx(float(ExpectedLatency(table, SPACE)(uniform)), rel=1e-12)
    assert torch.any(logits["stage 2 filters"].grad != 0)  # wider filters cost more: the gradient says so


def test_a_model_space_lacking_a_choice_of_the_space_is_refused_naming_it(model_space, table) -> None:
    from profiler.frameworks.nni import TableProfiler

    with pytest.raises(ValueError, match="no choice 'stage 2 SE'"):
        TableProfiler(model_space(skip="stage 2 SE"), table, SPACE)


# --------------------------------------------------------------------------- Archai
def _archai():
    pytest.importorskip("archai")
    from archai.discrete_search.api.archai_model import ArchaiModel
    from archai.discrete_search.api.model_evaluator import ModelEvaluator
    from archai.discrete_search.api.search_objectives import SearchObjectives

    from profiler.frameworks.archai import TableLatencyEvaluator

    return ArchaiModel, ModelEvaluator, SearchObjectives, TableLatencyEvaluator


def test_the_archai_evaluator_is_an_archai_model_evaluator(table) -> None:
    _, ModelEvaluator, _, TableLatencyEvaluator = _archai()
    assert isinstance(TableLatencyEvaluator(table, SPACE), ModelEvaluator)


def test_evaluate_an_encoding_model_is_its_predicted_latency(table) -> None:
    ArchaiModel, _, _, TableLatencyEvaluator = _archai()
    encoding = SPACE.sample(1, seed=8)[0]
    model = ArchaiModel(list(map(int, encoding)), archid="a")
    assert TableLatencyEvaluator(table, SPACE).evaluate(model) == pytest.approx(predicted(table, encoding), rel=1e-12)


def test_evaluate_a_model_of_block_keys_is_its_predicted_latency(table) -> None:
    ArchaiModel, _, _, TableLatencyEvaluator = _archai()
    arch = SPACE.architecture(SPACE.sample(1, seed=9)[0])
    assert TableLatencyEvaluator(table).evaluate(ArchaiModel(arch, archid="k")) == predict(table, arch).ms_per_batch


def test_evaluate_a_torch_module_maps_its_graph_first() -> None:
    import torch.nn as nn

    ArchaiModel, _, _, TableLatencyEvaluator = _archai()
    module = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    keys = ["conv_i3x32x32_o16_k3_s2_e1_se0_relu", "pool_fc_i16x16x16_o10_k1_s1_e1_se0_relu"]
    table = synthetic_table([parse_key(k) for k in keys])
    evaluator = TableLatencyEvaluator(table, input_shape=(3, 32, 32))
    assert evaluator.evaluate(ArchaiModel(module, archid="m")) == pytest.approx(predict(table, keys).ms_per_batch)


def test_search_objectives_use_it_as_a_cheap_objective_and_a_constraint(table) -> None:
    ArchaiModel, _, SearchObjectives, TableLatencyEvaluator = _archai()
    encodings = SPACE.sample(12, seed=10)
    models = [ArchaiModel(list(map(int, e)), archid=str(i)) for i, e in enumerate(encodings)]
    latencies = np.array([predicted(table, e) for e in encodings])
    budget = float(np.median(latencies))
    objectives = SearchObjectives()
    evaluator = TableLatencyEvaluator(table, SPACE)
    objectives.add_objective("latency_ms", evaluator, higher_is_better=False, compute_intensive=False)
    objectives.add_constraint("latency_budget", evaluator, (0.0, budget))
    np.testing.assert_allclose(objectives.eval_cheap_objs(models)["latency_ms"], latencies, rtol=1e-12)
    _, valid = objectives.validate_constraints(models)
    assert valid.tolist() == np.flatnonzero(latencies <= budget).tolist()
