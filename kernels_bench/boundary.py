"""A key's boundary cost: what a block timed alone pays that a whole network pays once.

A block timed on its own pays for one engine call and for moving its input and
output across the engine's boundary (onnxruntime's CPU provider reorders them
between NCHW and its blocked NCHWc layout around every convolution chain,
TensorRT adds reformat layers). A whole network pays that once, so the plain
sum of block latencies over-estimates networks of many small blocks (about a
quarter for MobileNetV2 on a CPU). The build measures, per key, the part of its
latency that is boundary (``boundary_ms``); the predictor sums
``latency_ms - boundary_ms`` over the blocks and adds the table's floor (one
call) once per network (:mod:`tables.predictor`).

Methods (``--boundary``; chosen by held-out error in ``benchmarks/bench_boundary.py``):

- ``in_context`` (default): the key timed after a fixed neighbour ``pre`` (a
  1x1 convolution with ReLU at the key's input shape) in one graph, minus the
  neighbour alone: ``in_network = T(pre, key) - T(pre)``. The neighbour alone
  is timed once per input shape. Over a chain of blocks the remaining boundary
  terms telescope to the network's own input and output.
- ``differential``: the key repeated, minus one copy, ``T(key, key) - T(key)``,
  where the key can follow itself (its output shape is its input shape); else
  ``T(key, post) - T(post)`` with the fixed neighbour at its output shape; a
  classifier takes its ``in_context`` figure.
- ``identity``: the identity graph at the key's output shape, ``I(out)``, is the
  boundary (one call plus moving the output), timed once per shape.
- ``none``: nothing measured; the predictor sums the latencies as measured.

``boundary_ms = T(key) - in_network``, in ms per batch, measured with the same
backend, protocol and drift reference as the key, right after it, and stored as
measured; the predictor bounds it to ``[0, T(key)]`` (a block inside a network
does not cost more than alone, nor less than nothing: a figure outside is noise,
as a spike during one of the two graphs gives).

On the CPU VM of BENCHMARKS.md (onnxruntime fp32 batch 1, 31 networks, nothing
fitted), ``in_context`` bounded put 96.8% of the networks within +-5% of their
end-to-end latency (RMSPE 2.6%, MobileNetV2 +0.6%, EfficientNet-B0 +0.4%),
against 45% (RMSPE 7.3%, +13% and +14%) for the plain sum, 71% for
``identity`` and 84% for ``differential`` bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tables.key import BLOCK_TYPES, BlockKey

#: Boundary methods, the default first.
BOUNDARY_METHODS: tuple[str, ...] = ("in_context", "differential", "identity", "none")
DEFAULT_BOUNDARY = "in_context"


def check_method(method: str) -> str:
    """``method`` when it is one of :data:`BOUNDARY_METHODS`; a one-line ``ValueError`` otherwise."""
    if method not in BOUNDARY_METHODS:
        raise ValueError(f"unknown boundary method {method!r}: use one of {', '.join(BOUNDARY_METHODS)}")
    return method


def neighbour(shape: Sequence[int]) -> BlockKey:
    """The fixed neighbour at a (c, h, w) shape: a 1x1 convolution with ReLU, c -> c channels."""
    c, h, w = (int(v) for v in shape)
    return BlockKey("conv", c, h, w, c, k=1, s=1, act="relu")


def follows_itself(key: BlockKey) -> bool:
    """True when ``(key, key)`` chains: the key's output shape is its input shape."""
    return not BLOCK_TYPES[key.block].classifier and tuple(key.output_shape) == tuple(key.input_shape)


def graphs_for(key: BlockKey, method: str) -> list[tuple[str, tuple[BlockKey, ...] | tuple[int, ...]]]:
    """The graphs a method times for ``key`` besides the key itself: ``("chain", keys)`` or ``("identity", shape)``.

    Shared graphs (a neighbour alone, an identity at a shape) are listed too; a
    :class:`BoundaryMeter` times each of those once per worker.
    """
    check_method(method)
    if method == "none":
        return []
    if method == "identity":
        return [("identity", tuple(key.output_shape))]
    pre = neighbour(key.input_shape)
    if method == "in_context" or BLOCK_TYPES[key.block].classifier:
        return [("chain", (pre, key)), ("chain", (pre,))]
    if follows_itself(key):
        return [("chain", (key, key))]
    post = neighbour(key.output_shape)
    return [("chain", (key, post)), ("chain", (post,))]


def boundary_of(key: BlockKey, method: str, alone_ms: float, timed: dict[Any, float]) -> float:
    """``boundary_ms`` of ``key`` from its time alone and the method's graphs' times (``timed[graph]``)."""
    graphs = graphs_for(key, method)
    if not graphs:
        raise ValueError("boundary method none measures nothing")
    if method == "identity":
        return timed[graphs[0]]
    if len(graphs) == 1:  # the key repeated: in_network = T(key, key) - T(key)
        in_network = timed[graphs[0]] - alone_ms
    else:
        in_network = timed[graphs[0]] - timed[graphs[1]]
    return alone_ms - in_network


@dataclass
class BoundaryMeter:
    """Times the boundary graphs of keys on one backend, each shared graph once (per batch and precision).

    Args:
        backend: the backend that timed the key.
        method: one of :data:`BOUNDARY_METHODS` other than ``none``.
        settings: the timing protocol of the key.
    """

    backend: Any
    method: str
    settings: Any

    def __post_init__(self) -> None:
        check_method(self.method)
        # shared graph -> (its time, the drift reference's time with it, or None)
        self._shared: dict[tuple[Any, int, str], tuple[float, float | None]] = {}

    def _time(self, graph: tuple[str, Any], batch: int, precision: str, reference: Any) -> tuple[float, float | None]:
        from kernels_bench.measure import measure_floor, measure_keys

        kind, what = graph
        if kind == "identity":
            result = measure_floor(self.backend, (batch, *what), batch, precision, self.settings, reference=reference)
        else:
            result = measure_keys(self.backend, list(what), batch, precision, self.settings, reference=reference)
        ref = getattr(result, "reference_ms", None)
        return float(result.trimmed_mean_ms), (float(ref) if ref else None)

    def measure(self, key: BlockKey, batch: int, precision: str, alone: Any, *, reference: Any = None) -> float:
        """``boundary_ms`` of ``key`` (ms per batch, at the speed the key was timed at) after the key was timed
        alone (``alone``: its ``TimingResult``).

        With a drift reference every graph, a shared one timed for an earlier key included, is brought to the
        speed the reference had while the key itself was timed, so that all the figures of one key are at one
        machine speed.
        """
        alone_ms = float(alone.trimmed_mean_ms)
        now = getattr(alone, "reference_ms", None) if reference is not None else None
        timed: dict[Any, float] = {}
        for graph in graphs_for(key, self.method):
            shared = len(graph[1]) == 1 or graph[0] == "identity"
            cache_key = (graph, batch, precision)
            if shared and cache_key in self._shared:
                t, ref = self._shared[cache_key]
            else:
                t, ref = self._time(graph, batch, precision, reference)
                if shared:
                    self._shared[cache_key] = (t, ref)
            timed[graph] = t * (float(now) / ref) if now and ref else t
        return boundary_of(key, self.method, alone_ms, timed)


__all__ = [
    "BOUNDARY_METHODS",
    "DEFAULT_BOUNDARY",
    "BoundaryMeter",
    "boundary_of",
    "check_method",
    "follows_itself",
    "graphs_for",
    "neighbour",
]
