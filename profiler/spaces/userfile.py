"""A user's architectures or own staged search space, from a JSON or YAML file.

The suffix picks the parser (``.json``; ``.yaml`` or ``.yml``). A file holds one of two things.

**A list of architectures** -- a top-level list, or a mapping with ``architectures:``.
Each entry has a unique ``name`` and exactly one of:

- ``blocks``: canonical key strings in order, e.g. ``conv_i3x224x224_o32_k3_s2_e1_se0_relu``
  (the resolution is the first key's input height);
- ``gpunet``: the 41 integers of the GPUNet encoding (:mod:`profiler.spaces.gpunet`; the
  ``gpunet`` space, fused stride-2 convs unpadded as NVIDIA built it);
- ``genet``: the 21 integers of the GENet encoding (:mod:`profiler.spaces.genet`),
  checked against the space around ``genet_base`` (``light``, ``normal`` (default) or ``large``);
- ``gpunet_config``: path of a GPUNet-style JSON config, relative to this file;
- ``network``: a named reference network or variant (:mod:`profiler.networks`), e.g. ``resnet-50``
  or ``gpunet-0-padded``.

.. code-block:: yaml

    architectures:
      - name: tiny
        blocks: [conv_i3x64x64_o16_k3_s2_e1_se0_relu, tail_i16x32x32_o256_k1_s1_e1_se0_relu]
      - name: gpunet-0-like
        gpunet: [320, 32, 3, 0, 2, 32, 3, 5, 0, 0, 2, 64, 3, 5, 0, 0, 3, 192, 3, 5, 0, 1, 3,
                 112, 3, 2, 0, 0, 0, 416, 3, 5, 1, 0, 2, 256, 3, 2, 0, 0, 0]
      - {name: g0, gpunet_config: ../profiler/data/gpunet/0.65ms.json}

**A staged search space** -- a mapping with ``space:`` (or with ``stages:`` at the top),
shaped like GPUNet's Table 1; :class:`~profiler.spaces.staged.StagedSpace` then gives
encode/decode, Sobol sampling and the exact key set.

.. code-block:: yaml

    space:
      name: my-space               # default: the file name without suffix
      resolutions: {min: 160, max: 224, step: 32}   # or a list, or one number
      in_channels: 3               # default 3
      stages:
        - {type: conv, stride: 2, kernel: 3, filters: [16, 24], act: relu}
        - type: irb
          stride: 2
          kernel: [3, 5]
          filters: {min: 24, max: 40, step: 8}
          layers: {min: 1, max: 3}
          expansion: [3, 6]
          se: [0, 1]
          act: [relu, swish]
        - {type: tail, filters: 1280, act: relu}

Stage fields: ``type`` (conv, conv_pool, xx, bl, dw, irb, fused_irb, tail, pool_fc),
``stride`` (1 or 2, default 1), and choices -- a number, a list, or
``{min, max, step}`` -- for ``kernel`` (default 3; 1 for tail/pool_fc),
``filters`` (output channels; leave out to keep the input channels), ``layers``
(default 1; 0 allowed only for stride-1 stages), ``expansion`` (ratio, default 1),
``se`` (0/1, default 0), ``act`` (relu, swish, relu6; default relu), and one
``pad`` (``same``, the default, or ``valid``: the first layer's stride-2 conv
unpadded, for a stride-2 ``fused_irb`` stage, as in NVIDIA's GPUNet). Only the last
stage may be a classifier. The encoding carries resolution, then per stage the
fields with several choices (order: filters, kernel, expansion, se, act, layers);
expansion is the ratio itself when every expansion of the space is whole, else
the ratio times 100. Any error raises ``ValueError`` naming the file and the entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from profiler.spaces.architecture import Architecture
from profiler.spaces.staged import StagedSpace, StageSpec
from tables.key import BLOCK_TYPES, parse_key

_ARCH_KINDS = ("blocks", "gpunet", "genet", "gpunet_config", "network")
_STAGE_FIELDS = ("type", "stride", "kernel", "filters", "layers", "expansion", "se", "act", "pad", "name")
_SPACE_FIELDS = ("name", "resolutions", "in_channels", "stages")


#: Largest user file read (bytes): a list of 100,000 architectures fits in a few MB.
MAX_FILE_BYTES = 64 * 1024 * 1024

#: Most values a YAML document may expand to (aliases repeat a part: a small file can expand enormously).
MAX_YAML_NODES = 5_000_000


def read_document(path: str | Path) -> object:
    """Parse a JSON or YAML file (by suffix); ``ValueError`` naming the file on any read or syntax error.

    Memory stays bounded: a file over :data:`MAX_FILE_BYTES`, or a YAML file whose
    aliases would expand it to more than :data:`MAX_YAML_NODES` values, is refused
    before anything is expanded.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"{p}: unsupported file type {suffix or '(none)'}; use .json, .yaml or .yml")
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{p}: {size:,} bytes is more than the {MAX_FILE_BYTES:,} a user file may have")
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read it ({exc.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise ValueError(f"{p}: is not a text file (UTF-8); give a JSON or YAML file") from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ValueError(
                f"{p}: its YAML aliases expand it to more than {MAX_YAML_NODES:,} values; write it out flat"
            )
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ValueError(f"{p}: invalid YAML{where}: {problem}") from None


def _expanded_size(node: object, memo: dict[int, int]) -> int:
    """Values a composed YAML node expands to, aliases counted as copies (memoized, so counting is cheap)."""
    import yaml

    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_YAML_NODES + 1  # a node that contains itself expands without end
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def is_space_document(doc: object) -> bool:
    """True when a parsed document describes a staged space (``space:`` or ``stages:`` at the top)."""
    return isinstance(doc, Mapping) and ("space" in doc or "stages" in doc)


def load(path: str | Path) -> list[Architecture] | StagedSpace:
    """Load a user file: a list of :class:`Architecture` or a :class:`StagedSpace`."""
    doc = read_document(path)
    if is_space_document(doc):
        return _space_from_doc(doc, Path(path))  # type: ignore[arg-type]
    return _archs_from_doc(doc, Path(path))


def load_architectures(path: str | Path) -> list[Architecture]:
    """Load a file of architectures (see the module docstring); source ``"file"`` unless an entry names a network."""
    doc = read_document(path)
    if is_space_document(doc):
        raise ValueError(f"{path}: holds a search space, not a list of architectures; use load_space")
    return _archs_from_doc(doc, Path(path))


def load_space(path: str | Path) -> StagedSpace:
    """Load a staged search space file (see the module docstring)."""
    doc = read_document(path)
    if not is_space_document(doc):
        raise ValueError(f"{path}: holds no search space; expected a mapping with 'space:' or 'stages:'")
    return _space_from_doc(doc, Path(path))  # type: ignore[arg-type]


# ----- architectures ---------------------------------------------------------------
def _archs_from_doc(doc: object, path: Path) -> list[Architecture]:
    entries = doc.get("architectures") if isinstance(doc, Mapping) else doc
    if isinstance(doc, Mapping) and "architectures" not in doc:
        raise ValueError(f"{path}: expected a list of architectures or a mapping with 'architectures:'")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: 'architectures' must be a non-empty list")
    archs: list[Architecture] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        label = f"architecture {i}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: {label} is {entry!r}; expected a mapping with 'name' and one of {_ARCH_KINDS}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: {label} needs a non-empty string 'name'")
        label = f"architecture {i} ({name!r})"
        if name in seen:
            raise ValueError(f"{path}: {label} repeats a name; names must be unique")
        seen.add(name)
        kinds = [k for k in _ARCH_KINDS if k in entry]
        if len(kinds) != 1:
            raise ValueError(
                f"{path}: {label} must have exactly one of {', '.join(_ARCH_KINDS)}; has {kinds or 'none'}"
            )
        allowed = {"name", kinds[0]} | ({"genet_base"} if kinds[0] == "genet" else set())
        extra = sorted(set(entry) - allowed)
        if extra:
            raise ValueError(f"{path}: {label} has unknown fields {extra}; allowed {sorted(allowed)}")
        try:
            archs.append(_arch_from_entry(name, kinds[0], entry, path))
        except ValueError as exc:
            raise ValueError(f"{path}: {label} field {kinds[0]!r}: {exc}") from None
    return archs


def _arch_from_entry(name: str, kind: str, entry: Mapping, path: Path) -> Architecture:
    value = entry[kind]
    if kind == "blocks":
        if not isinstance(value, list) or not value:
            raise ValueError("expected a non-empty list of key strings")
        keys = tuple(parse_key(s) for s in value)
        return Architecture(name, keys, keys[0].h, "file")
    if kind in ("gpunet", "genet"):
        if not isinstance(value, list):
            raise ValueError("expected a list of integers")
        if kind == "gpunet":
            from profiler.spaces import gpunet

            arch = gpunet.architecture(value, name)
        else:
            from profiler.spaces import genet

            arch = genet.architecture(value, name, base=str(entry.get("genet_base", "normal")))
        return Architecture(name, arch.keys, arch.resolution, "file", arch.encoding)
    if kind == "gpunet_config":
        from profiler.networks import load_gpunet_config

        if not isinstance(value, str):
            raise ValueError("expected a path string")
        arch = load_gpunet_config(path.parent / value, name=name)
        return Architecture(name, arch.keys, arch.resolution, "file")
    from profiler.networks import get_network

    if not isinstance(value, str):
        raise ValueError("expected a network name")
    arch = get_network(value)
    return Architecture(name, arch.keys, arch.resolution, "reference", arch.encoding)


# ----- staged spaces ---------------------------------------------------------------
def _choices(value: object, what: str, number: type = int) -> tuple:
    if isinstance(value, Mapping):
        extra = sorted(set(value) - {"min", "max", "step"})
        if extra or "min" not in value or "max" not in value:
            raise ValueError(f"{what}: a range needs 'min' and 'max' (and optional 'step'); got {dict(value)}")
        lo, hi, step = value["min"], value["max"], value.get("step", 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi, step)) or step <= 0 or hi < lo:
            raise ValueError(f"{what}: range {dict(value)} needs integers with min <= max and step > 0")
        return tuple(range(lo, hi + 1, step))
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"{what}: empty list; give at least one choice")
    out = []
    for v in items:
        if number is str:
            if not isinstance(v, str):
                raise ValueError(f"{what}: {v!r} is not a name")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or (number is int and not float(v).is_integer()):
            raise ValueError(f"{what}: {v!r} is not {'an integer' if number is int else 'a number'}")
        out.append(v if number is str else number(v))
    return tuple(out)


