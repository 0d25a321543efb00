"""Torch modules for every block type of :data:`tables.key.BLOCK_TYPES`.

Structures follow ``shared/notes/REFERENCE.md`` (GPUNet, GENet, ResNet,
MobileNetV2, EfficientNet-B0). One builder per block type, kept in
:data:`BLOCK_BUILDERS`; :func:`build_block` turns a :class:`BlockKey` into an
eval-mode module with deterministic random weights and non-trivial batch-norm
statistics, so that BN folding at export time is really exercised (seed,
distributions and BN epsilon: :mod:`kernels_bench.weights`, shared with the
direct ONNX emitter).

Shapes: every module takes a float tensor ``(N, cin, h, w)`` and returns
``(N, *key.output_shape)``.

Padding: every kxk conv is padded ``(k - 1) // 2``, except the strided kxk conv
of a key with ``pad="valid"`` (``fused_irb`` at stride 2, suffix ``_pv``), which
is unpadded as in NVIDIA's released GPUNet code. The GPUNet networks and space
use ``valid`` by default (``gpunet-N-padded`` and the ``gpunet-padded`` space
keep the padded variant: :mod:`profiler.networks`, :mod:`profiler.spaces.gpunet`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kernels_bench import weights
from kernels_bench.weights import BN_EPS
from tables.key import NUM_CLASSES, BlockKey, chain_keys

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=False),
    "swish": nn.SiLU,
    "relu6": lambda: nn.ReLU6(inplace=False),
}


def make_activation(name: str) -> nn.Module:
    """The activation module of a key's ``act`` field (relu, swish = SiLU, relu6)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}: allowed {', '.join(_ACTIVATIONS)}") from None


def conv_bn(
    cin: int, cout: int, k: int, stride: int = 1, *, groups: int = 1, act: str | None = None, padding: int | None = None
) -> nn.Sequential:
    """Bias-free kxk conv (``padding`` pixels, default (k-1)//2) -> BN, then the activation when ``act`` is given."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            cin, cout, k, stride, padding=(k - 1) // 2 if padding is None else padding, groups=groups, bias=False
        ),
        nn.BatchNorm2d(cout, eps=BN_EPS),
    ]
    if act is not None:
        layers.append(make_activation(act))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Global mean -> 1x1 conv (bias) to ``rd`` -> act -> 1x1 conv (bias) to ``channels`` -> sigmoid -> scale."""

    def __init__(self, channels: int, rd: int, act: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, rd, 1, bias=True)
        self.act = make_activation(act)
        self.expand = nn.Conv2d(rd, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = self.expand(self.act(self.reduce(s)))
        return x * self.gate(s)


class ConvBlock(nn.Module):
    """``conv`` and ``conv_pool``: kxk conv stride s -> BN -> act [-> max-pool 3x3 stride 2]."""

    def __init__(self, key: BlockKey, *, pool: bool) -> None:
        super().__init__()
        self.body = conv_bn(key.cin, key.cout, key.k, key.s, act=key.act)
        self.pool = nn.MaxPool2d(3, 2, padding=1) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x))


class ResidualBlock(nn.Module):
    """GENet XX / BL / DW (and ResNet basic and bottleneck blocks): ``act(branch(x) + shortcut(x))``.

    The shortcut is the identity when ``key.has_residual``, else a 1x1 conv with
    the block's stride followed by BN.
    """

    def __init__(self, key: BlockKey, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = nn.Identity() if key.has_residual else conv_bn(key.cin, key.cout, 1, key.s)
        self.act = make_activation(key.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


def _xx(key: BlockKey) -> nn.Module:
    mid = key.mid_channels
    branch = nn.Sequential(conv_bn(key.cin, mid, key.k, key.s, act=key.act), conv_bn(mid, key.cout, key.k))
    return ResidualBlock(key, branch)


def _bl(key: BlockKey) -> nn.Module:
    mid = key.mid_channels
    branch = nn.Sequential(
        conv_bn(key.cin, mid, 1, act=key.act),
        conv_bn(mid, mid, key.k, key.s, act=key.act),
        conv_bn(mid, key.cout, 1),
    )
    return ResidualBlock(key, branch)


def _dw(key: BlockKey) -> nn.Module:
    mid = key.mid_channels
    branch = nn.Sequential(
        conv_bn(key.cin, mid, 1, act=key.act),
        conv_bn(mid, mid, key.k, key.s, groups=mid, act=key.act),
        conv_bn(mid, key.cout, 1),
    )
    return ResidualBlock(key, branch)


class InvertedResidual(nn.Module):
    """``irb`` and ``fused_irb``: expand -> [SE] -> 1x1 project -> BN, plus the input when ``key.has_residual``.

    ``irb``: 1x1 expand to mid -> BN -> act (absent when ``key.e == 1``, then
    mid = cin) -> depthwise kxk stride s -> BN -> act. ``fused_irb``: one kxk
    conv cin -> mid stride s (padded ``key.strided_padding``: 0 for pad valid) -> BN -> act.
    SE squeezes to ``key.se_channels``.
    """

    def __init__(self, key: BlockKey, *, fused: bool) -> None:
        super().__init__()
        if fused:
            mid = key.mid_channels
            self.expand: nn.Module = conv_bn(key.cin, mid, key.k, key.s, act=key.act, padding=key.strided_padding)
        else:
            mid = key.cin if key.e == 1 else key.mid_channels
            layers: list[nn.Module] = [] if key.e == 1 else [conv_bn(key.cin, mid, 1, act=key.act)]
            layers.append(conv_bn(mid, mid, key.k, key.s, groups=mid, act=key.act))
            self.expand = nn.Sequential(*layers)
        self.se = SqueezeExcite(mid, key.se_channels, key.act) if key.se else nn.Identity()
        self.project = conv_bn(mid, key.cout, 1)
        self.residual = key.has_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.expand(x)))
        return y + x if self.residual else y


