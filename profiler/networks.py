"""Named reference networks in the block-key language, each at its own resolution.

Names (lowercase, hyphenated; looked up case-insensitively):

- ``genet-light``, ``genet-normal``, ``genet-large`` -- GENet seed Table 2 (192, 192, 256 px);
  their ``encoding`` is the 21-integer GENet encoding (:mod:`profiler.spaces.genet`).
- ``gpunet-0``, ``gpunet-1``, ``gpunet-2`` -- NVIDIA's released configs
  ``profiler/data/gpunet/{0.65ms,0.85ms,1.75ms}.json`` (320, 288, 384 px), read by
  :func:`load_gpunet_config` as NVIDIA's code builds them: the stride-2 conv of
  each fused inverted residual unpadded (key ``pad="valid"``), so the feature
  maps are 79/39 (GPUNet-0), 71/35 (GPUNet-1) and 94/46/23 (GPUNet-2).
  ``gpunet-0-padded``, ``gpunet-1-padded``, ``gpunet-2-padded`` (:data:`VARIANTS`,
  not part of ``all``): the same configs with every conv padded (80/40, 72/36,
  96/48/24).
- ``resnet-18``, ``resnet-34`` (``xx`` basic blocks), ``resnet-50`` (``bl``, ratio 0.25):
  ``conv_pool`` stem 7x7 s2 64 + 3x3 max-pool, stages at 56/28/14/7, ``pool_fc`` to 1000; 224 px.
- ``mobilenetv2-1.0``: conv 3x3 s2 32 relu6, ``irb`` relu6 (t, c, n, s) table of the
  MobileNetV2 paper, expansion 1 in the first block, tail 1280 relu6; 224 px.
- ``efficientnet-b0``: conv 3x3 s2 32 swish, ``irb`` swish with SE per the B0 table
  (expansion 1 or 6, kernels 3/5), tail 1280 swish; 224 px.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from profiler.spaces import genet as _genet
from profiler.spaces.architecture import Architecture
from tables.key import NUM_CLASSES, PADDINGS, BlockKey

_DATA = Path(__file__).resolve().parent / "data" / "gpunet"
#: Released GPUNet configs by network name.
GPUNET_CONFIGS: dict[str, Path] = {
    "gpunet-0": _DATA / "0.65ms.json",
    "gpunet-1": _DATA / "0.85ms.json",
    "gpunet-2": _DATA / "1.75ms.json",
}
_GPUNET_DEFAULT_ACT = "swish"


def load_gpunet_config(
    config: str | Path | Sequence[Mapping[str, object]], name: str | None = None, *, fused_pad: str = "valid"
) -> Architecture:
    """A GPUNet-style JSON config (path or already-parsed list of layer dicts) -> :class:`Architecture`.

    Layer types: ``data`` (``img_resolution``, pixels), ``head`` (conv 3x3 stride 2),
    ``conv`` (``kernel_size``, ``stride``), ``irb`` / ``fused_irb`` (``expansion``,
    ``use_se``), ``tail`` (1x1 conv to ``num_out_channels``, ReLU, pool, FC). ``act``
    defaults to swish when absent. ``fused_pad`` is the padding of each stride-2
    ``fused_irb`` conv: ``"valid"`` (unpadded, as NVIDIA's code builds it; the default)
    or ``"same"`` ((k - 1) // 2, like every other conv). Raises ``ValueError`` naming
    the layer on bad or inconsistent entries (e.g. ``num_in_channels`` not matching
    the previous layer), or an unknown ``fused_pad``.
    """
    if fused_pad not in PADDINGS:
        raise ValueError(f"fused_pad {fused_pad!r} is unknown; use one of {', '.join(PADDINGS)}")
    where = "GPUNet config"
    if isinstance(config, (str, Path)):
        path = Path(config)
        where = f"GPUNet config {path}"
        try:
            layers = json.loads(path.read_text())
        except OSError as exc:
            raise ValueError(f"{where}: cannot read it ({exc.strerror}); check the path") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        name = name or path.stem
    else:
        layers = list(config)
    name = name or "gpunet-config"
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{where}: expected a non-empty JSON list of layer dicts")
    first = layers[0]
    if not isinstance(first, Mapping) or first.get("layer_type") != "data" or "img_resolution" not in first:
        raise ValueError(f"{where}: entry 0 must be {{'layer_type': 'data', 'img_resolution': R}}")
    res = first["img_resolution"]
    if isinstance(res, bool) or not isinstance(res, int) or res <= 0:
        raise ValueError(f"{where}: img_resolution {res!r} must be a positive integer (pixels)")
    keys: list[BlockKey] = []
    c, h = 3, res
    for i, layer in enumerate(layers[1:], start=1):
        if not isinstance(layer, Mapping):
            raise ValueError(f"{where}: entry {i} is {layer!r}, not a layer dict")
        kind = layer.get("layer_type")
        try:
            cin = int(layer.get("num_in_channels", c))  # type: ignore[call-overload]
            cout = int(layer["num_out_channels"])  # type: ignore[call-overload]
            if cin != c:
                raise ValueError(f"num_in_channels {cin} but the previous layer gives {c}")
            act = str(layer.get("act", _GPUNET_DEFAULT_ACT))
            if kind == "head":
                key = BlockKey("conv", cin, h, h, cout, 3, 2, 1.0, False, act)
            elif kind == "conv":
                key = BlockKey("conv", cin, h, h, cout, layer["kernel_size"], layer["stride"], 1.0, False, act)
            elif kind in ("irb", "fused_irb"):
                stride = layer["stride"]
                key = BlockKey(
                    str(kind),
                    cin,
                    h,
                    h,
                    cout,
                    layer["kernel_size"],
                    stride,
                    layer["expansion"],
                    bool(layer.get("use_se", False)),
                    act,
                    fused_pad if kind == "fused_irb" and stride == 2 else "same",
                )
            elif kind == "tail":
                classes = layer.get("num_classes", NUM_CLASSES)
                if classes != NUM_CLASSES:
                    raise ValueError(f"num_classes {classes} is not supported; tables use {NUM_CLASSES}")
                key = BlockKey("tail", cin, h, h, cout, 1, 1, 1.0, False, "relu")
            else:
                raise ValueError(f"layer_type {kind!r} is unknown; use data, head, conv, irb, fused_irb or tail")
        except KeyError as exc:
            raise ValueError(f"{where}: entry {i} ({kind}) lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: entry {i} ({kind}): {exc}") from None
        keys.append(key)
        c, h = key.cout, key.out_hw[0]
    return Architecture(name, tuple(keys), res, "reference")


def _stages(keys: list[BlockKey], block: str, stages: Sequence[tuple], act: str, se: bool = False) -> tuple[int, int]:
    """Append (expansion, out, repeats, stride, kernel) stages; returns the final (channels, size)."""
    c, h = keys[-1].cout, keys[-1].out_hw[0]
    for e, out, n, s, k in stages:
        for i in range(n):
            key = BlockKey(block, c, h, h, out, k, s if i == 0 else 1, e, se, act)
            keys.append(key)
            c, h = out, key.out_hw[0]
    return c, h


def _resnet(depths: Sequence[int], bottleneck: bool) -> Architecture:
    keys = [BlockKey("conv_pool", 3, 224, 224, 64, 7, 2, 1.0, False, "relu")]
    widths = (256, 512, 1024, 2048) if bottleneck else (64, 128, 256, 512)
    block, ratio = ("bl", 0.25) if bottleneck else ("xx", 1.0)
    stages = [(ratio, w, n, 1 if i == 0 else 2, 3) for i, (w, n) in enumerate(zip(widths, depths))]
    c, h = _stages(keys, block, stages, "relu")
    keys.append(BlockKey("pool_fc", c, h, h, NUM_CLASSES, 1, 1))
    name = f"resnet-{sum(depths) * (3 if bottleneck else 2) + 2}"
    return Architecture(name, tuple(keys), 224, "reference")


def _mobilenetv2() -> Architecture:
    keys = [BlockKey("conv", 3, 224, 224, 32, 3, 2, 1.0, False, "relu6")]
    # (t, c, n, s) of the MobileNetV2 paper, Table 2; all depthwise kernels 3x3
    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    c, h = _stages(keys, "irb", [(t, out, n, s, 3) for t, out, n, s in table], "relu6")
    keys.append(BlockKey("tail", c, h, h, 1280, 1, 1, 1.0, False, "relu6"))
    return Architecture("mobilenetv2-1.0", tuple(keys), 224, "reference")


def _efficientnet_b0() -> Architecture:
    keys = [BlockKey("conv", 3, 224, 224, 32, 3, 2, 1.0, False, "swish")]
    # (expansion, channels, repeats, stride, kernel) of EfficientNet-B0, Table 1
    table = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5)]
    table += [(6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]
    c, h = _stages(keys, "irb", table, "swish", se=True)
    keys.append(BlockKey("tail", c, h, h, 1280, 1, 1, 1.0, False, "swish"))
    return Architecture("efficientnet-b0", tuple(keys), 224, "reference")


def _genet_net(base: str) -> Architecture:
    keys = _genet.superblock_keys(_genet.BASES[base], _genet.BASE_RESOLUTIONS[base])
    res = _genet.BASE_RESOLUTIONS[base]
    return Architecture(f"genet-{base}", tuple(keys), res, "reference", _genet.base_encoding(base))


def _gpunet(name: str, fused_pad: str = "valid") -> Architecture:
    suffix = "-padded" if fused_pad == "same" else ""
    return load_gpunet_config(GPUNET_CONFIGS[name], name=name + suffix, fused_pad=fused_pad)


#: Network name -> factory returning its :class:`Architecture`.
NETWORKS: dict[str, Callable[[], Architecture]] = {
    "genet-light": lambda: _genet_net("light"),
    "genet-normal": lambda: _genet_net("normal"),
    "genet-large": lambda: _genet_net("large"),
    "gpunet-0": lambda: _gpunet("gpunet-0"),
    "gpunet-1": lambda: _gpunet("gpunet-1"),
    "gpunet-2": lambda: _gpunet("gpunet-2"),
    "resnet-18": lambda: _resnet((2, 2, 2, 2), bottleneck=False),
    "resnet-34": lambda: _resnet((3, 4, 6, 3), bottleneck=False),
    "resnet-50": lambda: _resnet((3, 4, 6, 3), bottleneck=True),
    "mobilenetv2-1.0": _mobilenetv2,
    "efficientnet-b0": _efficientnet_b0,
}

#: Variants selectable by name but not among the reference networks (``--networks all``, default builds):
#: the GPUNets with their fused stride-2 convs padded (k - 1) // 2, as this project built them before.
VARIANTS: dict[str, Callable[[], Architecture]] = {
    "gpunet-0-padded": lambda: _gpunet("gpunet-0", "same"),
    "gpunet-1-padded": lambda: _gpunet("gpunet-1", "same"),
    "gpunet-2-padded": lambda: _gpunet("gpunet-2", "same"),
}


def canonical_name(name: str) -> str:
    """The registered spelling of a network name (case-insensitive); ``ValueError`` lists the known names."""
    key = str(name).strip().lower()
    if key not in NETWORKS and key not in VARIANTS:
        raise ValueError(f"unknown network {name!r}; known networks: {', '.join([*NETWORKS, *VARIANTS])}")
    return key


def get_network(name: str) -> Architecture:
    """The named reference network or variant as an :class:`Architecture` (keys, resolution in pixels)."""
    key = canonical_name(name)
    return (NETWORKS.get(key) or VARIANTS[key])()


def network_keys(name: str) -> list[BlockKey]:
    """Ordered block keys of the named reference network."""
    return list(get_network(name).keys)


__all__ = [
    "GPUNET_CONFIGS",
    "NETWORKS",
    "VARIANTS",
    "canonical_name",
    "get_network",
    "load_gpunet_config",
    "network_keys",
]