def _space_from_doc(doc: Mapping, path: Path) -> StagedSpace:
    spec = doc.get("space", doc)
    if "space" in doc and len(doc) > 1:
        raise ValueError(f"{path}: top-level fields {sorted(set(doc) - {'space'})} are not allowed beside 'space'")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{path}: 'space' must be a mapping with resolutions and stages")
    extra = sorted(set(spec) - set(_SPACE_FIELDS))
    if extra:
        raise ValueError(f"{path}: space has unknown fields {extra}; allowed {list(_SPACE_FIELDS)}")
    for req in ("resolutions", "stages"):
        if req not in spec:
            raise ValueError(f"{path}: space lacks {req!r}")
    try:
        resolutions = _choices(spec["resolutions"], "resolutions")
        in_channels = spec.get("in_channels", 3)
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f"in_channels {in_channels!r} must be a positive integer")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    raw_stages = spec["stages"]
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ValueError(f"{path}: 'stages' must be a non-empty list")
    stages = []
    expansions: set[float] = set()
    for i, st in enumerate(raw_stages):
        try:
            stage = _stage_from_entry(i, st)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        stages.append(stage)
        expansions.update(stage.expansions)
    scale = 1 if all(float(e).is_integer() for e in expansions) else 100
    name = spec.get("name", path.stem)
    try:
        return StagedSpace(str(name), resolutions, tuple(stages), in_channels, scale, "file")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _stage_from_entry(i: int, st: object) -> StageSpec:
    """One stage mapping -> :class:`StageSpec`; messages start with the stage's name."""
    name = str(st.get("name", f"stage {i}")) if isinstance(st, Mapping) else f"stage {i}"
    try:
        return _stage_fields(name, st)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith(name) else f"{name}: {msg}") from None


