"""Stage-by-stage search spaces: the machinery shared by GPUNet, GENet and user spaces.

A :class:`StagedSpace` is a list of stages (GPUNet's Table 1 is the model). Each
stage has one block type and one stride, and choices for its output channels
(``filters``), kernel, expansion/bottleneck ratio, SE, activation and number of
layers. All layers of a stage share one configuration; only the first layer has
the stage's stride and the channel change, the others are stride 1 with
``cin == cout``. A stage that may have 0 layers must have stride 1, so feature
map sizes depend on the resolution alone.

Integer encoding (one row per architecture): position 0 is the input resolution
in pixels; then, stage by stage, every field the stage encodes, in the order
``filters, kernel, expansion, se, act, layers`` (the order of GPUNet's Table 2).
By default a stage encodes exactly the fields that have more than one choice.
The integers are values, not indices:

- resolution: pixels; filters: output channels; kernel: kernel size; layers: count;
- expansion: ``round(ratio * expansion_scale)`` (scale 1 for GPUNet's integer E,
  100 -- ratio in percent -- for GENet's 0.25/0.5 bottleneck ratios);
- se: 0 or 1; act: index into :data:`tables.key.ACTIVATIONS` (0 relu, 1 swish, 2 relu6).

Fields a stage does not encode take their single fixed value. A stage whose
``filters`` is ``None`` keeps its input channels (GPUNet stage 1).

A stage's ``pad`` (one value, not encoded) is the :attr:`tables.key.BlockKey.pad`
of its first layer: ``"valid"`` leaves that layer's stride-2 kxk conv unpadded, so
the stage's output size depends on its kernel ((h - k) // 2 + 1) and the feature
sizes of every later stage on the resolution *and* the kernels of those stages
(:meth:`StagedSpace.kernel_sized_stages`; GPUNet's fused stages 2 and 3).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from profiler.spaces.architecture import Architecture
from tables.key import ACTIVATIONS, BLOCK_TYPES, PADDINGS, BlockKey, block_names

#: Fields a stage may encode, in encoding order.
ENCODED_FIELDS: tuple[str, ...] = ("filters", "kernel", "expansion", "se", "act", "layers")
_FIELD_LABELS = {
    "filters": "filters",
    "kernel": "kernel",
    "expansion": "expansion",
    "se": "SE",
    "act": "activation",
    "layers": "layers",
}


def _as_int_tuple(values: Iterable[object], what: str) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{what}: {v!r} is not an integer; give whole numbers")
        out.append(int(v))
    if not out:
        raise ValueError(f"{what}: no choices; give at least one value")
    return tuple(sorted(set(out)))


def describe_choices(codes: Sequence[int], field_name: str | None = None) -> str:
    """Human-readable list of allowed integer codes, e.g. ``224 to 512 in steps of 32``."""
    codes = list(codes)
    if field_name == "act":
        return ", ".join(f"{c} ({ACTIVATIONS[c]})" for c in codes)
    if len(codes) > 6:
        steps = {b - a for a, b in itertools.pairwise(codes)}
        if len(steps) == 1:
            return f"{codes[0]} to {codes[-1]} in steps of {steps.pop()}"
    if len(codes) == 1:
        return str(codes[0])
    return ", ".join(str(c) for c in codes[:-1]) + f" or {codes[-1]}"


@dataclass(frozen=True)
class StageSpec:
    """One stage of a staged space: block type, stride and the choices of each field.

    Attributes:
        block: a block type of :data:`tables.key.BLOCK_TYPES`.
        stride: stride of the stage's first layer (1 or 2).
        kernels, layers, acts: choices of kernel size, number of layers, activation names.
        filters: choices of output channels, or ``None`` to keep the input channels.
        expansions: choices of expansion/bottleneck ratio (``(1.0,)`` for blocks without one).
        se: choices of SE (0/1; ``(0,)`` for blocks without SE).
        name: label used in messages, e.g. ``"stage 2"``.
        encoded: fields carried by the encoding (canonical order); ``None`` = those with several choices.
        pad: padding of the first layer's strided conv (:data:`tables.key.PADDINGS`): ``"same"``, or
            ``"valid"`` (unpadded; a stride-2 stage of a type with :attr:`~tables.key.BlockType.has_pad`).
    """

    block: str
    stride: int
    kernels: tuple[int, ...]
    layers: tuple[int, ...]
    acts: tuple[str, ...]
    filters: tuple[int, ...] | None = None
    expansions: tuple[float, ...] = (1.0,)
    se: tuple[int, ...] = (0,)
    name: str = "stage"
    encoded: tuple[str, ...] | None = None
    pad: str = "same"

    def __post_init__(self) -> None:
        where = self.name
        bt = BLOCK_TYPES.get(self.block)
        if bt is None:
            raise ValueError(f"{where}: block type {self.block!r} is unknown; use one of {', '.join(BLOCK_TYPES)}")
        if self.stride not in (1, 2) or isinstance(self.stride, bool):
            raise ValueError(f"{where}: stride {self.stride!r} is invalid; use 1 or 2")
        if self.pad not in PADDINGS:
            raise ValueError(f"{where}: pad {self.pad!r} is unknown; use one of {', '.join(PADDINGS)}")
        if self.pad != "same" and not (bt.has_pad and self.stride == 2):
            takers = ", ".join(block_names(has_pad=True))
            raise ValueError(f"{where}: pad {self.pad!r} needs a stride-2 stage of {takers}; use pad 'same'")
        if bt.fixed_stride is not None and self.stride != bt.fixed_stride:
            raise ValueError(f"{where}: stride must be {bt.fixed_stride} for block {self.block}")
        kernels = _as_int_tuple(self.kernels, f"{where} kernel")
        if any(k <= 0 or k % 2 == 0 for k in kernels):
            raise ValueError(f"{where}: kernel choices {list(kernels)} must be odd positive sizes (1, 3, 5, 7)")
        if bt.fixed_kernel is not None and kernels != (bt.fixed_kernel,):
            raise ValueError(f"{where}: kernel must be {bt.fixed_kernel} for block {self.block}")
        object.__setattr__(self, "kernels", kernels)
        layers = _as_int_tuple(self.layers, f"{where} layers")
        if layers[0] < 0:
            raise ValueError(f"{where}: layer counts {list(layers)} must be >= 0")
        if not bt.repeatable and layers != (1,):
            raise ValueError(f"{where}: a {self.block} stage has exactly 1 layer")
        if layers[0] == 0 and self.stride != 1:
            raise ValueError(f"{where}: a stage that may have 0 layers must have stride 1")
        object.__setattr__(self, "layers", layers)
        acts = tuple(dict.fromkeys(self.acts))
        if not acts or any(a not in ACTIVATIONS for a in acts):
            raise ValueError(f"{where}: activations {list(self.acts)} are invalid; use {', '.join(ACTIVATIONS)}")
        object.__setattr__(self, "acts", tuple(sorted(acts, key=ACTIVATIONS.index)))
        if self.filters is not None:
            filters = _as_int_tuple(self.filters, f"{where} filters")
            if filters[0] <= 0:
                raise ValueError(f"{where}: filters {list(filters)} must be positive channel counts")
            object.__setattr__(self, "filters", filters)
        elif bt.classifier:
            raise ValueError(f"{where}: a {self.block} stage needs filters (its output width)")
        try:
            expansions = tuple(sorted({float(e) for e in self.expansions}))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expansions {self.expansions!r} must be positive numbers") from None
        if not expansions or any(not math.isfinite(e) or e <= 0 for e in expansions):
            raise ValueError(f"{where}: expansions {list(self.expansions)} must be positive numbers")
        if not bt.has_ratio and expansions != (1.0,):
            raise ValueError(f"{where}: block {self.block} has no expansion ratio; leave expansion out")
        object.__setattr__(self, "expansions", expansions)
        se = _as_int_tuple([int(s) if isinstance(s, bool) else s for s in self.se], f"{where} se")
        if any(s not in (0, 1) for s in se):
            raise ValueError(f"{where}: SE choices {list(se)} must be 0 or 1")
        if not bt.has_se and se != (0,):
            takers = ", ".join(block_names(has_se=True))
            raise ValueError(f"{where}: block {self.block} takes no SE; only {takers} do")
        object.__setattr__(self, "se", se)
        if self.encoded is None:
            enc = tuple(f for f in ENCODED_FIELDS if len(self.choices(f)) > 1)
        else:
            unknown = [f for f in self.encoded if f not in ENCODED_FIELDS]
            if unknown:
                raise ValueError(f"{where}: encoded fields {unknown} are unknown; use {', '.join(ENCODED_FIELDS)}")
            enc = tuple(f for f in ENCODED_FIELDS if f in self.encoded)
            if self.filters is None and "filters" in enc:
                raise ValueError(f"{where}: filters cannot be encoded when the stage keeps its input channels")
            missing = [f for f in ENCODED_FIELDS if len(self.choices(f)) > 1 and f not in enc]
            if missing:
                raise ValueError(f"{where}: fields {missing} have several choices and must be encoded")
        object.__setattr__(self, "encoded", enc)

    def choices(self, field_name: str) -> tuple:
        """The choices of one field (``filters`` gives ``()`` for a stage that keeps its input channels)."""
        return {
            "filters": self.filters or (),
            "kernel": self.kernels,
            "expansion": self.expansions,
            "se": self.se,
            "act": self.acts,
            "layers": self.layers,
        }[field_name]

    @property
    def may_be_empty(self) -> bool:
        """True when 0 layers is one of the choices."""
        return self.layers[0] == 0

    @property
    def kernel_sized(self) -> bool:
        """True when the stage's output feature size depends on its kernel (pad ``"valid"``)."""
        return self.pad == "valid"

    def out_hw(self, h: int | np.ndarray, kernel: int | np.ndarray | None = None) -> int | np.ndarray:
        """Output feature size (pixels) of the stage for an input of ``h`` pixels (an int, or an int64 array).

        ``kernel`` (int or array) matters only for a :attr:`kernel_sized` stage; ``None`` takes its smallest choice.
        """
        k = self.kernels[0] if kernel is None else kernel
        return BLOCK_TYPES[self.block].out_size(h, self.stride, k, self.pad)

    def layer_keys(
        self, h: int, cin: int, filters: int | None, kernel: int, e: float, se: bool, act: str, layers: int
    ) -> tuple[BlockKey, BlockKey | None]:
        """Keys of this stage's first layer and of its other layers (``None`` when ``layers == 1``).

        ``h`` is the stage's input feature size (pixels, square maps), ``cin`` its input channels;
        ``filters`` is ignored when the stage keeps its input channels and may be ``None``
        when the stage has a single width (the GPUNet tail).
        """
        if layers < 1:
            raise ValueError(f"{self.name}: layers is {layers}; keys exist only for 1 or more layers")
        if self.filters is None:
            cout = cin
        elif filters is None and len(self.filters) == 1:
            cout = self.filters[0]
        elif filters is None:
            raise ValueError(f"{self.name}: filters is None; give one of {list(self.filters)}")
        else:
            cout = int(filters)
        bt = BLOCK_TYPES[self.block]
        if bt.classifier:
            # one layer whose kernel, stride, ratio and SE are fixed by the type, whatever the arguments say
            first = BlockKey(
                self.block, cin, h, h, cout, self.kernels[0], self.stride, 1.0, False, act if bt.has_act else "relu"
            )
            return first, None
        ratio = float(e) if bt.has_ratio else 1.0
        use_se = bool(se) and bt.has_se
        first = BlockKey(self.block, cin, h, h, cout, int(kernel), self.stride, ratio, use_se, act, self.pad)
        if layers == 1:
            return first, None
        oh = first.out_hw[0]
        return first, BlockKey(self.block, cout, oh, oh, cout, int(kernel), 1, ratio, use_se, act)


