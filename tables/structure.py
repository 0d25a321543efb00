"""The structure of every block type, written once over an abstract builder.

A block type's structure is a function ``(builder, key, x) -> y`` in
:data:`STRUCTURES` that calls the primitives of a :class:`BlockBuilder` in the
order of the inference graph (BN folded into the convs, eval mode). What a
primitive does is the builder's business:

- :class:`kernels_bench.onnx_graphs._Emitter` appends ONNX nodes and draws the
  weights (its tensors are node output names);
- :class:`tables.cost.CostBuilder` records each layer's shapes, weights and
  work (its tensors are shapes), so FLOPs, parameters and bytes follow from the
  key alone, without onnx.

Each primitive stands for one node of the emitted graph (``conv_bn`` and
``conv_bias`` one ``Conv``, ``linear`` one ``Gemm``, ``global_mean`` one
``ReduceMean``). The ``path`` arguments are the parameter paths of the torch
reference module (``"branch.0"``, ``"expand.1"``, ``"se.reduce"``); the ONNX node
and initializer names are made from them, so they are part of the structure.

Parameter paths of a conv + BN group at ``path`` (``blocks.conv_bn``): conv
``{path}.0``, BN ``{path}.1``, activation ``{path}.2``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from tables.key import NUM_CLASSES, BlockKey

#: A builder's tensor: an ONNX tensor name for the emitter, a shape for the cost builder.
T = TypeVar("T")


class BlockBuilder(ABC, Generic[T]):
    """The primitives a block structure is written in; each stands for one node of the inference graph.

    Channel counts are given explicitly (the emitter's tensors carry no shape);
    spatial sizes follow from the input: a kxk conv or pool pads ``(k - 1) // 2``,
    so stride ``s`` maps a size ``n`` to ``ceil(n / s)``, unless a conv is given
    another ``padding`` p: then ``(n + 2p - k) // s + 1`` (p = 0: the unpadded
    strided conv of a key with pad ``"valid"``).
    """

    @abstractmethod
    def conv_bn(
        self, x: T, path: str, cin: int, cout: int, k: int, stride: int, groups: int, padding: int | None = None
    ) -> T:
        """Bias-free kxk conv ``{path}.0`` (``groups`` groups, stride ``stride``) with BN ``{path}.1`` folded in.

        ``padding``: pixels on each side, ``None`` for ``(k - 1) // 2``.
        """

    @abstractmethod
    def conv_bias(self, x: T, path: str, cin: int, cout: int) -> T:
        """1x1 conv with bias, stride 1, no BN (the SE reduce and expand convs)."""

    @abstractmethod
    def linear(self, x: T, path: str, cin: int, cout: int) -> T:
        """Fully connected layer with bias, ``cin`` -> ``cout`` features (``nn.Linear``)."""

    @abstractmethod
    def relu(self, x: T, path: str) -> T:
        """max(x, 0), elementwise."""

    @abstractmethod
    def clip(self, x: T, lo: float, hi: float, path: str) -> T:
        """min(max(x, lo), hi), elementwise."""

    @abstractmethod
    def sigmoid(self, x: T, path: str) -> T:
        """1 / (1 + exp(-x)), elementwise."""

    @abstractmethod
    def mul(self, a: T, b: T, path: str) -> T:
        """a * b, elementwise with broadcasting (``b`` may be (C, 1, 1))."""

    @abstractmethod
    def add(self, a: T, b: T, path: str) -> T:
        """a + b, elementwise, same shapes."""

    @abstractmethod
    def global_mean(self, x: T, path: str) -> T:
        """Mean over height and width, keeping them: (C, H, W) -> (C, 1, 1)."""

    @abstractmethod
    def flatten(self, x: T, path: str) -> T:
        """(C, 1, 1) -> (C,) (axis 1 with the batch)."""

    @abstractmethod
    def max_pool(self, x: T, path: str, k: int, stride: int) -> T:
        """kxk max-pool with stride ``stride``, padded ``(k - 1) // 2``."""


# --------------------------------------------------------------------------- shared pieces
def activation(b: BlockBuilder[T], x: T, act: str, path: str) -> T:
    """A key's activation: ``relu``; ``swish`` = x * sigmoid(x); ``relu6`` = clip(x, 0, 6)."""
    if act == "relu":
        return b.relu(x, path)
    if act == "swish":
        return b.mul(x, b.sigmoid(x, path), path)
    if act == "relu6":
        return b.clip(x, 0.0, 6.0, path)
    raise ValueError(f"unknown activation {act!r}: allowed relu, swish, relu6")


def conv_bn_act(
    b: BlockBuilder[T],
    x: T,
    path: str,
    cin: int,
    cout: int,
    k: int,
    stride: int = 1,
    groups: int = 1,
    act: str | None = None,
    padding: int | None = None,
) -> T:
    """``blocks.conv_bn``: conv ``{path}.0`` -> BN ``{path}.1`` (folded), then activation ``{path}.2`` when ``act``.

    ``padding``: pixels on each side of the conv, ``None`` for ``(k - 1) // 2``.
    """
    # padding goes by keyword, and only when set: builders written before it existed still build padded keys
    if padding is None:
        y = b.conv_bn(x, path, cin, cout, k, stride, groups)
    else:
        y = b.conv_bn(x, path, cin, cout, k, stride, groups, padding=padding)
    return y if act is None else activation(b, y, act, f"{path}.2")


def squeeze_excite(b: BlockBuilder[T], x: T, channels: int, rd: int, act: str) -> T:
    """``blocks.SqueezeExcite``: x * sigmoid(expand(act(reduce(mean(x))))), squeezing ``channels`` to ``rd``."""
    s = b.global_mean(x, "se")
    s = activation(b, b.conv_bias(s, "se.reduce", channels, rd), act, "se.act")
    gate = b.sigmoid(b.conv_bias(s, "se.expand", rd, channels), "se.gate")
    return b.mul(x, gate, "se")