def _stage_fields(name: str, st: object) -> StageSpec:
    if not isinstance(st, Mapping):
        raise ValueError(f"expected a mapping with 'type' and choices; got {st!r}")
    extra = sorted(set(st) - set(_STAGE_FIELDS))
    if extra:
        raise ValueError(f"unknown fields {extra}; allowed {list(_STAGE_FIELDS)}")
    block = st.get("type")
    if block not in BLOCK_TYPES:
        raise ValueError(f"type {block!r} is unknown; use one of {', '.join(BLOCK_TYPES)}")
    bt = BLOCK_TYPES[block]
    stride = st.get("stride", bt.fixed_stride or 1)
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride {stride!r} is invalid; use 1 or 2")
    kernels = _choices(st.get("kernel", bt.fixed_kernel or 3), "kernel")
    layers = _choices(st.get("layers", 1), "layers")
    acts = _choices(st.get("act", "relu"), "act", str)
    filters = _choices(st["filters"], "filters") if "filters" in st else None
    expansions = _choices(st.get("expansion", 1), "expansion", float)
    se = _choices(st.get("se", 0), "se")
    pad = st.get("pad", "same")
    if not isinstance(pad, str):
        raise ValueError(f"pad {pad!r} is not a name; use same or valid")
    return StageSpec(block, stride, kernels, layers, acts, filters, expansions, se, name, pad=pad)  # type: ignore[arg-type]


__all__ = ["is_space_document", "load", "load_architectures", "load_space", "read_document"]