@dataclass(frozen=True)
class Position:
    """One column of a staged space's integer encoding.

    Attributes:
        index: 0-based column.
        label: e.g. ``"stage 2 expansion"`` or ``"resolution"``.
        stage: stage index, or ``None`` for the resolution.
        field: ``"resolution"`` or one of :data:`ENCODED_FIELDS`.
        codes: the allowed integers, ascending.
    """

    index: int
    label: str
    stage: int | None
    field: str
    codes: tuple[int, ...]


@dataclass(frozen=True)
class StageConfig:
    """The configuration of one stage in one architecture (values, not codes).

    ``filters`` is the stage's output channels (for a stage that keeps its input
    channels: those channels); ``layers`` may be 0 for optional stages.
    """

    filters: int
    kernel: int
    expansion: float
    se: bool
    act: str
    layers: int

    def as_dict(self) -> dict[str, object]:
        """Plain dict (JSON-friendly)."""
        return {
            "filters": self.filters,
            "kernel": self.kernel,
            "expansion": self.expansion,
            "se": int(self.se),
            "act": self.act,
            "layers": self.layers,
        }


@dataclass(frozen=True)
class StagedArch:
    """A decoded architecture of a staged space: resolution (pixels) plus one :class:`StageConfig` per stage."""

    space: str
    resolution: int
    stages: tuple[StageConfig, ...]

    def as_dict(self) -> dict[str, object]:
        """``{"resolution": R, "stages": [stage dicts]}``; :meth:`StagedSpace.encode` accepts it."""
        return {"resolution": self.resolution, "stages": [s.as_dict() for s in self.stages]}


