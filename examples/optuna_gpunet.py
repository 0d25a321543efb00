"""A two-objective Optuna study over the GPUNet space: an accuracy proxy up, predicted latency down, under a budget.

Each trial chooses a GPUNet architecture (one categorical choice per position of the 41-integer
encoding, :func:`profiler.frameworks.optuna.suggest_architecture`); its latency is predicted from
the table (:func:`~profiler.frameworks.optuna.predict_trial`), which also sets the trial's
constraint latency - budget (Optuna 5's ``Trial.set_constraint``; before Optuna 5 the sampler's
``constraints_func``, :func:`~profiler.frameworks.optuna.latency_constraint`), and NSGA-II keeps
the trials within the budget feasible. The
accuracy proxy is log10 of the architecture's parameters (:func:`tables.cost.key_cost`): a
stand-in for a trained accuracy, so that the example runs in seconds.

Without ``--table`` the table is a labelled SYNTHETIC one (latency a fixed function of each key's
multiply-accumulates, not a measurement) over the GPUNet space at one resolution (``--resolution``,
224 px: 23,187 keys, built in seconds); with ``--table`` the whole space (resolutions 224-512),
whose keys the table must have. Run from the repository root::

    python examples/optuna_gpunet.py
    python examples/optuna_gpunet.py --trials 500 --budget-ms 1.5
    python examples/optuna_gpunet.py --table tables_out/v100_tensorrt_fp16_b1.parquet --budget-ms 0.85
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from profiler import nas  # noqa: E402
from profiler.frameworks.optuna import latency_constraint, predict_trial, suggest_architecture  # noqa: E402
from profiler.spaces import gpunet  # noqa: E402
from tables.cli import report_error  # noqa: E402
from tables.cost import key_cost  # noqa: E402


def accuracy_proxy(space, encoding) -> float:
    """log10 of the architecture's parameters: a stand-in for accuracy (more capacity, higher)."""
    return math.log10(sum(key_cost(k).params for k in space.arch_keys(encoding)))


def main(argv: list[str] | None = None) -> int:
    """Run the study and print its Pareto front; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", help="a latency table covering the GPUNet space (default: a synthetic one)")
    p.add_argument("--resolution", type=int, default=224, help="input pixels of the synthetic table's space (224)")
    p.add_argument("--trials", type=int, default=200, help="trials (default 200)")
    p.add_argument("--budget-ms", type=float, help="latency budget, ms per batch (default: the median of 256 samples)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    args = p.parse_args(argv)
    try:
        import optuna

        t0 = time.perf_counter()
        if args.table:
            from tables.table import LatencyTable

            space, table = gpunet.SPACE, LatencyTable.load(args.table)
        else:
            space = dataclasses.replace(gpunet.SPACE, name=f"gpunet@{args.resolution}", resolutions=(args.resolution,))
            table = nas.synthetic_table(space.space_keys())
        budget = args.budget_ms
        if budget is None:
            budget = float(np.median(nas.predict_candidates(table, space.sample(256, args.seed), space)))
        t1 = time.perf_counter()

        def objective(trial):
            encoding = suggest_architecture(trial, space)
            return accuracy_proxy(space, encoding), predict_trial(trial, table, space)

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.NSGAIISampler(
            seed=args.seed, constraints_func=latency_constraint(table, space, budget)
        )
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        study.optimize(objective, n_trials=args.trials)
        t2 = time.perf_counter()
    except Exception as exc:  # one line, as every command of this project
        return report_error(exc)
    kind = "SYNTHETIC table (not measurements)" if table.metadata.get("synthetic") else repr(table)
    feasible = sum(1 for t in study.trials if t.values and t.values[1] <= budget)
    print(f"{space.name}: {args.trials} trials on a {kind}; budget {budget:.4g} ms per batch of {table.batch}")
    print(f"table and budget {t1 - t0:.1f} s, study {t2 - t1:.1f} s; {feasible} trials within the budget")
    print("Pareto front (feasible trials): accuracy proxy (log10 params), latency in ms per batch")
    for t in sorted(study.best_trials, key=lambda t: t.values[1]):
        print(f"  trial {t.number:>4}  proxy {t.values[0]:6.3f}  {t.values[1]:8.4f} ms per batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
