"""One key (or one chain of keys) end to end: export, compile, warm up, time.

:func:`measure_keys` times the graph of some keys on a backend;
:func:`measure_floor` times the backend's identity graph with the same input and
output size, the fixed cost of one call that the predictor's calibration uses.
Both return a :class:`~kernels_bench.timing.TimingResult` whose ``phases`` hold
the seconds spent exporting (``export_s``: the backend's ``prepare``), compiling
(``compile_s``: ``load``), warming up and timing, and whose ``settings`` hold the
timing settings, the runner's clock and the backend's settings.

:class:`DriftReference` keeps a fixed reference graph loaded on a backend;
handed to :func:`measure_keys`, one sample of it is timed right before every
sample of the measured graph (see :mod:`kernels_bench.timing`), which tells how
fast the machine was while that graph was timed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kernels_bench.backends.base import Backend, as_key_list, check_batch
from kernels_bench.timing import TimingResult, TimingSettings, time_runner
from tables.key import BlockKey

#: The default drift reference: a dense residual block of two 3x3 convolutions
#: (128 channels at 28x28, about 5 ms per image on one CPU core). Measured on a
#: shared 2-vCPU VM (BENCHMARKS.md), it follows dense and depthwise networks alike
#: better than an inverted-residual reference, which made dense-convolution
#: networks less steady than no correction at all.
DEFAULT_DRIFT_REFERENCE = "xx_i128x28x28_o128_k3_s1_e1_se0_relu"

#: The inverted-residual reference (1x1 convs, a depthwise conv, squeeze-excite)
#: that was the default before; kept as a named candidate for comparisons.
INVERTED_RESIDUAL_REFERENCE = "irb_i64x28x28_o64_k3_s1_e4_se1_swish"


class DriftReference:
    """A reference graph kept loaded on ``backend`` for one (batch, precision).

    Args:
        backend: the backend that measures (the reference runs on it, on the same device).
        key: the reference graph's block key (default :data:`DEFAULT_DRIFT_REFERENCE`).
        batch: images per inference, as the measured graphs.
        precision: the precision of the measured graphs.
        ratio: length of a reference sample over a measured sample (default 1).

    :meth:`measure` times the reference alone with a timing protocol (the
    table's reference speed); :meth:`runner` is handed to :func:`measure_keys`.
    Close it with :meth:`close` (or use it as a context manager).
    """

    def __init__(
        self,
        backend: Backend,
        key: BlockKey | str | None = None,
        *,
        batch: int,
        precision: str,
        ratio: float = 1.0,
    ) -> None:
        from tables.key import parse_key

        self.key = key if isinstance(key, BlockKey) else parse_key(key or DEFAULT_DRIFT_REFERENCE)
        self.batch = check_batch(batch)
        self.precision = precision
        if not (isinstance(ratio, (int, float)) and ratio > 0):
            raise ValueError(f"drift reference ratio must be a number > 0; got {ratio!r}")
        self.ratio = float(ratio)
        backend.check_precision(precision)
        self._runner = backend.load(backend.prepare([self.key], batch, precision))

    @property
    def runner(self) -> Any:
        """The loaded reference graph (a :class:`~kernels_bench.timing.Runner`)."""
        if self._runner is None:
            raise RuntimeError("drift reference is closed")
        return self._runner

    def measure(self, settings: TimingSettings | None = None) -> TimingResult:
        """Time the reference graph alone with ``settings``: how long it takes now, ms per batch."""
        return time_runner(self.runner, settings)

    def close(self) -> None:
        """Release the reference graph (idempotent)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.close()

    def __enter__(self) -> DriftReference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _time_prepared(
    backend: Backend,
    prepare: Any,
    precision: str,
    batch: int,
    settings: TimingSettings | None,
    reference: DriftReference | None = None,
) -> TimingResult:
    backend.check_precision(precision)
    if reference is not None and (reference.batch, reference.precision) != (batch, precision):
        raise ValueError(
            f"drift reference was loaded for batch {reference.batch} {reference.precision}, "
            f"not batch {batch} {precision}: load one per (batch, precision)"
        )
    t0 = time.perf_counter()
    prepared = prepare()
    t1 = time.perf_counter()
    with backend.load(prepared) as runner:
        t2 = time.perf_counter()
        if reference is None:
            result = time_runner(runner, settings)
        else:
            result = time_runner(runner, settings, reference=reference.runner, reference_ratio=reference.ratio)
            result.settings["drift_reference"] = str(reference.key)
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
    *,
    reference: DriftReference | None = None,
) -> TimingResult:
    """Time the graph of one key, or of a chain of keys run as one network.

    Args:
        backend: a backend from :func:`kernels_bench.backends.get_backend`.
        keys: one key or chained keys (each key's input is the previous one's output).
        batch: images per inference.
        precision: fp32, fp16, bf16 or int8 (the backend may refuse some).
        settings: timing protocol settings; defaults to ``TimingSettings()``.
        reference: a drift reference loaded on ``backend`` for this batch and
            precision: its samples are interleaved with the graph's
            (``result.reference_ms``).

    Returns:
        The timing result; samples are ms per inference of the whole batch.

    Raises:
        PrecisionNotSupported: the backend cannot run ``precision`` (before any work is done).
    """
    key_list = as_key_list(keys)
    check_batch(batch)
    result = _time_prepared(
        backend, lambda: backend.prepare(key_list, batch, precision), precision, batch, settings, reference
    )
    result.settings["keys"] = [str(k) for k in key_list]
    return result


def measure_floor(
    backend: Backend,
    input_shape: tuple[int, ...],
    batch: int,
    precision: str,
    settings: TimingSettings | None = None,
    *,
    reference: DriftReference | None = None,
) -> TimingResult:
    """Time the identity graph whose input and output have ``input_shape``.

    Args:
        backend: a backend.
        input_shape: the tensor shape, batch first (``input_shape[0] == batch``).
        batch: images per inference (checked against ``input_shape``).
        precision: the precision of the tables it calibrates.
        settings: timing protocol settings.
        reference: a drift reference, as for :func:`measure_keys`.

    Returns:
        The timing result of one call that only moves the tensor: the backend's floor, ms.
    """
    shape = tuple(int(d) for d in input_shape)
    check_batch(batch)
    if not shape or shape[0] != batch:
        raise ValueError(f"input_shape {tuple(input_shape)} must start with the batch size {batch}")
    result = _time_prepared(
        backend, lambda: backend.prepare_identity(shape, precision), precision, batch, settings, reference
    )
    result.settings["identity_shape"] = list(shape)
    return result