class Tail(nn.Module):
    """``tail``: 1x1 conv cin -> cout -> BN -> act -> global average pool -> flatten -> FC to 1000 classes."""

    def __init__(self, key: BlockKey) -> None:
        super().__init__()
        self.conv = conv_bn(key.cin, key.cout, 1, act=key.act)
        self.fc = nn.Linear(key.cout, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x).mean(dim=(2, 3), keepdim=True), 1))


class PoolFC(nn.Module):
    """``pool_fc``: global average pool -> flatten -> FC cin -> cout (ResNet head)."""

    def __init__(self, key: BlockKey) -> None:
        super().__init__()
        self.fc = nn.Linear(key.cin, key.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x.mean(dim=(2, 3), keepdim=True), 1))


#: One builder per block type; every entry of ``BLOCK_TYPES`` has one.
BLOCK_BUILDERS: dict[str, Callable[[BlockKey], nn.Module]] = {
    "conv": lambda key: ConvBlock(key, pool=False),
    "conv_pool": lambda key: ConvBlock(key, pool=True),
    "xx": _xx,
    "bl": _bl,
    "dw": _dw,
    "irb": lambda key: InvertedResidual(key, fused=False),
    "fused_irb": lambda key: InvertedResidual(key, fused=True),
    "tail": Tail,
    "pool_fc": PoolFC,
}


#: The weight seed of one key (:func:`kernels_bench.weights.weight_seed`, kept under this name).
block_seed = weights.weight_seed


@torch.no_grad()
def _init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Seeded weights from the :mod:`kernels_bench.weights` distributions; BN statistics far from (1, 0, 0, 1)."""

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (hi - lo) + lo)

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=generator) * std)

    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            normal(m.weight, weights.he_normal_std(m.weight[0].numel()))
            if m.bias is not None:
                normal(m.bias, weights.BIAS_STD)
        elif isinstance(m, nn.BatchNorm2d):
            uniform(m.weight, *weights.BN_SCALE_RANGE)
            normal(m.bias, weights.BN_SHIFT_STD)
            normal(m.running_mean, weights.BN_MEAN_STD)
            uniform(m.running_var, *weights.BN_VAR_RANGE)


def build_block(key: BlockKey, *, seed: int = 0) -> nn.Module:
    """The torch module of one key, in eval mode, with weights drawn from :func:`block_seed` (seed ``seed``).

    Input ``(N, cin, h, w)`` float32, output ``(N, *key.output_shape)``.
    Raises ``ValueError`` when ``key`` is not a :class:`BlockKey`.
    """
    if not isinstance(key, BlockKey):
        raise ValueError(f"build_block needs a BlockKey, got {type(key).__name__}: parse strings with parse_key first")
    module = BLOCK_BUILDERS[key.block](key)
    generator = torch.Generator().manual_seed(block_seed(key, seed))
    _init_weights(module, generator)
    return module.eval()


def build_network(keys: Sequence[BlockKey], *, seed: int = 0) -> nn.Module:
    """The keys' blocks chained in order (``nn.Sequential``), in eval mode.

    Raises ``ValueError`` when ``keys`` is empty or the blocks do not chain
    (see :func:`tables.key.chain_keys`).
    """
    keys = list(keys)
    if not keys:
        raise ValueError("build_network needs at least one block key")
    chain_keys(keys)
    return nn.Sequential(*(build_block(k, seed=seed) for k in keys)).eval()
