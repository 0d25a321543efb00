"""The block key: one tiny graph, named exactly.

A key is block type + input shape (channels, height, width) + output channels,
kernel, stride, expansion/bottleneck ratio, SE on/off, activation and the padding
of the block's strided conv. Batch, precision, backend and device belong to the
whole table, never to a row.

Canonical string form (one line, parses back to the same key)::

    irb_i64x40x40_o128_k5_s2_e6_se1_swish
    fused_irb_i32x160x160_o64_k3_s2_e4_se0_swish_pv

fields in order: block, ``i{cin}x{h}x{w}``, ``o{cout}``, ``k{kernel}``,
``s{stride}``, ``e{ratio}`` (shortest decimal), ``se{0|1}``, activation, then
``_pv`` when ``pad`` is ``"valid"`` (nothing for the default ``"same"``, so the
strings of keys written before the field existed are unchanged).

``pad``: ``"same"`` pads every kxk conv ``(k - 1) // 2`` (output ceil(size / s));
``"valid"`` leaves the block's stride-2 kxk conv unpadded (output
``(size - k) // 2 + 1``), as NVIDIA's released GPUNet code does for its fused
inverted residuals. Only the types with :attr:`BlockType.has_pad` (``fused_irb``)
take ``"valid"``, and only at stride 2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

#: Activation names accepted in keys ("swish" is SiLU).
ACTIVATIONS: tuple[str, ...] = ("relu", "swish", "relu6")

#: Number of classes of the classifier in ``tail`` blocks (a ``pool_fc`` block's classes are its ``cout``).
NUM_CLASSES = 1000

#: SE squeeze width as a fraction of the block's input channels (see :attr:`BlockKey.se_channels`).
SE_RATIO = 0.25

#: How a block type derives its inner width from a key (see :attr:`BlockKey.mid_channels`).
MID_RULES: tuple[str, ...] = ("expand8", "out_ratio", "out")
#: How a block type maps its input feature-map size to its output size (see :meth:`BlockType.out_size`).
SPATIAL_RULES: tuple[str, ...] = ("stride", "stride_pool", "global")
#: What a block type outputs (see :attr:`BlockKey.output_shape`).
OUTPUT_RULES: tuple[str, ...] = ("map", "cout", "classes")
#: Paddings of a block's strided kxk conv: ``same`` (k - 1) // 2, ``valid`` none (see :attr:`BlockKey.pad`).
PADDINGS: tuple[str, ...] = ("same", "valid")
#: Suffix of the canonical key string per padding (``same`` has none: older key strings stay as they were).
PAD_SUFFIXES: dict[str, str] = {"same": "", "valid": "_pv"}


#: A feature-map size: one int, or an integer array of many.
_Size = TypeVar("_Size", int, np.ndarray)


@dataclass(frozen=True)
class BlockType:
    """What a block type accepts and how its shapes follow from a key; one entry per type in :data:`BLOCK_TYPES`.

    Attributes:
        name, description: the type's key name and its structure in one line.
        has_ratio: the key's ``e`` is an expansion (irb, fused_irb) or a bottleneck/mid ratio (xx, bl, dw);
            without one ``e`` must be 1.
        has_se: the key's ``se`` may be on.
        fixed_kernel, fixed_stride: the only allowed ``k`` / ``s`` (1 for tail, pool_fc), or ``None``.
        spatial_out: ``"stride"`` (ceil(size / s)), ``"stride_pool"`` (then a 3x3 stride-2 max-pool, another
            ceil(/ 2)) or ``"global"`` (a classifier pools globally to 1x1).
        mid: the inner width: ``"expand8"`` make_divisible(cin * e, 8), ``"out_ratio"`` max(1, round(cout * e)),
            ``"out"`` cout.
        residual: the block adds an identity shortcut whenever the stride is 1 and cin == cout.
        output: ``"map"`` a (cout, out_h, out_w) feature map; a vector of ``"cout"`` or of ``"classes"``
            (:data:`NUM_CLASSES`) values. A vector output makes the type a classifier, which ends a network.
        has_act: the block applies the key's activation; without one (pool_fc) spaces give its keys ``relu``.
        has_pad: the key's ``pad`` may be ``"valid"`` (at stride 2): the block's strided kxk conv is then
            unpadded. Only for types whose output size is that conv's alone (no strided shortcut, no pool).
    """

    name: str
    description: str
    has_ratio: bool
    has_se: bool
    fixed_kernel: int | None = None
    fixed_stride: int | None = None
    spatial_out: str = "stride"
    mid: str = "out"
    residual: bool = False
    output: str = "map"
    has_act: bool = True
    has_pad: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("spatial_out", self.spatial_out, SPATIAL_RULES),
            ("mid", self.mid, MID_RULES),
            ("output", self.output, OUTPUT_RULES),
        ):
            if value not in allowed:
                raise ValueError(f"block type {self.name}: {name}={value!r} is unknown; allowed {', '.join(allowed)}")
        if (self.spatial_out == "global") != self.classifier:
            raise ValueError(
                f"block type {self.name}: output={self.output!r} with spatial_out={self.spatial_out!r}; "
                "a classifier (vector output) pools globally, and only a classifier does"
            )

    @property
    def classifier(self) -> bool:
        """True when the type outputs a vector (classes): it ends a network and nothing may follow it."""
        return self.output != "map"

    @property
    def repeatable(self) -> bool:
        """True when a stride-1 copy with cin == cout keeps the feature map, so a stage may repeat the type."""
        return self.spatial_out == "stride"

    def min_size(self, stride: int, k: int = 1, pad: str = "same") -> int:
        """Smallest input height/width (pixels) a key of this type accepts with ``stride``, kernel ``k`` and ``pad``."""
        size = stride * (2 if self.spatial_out == "stride_pool" else 1)
        return max(size, k) if pad == "valid" else size

    def out_size(self, size: _Size, stride: int, k: int | np.ndarray = 1, pad: str = "same") -> _Size:
        """Output height or width (pixels) for an input ``size`` (pixels), ``stride``, kernel ``k`` and ``pad``.

        ``same``: ceil(size / stride); ``valid`` (the strided kxk conv unpadded): (size - k) // stride + 1;
        1 for classifiers. ``size`` (and ``k``) may be ints (gives an int) or integer arrays (gives an array).
        """
        if self.spatial_out == "global":
            return np.ones_like(size) if isinstance(size, np.ndarray) else 1  # type: ignore[return-value]
        if pad == "valid":
            return (size - k) // stride + 1  # type: ignore[return-value]
        size = -(-size // stride)
        return -(-size // 2) if self.spatial_out == "stride_pool" else size


BLOCK_TYPES: dict[str, BlockType] = {
    b.name: b
    for b in (
        BlockType("conv", "conv kxk stride s -> BN -> act (stems, GPUNet stage 0/1)", False, False),
        BlockType(
            "conv_pool",
            "conv kxk stride s -> BN -> act -> max-pool 3x3 stride 2 (ResNet stem)",
            False,
            False,
            spatial_out="stride_pool",
        ),
        BlockType(
            "xx",
            "GENet XX / ResNet basic block: kxk, kxk, residual, act after add",
            True,
            False,
            mid="out_ratio",
            residual=True,
        ),
        BlockType(
            "bl",
            "GENet BL / ResNet bottleneck: 1x1, kxk(stride), 1x1, residual",
            True,
            False,
            mid="out_ratio",
            residual=True,
        ),
        BlockType(
            "dw",
            "GENet DW: 1x1, depthwise kxk(stride), 1x1, residual",
            True,
            False,
            mid="out_ratio",
            residual=True,
        ),
        BlockType(
            "irb",
            "inverted residual: 1x1 expand, depthwise kxk, [SE], 1x1 project",
            True,
            True,
            mid="expand8",
            residual=True,
        ),
        BlockType(
            "fused_irb",
            "fused inverted residual: kxk expand, [SE], 1x1 project",
            True,
            True,
            mid="expand8",
            residual=True,
            has_pad=True,
        ),
        BlockType(
            "tail",
            "1x1 conv -> BN -> act -> global average pool -> FC (1000 classes)",
            False,
            False,
            fixed_kernel=1,
            fixed_stride=1,
            spatial_out="global",
            output="classes",
        ),
        BlockType(
            "pool_fc",
            "global average pool -> FC (ResNet head); cout is the number of classes",
            False,
            False,
            fixed_kernel=1,
            fixed_stride=1,
            spatial_out="global",
            output="cout",
            has_act=False,
        ),
    )
}

#: Fields and properties of :class:`BlockType` that :func:`block_names` can select on.
_SELECTABLE = (
    *(f.name for f in fields(BlockType)),
    *(n for n, v in vars(BlockType).items() if isinstance(v, property)),
)


def block_names(**where: object) -> tuple[str, ...]:
    """Names of the block types whose fields or properties equal the given values, in :data:`BLOCK_TYPES` order.

    ``block_names(has_se=True)`` -> ``("irb", "fused_irb")``; without arguments, every name.
    Raises ``ValueError`` for an argument that is no field or property of :class:`BlockType`.
    """
    unknown = [name for name in where if name not in _SELECTABLE]
    if unknown:
        raise ValueError(f"block_names: {unknown[0]!r} is not a BlockType field; use one of {', '.join(_SELECTABLE)}")
    return tuple(n for n, b in BLOCK_TYPES.items() if all(getattr(b, f) == v for f, v in where.items()))


_STRIDES = (1, 2)
_PAD_OF_SUFFIX = {suffix: pad for pad, suffix in PAD_SUFFIXES.items()}
_KEY_RE = re.compile(
    r"^(?P<block>[a-z_]+?)_i(?P<cin>\d+)x(?P<h>\d+)x(?P<w>\d+)_o(?P<cout>\d+)"
    r"_k(?P<k>\d+)_s(?P<s>\d+)_e(?P<e>[0-9.]+)_se(?P<se>[01])_(?P<act>[a-z0-9]+)"
    r"(?P<pad>" + "|".join(re.escape(s) for s in PAD_SUFFIXES.values() if s) + r")?$"
)


def format_ratio(e: float) -> str:
    """The ratio field of a key string: the shortest of 6 significant digits (``4`` for 4.0, ``0.25``)."""
    return f"{e:.6g}"


#: Ratios seen by :class:`BlockKey` -> (the ratio its string gives back, that string); a space holds few.
_RATIOS: dict[float, tuple[float, str]] = {}


def _canonical_ratio(e: float) -> tuple[float, str]:
    """A key's ratio as stored (what its string reads back as) and its string, from a finite positive ``e``."""
    known = _RATIOS.get(e)
    if known is None:
        text = format_ratio(e)
        known = (float(text), text)
        if len(_RATIOS) < 4096:
            _RATIOS[e] = known
    return known