@dataclass(frozen=True)
class StagedSpace:
    """A search space of stages; see the module docstring for the encoding.

    Attributes:
        name: space name used in messages and architecture names (e.g. ``"gpunet"``).
        resolutions: input resolutions in pixels.
        stages: the stages in order.
        in_channels: channels of the network input (3 for images).
        expansion_scale: expansion code = round(ratio * expansion_scale).
        source: :attr:`profiler.spaces.Architecture.source` of the architectures it builds.
    """

    name: str
    resolutions: tuple[int, ...]
    stages: tuple[StageSpec, ...]
    in_channels: int = 3
    expansion_scale: int = 1
    source: str = "file"
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolutions", _as_int_tuple(self.resolutions, f"space {self.name} resolutions"))
        if self.resolutions[0] <= 0:
            raise ValueError(f"space {self.name}: resolutions {list(self.resolutions)} must be positive")
        stages = tuple(self.stages)
        if not stages:
            raise ValueError(f"space {self.name}: no stages; give at least one")
        object.__setattr__(self, "stages", stages)
        for st in stages[:-1]:
            if BLOCK_TYPES[st.block].classifier:
                raise ValueError(f"space {self.name}: {st.name} is a {st.block} classifier but is not the last stage")
        if stages[0].filters is None:
            raise ValueError(f"space {self.name}: the first stage needs filters")
        if int(self.expansion_scale) < 1:
            raise ValueError(f"space {self.name}: expansion_scale must be a positive integer")
        for st in stages:
            for e in st.expansions:
                if abs(e * self.expansion_scale - round(e * self.expansion_scale)) > 1e-9:
                    raise ValueError(
                        f"space {self.name}: {st.name} expansion {e:g} is not a whole number times "
                        f"1/{self.expansion_scale}; use ratios with at most two decimals"
                    )
        # every stride stage must still see a feature map at least as large as its stride (an unpadded
        # stage: as its kernel); the smallest map comes from the smallest resolution and the largest kernels
        h = self.resolutions[0]
        for st in stages:
            bt = BLOCK_TYPES[st.block]
            if bt.classifier:
                break
            if h < bt.min_size(st.stride, st.kernels[-1], st.pad):
                raise ValueError(
                    f"space {self.name}: resolution {self.resolutions[0]} is too small; "
                    f"{st.name} gets a {h}x{h} feature map"
                )
            h = st.out_hw(h, st.kernels[-1])

    # ----- encoding layout ----------------------------------------------------
    @property
    def positions(self) -> tuple[Position, ...]:
        """The encoding's columns, in order."""
        if "positions" not in self._cache:
            pos = [Position(0, "resolution", None, "resolution", self.resolutions)]
            for si, st in enumerate(self.stages):
                for f in st.encoded:  # type: ignore[union-attr]
                    codes = tuple(sorted(self._to_code(f, v) for v in st.choices(f)))
                    pos.append(Position(len(pos), f"{st.name} {_FIELD_LABELS[f]}", si, f, codes))
            self._cache["positions"] = tuple(pos)
        return self._cache["positions"]

    @property
    def length(self) -> int:
        """Number of integers in one encoding."""
        return len(self.positions)

    def _to_code(self, field_name: str, value: object) -> int:
        if field_name == "expansion":
            return round(float(value) * self.expansion_scale)  # type: ignore[arg-type]
        if field_name == "act":
            if isinstance(value, str):
                if value not in ACTIVATIONS:
                    raise ValueError(f"activation {value!r} is unknown; use one of {', '.join(ACTIVATIONS)}")
                return ACTIVATIONS.index(value)
            return int(value)  # type: ignore[call-overload]
        return int(value)  # type: ignore[call-overload]

    def _from_code(self, field_name: str, code: int) -> object:
        if field_name == "expansion":
            return float(code) / self.expansion_scale
        if field_name == "act":
            return ACTIVATIONS[code]
        if field_name == "se":
            return bool(code)
        return int(code)

    # ----- validate / decode / encode -----------------------------------------
    def validate(self, encoding: Sequence[int] | np.ndarray) -> tuple[int, ...]:
        """Check one encoding; returns it as a tuple of ints.

        Raises ``ValueError`` naming the wrong length, or the first bad position
        (0-based index and field) with its allowed values.
        """
        arr = list(encoding) if not isinstance(encoding, np.ndarray) else encoding.tolist()
        if isinstance(encoding, np.ndarray) and encoding.ndim != 1:
            raise ValueError(f"{self.name} encoding must be 1-D; got shape {encoding.shape}")
        if len(arr) != self.length:
            raise ValueError(
                f"{self.name} encoding has {len(arr)} integers; expected {self.length} "
                f"({', '.join(p.label for p in self.positions[:3])}, ...)"
            )
        out = []
        for pos, v in zip(self.positions, arr):
            ok_type = isinstance(v, (int, np.integer)) and not isinstance(v, bool)
            if not ok_type or int(v) not in pos.codes:
                raise ValueError(
                    f"invalid {self.name} encoding: position {pos.index} ({pos.label}) is {v!r}; "
                    f"allowed {describe_choices(pos.codes, pos.field)}"
                )
            out.append(int(v))
        return tuple(out)

    def validate_many(self, encodings: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Vectorized :meth:`validate` for an (N, L) array; returns it as int64.

        Raises ``ValueError`` naming the first bad row and position.
        """
        arr = np.asarray(encodings)
        if arr.ndim != 2 or arr.shape[1] != self.length:
            raise ValueError(f"{self.name} encodings must have shape (N, {self.length}); got {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{self.name} encodings must be integers; got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        for pos in self.positions:
            bad = ~np.isin(arr[:, pos.index], pos.codes)
            if bad.any():
                row = int(np.argmax(bad))
                raise ValueError(
                    f"invalid {self.name} encoding in row {row}: position {pos.index} ({pos.label}) is "
                    f"{int(arr[row, pos.index])}; allowed {describe_choices(pos.codes, pos.field)}"
                )
        return arr

    def decode(self, encoding: Sequence[int] | np.ndarray) -> StagedArch:
        """Encoding (validated) -> :class:`StagedArch` with values per stage."""
        enc = self.validate(encoding)
        cols: dict[tuple[int, str], int] = {(p.stage, p.field): enc[p.index] for p in self.positions[1:]}  # type: ignore[misc]
        configs = []
        c = self.in_channels
        for si, st in enumerate(self.stages):
            vals: dict[str, object] = {}
            for f in ENCODED_FIELDS:
                if (si, f) in cols:
                    vals[f] = self._from_code(f, cols[(si, f)])
                elif f == "filters" and st.filters is None:
                    vals[f] = c
                else:
                    vals[f] = self._from_code(f, self._to_code(f, st.choices(f)[0]))
            cfg = StageConfig(
                int(vals["filters"]),  # type: ignore[call-overload]
                int(vals["kernel"]),  # type: ignore[call-overload]
                float(vals["expansion"]),  # type: ignore[arg-type]
                bool(vals["se"]),
                str(vals["act"]),
                int(vals["layers"]),  # type: ignore[call-overload]
            )
            configs.append(cfg)
            if cfg.layers > 0:
                c = cfg.filters
        return StagedArch(self.name, enc[0], tuple(configs))

    def encode(self, arch: StagedArch | Mapping[str, object]) -> tuple[int, ...]:
        """:class:`StagedArch` or ``{"resolution": R, "stages": [{field: value}, ...]}`` -> encoding.

        Stage dicts may leave out fields the encoding does not carry; ``act`` may be a
        name or its code, ``se`` a bool or 0/1. Raises ``ValueError`` for missing or
        out-of-space values.
        """
        d = arch.as_dict() if isinstance(arch, StagedArch) else arch
        if not isinstance(d, Mapping) or "resolution" not in d or "stages" not in d:
            raise ValueError(f"{self.name} architecture must have 'resolution' and 'stages'")
        stages = list(d["stages"])  # type: ignore[call-overload]
        if len(stages) != len(self.stages):
            raise ValueError(f"{self.name} architecture has {len(stages)} stages; expected {len(self.stages)}")
        enc = [d["resolution"]]
        for pos in self.positions[1:]:
            sd = stages[pos.stage]  # type: ignore[index]
            if not isinstance(sd, Mapping) or pos.field not in sd:
                raise ValueError(f"{self.name} architecture: {pos.label} is missing")
            try:
                enc.append(self._to_code(pos.field, sd[pos.field]))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{self.name} architecture: {pos.label} is {sd[pos.field]!r}; "
                    f"allowed codes {describe_choices(pos.codes, pos.field)}"
                ) from None
        return self.validate(enc)  # type: ignore[arg-type]

    # ----- keys -----------------------------------------------------------------
    def kernel_sized_stages(self, stage_index: int) -> tuple[int, ...]:
        """Indices of the stages before ``stage_index`` whose kernel changes its input feature size.

        Those are the stages with pad ``"valid"`` (:attr:`StageSpec.kernel_sized`); empty in a space of
        padded stages, where feature sizes follow from the resolution alone.
        """
        if not 0 <= stage_index < len(self.stages):
            raise ValueError(f"stage index {stage_index} is out of range 0..{len(self.stages) - 1}")
        return tuple(i for i, st in enumerate(self.stages[:stage_index]) if st.kernel_sized)

    def stage_input_hw(
        self, stage_index: int, resolution: int, kernels: Mapping[int, int] | Sequence[int] | None = None
    ) -> int:
        """Input feature size (pixels) of a stage for a network input of ``resolution`` pixels.

        ``kernels``: the kernel of each earlier stage (stage index -> kernel, or one kernel per stage in
        order), read only for :meth:`kernel_sized_stages`; a stage it leaves out takes its smallest kernel.
        """
        if not 0 <= stage_index < len(self.stages):
            raise ValueError(f"stage index {stage_index} is out of range 0..{len(self.stages) - 1}")
        chosen = dict(kernels) if isinstance(kernels, Mapping) else dict(enumerate(() if kernels is None else kernels))
        h = int(resolution)
        for i, st in enumerate(self.stages[:stage_index]):
            h = int(st.out_hw(h, int(chosen[i]) if i in chosen and st.kernel_sized else None))
        return h

    def stage_layer_keys(
        self,
        stage_index: int,
        resolution: int,
        cin: int,
        filters: int | None,
        kernel: int,
        e: float,
        se: bool | int,
        act: str | int,
        layers: int,
        *,
        kernels: Mapping[int, int] | Sequence[int] | None = None,
    ) -> tuple[BlockKey, BlockKey | None]:
        """Keys of one stage's first layer and of its repeated layers (``None`` when ``layers == 1``).

        Inputs are values (``e`` the ratio, not its code); ``act`` is a name or its
        :data:`~tables.key.ACTIVATIONS` index; ``resolution`` is the network input size in
        pixels (the stage's own input size follows from the strides and, for the
        :meth:`kernel_sized_stages`, from ``kernels``, see :meth:`stage_input_hw`); ``cin`` is the
        stage's input channels. Used to precompute look-up arrays over value grids.
        """
        st = self.stages[stage_index] if 0 <= stage_index < len(self.stages) else None
        if st is None:
            raise ValueError(f"stage index {stage_index} is out of range 0..{len(self.stages) - 1}")
        act_name = act if isinstance(act, str) else ACTIVATIONS[int(act)]
        h = self.stage_input_hw(stage_index, resolution, kernels)
        return st.layer_keys(h, int(cin), filters, kernel, e, bool(se), act_name, int(layers))

    def arch_keys(self, arch: StagedArch | Sequence[int] | np.ndarray) -> list[BlockKey]:
        """Ordered block keys of one architecture (a :class:`StagedArch` or an encoding)."""
        if not isinstance(arch, StagedArch):
            arch = self.decode(arch)
        keys: list[BlockKey] = []
        c, h = self.in_channels, arch.resolution
        for st, cfg in zip(self.stages, arch.stages):
            if cfg.layers == 0:
                continue
            first, rest = st.layer_keys(h, c, cfg.filters, cfg.kernel, cfg.expansion, cfg.se, cfg.act, cfg.layers)
            keys.append(first)
            if rest is not None:
                keys.extend([rest] * (cfg.layers - 1))
            c, h = first.cout, first.out_hw[0]
        return keys

    def architecture(self, encoding: Sequence[int] | np.ndarray, name: str | None = None) -> Architecture:
        """Encoding -> :class:`~profiler.spaces.Architecture` (named ``space:i,j,...`` by default)."""
        enc = self.validate(encoding)
        keys = self.arch_keys(enc)
        return Architecture(name or f"{self.name}:{','.join(map(str, enc))}", tuple(keys), enc[0], self.source, enc)

    def space_keys(self) -> frozenset[BlockKey]:
        """The exact set of every key any architecture of the space contains.

        Enumerated stage by stage over (resolution, possible input channels, stage
        config), never over whole architectures; cached on the space.
        """
        if "keys" not in self._cache:
            self._cache["keys"] = frozenset(self._enumerate_keys())
        return self._cache["keys"]

    def count_keys(self) -> int:
        """Number of unique keys in the space (``len(space_keys())``)."""
        return len(self.space_keys())

    def key_count_bound(self) -> tuple[int, list[int]]:
        """An upper bound of :meth:`count_keys` and each stage's share of it, counted without enumerating.

        The enumeration's loops, multiplied out: per resolution and stage, (input
        channel choices) x (filter choices) x (kernel, expansion, SE, activation
        choices) first-layer keys, and (filter choices) x those for the repeated
        layers, times the kernel choices of the :meth:`kernel_sized_stages` before it
        (each may give the stage another input size). Exact when no two stage
        configurations give the same key; a space of trillions of keys is counted
        in microseconds.
        """
        per_stage = [0] * len(self.stages)
        for _ in self.resolutions:
            cins = 1
            for i, st in enumerate(self.stages):
                sizes = math.prod(len(self.stages[c].kernels) for c in self.kernel_sized_stages(i))
                combos = sizes * len(st.kernels) * len(st.expansions) * len(st.se) * len(st.acts)
                outs = len(st.filters) if st.filters else cins
                if st.layers[-1] >= 1:
                    per_stage[i] += cins * (len(st.filters) if st.filters else 1) * combos
                if st.layers[-1] >= 2:
                    per_stage[i] += outs * combos
                cins = outs + (cins if st.may_be_empty else 0)
        return sum(per_stage), per_stage

    def _enumerate_keys(self) -> set[BlockKey]:
        keys: set[BlockKey] = set()
        for res in self.resolutions:
            cins = {self.in_channels}
            hs = {res}  # the stage's possible input sizes: one, but for kernel-sized stages before it
            for st in self.stages:
                max_layers = st.layers[-1]
                outs: set[int] = set()
                if max_layers >= 1:
                    combos = list(itertools.product(st.kernels, st.expansions, st.se, st.acts))
                    for cin in sorted(cins):
                        for f in st.filters or (cin,):
                            outs.add(f)
                            for h in sorted(hs):
                                for k, e, se, act in combos:
                                    first, _ = st.layer_keys(h, cin, f, k, e, bool(se), act, 1)
                                    keys.add(first)
                    if max_layers >= 2:
                        for f in sorted(outs):
                            for h in sorted(hs):
                                for k, e, se, act in combos:
                                    _, rest = st.layer_keys(h, f, f, k, e, bool(se), act, 2)
                                    keys.add(rest)  # type: ignore[arg-type]
                if st.may_be_empty:
                    outs |= cins
                cins = outs
                hs = {int(st.out_hw(h, k)) for h in hs for k in (st.kernels if st.kernel_sized else (None,))}
        return keys

    # ----- sampling and vectorized views ------------------------------------------
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` valid encodings drawn with a scrambled, seeded Sobol sequence.

        Each unit coordinate ``u`` maps to ``codes[floor(u * len(codes))]`` of its
        position. Returns an (n, L) int64 array; the same seed gives the same rows.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"sample size n={n!r} is invalid; use an integer >= 0")
        n = int(n)
        out = np.empty((n, self.length), dtype=np.int64)
        if n == 0:
            return out
        from scipy.stats import qmc

        try:
            engine = qmc.Sobol(self.length, scramble=True, rng=seed)
        except TypeError:  # scipy < 1.15 calls it seed
            engine = qmc.Sobol(self.length, scramble=True, seed=seed)
        lookup = [np.asarray(p.codes, dtype=np.int64) for p in self.positions]
        chunk = 1 << 16
        with warnings.catch_warnings():
            # balance holds for the first 2**m points; we take a prefix of them
            warnings.simplefilter("ignore", UserWarning)
            for start in range(0, n, chunk):
                m = min(chunk, n - start)
                u = engine.random(m)
                for j, codes in enumerate(lookup):
                    idx = np.minimum((u[:, j] * len(codes)).astype(np.int64), len(codes) - 1)
                    out[start : start + m, j] = codes[idx]
        return out

    def stage_arrays(self, encodings: np.ndarray | Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Per-stage values of many encodings, for vectorized look-ups.

        Input: (N, L) encodings (validated). Output dict: ``"resolution"`` (N,) pixels, and
        (N, S) arrays for S stages: ``"h"`` input feature size, ``"cin"``/``"cout"`` channels,
        ``"kernel"``, ``"expansion"`` (float ratio), ``"se"`` (0/1), ``"act"``
        (:data:`~tables.key.ACTIVATIONS` index) and ``"layers"``.
        """
        arr = self.validate_many(encodings)
        n, s = arr.shape[0], len(self.stages)
        res = arr[:, 0].copy()
        out = {name: np.zeros((n, s), dtype=np.int64) for name in ("h", "cin", "cout", "kernel", "se", "act", "layers")}
        out["expansion"] = np.zeros((n, s), dtype=np.float64)
        col = {(p.stage, p.field): p.index for p in self.positions[1:]}
        c = np.full(n, self.in_channels, dtype=np.int64)
        h = res.copy()
        for si, st in enumerate(self.stages):

            def value(f: str, si: int = si, st: StageSpec = st) -> np.ndarray:
                if (si, f) in col:
                    return arr[:, col[(si, f)]]
                return np.full(n, self._to_code(f, st.choices(f)[0]), dtype=np.int64)

            layers = value("layers")
            cout = c.copy() if st.filters is None else value("filters")
            out["h"][:, si] = h
            out["cin"][:, si] = c
            out["cout"][:, si] = cout
            out["kernel"][:, si] = value("kernel")
            out["expansion"][:, si] = value("expansion") / self.expansion_scale
            out["se"][:, si] = value("se")
            out["act"][:, si] = value("act")
            out["layers"][:, si] = layers
            c = np.where(layers > 0, cout, c)
            h = st.out_hw(h, out["kernel"][:, si])  # type: ignore[assignment]
        out["resolution"] = res
        return out
