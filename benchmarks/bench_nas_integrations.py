"""What the NAS integrations cost: predicting an ONNX model, the Optuna constraint, the expected-latency term.

Workloads (latencies from **synthetic** tables, :func:`profiler.nas.synthetic_table`: made up, only
the speed is measured):

- **profiler.predict**: a 100-block model (a conv stem, 98 inverted residuals, squeeze-excite in
  30 of them, a tail) built as torch modules (:func:`kernels_bench.blocks.build_network`) and
  exported with torch's TorchScript exporter, BN folded. Timed in this process:
  :func:`profiler.predict.predict_model` on the file (read, check, map, predict), median of
  ``--repeats``; and the command ``python -m profiler.predict --table T model.onnx`` as a
  subprocess: its median wall time, and that minus the median wall time of starting Python and
  importing what the command imports (onnx, pandas, pyarrow, scipy, profiler.predict), both reported.
- **Optuna constraint**: :func:`profiler.frameworks.optuna.latency_constraint` called on
  ``FrozenTrial``\\ s of the GPUNet space that carry no kept latency (so it predicts each one,
  ``predict_many`` of one row), and :func:`~profiler.frameworks.optuna.predict_trial` with a budget
  on live trials (prediction plus ``Trial.set_constraint``); per trial, median over ``--trials``.
- **expected latency**: :class:`profiler.expected_latency.ExpectedLatency` over the whole GPUNet
  space (41 probability vectors, float32), forward and backward, median of ``--repeats`` after
  warm-up; also with the softmax of 41 logit vectors in front (the user's part of a one-shot step).

Targets: predict under 1 s for 100 blocks (excluding interpreter start); the constraint under 1 ms
per trial; the expected-latency term's forward + backward under 5 ms.

Run from the repository root (the GPUNet synthetic table takes about half a minute to build)::

    python benchmarks/bench_nas_integrations.py
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

from tables.host import host_description  # noqa: E402
from tables.key import NUM_CLASSES, BlockKey  # noqa: E402


def hundred_blocks() -> list[BlockKey]:
    """A 100-block MobileNet-like chain at 224 px: stem, 98 irb (30 with SE), tail."""
    keys = [BlockKey("conv", 3, 224, 224, 32, 3, 2, 1.0, False, "relu6")]
    stages = [(1, 16, 1, 1, 3, False), (6, 24, 20, 2, 3, False), (6, 40, 30, 2, 5, False), (6, 80, 30, 2, 3, True)]
    stages += [(4, 112, 17, 2, 3, False)]
    c, h = 32, 112
    for e, out, n, s, k, se in stages:
        for i in range(n):
            key = BlockKey("irb", c, h, h, out, k, s if i == 0 else 1, e, se, "relu6")
            keys.append(key)
            c, h = out, key.out_hw[0]
    keys.append(BlockKey("tail", c, h, h, 1280, 1, 1, 1.0, False, "relu6"))
    assert len(keys) == 100 and keys[-1].output_shape == (NUM_CLASSES,)
    return keys


def export_keys_model(keys: list[BlockKey], path: Path) -> Path:
    import torch

    from kernels_bench.blocks import build_network

    module = build_network(keys)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *keys[0].input_shape),), buffer, dynamo=False)
    path.write_bytes(buffer.getvalue())
    return path


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench_predict(folder: Path, repeats: int) -> dict[str, float]:
    from profiler.nas import synthetic_table
    from profiler.predict import predict_model
    from tables.schema import write_table

    keys = hundred_blocks()
    model = export_keys_model(keys, folder / "hundred.onnx")
    table = synthetic_table(keys)
    table_path = write_table(table.to_frame(), folder / "T.parquet", table.metadata)
    result = predict_model(table, model)
    assert result.mapping.keys == keys, "the 100-block model did not map onto its keys"
    in_process = median_ms(lambda: predict_model(table, model), repeats)
    command = [sys.executable, "-m", "profiler.predict", "--table", str(table_path), str(model)]
    # what the command imports before it works: onnx (with ml_dtypes), pandas, pyarrow, scipy
    start_only = [sys.executable, "-c", "import onnx, onnx.checker, profiler.predict, tables.predictor, tables.table"]

    def wall(argv: list[str]) -> float:
        return median_ms(lambda: subprocess.run(argv, check=True, capture_output=True, cwd=_ROOT), max(3, repeats // 2))

    cli_ms, start_ms = wall(command), wall(start_only)
    return {
        "blocks": len(keys),
        "model_mb": model.stat().st_size / 1e6,
        "predict_model_ms": in_process,
        "cli_wall_ms": cli_ms,
        "interpreter_and_import_ms": start_ms,
        "cli_minus_start_ms": cli_ms - start_ms,
    }


def bench_optuna_and_expected(trials: int, repeats: int) -> dict[str, float]:
    import optuna
    import torch

    from profiler.expected_latency import ExpectedLatency
    from profiler.frameworks.optuna import latency_constraint, predict_trial, suggest_architecture
    from profiler.nas import synthetic_table
    from profiler.spaces import gpunet

    space = gpunet.SPACE
    t = time.perf_counter()
    table = synthetic_table(space.space_keys())
    table_s = time.perf_counter() - t
    constraint = latency_constraint(table, space, budget_ms=5.0)
    choices = {p.label: optuna.distributions.CategoricalDistribution(list(p.codes)) for p in space.positions}
    frozen = []
    for encoding in space.sample(trials, seed=0):
        params = {p.label: int(v) for p, v in zip(space.positions, encoding) if len(p.codes) > 1}
        frozen.append(optuna.trial.create_trial(params=params, distributions={k: choices[k] for k in params}, value=0))
    constraint(frozen[0])  # the first call builds the space's look-up grids (kept on the table)
    per_trial = []
    for trial in frozen:
        t = time.perf_counter()
        constraint(trial)
        per_trial.append((time.perf_counter() - t) * 1000)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    live = []
    for _ in range(trials):
        trial = study.ask()
        suggest_architecture(trial, space)
        t = time.perf_counter()
        predict_trial(trial, table, space, budget_ms=5.0)
        live.append((time.perf_counter() - t) * 1000)
        study.tell(trial, 0.0)

    t = time.perf_counter()
    term = ExpectedLatency(table, space)
    term_s = time.perf_counter() - t
    logits = [torch.zeros(len(p.codes), dtype=torch.float32, requires_grad=True) for p in space.positions]
    probs0 = [torch.softmax(v, 0).detach() for v in logits]

    def term_step() -> None:
        probs = [p.clone().requires_grad_() for p in probs0]
        term(probs).backward()

    def softmax_step() -> None:
        term([torch.softmax(v, 0) for v in logits]).backward()

    for _ in range(5):
        term_step()
    return {
        "gpunet_synthetic_table_s": table_s,
        "constraint_ms_per_trial": statistics.median(per_trial),
        "constraint_ms_p90": sorted(per_trial)[int(0.9 * len(per_trial))],
        "predict_trial_set_constraint_ms": statistics.median(live),
        "expected_build_s": term_s,
        "expected_fwd_bwd_ms": median_ms(term_step, repeats),
        "expected_with_softmax_ms": median_ms(softmax_step, repeats),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print them; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="timed repeats of each step (default 20)")
    p.add_argument("--trials", type=int, default=200, help="Optuna trials timed (default 200)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures = {"host": host_description(), **bench_predict(Path(tmp), args.repeats)}
    figures.update(bench_optuna_and_expected(args.trials, args.repeats))
    print(f"host: {figures['host']}")
    print(
        f"profiler.predict, {figures['blocks']} blocks ({figures['model_mb']:.1f} MB ONNX): predict_model "
        f"{figures['predict_model_ms']:.0f} ms in process; the command {figures['cli_wall_ms']:.0f} ms wall, "
        f"{figures['cli_minus_start_ms']:.0f} ms beyond starting Python and importing onnx, pandas, scipy and "
        f"profiler.predict ({figures['interpreter_and_import_ms']:.0f} ms)  [target < 1000 ms]"
    )
    print(
        f"Optuna constraint: {figures['constraint_ms_per_trial']:.3f} ms per trial (p90 "
        f"{figures['constraint_ms_p90']:.3f}); predict_trial with set_constraint "
        f"{figures['predict_trial_set_constraint_ms']:.3f} ms  [target < 1 ms]"
    )
    print(
        f"expected latency over GPUNet: forward + backward {figures['expected_fwd_bwd_ms']:.2f} ms "
        f"({figures['expected_with_softmax_ms']:.2f} ms with the softmax of 41 logit vectors; "
        f"{figures['torch_threads']} torch threads); built in {figures['expected_build_s']:.2f} s  [target < 5 ms]"
    )
    print(f"(synthetic GPUNet table of every key built in {figures['gpunet_synthetic_table_s']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
