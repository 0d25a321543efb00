"""Map an ONNX model onto a table's block keys by matching its graph, block by block.

A model exported the way model zoos write it (``Conv2d`` + ``BatchNorm2d`` + activation
modules, residual adds, squeeze-excite, ``AdaptiveAvgPool2d``, ``flatten``, ``Linear``) is a
chain of the table's blocks. :func:`map_graph` finds that chain (``profiler.predict.map_model``
loads a file, bytes or a torch module first):

1. the graph is read once (:class:`_Graph`): initializers and ``Constant`` nodes are values,
   ``Identity`` and ``Dropout`` are looked through;
2. from the image input on, at each block boundary (a tensor whose shape C x H x W follows
   from the keys found so far), candidate keys are read off the next layers: their widths,
   kernels and strides and the first activation, for every block type of
   :data:`tables.key.BLOCK_TYPES` (fields the type fixes are left as it fixes them);
3. each candidate is checked by walking its block type's structure
   (:data:`tables.structure.STRUCTURES`, the one place the layers of a block are written)
   over the model's graph with :class:`_MatchBuilder`: every primitive of the structure must
   find its node among the consumers of the tensor it works on, with the same widths,
   kernel, stride, groups and padding, and the block's tensors may not be used outside it;
4. of the candidates that match, the one that covers the most nodes is the block
   (a stem conv followed by a max-pool is one ``conv_pool``, a 1x1 expansion in front of a
   depthwise conv belongs to its ``irb``).

What the walk accepts for each primitive: a ``Conv`` with or without a following
``BatchNormalization`` (folded or not), padded ``(k - 1) // 2`` or ``SAME`` (unpadded where a key's
``pad`` is ``valid``: NVIDIA's strided fused GPUNet convs); ReLU as ``Relu``
(or ``Clip`` at 0 only), ReLU6 as ``Clip(0, 6)`` or ``Relu6``, SiLU as ``Sigmoid`` + ``Mul`` or
one fused ``Swish``/``SiLU`` node; global pooling as ``GlobalAveragePool`` or ``ReduceMean``
over H and W; ``Flatten``, ``Reshape`` (its shape constant or computed from ``Shape``) or
``Squeeze`` before the classifier ``Gemm`` or ``MatMul`` (+ ``Add`` bias).

Whatever cannot be mapped is listed node by node with the reason (:class:`UnmappedNode`);
after a node that no block matches, mapping resumes at the next tensor where one does, so
every problem of a model is listed at once. A mapping with unmapped nodes is never summed
(:meth:`ModelMapping.require_complete` raises :class:`UnmappableModel`).

onnx is imported inside the functions that need it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from tables import structure
from tables.cli import WorkFailed
from tables.key import BLOCK_TYPES, BlockKey, make_divisible

if TYPE_CHECKING:  # pragma: no cover
    import onnx

#: Nodes that pass their input through unchanged in inference (looked through, never listed).
TRANSPARENT_OPS = frozenset({"Identity", "Dropout"})
#: Ops a block's structure is matched from; any other op is listed with "no block type uses it".
BLOCK_OPS = frozenset(
    ("Conv", "BatchNormalization", "Relu", "Clip", "Relu6", "Sigmoid", "Mul", "Swish", "SiLU", "Add", "MaxPool")
    + ("GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Squeeze", "Gemm", "MatMul")
)
#: Ops that may compute the shape input of a ``Reshape`` before the classifier.
SHAPE_OPS = frozenset({"Shape", "Gather", "Unsqueeze", "Concat", "Cast", "Slice", "Squeeze", "Constant"})
#: Activations of other networks, with what to tell the user about them.
OTHER_ACTIVATIONS = {
    "HardSwish": "hard-swish",
    "HardSigmoid": "hard-sigmoid",
    "LeakyRelu": "leaky ReLU",
    "PRelu": "PReLU",
    "Elu": "ELU",
    "Selu": "SELU",
    "Gelu": "GELU",
    "Tanh": "tanh",
    "Softplus": "softplus",
    "Mish": "mish",
}
#: Nodes the probe looks at after a block boundary to read candidate widths, kernels and strides.
PROBE_NODES = 24
#: Convs whose widths (and the first three of them: kernels and strides) give candidate keys.
PROBE_CONVS = 6
_SWISH_MARK = "\0swish:"


# --------------------------------------------------------------------------- results and errors
@dataclass(frozen=True)
class UnmappedNode:
    """A node of the model that is part of no block, and why.

    Attributes: ``name`` (the node's name, or ``Op_<index>`` when it has none), ``op`` (its op type),
    ``reason`` (one line), ``cause`` (this node is why mapping failed there; the others lie in its wake).
    """

    name: str
    op: str
    reason: str
    cause: bool = False


@dataclass(frozen=True)
class MappedBlock:
    """One block of a mapped model: its key and the names of the nodes that make it up, in graph order."""

    key: BlockKey
    nodes: tuple[str, ...]


@dataclass
class ModelMapping:
    """A model's graph as block keys.

    Attributes:
        source: the model's file name (or a label for an in-memory model).
        input_name: the graph input the chain starts from.
        input_shape: (channels, height, width) of one image, pixels.
        batch: the model's static batch size, or ``None`` when its batch dimension is dynamic.
        blocks: the blocks found, in order (:class:`MappedBlock`).
        unmapped: the nodes that belong to no block (:class:`UnmappedNode`), in graph order.
        n_nodes: the model's nodes, ``Constant``, ``Identity`` and ``Dropout`` not counted.
    """

    source: str
    input_name: str
    input_shape: tuple[int, int, int]
    batch: int | None
    blocks: list[MappedBlock] = field(default_factory=list)
    unmapped: list[UnmappedNode] = field(default_factory=list)
    n_nodes: int = 0

    @property
    def keys(self) -> list[BlockKey]:
        """The blocks' keys, in order."""
        return [b.key for b in self.blocks]

    @property
    def complete(self) -> bool:
        """True when every node belongs to a block."""
        return not self.unmapped

    def first_cause(self) -> UnmappedNode | None:
        """The first unmapped node that explains a failure (else the first unmapped node), or ``None``."""
        return next((u for u in self.unmapped if u.cause), self.unmapped[0] if self.unmapped else None)

    def summary(self) -> str:
        """One line: how many nodes could not be mapped, and the first of them with its reason."""
        if self.complete:
            return f"{self.source}: {self.n_nodes} nodes mapped onto {len(self.blocks)} block keys"
        first = self.first_cause()
        assert first is not None
        return (
            f"{self.source}: {len(self.unmapped)} of {self.n_nodes} nodes could not be mapped onto block keys "
            f"({first.op} '{first.name}': {first.reason})"
        )

    def require_complete(self) -> list[BlockKey]:
        """The keys when every node is mapped; :class:`UnmappableModel` otherwise (no partial key list)."""
        if not self.complete:
            raise UnmappableModel(self)
        return self.keys


class UnmappableModel(WorkFailed):
    """Some nodes of a model belong to no block type: exit status 1. ``.mapping`` lists them with reasons."""

    def __init__(self, mapping: ModelMapping) -> None:
        self.mapping = mapping
        super().__init__(mapping.summary())


class _Miss(Exception):
    """A candidate block does not match: why, at which node, after how many matched nodes."""

    def __init__(self, reason: str | Callable[[], str], culprit: _Node | None, depth: int) -> None:
        super().__init__()
        self._reason = reason  # written only when read: most misses of most candidates never are
        self.culprit = culprit
        self.depth = depth
        self.block = ""
        self.defect = False  # the node has the layer's widths but not its padding or dilation: say that first

    @property
    def reason(self) -> str:
        if callable(self._reason):
            self._reason = self._reason()
        return self._reason

    def __str__(self) -> str:
        return self.reason


# --------------------------------------------------------------------------- the graph
class _Node:
    __slots__ = ("attrs", "index", "inputs", "name", "op", "outputs", "proto")

    def __init__(self, index: int, proto: Any, inputs: tuple[str, ...]) -> None:
        self.index = index
        self.proto = proto
        self.op = proto.op_type
        self.name = proto.name or f"{proto.op_type}_{index}"
        self.inputs = inputs
        self.outputs = tuple(proto.output)
        self.attrs: dict[str, Any] | None = None

    def attr(self, name: str, default: Any = None) -> Any:
        if self.attrs is None:
            from onnx import helper

            self.attrs = {a.name: helper.get_attribute_value(a) for a in self.proto.attribute}
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value


class _Graph:
    """A model's nodes with producers, consumers and constant values; Identity and Dropout looked through."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.model = model
        self.init = {t.name: t for t in g.initializer}
        self.constants: dict[str, Any] = {}
        alias: dict[str, str] = {}
        self.nodes: list[_Node] = []
        for proto in g.node:
            inputs = tuple(alias.get(i, i) for i in proto.input)
            if proto.op_type == "Constant" and proto.output:
                self.constants[proto.output[0]] = proto
            elif proto.op_type in TRANSPARENT_OPS and inputs and inputs[0]:
                alias[proto.output[0]] = inputs[0]
            else:
                self.nodes.append(_Node(len(self.nodes), proto, inputs))
        self.outputs = {alias.get(o.name, o.name) for o in g.output}
        self.producer: dict[str, _Node] = {}
        self.consumers: dict[str, list[_Node]] = {}
        for node in self.nodes:
            for o in node.outputs:
                self.producer[o] = node
            for i in dict.fromkeys(node.inputs):
                if i:
                    self.consumers.setdefault(i, []).append(node)
        self._conv_cache: dict[int, tuple[tuple[int, ...], str | None]] = {}
        self._values: dict[str, Any] = {}

    def users(self, tensor: str) -> list[_Node]:
        return self.consumers.get(tensor, [])

    def dims(self, name: str) -> tuple[int, ...] | None:
        """Shape of a constant (initializer or ``Constant`` node), or ``None`` when ``name`` is no constant."""
        if name in self.init:
            return tuple(self.init[name].dims)
        value = self.value(name)
        return None if value is None else tuple(value.shape)

    def value(self, name: str) -> Any:
        """A constant's value as a numpy array (initializer or ``Constant`` node), or ``None`` (cached)."""
        if name not in self._values:
            self._values[name] = self._read_value(name)
        return self._values[name]

    def _read_value(self, name: str) -> Any:
        from onnx import helper, numpy_helper

        if name in self.init:
            return numpy_helper.to_array(self.init[name])
        proto = self.constants.get(name)
        if proto is None:
            return None
        import numpy as np

        for a in proto.attribute:
            value = helper.get_attribute_value(a)
            if a.name == "value":
                return numpy_helper.to_array(value)
            if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
                return np.asarray(value)
        return None

    def conv(self, node: _Node) -> tuple[tuple[int, ...], str | None]:
        """((cout, cin, k, stride, groups), padding problem or None) of a Conv node (cached)."""
        cached = self._conv_cache.get(node.index)
        if cached is None:
            cached = self._conv_cache[node.index] = self._read_conv(node)
        return cached

    def _read_conv(self, node: _Node) -> tuple[tuple[int, ...], str | None]:
        w = self.dims(node.inputs[1]) if len(node.inputs) > 1 else None
        if w is None or len(w) != 4:
            return (), "its weight is not a constant 4-D tensor"
        groups = int(node.attr("group", 1))
        cout, cin_g, kh, kw = w
        strides = tuple(node.attr("strides", [1, 1]))
        if kh != kw or len(set(strides)) != 1:
            return (), f"kernel {kh}x{kw} with strides {list(strides)}: blocks use square kernels and strides"
        if any(d != 1 for d in node.attr("dilations", [1, 1])):
            return (), f"dilations {list(node.attr('dilations'))}: blocks use dilation 1"
        return (int(cout), int(cin_g) * groups, int(kh), int(strides[0]), groups), None

    def padding_problem(self, node: _Node, k: int, padding: int) -> str | None:
        """Why a Conv's padding is not ``padding`` pixels on every side (``SAME`` counts as (k - 1) // 2), or None."""
        auto = node.attr("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            return None if padding == (k - 1) // 2 else f"auto_pad {auto} where the block pads {padding}"
        pads = [0, 0, 0, 0] if auto == "VALID" else list(node.attr("pads", [0, 0, 0, 0]))
        if pads == [padding] * 4:
            return None
        return f"pads {pads}: the block pads {padding} on every side" + (" ((k - 1) // 2)" if padding else "")


# --------------------------------------------------------------------------- one block's structure over the graph
class _MatchBuilder(structure.BlockBuilder[str]):
    """A :class:`tables.structure.BlockBuilder` whose primitives find their nodes in a model's graph.

    Tensors are the model's tensor names. Each primitive takes the node it stands for from the
    consumers of its input (a node is taken once) and returns that node's output; when no consumer
    fits it raises :class:`_Miss` saying what was expected and what is there.
    """

    def __init__(self, graph: _Graph) -> None:
        self.g = graph
        self.taken: list[_Node] = []
        self.used: set[int] = set()
        self.flat: set[str] = set()  # tensors already (N, C): ReduceMean without keepdims

    def miss(self, expected: str | Callable[[], str], tensor: str, culprit: _Node | None = None) -> _Miss:
        there = [n for n in self.g.users(tensor) if n.index not in self.used]

        def reason() -> str:
            found = ", ".join(f"{n.op} '{n.name}'" for n in there) or "no further node"
            return f"expected {expected() if callable(expected) else expected} after tensor '{tensor}', found {found}"

        return _Miss(reason, culprit or next(iter(there), None), len(self.taken))

    def _take(self, node: _Node) -> str:
        self.taken.append(node)
        self.used.add(node.index)
        return node.outputs[0]

    def _free(self, tensor: str, *ops: str) -> list[_Node]:
        return [n for n in self.g.users(tensor) if n.op in ops and n.index not in self.used]

    def _sole(self, tensor: str, op: str) -> _Node | None:
        users = self.g.users(tensor)
        return users[0] if len(users) == 1 and users[0].op == op and users[0].index not in self.used else None

    def _find_conv(self, x: str, want: tuple[int, ...], what: Callable[[], str], padding: int | None = None) -> str:
        pad = (want[2] - 1) // 2 if padding is None else padding
        for node in self._free(x, "Conv"):
            params, problem = self.g.conv(node)
            if params == want:
                problem = problem or self.g.padding_problem(node, want[2], pad)
                if problem:
                    miss = _Miss(f"Conv '{node.name}' ({what()}) has {problem}", node, len(self.taken))
                    # a defect of the node, unless it is padded as most blocks are and a candidate wanted it unpadded
                    miss.defect = self.g.padding_problem(node, want[2], (want[2] - 1) // 2) is not None
                    raise miss
                return self._take(node)
        raise self.miss(what, x)

    # ----- primitives ---------------------------------------------------------------------------
    def conv_bn(
        self, x: str, path: str, cin: int, cout: int, k: int, stride: int, groups: int, padding: int | None = None
    ) -> str:
        def what() -> str:
            kind = "depthwise " if groups > 1 else ""
            return f"a {kind}Conv {k}x{k} {cin}->{cout} stride {stride}" + (
                "" if padding is None else f" pad {padding}"
            )

        y = self._find_conv(x, (cout, cin, k, stride, groups), what, padding)
        bn = self._sole(y, "BatchNormalization")
        return self._take(bn) if bn is not None else y

    def conv_bias(self, x: str, path: str, cin: int, cout: int) -> str:
        return self._find_conv(x, (cout, cin, 1, 1, 1), lambda: f"a Conv 1x1 {cin}->{cout} (squeeze-excite)")

    def linear(self, x: str, path: str, cin: int, cout: int) -> str:
        for node in self._free(x, "Gemm", "MatMul"):
            w = self.g.dims(node.inputs[1]) if len(node.inputs) > 1 else None
            if node.op == "Gemm" and node.attr("transA", 0) == 0:
                if w == ((cout, cin) if node.attr("transB", 0) else (cin, cout)):
                    return self._take(node)
            elif node.op == "MatMul" and w == (cin, cout):
                y = self._take(node)
                bias = self._sole(y, "Add")
                if bias is not None and any(self.g.dims(i) in ((cout,), (1, cout)) for i in bias.inputs if i != y):
                    y = self._take(bias)
                return y
        raise self.miss(f"a Gemm or MatMul {cin}->{cout} (the classifier)", x)

    def relu(self, x: str, path: str) -> str:
        for node in self._free(x, "Relu", "Clip"):
            if node.op == "Relu" or self._clip_bounds(node) == (0.0, math.inf):
                return self._take(node)
        raise self.miss("a ReLU (Relu)", x)

    def clip(self, x: str, lo: float, hi: float, path: str) -> str:
        for node in self._free(x, "Clip", "Relu6"):
            if (node.op == "Relu6" and (lo, hi) == (0.0, 6.0)) or self._clip_bounds(node) == (lo, hi):
                return self._take(node)
        raise self.miss(f"a Clip({lo:g}, {hi:g}) (ReLU6)", x)

    def _clip_bounds(self, node: _Node) -> tuple[float, float] | None:
        if node.op != "Clip":
            return None
        bounds = [node.attr("min", -math.inf), node.attr("max", math.inf)]
        for i, name in enumerate(node.inputs[1:3]):
            if name:
                value = self.g.value(name)
                if value is None or value.size != 1:
                    return None
                bounds[i] = float(value.reshape(()))
        return float(bounds[0]), float(bounds[1])

    def sigmoid(self, x: str, path: str) -> str:
        free = self._free(x, "Sigmoid")
        if free:
            return self._take(free[0])
        for node in self._free(x, "Swish", "SiLU"):
            if float(node.attr("alpha", 1.0)) == 1.0:
                return f"{_SWISH_MARK}{node.index}"  # x * sigmoid(x) as one node: taken by mul()
        raise self.miss("a Sigmoid", x)

    def mul(self, a: str, b: str, path: str) -> str:
        if b.startswith(_SWISH_MARK):
            return self._take(self.g.nodes[int(b[len(_SWISH_MARK) :])])
        for node in self._free(a, "Mul"):
            if set(node.inputs) == {a, b}:
                return self._take(node)
        raise self.miss("a Mul of x and its gate (swish or squeeze-excite)", a)

    def add(self, a: str, b: str, path: str) -> str:
        for node in self._free(a, "Add"):
            if set(node.inputs) == {a, b}:
                return self._take(node)
        raise self.miss(f"an Add of the block's branch and its shortcut '{b}'", a)

    def global_mean(self, x: str, path: str) -> str:
        for node in self._free(x, "GlobalAveragePool", "ReduceMean"):
            if node.op == "GlobalAveragePool":
                return self._take(node)
            axes = node.attr("axes")
            if axes is None and len(node.inputs) > 1 and node.inputs[1]:
                value = self.g.value(node.inputs[1])
                axes = None if value is None else value.tolist()
            if axes is not None and {int(a) % 4 for a in axes} == {2, 3}:
                y = self._take(node)
                if node.attr("keepdims", 1) == 0:
                    self.flat.add(y)
                return y
        raise self.miss("a global average pool (GlobalAveragePool or ReduceMean over H, W)", x)

    def flatten(self, x: str, path: str) -> str:
        if x in self.flat:
            return x
        for node in self._free(x, "Flatten", "Reshape", "Squeeze"):
            if node.op == "Flatten" and node.attr("axis", 1) == 1:
                return self._take(node)
            if node.op == "Squeeze":
                return self._take(node)
            if node.op == "Reshape" and self._flat_shape(node, x):
                return self._take(node)
        raise self.miss("a Flatten (or a Reshape to batch x channels) before the classifier", x)

    def _flat_shape(self, node: _Node, x: str) -> bool:
        """True when a Reshape's shape is two entries: a constant, or computed from Shape (those nodes are taken)."""
        shape = node.inputs[1] if len(node.inputs) > 1 else ""
        value = self.g.value(shape)
        if value is not None:
            return value.size == 2
        producers: list[_Node] = []
        pending = [shape]
        while pending:
            p = self.g.producer.get(pending.pop())
            if p is None:
                continue
            if p.op not in SHAPE_OPS or p.index in self.used or len(producers) > 16:
                return False
            producers.append(p)
            if p.op != "Shape":
                pending += [i for i in p.inputs if i and self.g.dims(i) is None]
        for p in producers:
            self._take(p)
        return True

    def max_pool(self, x: str, path: str, k: int, stride: int) -> str:
        for node in self._free(x, "MaxPool"):
            same = (
                list(node.attr("kernel_shape", [])) == [k, k]
                and list(node.attr("strides", [1, 1])) == [stride, stride]
                and list(node.attr("pads", [0, 0, 0, 0])) == [(k - 1) // 2] * 4
                and node.attr("ceil_mode", 0) == 0
                and all(d == 1 for d in node.attr("dilations", [1, 1]))
            )
            if same:
                return self._take(node)
        raise self.miss(f"a MaxPool {k}x{k} stride {stride} pad {(k - 1) // 2}", x)


@dataclass
class _Match:
    key: BlockKey
    output: str
    nodes: list[_Node]


def _walk(graph: _Graph, x: str, key: BlockKey) -> _Match:
    """Match ``key``'s structure from tensor ``x``; its tensors may not be used outside the block."""
    b = _MatchBuilder(graph)
    try:
        y = structure.build(b, key, x)
    except _Miss as miss:
        miss.block = str(key)
        raise
    for user in graph.users(x):
        if user.index not in b.used:
            raise _Miss(f"the block input '{x}' also feeds {user.op} '{user.name}' outside {key}", user, len(b.taken))
    for node in b.taken:
        for out in node.outputs:
            if out == y or not out:
                continue
            outside = [n for n in graph.users(out) if n.index not in b.used]
            if outside or out in graph.outputs:
                where = f"{outside[0].op} '{outside[0].name}'" if outside else "the model's outputs"
                raise _Miss(f"tensor '{out}' inside {key} is also used by {where}", node, len(b.taken))
    if any(n.index in b.used for n in graph.users(y)):
        raise _Miss(f"the output of {key} feeds back into the block", None, len(b.taken))
    if _activation_after(graph, y) is not None:  # no block starts with an activation: it belongs to this one
        raise _Miss(f"{key} ends in a linear layer, but an activation follows it", graph.users(y)[0], len(b.taken))
    return _Match(key, y, sorted(b.taken, key=lambda n: n.index))


# --------------------------------------------------------------------------- candidate keys
@lru_cache(maxsize=65536)
def _key(
    block: str, cin: int, h: int, w: int, cout: int, k: int, s: int, e: float, se: bool, act: str, pad: str
) -> BlockKey | None:
    try:
        if pad == "same":  # the default: given only when it is not, so keys without a pad field work too
            return BlockKey(block, cin, h, w, cout, k, s, e, se, act)
        return BlockKey(block, cin, h, w, cout, k, s, e, se, act, pad=pad)  # type: ignore[call-arg]
    except ValueError:
        return None


def _activation_after(graph: _Graph, tensor: str) -> str | None:
    """The key activation of the first activation node reading ``tensor`` (``None`` when there is none)."""
    users = graph.users(tensor)
    ops = {n.op for n in users}
    if "Relu" in ops:
        return "relu"
    if "Relu6" in ops:
        return "relu6"
    if {"Sigmoid", "Mul"} <= ops or ops & {"Swish", "SiLU"}:
        return "swish"
    for n in users:
        if n.op == "Clip":
            bounds = _MatchBuilder(graph)._clip_bounds(n)
            return "relu6" if bounds == (0.0, 6.0) else "relu" if bounds == (0.0, math.inf) else None
    return None


@lru_cache(maxsize=4096)
def _candidates(signature: tuple) -> tuple[BlockKey, ...]:
    """Every key of every block type whose free fields take values read off the next layers."""
    (cin, h, w), widths, kernels, strides, acts, classes = signature
    out: dict[str, BlockKey] = {}
    for name, bt in BLOCK_TYPES.items():
        ks = (bt.fixed_kernel,) if bt.fixed_kernel else kernels
        ss = (bt.fixed_stride,) if bt.fixed_stride else strides
        couts = classes if bt.output == "cout" else widths
        for cout in couts:
            if bt.has_ratio and bt.mid == "expand8":
                ratios = {1.0} | {m / cin for m in widths if make_divisible(m, 8) == m}
            elif bt.has_ratio:
                ratios = {m / cout for m in widths}
            else:
                ratios = {1.0}
            for k in ks:
                for s in ss:
                    pads = ("same", "valid") if s == 2 and getattr(bt, "has_pad", False) else ("same",)
                    for e, se, act, pad in itertools.product(
                        sorted(ratios),
                        (False, True) if bt.has_se else (False,),
                        acts if bt.has_act else ("relu",),
                        pads,
                    ):
                        key = _key(name, cin, h, w, cout, k, s, e, se, act, pad)
                        if key is not None:
                            out.setdefault(str(key), key)
    return tuple(out.values())


def _signature(graph: _Graph, x: str, shape: tuple[int, int, int], covered: set[int]) -> tuple:
    """What the next layers after ``x`` say about the block that starts there (widths, kernels, strides, acts)."""
    convs: list[tuple[int, ...]] = []
    classes: list[int] = []
    acts: list[str] = []
    seen: set[int] = set()
    queue = [x]
    visited = 0
    while queue and visited < PROBE_NODES:
        tensor = queue.pop(0)
        for node in graph.users(tensor):
            if node.index in seen or node.index in covered:
                continue
            seen.add(node.index)
            visited += 1
            if node.op == "Conv":
                params, _ = graph.conv(node)
                if params:
                    convs.append(params)
                    act = _activation_after(graph, node.outputs[0])
                    bn = graph.users(node.outputs[0])
                    if act is None and len(bn) == 1 and bn[0].op == "BatchNormalization":
                        act = _activation_after(graph, bn[0].outputs[0])
                    if act is not None and act not in acts:
                        acts.append(act)
            elif node.op in ("Gemm", "MatMul") and len(node.inputs) > 1:
                wd = graph.dims(node.inputs[1])
                if wd is not None and len(wd) == 2:
                    classes.append(int(wd[0] if node.op == "Gemm" and node.attr("transB", 0) else wd[1]))
            if node.op != "Add":  # a residual add ends the block: what follows belongs to the next one
                queue += list(node.outputs)
    first = convs[:PROBE_CONVS]
    widths = tuple(dict.fromkeys([c[0] for c in first] + classes))
    kernels = tuple(sorted({c[2] for c in convs[:3]})) or (1,)
    strides = tuple(sorted({c[3] for c in convs[:3]})) or (1,)
    return (shape, widths, kernels, strides, tuple(acts[:1]) or ("relu",), tuple(dict.fromkeys(classes)))


def _best_match(graph: _Graph, x: str, shape: tuple[int, int, int], covered: set[int]) -> tuple[_Match | None, _Miss]:
    """The candidate key that matches the most nodes from ``x``, or ``None``; and the miss that explains most.

    That miss is a node with a block layer's widths but not its padding, else the deepest one.
    """
    best: _Match | None = None
    deepest = _Miss(f"no layer after tensor '{x}' starts a block", next(iter(graph.users(x)), None), -1)
    for key in _candidates(_signature(graph, x, shape, covered)):
        try:
            match = _walk(graph, x, key)
        except _Miss as miss:
            if (miss.defect, miss.depth) > (deepest.defect, deepest.depth):
                deepest = miss
            continue
        if any(n.index in covered for n in match.nodes):
            continue
        if best is None or len(match.nodes) > len(best.nodes):
            best = match
    return best, deepest


# --------------------------------------------------------------------------- the whole model
def _inferred_shapes(
    model: onnx.ModelProto, name: str, batch: int | None, shape: tuple[int, int, int]
) -> dict[str, tuple[int, ...]]:
    """Every tensor's inferred shape (onnx shape inference with the input fixed); used only to resume after a miss."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        if inp.name == name:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, (batch or 1, *shape)):
                d.Clear()
                d.dim_value = v
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed)
    except Exception:  # resuming is a courtesy: without shapes the rest is listed as unmapped
        return {}
    out: dict[str, tuple[int, ...]] = {}
    for vi in inferred.graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(int(d.dim_value) for d in dims)
    return out


def _node_reason(node: _Node) -> str | None:
    if node.op in OTHER_ACTIVATIONS:
        return (
            f"{OTHER_ACTIVATIONS[node.op]} is no activation of the table's blocks "
            "(relu, relu6 = Clip(0, 6), swish = SiLU = x * sigmoid(x))"
        )
    if node.op in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger"):
        return "a quantized graph: map the fp32 model and predict it from an int8 table"
    if node.op not in BLOCK_OPS and node.op not in SHAPE_OPS:
        return f"op {node.op} is in no block type of the table"
    return None


def map_graph(
    model: onnx.ModelProto,
    input_name: str,
    input_shape: tuple[int, int, int],
    *,
    batch: int | None = None,
    label: str = "<model>",
) -> ModelMapping:
    """Map a loaded model's graph onto block keys, from its image input ``input_name`` of ``input_shape``.

    ``input_shape`` is (C, H, W) of one image; ``batch`` the model's static batch (``None`` when
    dynamic). Returns a :class:`ModelMapping`; unmapped nodes are listed in it, not raised (see
    :meth:`ModelMapping.require_complete`). ``profiler.predict.map_model`` loads a file, bytes or a
    torch module and calls this.
    """
    proto, shape = model, tuple(int(d) for d in input_shape)
    graph = _Graph(proto)
    mapping = ModelMapping(label, input_name, shape, batch, n_nodes=len(graph.nodes))  # type: ignore[arg-type]
    covered: set[int] = set()
    reasons: dict[int, str] = {}
    shapes: dict[str, tuple[int, ...]] | None = None
    x: str | None = input_name
    current = shape
    causes: set[int] = set()  # nodes whose reason explains a failure (the rest lie in its wake)
    near: _Miss | None = None  # a longer block that almost matched where a shorter one did
    while x is not None and any(n.index not in covered for n in graph.users(x)):
        match, miss = _best_match(graph, x, current, covered)
        if match is not None:
            mapping.blocks.append(MappedBlock(match.key, tuple(n.name for n in match.nodes)))
            covered.update(n.index for n in match.nodes)
            near = miss if miss.block and miss.depth > len(match.nodes) else None
            if match.key.block_type.classifier:
                for node in graph.nodes:
                    if node.index not in covered and node.index > match.nodes[-1].index:
                        causes.add(node.index)
                        reasons.setdefault(
                            node.index, f"follows the classifier {match.key}: a network ends at its classifier"
                        )
                break
            x, current = match.output, match.key.next_input()
            continue
        where = f"no block type matches at tensor '{x}' ({'x'.join(map(str, current))})"
        for m, text in ((near, "the closest block, {b}, fails here: {r}"), (miss, where + "; closest: {b}: {r}")):
            if m is not None and m.culprit is not None and m.culprit.index not in covered:
                text = text.format(b=m.block, r=m.reason) if m.block else f"{where}: {m.reason}"
                reasons.setdefault(m.culprit.index, _node_reason(m.culprit) or text)
                causes.add(m.culprit.index)
        if shapes is None:
            shapes = _inferred_shapes(proto, input_name, batch, shape)
        why = f"lies after tensor '{x}', where {where[:1].lower()}{where[1:]}"
        x, current = _resume(graph, x, covered, causes, shapes, reasons, why)
    for node in graph.nodes:
        if node.index not in covered:
            reason = reasons.get(node.index) or _node_reason(node)
            cause = node.index in causes or (reason is not None and node.index not in reasons)
            reason = reason or "is on no path of the model's chain of blocks"
            mapping.unmapped.append(UnmappedNode(node.name, node.op, reason, cause))
    return mapping


def _resume(
    graph: _Graph,
    x: str,
    covered: set[int],
    causes: set[int],
    shapes: dict[str, tuple[int, ...]],
    reasons: dict[int, str],
    why: str,
) -> tuple[str | None, tuple[int, int, int]]:
    """The next tensor after ``x`` (graph order) where a block matches; the nodes up to it get ``why``.

    ``covered``: the nodes of blocks; a resumed block takes none of them nor of ``causes`` (nodes that
    explain a failure, so their reason stays listed).
    """
    reach: set[int] = set()
    pending = [x]
    while pending:
        for node in graph.users(pending.pop()):
            if node.index not in reach and node.index not in covered:
                reach.add(node.index)
                pending += list(node.outputs)
    for index in sorted(reach):
        node = graph.nodes[index]
        reasons.setdefault(index, _node_reason(node) or why)
        out = node.outputs[0] if node.outputs else ""
        dims = shapes.get(out)
        if dims is None or len(dims) != 4 or not graph.users(out):
            continue
        match, _ = _best_match(graph, out, dims[1:], covered | causes)  # type: ignore[arg-type]
        if match is not None:
            return out, dims[1:]  # type: ignore[return-value]
    return None, (0, 0, 0)


__all__ = [
    "BLOCK_OPS",
    "MappedBlock",
    "ModelMapping",
    "UnmappableModel",
    "UnmappedNode",
    "map_graph",
]
