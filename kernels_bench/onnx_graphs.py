"""Direct ONNX emitter: the inference graph of block keys built from the keys alone (numpy + onnx.helper).

No torch, no tracing: each block type's graph is written node by node with
the structure the TorchScript export of :mod:`kernels_bench.blocks` produces
(constant folding on, eval mode), so both paths give the same op types in the
same order:

- conv + BN (+ act) -> one ``Conv`` with weight and bias (BN folded here, in
  numpy; ``pads`` (k - 1) // 2, or 0 on the strided conv of a key with pad
  ``"valid"``), then the activation: ``Relu``; ``Sigmoid`` + ``Mul`` for swish;
  ``Clip`` with two scalar ``Constant`` bounds (0, 6) for relu6;
- SE -> ``ReduceMean`` over (2, 3) keepdims (axes as an attribute below opset
  18, as a ``Constant`` int64 input from 18), ``Conv`` (bias), act, ``Conv``
  (bias), ``Sigmoid``, ``Mul``;
- residual -> ``Add`` (branch first, shortcut second), then the post-add
  activation of ``xx``/``bl``/``dw``; projection shortcut -> 1x1 ``Conv``;
- ``conv_pool`` -> ``MaxPool`` 3x3 stride 2 pad 1; ``tail`` / ``pool_fc`` ->
  ``ReduceMean``, ``Flatten`` (axis 1), ``Gemm`` (transB=1).

Each block type's structure is written once, in :data:`tables.structure.STRUCTURES`
(the twin of :data:`kernels_bench.blocks.BLOCK_BUILDERS`); the emitter here is a
:class:`tables.structure.BlockBuilder` whose primitives append the nodes above.

Weights are seeded per key (:func:`key_seed`, which is
:func:`kernels_bench.weights.weight_seed` like :func:`kernels_bench.blocks.block_seed`)
and drawn with numpy from the distributions of :mod:`kernels_bench.weights`
that :func:`kernels_bench.blocks.build_block` draws from too (He-normal conv and
linear weights, biases N(0, 0.1), BN scale U(0.5, 1.5), shift and mean
N(0, 0.1), variance U(0.5, 2)); the draws differ from torch's generator, so
:func:`reference_state_dict` returns the raw (unfolded) parameters under the
torch module's names: loaded into ``build_block(key)`` (or, with an ``"{i}."``
prefix per block, ``build_network(keys)``), the torch module computes the same
function as the emitted graph.

Graph input ``"input"``, output ``"output"``, static shapes, float32, no
``value_info``; the IR version is the lowest that goes with the opset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from kernels_bench import weights
from kernels_bench.weights import BN_EPS
from tables import structure
from tables.key import BlockKey, chain_keys

if TYPE_CHECKING:  # pragma: no cover
    import onnx

INPUT_NAME = "input"
OUTPUT_NAME = "output"

#: First opset whose ReduceMean takes ``axes`` as an input instead of an attribute.
_REDUCE_AXES_INPUT_OPSET = 18


#: The weight seed of one key (:func:`kernels_bench.weights.weight_seed`, kept under this name).
key_seed = weights.weight_seed


class _Emitter(structure.BlockBuilder[str]):
    """Accumulates nodes, folded initializers and the raw torch-named parameters of a chain of blocks.

    The primitives of :class:`tables.structure.BlockBuilder` append nodes; tensors are node output names.
    """

    def __init__(self, opset: int) -> None:
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.params: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(0)
        self.prefix = ""

    # ----- nodes, initializers and weight draws ---------------------------------------
    def node(self, op: str, inputs: list[str], path: str, **attrs: object) -> str:
        """Append one node named ``/{prefix}{path}/{op}`` (also its output tensor's name); returns that name."""
        name = f"/{(self.prefix + path).rstrip('.')}/{op}"
        self.nodes.append(self._helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def constant(self, value: np.ndarray, path: str, suffix: str) -> str:
        """A ``Constant`` node holding ``value``; returns its output tensor."""
        name = f"/{(self.prefix + path).rstrip('.')}/{suffix}"
        tensor = self._numpy_helper.from_array(value, name)
        self.nodes.append(self._helper.make_node("Constant", [], [name], name=name, value=tensor))
        return name

    def initializer(self, value: np.ndarray, name: str) -> str:
        self.initializers.append(self._numpy_helper.from_array(value, self.prefix + name))
        return self.prefix + name

    def normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        return self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def uniform(self, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
        return self.rng.random(shape, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)

    def weight(self, shape: tuple[int, ...]) -> np.ndarray:
        """He-normal weight of ``shape`` (output channels first): std sqrt(2 / fan_in), fan_in = elements per row."""
        return self.normal(shape, weights.he_normal_std(math.prod(shape[1:])))

    def bias(self, channels: int) -> np.ndarray:
        """Conv or linear bias of ``channels`` values."""
        return self.normal((channels,), weights.BIAS_STD)

    def param(self, name: str, value: np.ndarray) -> np.ndarray:
        self.params[self.prefix + name] = value
        return value

    def conv(
        self, x: str, path: str, w: np.ndarray, b: np.ndarray, stride: int, groups: int, padding: int | None = None
    ) -> str:
        """One ``Conv`` node ``{path}`` with initializers ``{path}.weight`` and ``{path}.bias``.

        Padded ``padding`` pixels on each side, ``None`` for (k - 1) // 2.
        """
        k = w.shape[-1]
        wn, bn = self.initializer(w, f"{path}.weight"), self.initializer(b, f"{path}.bias")
        return self.node(
            "Conv",
            [x, wn, bn],
            path,
            dilations=[1, 1],
            group=groups,
            kernel_shape=[k, k],
            pads=[(k - 1) // 2 if padding is None else padding] * 4,
            strides=[stride, stride],
        )

    # ----- the builder's primitives (tables.structure.BlockBuilder) ----------------------
    def conv_bn(
        self, x: str, path: str, cin: int, cout: int, k: int, stride: int, groups: int, padding: int | None = None
    ) -> str:
        """``blocks.conv_bn`` without its activation: conv ``{path}.0`` -> BN ``{path}.1`` folded into one Conv."""
        w = self.param(f"{path}.0.weight", self.weight((cout, cin // groups, k, k)))
        gamma = self.param(f"{path}.1.weight", self.uniform((cout,), *weights.BN_SCALE_RANGE))
        beta = self.param(f"{path}.1.bias", self.normal((cout,), weights.BN_SHIFT_STD))
        mean = self.param(f"{path}.1.running_mean", self.normal((cout,), weights.BN_MEAN_STD))
        var = self.param(f"{path}.1.running_var", self.uniform((cout,), *weights.BN_VAR_RANGE))
        self.param(f"{path}.1.num_batches_tracked", np.array(0, dtype=np.int64))
        scale = gamma / np.sqrt(var + np.float32(BN_EPS))
        return self.conv(x, f"{path}.0", w * scale[:, None, None, None], beta - mean * scale, stride, groups, padding)

    def conv_bias(self, x: str, path: str, cin: int, cout: int) -> str:
        """1x1 conv with bias (SE reduce / expand)."""
        w = self.param(f"{path}.weight", self.weight((cout, cin, 1, 1)))
        b = self.param(f"{path}.bias", self.bias(cout))
        return self.conv(x, path, w, b, 1, 1)

    def linear(self, x: str, path: str, cin: int, cout: int) -> str:
        """``nn.Linear`` as ``Gemm`` (transB=1)."""
        w = self.param(f"{path}.weight", self.weight((cout, cin)))
        b = self.param(f"{path}.bias", self.bias(cout))
        wn, bn = self.initializer(w, f"{path}.weight"), self.initializer(b, f"{path}.bias")
        return self.node("Gemm", [x, wn, bn], path, alpha=1.0, beta=1.0, transB=1)

    def relu(self, x: str, path: str) -> str:
        return self.node("Relu", [x], path)

    def clip(self, x: str, lo: float, hi: float, path: str) -> str:
        """``Clip`` with its bounds as two scalar ``Constant`` nodes (as the TorchScript exporter writes relu6)."""
        lo_name = self.constant(np.array(lo, dtype=np.float32), path, "Constant")
        hi_name = self.constant(np.array(hi, dtype=np.float32), path, "Constant_1")
        return self.node("Clip", [x, lo_name, hi_name], path)

    def sigmoid(self, x: str, path: str) -> str:
        return self.node("Sigmoid", [x], path)

    def mul(self, a: str, b: str, path: str) -> str:
        return self.node("Mul", [a, b], path)

    def add(self, a: str, b: str, path: str) -> str:
        return self.node("Add", [a, b], path)

    def global_mean(self, x: str, path: str) -> str:
        """``x.mean(dim=(2, 3), keepdim=True)`` as the TorchScript exporter writes it for the opset."""
        if self.opset >= _REDUCE_AXES_INPUT_OPSET:
            axes = self.constant(np.array([2, 3], dtype=np.int64), path, "Constant")
            return self.node("ReduceMean", [x, axes], path, keepdims=1)
        return self.node("ReduceMean", [x], path, axes=[2, 3], keepdims=1)

    def flatten(self, x: str, path: str) -> str:
        return self.node("Flatten", [x], path, axis=1)

    def max_pool(self, x: str, path: str, k: int, stride: int) -> str:
        return self.node(
            "MaxPool",
            [x],
            path,
            ceil_mode=0,
            dilations=[1, 1],
            kernel_shape=[k, k],
            pads=[(k - 1) // 2] * 4,
            strides=[stride, stride],
        )

    # ----- a chain of keys -----------------------------------------------------------
    def chain(self, keys: Sequence[BlockKey], seed: int, *, prefixed: bool) -> str:
        """Emit the keys in order from the graph input; block ``i`` is named ``"{i}."`` when ``prefixed``."""
        x = INPUT_NAME
        for i, key in enumerate(keys):
            self.rng = np.random.default_rng(key_seed(key, seed))
            self.prefix = f"{i}." if prefixed else ""
            x = structure.build(self, key, x)
        return x


def _checked_keys(keys: BlockKey | Sequence[BlockKey]) -> list[BlockKey]:
    key_list = [keys] if isinstance(keys, BlockKey) else list(keys)
    if not key_list or not all(isinstance(k, BlockKey) for k in key_list):
        raise ValueError("the direct ONNX emitter needs one or more BlockKey objects")
    chain_keys(key_list)
    return key_list


def block_graph(keys: BlockKey | Sequence[BlockKey], batch: int, *, opset: int, seed: int = 0) -> onnx.ModelProto:
    """The fp32 inference graph (BN folded) of one key or a chain of keys at a fixed ``batch``.

    Input ``"input"`` of shape ``(batch, *keys[0].input_shape)``, output
    ``"output"`` of shape ``(batch, *keys[-1].output_shape)``. Raises
    ``ValueError`` for an empty list, non-key items or keys that do not chain.
    """
    from onnx import TensorProto, helper

    key_list = _checked_keys(keys)
    emitter = _Emitter(opset)
    last = emitter.chain(key_list, seed, prefixed=True)
    for node in emitter.nodes:
        for i, name in enumerate(node.output):
            if name == last:
                node.output[i] = OUTPUT_NAME
        for i, name in enumerate(node.input):
            if name == last:
                node.input[i] = OUTPUT_NAME
    graph = helper.make_graph(
        emitter.nodes,
        "blocks",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, (batch, *key_list[0].input_shape))],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, (batch, *key_list[-1].output_shape))],
        initializer=emitter.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="kernels_bench")
    model.ir_version = helper.find_min_ir_version_for([model.opset_import[0]])
    return model


def reference_state_dict(keys: BlockKey | Sequence[BlockKey], seed: int = 0) -> dict[str, np.ndarray]:
    """The raw parameters behind :func:`block_graph`, named as in the torch reference module.

    For one key the names are those of ``blocks.build_block(key)``; for a
    list of keys those of ``blocks.build_network(keys)`` (``"{i}."`` prefix).
    Convs carry their unfolded weights and BN layers their scale, shift and
    running statistics, so ``load_state_dict`` (strict) makes the torch module
    compute the function of the emitted graph.
    """
    key_list = _checked_keys(keys)
    emitter = _Emitter(_REDUCE_AXES_INPUT_OPSET)  # the opset changes nodes, never parameters
    emitter.chain(key_list, seed, prefixed=not isinstance(keys, BlockKey))
    return emitter.params
