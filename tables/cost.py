"""What a key's inference graph costs, from the key alone: MACs, FLOPs, parameters, bytes moved, memory.

:class:`CostBuilder` is a :class:`tables.structure.BlockBuilder` whose tensors
are shapes (per image, batch excluded): walking a key's entry of
:data:`tables.structure.STRUCTURES` records one :class:`Layer` per node of the
emitted graph (``kernels_bench.onnx_graphs.block_graph``, BN folded; the
``Constant`` nodes of Clip bounds and ReduceMean axes are no layers).

What is counted, per layer, per image (a batch multiplies every count except
the weights):

- MACs: a conv ``out_elements * (cin / groups) * k * k``; a linear layer
  ``cin * cout``; nothing else multiplies and accumulates.
- FLOPs: 2 x MACs for convs and linear layers (their bias adds are not
  counted); 1 per output element for ``Relu``, ``Clip``, ``Sigmoid``, ``Mul``
  and ``Add`` (swish is a ``Sigmoid`` and a ``Mul``: 2 per element); 1 per
  input element for the global mean (``ReduceMean``) and 1 per window element
  (``k * k`` per output element) for ``MaxPool``; 0 for ``Flatten``.
- Parameters: the elements of the graph's float initializers: folded conv
  weights and biases (a conv + BN has ``cout * cin / groups * k * k + cout``),
  linear weights and biases.
- Bytes moved (no fusion, no cache): every layer reads each of its inputs and
  its weights once and writes its output once, each element
  :data:`ELEMENT_BYTES` ``[precision]`` bytes (weights and activations alike);
  weights are read once per batch.
- Memory: the weights plus the two largest tensors of the graph (its input
  included), an upper-bound-ish estimate of what running the graph needs
  (a residual block can hold three tensors at once, see :class:`KeyCost`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tables import structure
from tables.key import BlockKey

#: Bytes per element, weights and activations alike, of each precision a table may be built in.
ELEMENT_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}

#: A tensor's shape per image (batch excluded): (C, H, W) or (C,).
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Layer:
    """One node of a key's inference graph, per image.

    Attributes:
        op: the ONNX op type of the node (``Conv``, ``Gemm``, ``Relu``, ``Clip``, ``Sigmoid``, ``Mul``,
            ``Add``, ``ReduceMean``, ``Flatten``, ``MaxPool``).
        path: the parameter path the structure gave the primitive (``"branch.1"``, ``"se.reduce"``).
        inputs: the shapes of the activation inputs (weights excluded).
        output: the shape of the output.
        weights: weight and bias elements (folded), 0 for layers without weights.
        macs: multiply-accumulates per image.
        flops: floating-point operations per image (see the module docstring).
        kernel: the window of a ``Conv`` or ``MaxPool`` (k of a kxk window), 0 for other layers.
        groups: the groups of a ``Conv`` (its input channels for a depthwise one), 1 for other layers.
    """

    op: str
    path: str
    inputs: tuple[Shape, ...]
    output: Shape
    weights: int = 0
    macs: int = 0
    flops: int = 0
    kernel: int = 0
    groups: int = 1

    @property
    def input_elements(self) -> int:
        """Activation elements read per image (each input once)."""
        return sum(math.prod(s) for s in self.inputs)

    @property
    def output_elements(self) -> int:
        """Activation elements written per image."""
        return math.prod(self.output)


def _out_size(size: int, k: int, stride: int, padding: int | None = None) -> int:
    """A kxk window with stride ``stride`` padded ``padding`` on each side: (size + 2 padding - k) // stride + 1.

    ``padding`` ``None`` is (k - 1) // 2, which for an odd k gives ceil(size / stride).
    """
    p = (k - 1) // 2 if padding is None else padding
    return (size + 2 * p - k) // stride + 1


class CostBuilder(structure.BlockBuilder[Shape]):
    """Records one :class:`Layer` per primitive; its tensors are per-image shapes."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []

    def _record(self, op: str, path: str, inputs: tuple[Shape, ...], output: Shape, **counts: int) -> Shape:
        self.layers.append(Layer(op, path, inputs, output, **counts))
        return output

    def _elementwise(self, op: str, path: str, *inputs: Shape) -> Shape:
        output = max(inputs, key=math.prod)  # broadcasting: the SE gate (C, 1, 1) scales (C, H, W)
        return self._record(op, path, inputs, output, flops=math.prod(output))

    def _conv(
        self, x: Shape, path: str, cin: int, cout: int, k: int, stride: int, groups: int, padding: int | None = None
    ) -> Shape:
        _, h, w = x
        output = (cout, _out_size(h, k, stride, padding), _out_size(w, k, stride, padding))
        macs = math.prod(output) * (cin // groups) * k * k
        weights = cout * (cin // groups) * k * k + cout
        return self._record(
            "Conv", path, (x,), output, weights=weights, macs=macs, flops=2 * macs, kernel=k, groups=groups
        )

    def conv_bn(
        self, x: Shape, path: str, cin: int, cout: int, k: int, stride: int, groups: int, padding: int | None = None
    ) -> Shape:
        return self._conv(x, f"{path}.0", cin, cout, k, stride, groups, padding)

    def conv_bias(self, x: Shape, path: str, cin: int, cout: int) -> Shape:
        return self._conv(x, path, cin, cout, 1, 1, 1)

    def linear(self, x: Shape, path: str, cin: int, cout: int) -> Shape:
        macs = cin * cout
        return self._record("Gemm", path, (x,), (cout,), weights=macs + cout, macs=macs, flops=2 * macs)

    def relu(self, x: Shape, path: str) -> Shape:
        return self._elementwise("Relu", path, x)

    def clip(self, x: Shape, lo: float, hi: float, path: str) -> Shape:
        return self._elementwise("Clip", path, x)

    def sigmoid(self, x: Shape, path: str) -> Shape:
        return self._elementwise("Sigmoid", path, x)

    def mul(self, a: Shape, b: Shape, path: str) -> Shape:
        return self._elementwise("Mul", path, a, b)

    def add(self, a: Shape, b: Shape, path: str) -> Shape:
        return self._elementwise("Add", path, a, b)

    def global_mean(self, x: Shape, path: str) -> Shape:
        return self._record("ReduceMean", path, (x,), (x[0], 1, 1), flops=math.prod(x))

    def flatten(self, x: Shape, path: str) -> Shape:
        return self._record("Flatten", path, (x,), (math.prod(x),))

    def max_pool(self, x: Shape, path: str, k: int, stride: int) -> Shape:
        c, h, w = x
        output = (c, _out_size(h, k, stride), _out_size(w, k, stride))
        return self._record("MaxPool", path, (x,), output, flops=math.prod(output) * k * k, kernel=k)


@lru_cache(maxsize=65536)
def key_layers(key: BlockKey) -> tuple[Layer, ...]:
    """The layers of ``key``'s inference graph in graph order, per image (cached per key)."""
    builder = CostBuilder()
    structure.build(builder, key, key.input_shape)
    return tuple(builder.layers)


@dataclass(frozen=True)
class KeyCost:
    """What one key's inference graph costs for one batch (batch 1: per image).

    Attributes:
        key, batch, precision: what was costed (element size :data:`ELEMENT_BYTES` ``[precision]``).
        macs: multiply-accumulates per batch.
        flops: floating-point operations per batch (2 x MACs plus the elementwise work; module docstring).
        params: weight and bias elements of the graph (folded; independent of the batch).
        weight_bytes: ``params`` x element size.
        activation_elements: activation elements written by all layers together, per batch.
        peak_elements: elements of the largest single tensor of the graph (its input included), per batch.
        bytes_moved: bytes read and written per batch when every layer reads its inputs and weights and
            writes its output once (no fusion).
        arithmetic_intensity: ``flops / bytes_moved``, FLOPs per byte (the x axis of a roofline).
        memory_bytes: ``weight_bytes`` plus the bytes of the two largest tensors of the graph, per batch:
            an estimate of the memory the graph needs (a layer holds its input and output; a residual
            block may hold a third tensor, its input, which this does not add).
    """

    key: BlockKey
    batch: int
    precision: str
    macs: int
    flops: int
    params: int
    weight_bytes: int
    activation_elements: int
    peak_elements: int
    bytes_moved: int
    arithmetic_intensity: float
    memory_bytes: int


def element_bytes(precision: str) -> int:
    """Bytes per element of ``precision``; ``ValueError`` naming the allowed precisions otherwise."""
    try:
        return ELEMENT_BYTES[precision]
    except (KeyError, TypeError):
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(ELEMENT_BYTES)}") from None


@lru_cache(maxsize=65536)
def key_cost(key: BlockKey, batch: int = 1, precision: str = "fp32") -> KeyCost:
    """The :class:`KeyCost` of ``key`` at ``batch`` images in ``precision`` (cached).

    Raises ``ValueError`` for a batch that is not a positive integer or an unknown precision.
    """
    if not isinstance(key, BlockKey):
        raise ValueError(f"key_cost needs a BlockKey, got {type(key).__name__}: parse strings with parse_key first")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch <= 0:
        raise ValueError(f"batch must be a positive integer; got {batch!r}")
    batch = int(batch)
    size = element_bytes(precision)
    layers = key_layers(key)
    params = sum(layer.weights for layer in layers)
    moved = sum(layer.input_elements + layer.output_elements for layer in layers)
    tensors = sorted((math.prod(key.input_shape), *(layer.output_elements for layer in layers)), reverse=True)
    flops = batch * sum(layer.flops for layer in layers)
    bytes_moved = size * (batch * moved + params)
    return KeyCost(
        key=key,
        batch=batch,
        precision=precision,
        macs=batch * sum(layer.macs for layer in layers),
        flops=flops,
        params=params,
        weight_bytes=size * params,
        activation_elements=batch * sum(layer.output_elements for layer in layers),
        peak_elements=batch * tensors[0],
        bytes_moved=bytes_moved,
        arithmetic_intensity=flops / bytes_moved,
        memory_bytes=size * (params + batch * sum(tensors[:2])),
    )


#: The numeric fields of :class:`KeyCost`, the columns :func:`costs` returns.
COST_FIELDS: tuple[str, ...] = (
    "macs",
    "flops",
    "params",
    "weight_bytes",
    "activation_elements",
    "peak_elements",
    "bytes_moved",
    "arithmetic_intensity",
    "memory_bytes",
)


def costs(keys: Iterable[BlockKey], batch: int = 1, precision: str = "fp32") -> dict[str, np.ndarray]:
    """:func:`key_cost` of many keys as columns: field name -> array with one value per key, in order.

    Counts are int64 arrays, ``arithmetic_intensity`` float64 (FLOPs per byte); units as in :class:`KeyCost`.
    """
    rows = [key_cost(k, batch, precision) for k in keys]
    return {
        name: np.array(
            [getattr(r, name) for r in rows], dtype=np.float64 if name == "arithmetic_intensity" else np.int64
        )
        for name in COST_FIELDS
    }


__all__ = [
    "COST_FIELDS",
    "ELEMENT_BYTES",
    "CostBuilder",
    "KeyCost",
    "Layer",
    "costs",
    "element_bytes",
    "key_cost",
    "key_layers",
]
