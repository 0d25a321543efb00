"""One key (or one chain of keys) end to end: export, compile, warm up, time.

:func:`measure_keys` times the graph of some keys on a backend;
:func:`measure_floor` times the backend's identity graph with the same input and
output size, the fixed cost of one call that the predictor's calibration uses.
Both return a :class:`~kernels_bench.timing.TimingResult` whose ``phases`` hold
the seconds spent exporting (``export_s``: the backend's ``prepare``), compiling
(``compile_s``: ``load``), warming up and timing, and whose ``settings`` hold the
timing settings, the runner's clock and the backend's settings.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kernels_bench.backends.base import Backend, as_key_list, check_batch
from kernels_bench.timing import TimingResult, TimingSettings, time_runner
from tables.key import BlockKey


def _time_prepared(
    backend: Backend,
    prepare: Any,
    precision: str,
    batch: int,
    settings: TimingSettings | None,
) -> TimingResult:
    backend.check_precision(precision)
    t0 = time.perf_counter()
    prepared = prepare()
    t1 = time.perf_counter()
    with backend.load(prepared) as runner:
        t2 = time.perf_counter()
        result = time_runner(runner, settings)
    result.phases["export_s"] = t1 - t0
    result.phases["compile_s"] = t2 - t1
    result.settings.update(backend.settings())
    result.settings["precision"] = precision
    result.settings["batch"] = batch
    return result


def measure_keys(
    backend: Backend,
    keys: BlockKey | Sequence[BlockKey],
    batch: int,
    precision: str,
    settings: TimingSettings | None = None,
) -> TimingResult:
    """Time the graph of one key, or of a chain of keys run as one network.

    Args:
        backend: a backend from :func:`kernels_bench.backends.get_backend`.
        keys: one key or chained keys (each key's input is the previous one's output).
        batch: images per inference.
        precision: fp32, fp16, bf16 or int8 (the backend may refuse some).
        settings: timing protocol settings; defaults to ``TimingSettings()``.

    Returns:
        The timing result; samples are ms per inference of the whole batch.

    Raises:
        PrecisionNotSupported: the backend cannot run ``precision`` (before any work is done).
    """
    key_list = as_key_list(keys)
    check_batch(batch)
    result = _time_prepared(backend, lambda: backend.prepare(key_list, batch, precision), precision, batch, settings)
    result.settings["keys"] = [str(k) for k in key_list]
    return result


def measure_floor(
    backend: Backend,
    input_shape: tuple[int, ...],
    batch: int,
    precision: str,
    settings: TimingSettings | None = None,
) -> TimingResult:
    """Time the identity graph whose input and output have ``input_shape``.

    Args:
        backend: a backend.
        input_shape: the tensor shape, batch first (``input_shape[0] == batch``).
        batch: images per inference (checked against ``input_shape``).
        precision: the precision of the tables it calibrates.
        settings: timing protocol settings.

    Returns:
        The timing result of one call that only moves the tensor: the backend's floor, ms.
    """
    shape = tuple(int(d) for d in input_shape)
    check_batch(batch)
    if not shape or shape[0] != batch:
        raise ValueError(f"input_shape {tuple(input_shape)} must start with the batch size {batch}")
    result = _time_prepared(backend, lambda: backend.prepare_identity(shape, precision), precision, batch, settings)
    result.settings["identity_shape"] = list(shape)
    return result
