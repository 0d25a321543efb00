"""Mapping ONNX graphs onto block keys (profiler.onnx_map, profiler.predict.map_model).

The test models are written the way model zoos write them (torchvision's ResNet, MobileNetV2 and
EfficientNet: Conv2d + BatchNorm2d + activation modules, AdaptiveAvgPool2d, flatten, Linear) and
exported with torch's own exporter; they must map onto exactly the keys of the reference networks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from kernels_bench.onnx_graphs import block_graph
from profiler.networks import get_network
from profiler.onnx_map import UnmappableModel
from profiler.predict import BadModel, map_model
from tables.key import parse_key


# --------------------------------------------------------------------------- a small model zoo
def conv_norm_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
    """torchvision's Conv2dNormActivation: conv (no bias) -> BN -> activation."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)]
    layers.append(nn.BatchNorm2d(cout))
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish) else act())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, inplanes = [], 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = [BasicBlock(inplanes, planes, 1 if i == 0 else 2)]
            blocks += [BasicBlock(planes, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_norm_act(inp, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_norm_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    SETTING = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        features: list[nn.Module] = [conv_norm_act(3, 32, 3, 2, act=nn.ReLU6)]
        cin = 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(conv_norm_act(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_norm_act(cin, hidden, 1, act=nn.SiLU))
        layers.append(conv_norm_act(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU))
        layers.append(SqueezeExcitation(hidden, max(1, cin // 4)))
        layers.append(conv_norm_act(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        return result + x if self.use_res_connect else result


class EfficientNetB0(nn.Module):
    SETTING = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5))
    SETTING += ((6, 192, 4, 2, 5), (6, 320, 1, 1, 3))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_norm_act(3, 32, 3, 2, act=nn.SiLU)]
        cin = 32
        for e, c, n, s, k in self.SETTING:
            for i in range(n):
                layers.append(MBConv(cin, c, k, s if i == 0 else 1, e))
                cin = c
        layers.append(conv_norm_act(cin, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def export(module: nn.Module, path: Path, shape=(3, 224, 224), *, batch: int = 1, **options) -> Path:
    """torch.onnx.export in eval mode (TorchScript exporter unless ``dynamo=True`` is given)."""
    options.setdefault("dynamo", False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.zeros(batch, *shape),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            **options,
        )
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three zoo models, exported once (BN folded by the exporter)."""
    folder = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    return {
        "resnet-18": export(ResNet(), folder / "resnet18.onnx"),
        "mobilenetv2-1.0": export(MobileNetV2(), folder / "mobilenet_v2.onnx"),
        "efficientnet-b0": export(EfficientNetB0(), folder / "efficientnet_b0.onnx"),
    }


# --------------------------------------------------------------------------- zoo models map onto the reference keys
@pytest.mark.parametrize("network", ["resnet-18", "mobilenetv2-1.0", "efficientnet-b0"])
def test_a_zoo_model_maps_onto_exactly_the_keys_of_its_reference_network(zoo, network) -> None:
    mapping = map_model(zoo[network])
    assert mapping.complete, mapping.summary()
    assert mapping.keys == list(get_network(network).keys)


def test_every_node_of_a_mapped_model_belongs_to_exactly_one_block(zoo) -> None:
    mapping = map_model(zoo["efficientnet-b0"])
    names = [n for block in mapping.blocks for n in block.nodes]
    assert len(names) == len(set(names)) == mapping.n_nodes


def test_batchnorm_left_unfolded_maps_like_folded(tmp_path) -> None:
    path = export(MobileNetV2(), tmp_path / "unfolded.onnx", do_constant_folding=False)
    assert any(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node)
    assert map_model(path).keys == list(get_network("mobilenetv2-1.0").keys)


def test_a_torch_module_is_exported_and_mapped() -> None:
    mapping = map_model(ResNet(), input_shape=(3, 224, 224))
    assert mapping.keys == list(get_network("resnet-18").keys)


@pytest.mark.parametrize("network", ["gpunet-0", "genet-normal", "resnet-50", "genet-light"])
def test_the_graph_of_any_reference_network_maps_back_onto_its_keys(network) -> None:
    keys = list(get_network(network).keys)
    assert map_model(block_graph(keys, 1, opset=17)).keys == keys


# --------------------------------------------------------------------------- ways exporters write the same layers
class MeanHead(nn.Module):
    """SE and head written with x.mean(...) and x.view(x.size(0), -1): ReduceMean and a computed Reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_norm_act(3, 16, 3, 2, act=nn.SiLU)
        self.expand = conv_norm_act(16, 64, 1, act=nn.SiLU)
        self.dw = conv_norm_act(64, 64, 3, 1, groups=64, act=nn.SiLU)
        self.se_reduce, self.se_expand = nn.Conv2d(64, 4, 1), nn.Conv2d(4, 64, 1)
        self.project = conv_norm_act(64, 24, 1, act=None)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.dw(self.expand(x))
        y = y * torch.sigmoid(self.se_expand(nn.functional.silu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        x = self.project(y).mean((2, 3), keepdim=True)
        return self.fc(x.view(x.size(0), -1))


MEAN_HEAD_KEYS = [
    "conv_i3x64x64_o16_k3_s2_e1_se0_swish",
    "irb_i16x32x32_o24_k3_s1_e4_se1_swish",
    "pool_fc_i24x32x32_o10_k1_s1_e1_se0_relu",
]


def test_reduce_mean_pooling_and_a_computed_reshape_map_like_global_pooling(tmp_path) -> None:
    mapping = map_model(export(MeanHead(), tmp_path / "mean.onnx", (3, 64, 64)))
    assert [str(k) for k in mapping.keys] == MEAN_HEAD_KEYS


@pytest.mark.slow
def test_the_dynamo_exporter_graph_maps_like_the_torchscript_one(tmp_path) -> None:
    mapping = map_model(export(MeanHead(), tmp_path / "dynamo.onnx", (3, 64, 64), dynamo=True))
    assert [str(k) for k in mapping.keys] == MEAN_HEAD_KEYS


class MatMulHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = conv_norm_act(3, 32, 3, 2)
        self.weight = nn.Parameter(torch.randn(32, 1000))
        self.bias = nn.Parameter(torch.zeros(1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1) @ self.weight + self.bias


def test_a_matmul_classifier_with_an_add_bias_maps_like_gemm(tmp_path) -> None:
    mapping = map_model(export(MatMulHead(), tmp_path / "matmul.onnx", (3, 32, 32)))
    assert [str(k) for k in mapping.keys] == [
        "conv_i3x32x32_o32_k3_s2_e1_se0_relu",
        "pool_fc_i32x16x16_o1000_k1_s1_e1_se0_relu",
    ]


def _fuse_swish(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every x * sigmoid(x) pair by one ONNX ``Swish`` node (opset 24)."""
    nodes = list(model.graph.node)
    sig = {n.output[0]: n for n in nodes if n.op_type == "Sigmoid"}
    out, drop = [], set()
    for n in nodes:
        pair = [sig[i] for i in n.input if i in sig] if n.op_type == "Mul" else []
        if pair and pair[0].input[0] in n.input:
            drop.add(id(pair[0]))
            out.append(helper.make_node("Swish", [pair[0].input[0]], list(n.output), name=n.name + "_swish"))
        else:
            out.append(n)
    del model.graph.node[:]
    model.graph.node.extend(n for n in out if id(n) not in drop)
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 24))
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    return model


def test_a_fused_swish_node_maps_like_sigmoid_times_x() -> None:
    keys = list(get_network("efficientnet-b0").keys)
    model = _fuse_swish(block_graph(keys, 1, opset=18))
    assert any(n.op_type == "Swish" for n in model.graph.node)
    assert map_model(model).keys == keys


def test_relu6_written_as_a_relu6_node_maps_like_clip() -> None:
    keys = list(get_network("mobilenetv2-1.0").keys)
    model = block_graph(keys, 1, opset=17)
    for node in model.graph.node:
        if node.op_type == "Clip":
            node.op_type, node.domain = "Relu6", "custom"
            del node.input[1:]
    model.opset_import.append(helper.make_opsetid("custom", 1))
    assert map_model(model).keys == keys


# --------------------------------------------------------------------------- what cannot be mapped, and why
class HardSwishNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_norm_act(3, 16, 3, 2, act=nn.Hardswish)
        self.block = InvertedResidual(16, 24, 2, 6)
        self.head = nn.Linear(24, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.block(self.stem(x)), 1), 1))


def test_an_unsupported_activation_is_listed_with_its_reason_and_the_rest_still_maps(tmp_path) -> None:
    mapping = map_model(export(HardSwishNet(), tmp_path / "hswish.onnx", (3, 64, 64)))
    assert not mapping.complete
    listed = {u.op: u.reason for u in mapping.unmapped}
    assert "hard-swish" in listed["HardSwish"]
    assert [k.block for k in mapping.keys] == ["irb", "pool_fc"]  # mapping resumed after the stem


def test_an_unmappable_model_refuses_to_give_its_keys(tmp_path) -> None:
    mapping = map_model(export(HardSwishNet(), tmp_path / "hswish.onnx", (3, 64, 64)))
    with pytest.raises(UnmappableModel, match=r"could not be mapped.*HardSwish"):
        mapping.require_complete()


class SoftmaxNet(MatMulHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(super().forward(x), dim=1)


def test_nodes_after_the_classifier_are_listed(tmp_path) -> None:
    mapping = map_model(export(SoftmaxNet(), tmp_path / "softmax.onnx", (3, 32, 32)))
    assert [(u.op, "follows the classifier" in u.reason) for u in mapping.unmapped] == [("Softmax", True)]


class WideSqueeze(MBConv):
    def __init__(self) -> None:
        super().__init__(16, 24, 3, 2, 6)
        self.block[2] = SqueezeExcitation(96, 8)  # the table's SE squeezes to max(1, int(16 / 4)) = 4


def test_a_squeeze_width_the_table_does_not_use_is_listed(tmp_path) -> None:
    mapping = map_model(export(WideSqueeze(), tmp_path / "se.onnx", (16, 32, 32)))
    reasons = " ".join(u.reason for u in mapping.unmapped)
    assert not mapping.complete and "Conv 1x1 96->4" in reasons


def test_a_conv_padded_otherwise_than_the_blocks_is_listed_with_its_padding(tmp_path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    mapping = map_model(export(net, tmp_path / "pad.onnx", (3, 32, 32)))
    assert [u.op for u in mapping.unmapped] == ["Conv", "Relu"]
    assert "pads [0, 0, 0, 0]" in mapping.unmapped[0].reason


# --------------------------------------------------------------------------- bad input
def test_a_file_that_is_not_onnx_is_refused(tmp_path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for\n")
    with pytest.raises(BadModel, match="not an ONNX model"):
        map_model(path)


def test_a_truncated_file_is_refused(zoo, tmp_path) -> None:
    data = zoo["resnet-18"].read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadModel, match="truncated"):
        map_model(path)


def test_dynamic_spatial_sizes_are_refused_naming_the_input_and_the_fix(tmp_path) -> None:
    path = export(MatMulHead(), tmp_path / "dyn.onnx", (3, 32, 32), dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}})
    with pytest.raises(BadModel, match=r"input 'image' has a dynamic height.*--input-shape"):
        map_model(path)


def test_an_input_shape_fills_in_the_dynamic_sizes(tmp_path) -> None:
    path = export(MatMulHead(), tmp_path / "dyn.onnx", (3, 32, 32), dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}})
    mapping = map_model(path, input_shape=(3, 64, 64))
    assert mapping.batch is None and str(mapping.keys[0]) == "conv_i3x64x64_o32_k3_s2_e1_se0_relu"


def test_an_input_shape_that_contradicts_a_static_input_is_refused(zoo) -> None:
    with pytest.raises(BadModel, match="contradicts"):
        map_model(zoo["resnet-18"], input_shape=(3, 160, 160))


def test_an_unpadded_strided_fused_conv_maps_onto_a_pad_valid_key() -> None:
    keys = [
        parse_key("conv_i3x64x64_o16_k3_s2_e1_se0_swish"),
        parse_key("fused_irb_i16x32x32_o24_k3_s2_e4_se0_swish_pv"),
        parse_key("tail_i24x15x15_o64_k1_s1_e1_se0_relu"),
    ]
    assert map_model(block_graph(keys, 1, opset=17)).keys == keys