def _bad(field_name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"invalid block key field {field_name}={value!r}: allowed {allowed}")


@dataclass(frozen=True, order=True)
class BlockKey:
    """One (input shape, config) point of a block type.

    Construction validates every field and raises ``ValueError`` naming the
    field and its allowed values. ``e`` is the ratio of the types whose
    :attr:`BlockType.has_ratio` is set: the expansion of ``irb`` and ``fused_irb``
    (mid = in * e, rounded to a multiple of 8) or the mid-channel ratio of
    ``xx``/``bl``/``dw`` (mid = round(out * e)); it is 1 for blocks without one.
    ``pad`` is the padding of the block's strided kxk conv (:data:`PADDINGS`):
    ``"same"`` (default, (k - 1) // 2) or ``"valid"`` (none; only types with
    :attr:`BlockType.has_pad`, only at stride 2).
    Shapes, widths and the residual follow from the type's :class:`BlockType` row.
    """

    block: str
    cin: int
    h: int
    w: int
    cout: int
    k: int = 3
    s: int = 1
    e: float = 1.0
    se: bool = False
    act: str = "relu"
    pad: str = "same"
    _str: str = field(default="", init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        bt = BLOCK_TYPES.get(self.block)
        if bt is None:
            raise _bad("block", self.block, "one of " + ", ".join(BLOCK_TYPES))
        fields = self.__dict__
        sizes = (fields["cin"], fields["h"], fields["w"], fields["cout"], fields["k"], fields["s"])
        if set(map(type, sizes)) != {int} or min(sizes) <= 0:  # plain positive ints (most keys) need no change
            for name in ("cin", "h", "w", "cout", "k", "s"):
                v = getattr(self, name)
                if isinstance(v, bool) or (not isinstance(v, (int,)) and not _is_int_like(v)):
                    raise _bad(name, v, "a positive integer")
                object.__setattr__(self, name, int(v))
                if int(v) <= 0:
                    raise _bad(name, v, "a positive integer")
        if bt.fixed_kernel is not None and self.k != bt.fixed_kernel:
            raise _bad("k", self.k, f"{bt.fixed_kernel} for block {self.block}")
        if self.k % 2 == 0:
            raise _bad("k", self.k, "an odd kernel size (1, 3, 5, 7, ...)")
        if bt.fixed_stride is not None and self.s != bt.fixed_stride:
            raise _bad("s", self.s, f"{bt.fixed_stride} for block {self.block}")
        if self.s not in _STRIDES:
            raise _bad("s", self.s, "1 or 2")
        try:
            e = float(self.e)
        except (TypeError, ValueError):
            raise _bad("e", self.e, "a positive number") from None
        if not math.isfinite(e) or e <= 0:
            raise _bad("e", self.e, "a positive number")
        e, e_text = _canonical_ratio(e)
        if not bt.has_ratio and e != 1.0:
            raise _bad("e", self.e, f"1 for block {self.block} (it has no ratio)")
        object.__setattr__(self, "e", e)
        if not isinstance(self.se, (bool, int)) or int(self.se) not in (0, 1):
            raise _bad("se", self.se, "True/False (1/0)")
        object.__setattr__(self, "se", bool(self.se))
        if self.se and not bt.has_se:
            takers = ", ".join(block_names(has_se=True))
            raise _bad("se", self.se, f"False for block {self.block} (only {takers} take SE)")
        if self.act not in ACTIVATIONS:
            raise _bad("act", self.act, "one of " + ", ".join(ACTIVATIONS))
        if self.pad not in PADDINGS:
            raise _bad("pad", self.pad, "one of " + ", ".join(PADDINGS))
        if self.pad != "same" and not bt.has_pad:
            takers = ", ".join(block_names(has_pad=True))
            raise _bad("pad", self.pad, f"same for block {self.block} (only {takers} take {self.pad})")
        if self.pad != "same" and self.s == 1:
            raise _bad("pad", self.pad, "same for stride 1 (valid leaves a block's stride-2 conv unpadded)")
        min_hw = bt.min_size(self.s, self.k, self.pad)
        if self.h < min_hw or self.w < min_hw:
            where = f"stride {self.s}" + (f", kernel {self.k} and pad {self.pad}" if self.pad != "same" else "")
            raise _bad("h/w", f"{self.h}x{self.w}", f"a feature map of at least {min_hw}x{min_hw} for {where}")
        object.__setattr__(
            self,
            "_str",
            f"{self.block}_i{self.cin}x{self.h}x{self.w}_o{self.cout}_k{self.k}_s{self.s}"
            f"_e{e_text}_se{int(self.se)}_{self.act}{PAD_SUFFIXES[self.pad]}",
        )

    # ----- derived shapes -------------------------------------------------
    @property
    def block_type(self) -> BlockType:
        """The key's row of :data:`BLOCK_TYPES`."""
        return BLOCK_TYPES[self.block]

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output feature-map size (height, width) in pixels; (1, 1) for classifier blocks."""
        bt = BLOCK_TYPES[self.block]
        return (bt.out_size(self.h, self.s, self.k, self.pad), bt.out_size(self.w, self.s, self.k, self.pad))

    @property
    def strided_padding(self) -> int:
        """Pixels of padding on each side of the block's strided kxk conv: (k - 1) // 2, or 0 for pad valid."""
        return 0 if self.pad == "valid" else (self.k - 1) // 2

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the block's input, batch excluded."""
        return (self.cin, self.h, self.w)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Output shape without batch: (C, H, W), or (classes,) for classifiers (:attr:`BlockType.output`)."""
        output = BLOCK_TYPES[self.block].output
        if output == "classes":
            return (NUM_CLASSES,)
        if output == "cout":
            return (self.cout,)
        return (self.cout, *self.out_hw)

    @property
    def mid_channels(self) -> int:
        """Width (channels) of the block's inner layers, by the type's :attr:`BlockType.mid` rule.

        ``expand8``: make_divisible(cin * e, 8); ``out_ratio``: max(1, round(cout * e)); ``out``: cout.
        """
        rule = BLOCK_TYPES[self.block].mid
        if rule == "expand8":
            return make_divisible(self.cin * self.e, 8)
        if rule == "out_ratio":
            return max(1, round(self.cout * self.e))
        return self.cout

    @property
    def se_channels(self) -> int:
        """Squeeze width (channels) of the block's SE when ``se`` is on: max(1, int(cin * SE_RATIO))."""
        return max(1, int(self.cin * SE_RATIO))

    @property
    def has_residual(self) -> bool:
        """True when the block adds an identity shortcut: a :attr:`BlockType.residual` type, stride 1, cin == cout."""
        return BLOCK_TYPES[self.block].residual and self.s == 1 and self.cin == self.cout

    @property
    def io_elements(self) -> int:
        """Elements of the block's input plus its output, per image (see :func:`io_elements`)."""
        out = 1
        for d in self.output_shape:
            out *= d
        return self.cin * self.h * self.w + out

    def next_input(self) -> tuple[int, int, int]:
        """(channels, height, width) that the next block of a chain receives."""
        return (self.cout, *self.out_hw)

    # ----- string form ----------------------------------------------------
    def __str__(self) -> str:
        return self._str

    @classmethod
    def parse(cls, text: str) -> BlockKey:
        """Parse the canonical string form; raises ``ValueError`` on bad text."""
        return parse_key(text)

    def replace(self, **changes: object) -> BlockKey:
        """A copy with some fields changed (validated again)."""
        values = {f: getattr(self, f) for f in KEY_FIELDS}
        values.update(changes)
        return BlockKey(**values)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        """The key's fields as a plain dict (for tables and JSON)."""
        return {f: getattr(self, f) for f in KEY_FIELDS}


#: Key fields in canonical order (the typed key columns of a table).
KEY_FIELDS: tuple[str, ...] = ("block", "cin", "h", "w", "cout", "k", "s", "e", "se", "act", "pad")


def _is_int_like(v: object) -> bool:
    try:
        import numpy as np

        return isinstance(v, np.integer)
    except ImportError:  # pragma: no cover - numpy is a base dependency
        return False


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below 90% of it."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def parse_key(text: str) -> BlockKey:
    """Parse ``irb_i64x40x40_o128_k5_s2_e6_se1_swish`` (or ``..._pv``, pad valid) into a :class:`BlockKey`."""
    if not isinstance(text, str):
        raise ValueError(f"invalid block key {text!r}: expected a string")
    m = _KEY_RE.match(text.strip())
    if m is None:
        raise ValueError(
            f"invalid block key string {text!r}: expected "
            "BLOCK_i{cin}x{h}x{w}_o{cout}_k{k}_s{s}_e{ratio}_se{0|1}_ACT[_pv], "
            "e.g. irb_i64x40x40_o128_k5_s2_e6_se1_swish"
        )
    g = m.groupdict()
    try:
        e = float(g["e"])
    except ValueError:
        raise _bad("e", g["e"], "a positive number") from None
    key = BlockKey(
        block=g["block"],
        cin=int(g["cin"]),
        h=int(g["h"]),
        w=int(g["w"]),
        cout=int(g["cout"]),
        k=int(g["k"]),
        s=int(g["s"]),
        e=e,
        se=g["se"] == "1",
        act=g["act"],
        pad=_PAD_OF_SUFFIX[g["pad"] or ""],
    )
    return key


def chain_keys(keys: list[BlockKey] | tuple[BlockKey, ...]) -> None:
    """Check that each key's input is the previous key's output.

    Raises ``ValueError`` naming the first position where the chain breaks.
    """
    for i in range(1, len(keys)):
        prev, cur = keys[i - 1], keys[i]
        if prev.block_type.classifier:
            raise ValueError(f"block {i - 1} ({prev}) ends the network: nothing may follow a classifier")
        if prev.next_input() != cur.input_shape:
            raise ValueError(
                f"blocks do not chain at position {i}: block {i - 1} ({prev}) outputs "
                f"{prev.next_input()} but block {i} ({cur}) expects {cur.input_shape}"
            )


def io_elements(
    block: Sequence[str], cin: Any, h: Any, w: Any, cout: Any, s: Any, *, pad: Any = None, k: Any = None
) -> np.ndarray:
    """Input plus output elements per image of many keys at once (int64), from their fields.

    The vectorized twin of :attr:`BlockKey.io_elements`: what a block graph takes
    in and gives out, which a block timed alone moves across its boundaries and a
    whole network does not at every block. ``pad`` (``"same"``/``"valid"`` per key)
    defaults to all ``"same"``; keys with pad ``"valid"`` need their kernel sizes ``k``.
    Raises ``ValueError`` for an unknown padding or valid keys without ``k``.
    """
    block = np.asarray(block, dtype=object)
    cin, h, w, cout, s = (np.asarray(v, dtype=np.int64) for v in (cin, h, w, cout, s))
    oh, ow = -(-h // s), -(-w // s)
    if pad is not None:
        pad = np.asarray(pad, dtype=object)
        unknown = ~_of_types(pad, PADDINGS)
        if unknown.any():
            raise _bad("pad", pad[unknown].flat[0], "one of " + ", ".join(PADDINGS))
        valid = pad == "valid"
        if valid.any():
            if k is None:
                raise ValueError("io_elements: keys with pad 'valid' need their kernel sizes; pass k=")
            k = np.asarray(k, dtype=np.int64)
            oh = np.where(valid, (h - k) // s + 1, oh)
            ow = np.where(valid, (w - k) // s + 1, ow)
    pooled = _of_types(block, block_names(spatial_out="stride_pool"))
    oh = np.where(pooled, -(-oh // 2), oh)
    ow = np.where(pooled, -(-ow // 2), ow)
    classes = _of_types(block, block_names(output="classes"))
    vector = _of_types(block, block_names(output="cout"))
    out = np.where(classes, NUM_CLASSES, np.where(vector, cout, cout * oh * ow))
    return cin * h * w + out


def _of_types(block: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Boolean mask of the entries of an object array of names (block types, paddings) that are one of ``names``."""
    mask = np.zeros(block.shape, dtype=bool)
    for name in names:
        mask |= block == name
    return mask