def conv_block(b: BlockBuilder[T], key: BlockKey, x: T, *, pool: bool) -> T:
    """``blocks.ConvBlock``: kxk conv stride s -> BN -> act, then the 3x3 stride-2 max-pool ``pool`` when ``pool``."""
    y = conv_bn_act(b, x, "body", key.cin, key.cout, key.k, key.s, act=key.act)
    return b.max_pool(y, "pool", 3, 2) if pool else y


def classifier(b: BlockBuilder[T], x: T, cin: int, cout: int) -> T:
    """Global mean -> flatten -> linear ``fc`` cin -> cout."""
    return b.linear(b.flatten(b.global_mean(x, ""), ""), "fc", cin, cout)


def residual(b: BlockBuilder[T], key: BlockKey, x: T, branch: T) -> T:
    """``blocks.ResidualBlock``: act(branch + shortcut), the shortcut the identity or a 1x1 conv + BN ``shortcut``."""
    shortcut = x if key.has_residual else conv_bn_act(b, x, "shortcut", key.cin, key.cout, 1, key.s)
    return activation(b, b.add(branch, shortcut, ""), key.act, "act")


def bottleneck_branch(b: BlockBuilder[T], key: BlockKey, x: T, *, depthwise: bool) -> T:
    """The ``bl`` / ``dw`` branch: 1x1 to mid, kxk (depthwise when ``depthwise``) stride s, 1x1 to cout."""
    mid, act = key.mid_channels, key.act
    y = conv_bn_act(b, x, "branch.0", key.cin, mid, 1, act=act)
    y = conv_bn_act(b, y, "branch.1", mid, mid, key.k, key.s, groups=mid if depthwise else 1, act=act)
    return conv_bn_act(b, y, "branch.2", mid, key.cout, 1)


def inverted_residual(b: BlockBuilder[T], key: BlockKey, x: T, *, fused: bool) -> T:
    """``blocks.InvertedResidual``: expand -> [SE] -> 1x1 project, plus ``x`` when ``key.has_residual``.

    ``irb``: 1x1 expand to mid (absent when ``key.e == 1``, then mid = cin), depthwise kxk stride s;
    ``fused_irb``: one kxk conv cin -> mid stride s, padded ``key.strided_padding`` (0 for pad valid).
    SE squeezes mid to ``key.se_channels``.
    """
    act = key.act
    if fused:
        mid = key.mid_channels
        padding = None if key.pad == "same" else key.strided_padding
        y = conv_bn_act(b, x, "expand", key.cin, mid, key.k, key.s, act=act, padding=padding)
    elif key.e == 1:
        mid = key.cin
        y = conv_bn_act(b, x, "expand.0", mid, mid, key.k, key.s, groups=mid, act=act)
    else:
        mid = key.mid_channels
        y = conv_bn_act(b, x, "expand.0", key.cin, mid, 1, act=act)
        y = conv_bn_act(b, y, "expand.1", mid, mid, key.k, key.s, groups=mid, act=act)
    if key.se:
        y = squeeze_excite(b, y, mid, key.se_channels, act)
    y = conv_bn_act(b, y, "project", mid, key.cout, 1)
    return b.add(y, x, "") if key.has_residual else y


# --------------------------------------------------------------------------- one structure per block type
def _conv(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    return conv_block(b, key, x, pool=False)


def _conv_pool(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    return conv_block(b, key, x, pool=True)


def _xx(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    mid = key.mid_channels
    y = conv_bn_act(b, x, "branch.0", key.cin, mid, key.k, key.s, act=key.act)
    return residual(b, key, x, conv_bn_act(b, y, "branch.1", mid, key.cout, key.k))


def _bl(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    return residual(b, key, x, bottleneck_branch(b, key, x, depthwise=False))


def _dw(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    return residual(b, key, x, bottleneck_branch(b, key, x, depthwise=True))


def _irb(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    return inverted_residual(b, key, x, fused=False)


def _fused_irb(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    return inverted_residual(b, key, x, fused=True)


def _tail(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    return classifier(b, conv_bn_act(b, x, "conv", key.cin, key.cout, 1, act=key.act), key.cout, NUM_CLASSES)


def _pool_fc(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    return classifier(b, x, key.cin, key.cout)


#: One structure per block type, ``(builder, key, input tensor) -> output tensor``; every entry of
#: ``BLOCK_TYPES`` has one, with the layers and parameter paths of its ``blocks.BLOCK_BUILDERS`` module.
STRUCTURES: dict[str, Callable[[BlockBuilder[Any], BlockKey, Any], Any]] = {
    "conv": _conv,
    "conv_pool": _conv_pool,
    "xx": _xx,
    "bl": _bl,
    "dw": _dw,
    "irb": _irb,
    "fused_irb": _fused_irb,
    "tail": _tail,
    "pool_fc": _pool_fc,
}


def build(b: BlockBuilder[T], key: BlockKey, x: T) -> T:
    """Walk ``key``'s structure on builder ``b`` from input ``x``; returns the block's output tensor.

    Raises ``ValueError`` for a block type without an entry in :data:`STRUCTURES`.
    """
    structure = STRUCTURES.get(key.block)
    if structure is None:
        raise ValueError(f"no structure for block type {key.block!r}: add one to tables.structure.STRUCTURES")
    return structure(b, key, x)


__all__ = [
    "STRUCTURES",
    "BlockBuilder",
    "activation",
    "bottleneck_branch",
    "build",
    "classifier",
    "conv_block",
    "conv_bn_act",
    "inverted_residual",
    "residual",
    "squeeze_excite",
]
