"""Reference networks: structure, channels, feature sizes, and the GPUNet config loader."""

from __future__ import annotations

import json

import pytest

from profiler.networks import GPUNET_CONFIGS, NETWORKS, VARIANTS, get_network, load_gpunet_config, network_keys
from profiler.spaces import genet
from tables.key import chain_keys

EXPECTED_FINAL_SIZE = {
    "genet-light": 6, "genet-normal": 6, "genet-large": 8, "gpunet-0": 10, "gpunet-1": 9, "gpunet-2": 12,
    "resnet-18": 7, "resnet-34": 7, "resnet-50": 7, "mobilenetv2-1.0": 7, "efficientnet-b0": 7,
}  # fmt: skip


#: Selectable variants, not among the reference networks (``all``): GPUNets with every conv padded.
EXPECTED_VARIANT_SIZE = {"gpunet-0-padded": 10, "gpunet-1-padded": 9, "gpunet-2-padded": 12}


def test_every_network_is_registered_with_an_expected_size() -> None:
    assert set(NETWORKS) == set(EXPECTED_FINAL_SIZE)
    assert set(VARIANTS) == set(EXPECTED_VARIANT_SIZE) and not set(VARIANTS) & set(NETWORKS)


@pytest.mark.parametrize("name", sorted(EXPECTED_VARIANT_SIZE))
def test_a_padded_gpunet_is_its_network_with_every_conv_padded(name: str) -> None:
    arch, base = get_network(name), get_network(name.removesuffix("-padded"))
    chain_keys(list(arch.keys))
    assert arch.name == name and arch.source == "reference" and arch.resolution == base.resolution
    assert arch.keys[-1].h == EXPECTED_VARIANT_SIZE[name]
    assert {k.pad for k in arch.keys} == {"same"} and "valid" in {k.pad for k in base.keys}
    assert [(k.block, k.cin, k.cout, k.k, k.s, k.e, k.se, k.act) for k in arch.keys] == [
        (k.block, k.cin, k.cout, k.k, k.s, k.e, k.se, k.act) for k in base.keys
    ]


def test_load_gpunet_config_pads_the_fused_stride_2_convs_only_when_asked() -> None:
    path = GPUNET_CONFIGS["gpunet-1"]
    assert load_gpunet_config(path).keys == get_network("gpunet-1").keys
    assert load_gpunet_config(path, fused_pad="same").keys == get_network("gpunet-1-padded").keys
    with pytest.raises(ValueError, match="fused_pad 'none' is unknown; use one of same, valid"):
        load_gpunet_config(path, fused_pad="none")


@pytest.mark.parametrize("name", sorted(EXPECTED_FINAL_SIZE))
def test_network_chains_from_an_image_to_a_classifier(name: str) -> None:
    arch = get_network(name)
    keys = list(arch.keys)
    chain_keys(keys)
    assert arch.name == name and arch.source == "reference"
    assert keys[0].input_shape == (3, arch.resolution, arch.resolution)
    assert keys[-1].block in ("tail", "pool_fc")
    assert keys[-1].h == EXPECTED_FINAL_SIZE[name]
    assert all(k.block not in ("tail", "pool_fc") for k in keys[:-1])


def test_resnet50_has_16_bottlenecks_with_ratio_quarter() -> None:
    keys = network_keys("resnet-50")
    bl = [k for k in keys if k.block == "bl"]
    assert len(bl) == 16 and {k.e for k in bl} == {0.25}
    assert [k.cout for k in bl if k.s == 2 or k.cin != k.cout] == [256, 512, 1024, 2048]
    assert str(keys[0]) == "conv_pool_i3x224x224_o64_k7_s2_e1_se0_relu"
    assert str(keys[-1]) == "pool_fc_i2048x7x7_o1000_k1_s1_e1_se0_relu"
    assert bl[0].h == 56 and bl[0].s == 1


@pytest.mark.parametrize(("name", "blocks"), [("resnet-18", 8), ("resnet-34", 16)])
def test_resnet_basic_block_counts(name: str, blocks: int) -> None:
    keys = network_keys(name)
    assert sum(k.block == "xx" for k in keys) == blocks
    assert keys[-1].input_shape == (512, 7, 7) and keys[-1].cout == 1000


def test_mobilenetv2_follows_the_paper_table() -> None:
    keys = network_keys("mobilenetv2-1.0")
    irb = [k for k in keys if k.block == "irb"]
    assert len(irb) == 17 and irb[0].e == 1 and {k.e for k in irb[1:]} == {6.0}
    assert {k.act for k in keys} == {"relu6"} and not any(k.se for k in keys)
    assert [k.cout for k in irb if k.cin != k.cout] == [16, 24, 32, 64, 96, 160, 320]
    assert str(keys[-1]) == "tail_i320x7x7_o1280_k1_s1_e1_se0_relu6"


def test_efficientnet_b0_follows_the_b0_table() -> None:
    keys = network_keys("efficientnet-b0")
    irb = [k for k in keys if k.block == "irb"]
    assert len(irb) == 16 and all(k.se for k in irb) and {k.act for k in keys} == {"swish"}
    assert [k.k for k in irb] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [k.e for k in irb] == [1.0] + [6.0] * 15
    assert str(keys[-1]) == "tail_i320x7x7_o1280_k1_s1_e1_se0_swish"


def test_gpunet0_has_the_layers_of_its_json() -> None:
    layers = json.loads(GPUNET_CONFIGS["gpunet-0"].read_text())[1:]
    keys = network_keys("gpunet-0")
    assert len(keys) == len(layers) == 14
    assert [k.cout for k in keys] == [layer["num_out_channels"] for layer in layers]
    assert [k.block for k in keys] == ["conv"] * 3 + ["fused_irb"] * 5 + ["irb"] * 5 + ["tail"]
    assert str(keys[0]) == "conv_i3x320x320_o32_k3_s2_e1_se0_swish"
    assert str(keys[11]) == "irb_i256x20x20_o704_k3_s2_e5_se1_relu"
    assert str(keys[-1]) == "tail_i704x10x10_o1280_k1_s1_e1_se0_relu"


def test_genet_networks_carry_their_encoding() -> None:
    assert get_network("genet-large").encoding == genet.base_encoding("large")


def test_names_are_case_insensitive_and_unknown_names_list_the_known_ones() -> None:
    assert get_network("ResNet-50").name == "resnet-50"
    with pytest.raises(ValueError, match=r"unknown network 'vgg-16'; known networks: genet-light, .*efficientnet-b0"):
        get_network("vgg-16")
    with pytest.raises(ValueError, match=r"known networks: .*gpunet-2-padded"):
        get_network("gpunet-3-padded")
    assert get_network("GPUNet-0-Padded").name == "gpunet-0-padded"


def test_load_gpunet_config_reads_a_list_and_defaults_act_to_swish() -> None:
    cfg = [
        {"layer_type": "data", "img_resolution": 224},
        {"layer_type": "head", "num_in_channels": 3, "num_out_channels": 24},
        {"layer_type": "irb", "num_in_channels": 24, "num_out_channels": 40, "stride": 2,
         "expansion": 4, "kernel_size": 5, "use_se": True},
        {"layer_type": "tail", "num_in_channels": 40, "num_out_channels": 1280, "num_classes": 1000},
    ]  # fmt: skip
    arch = load_gpunet_config(cfg, name="mini")
    assert [str(k) for k in arch.keys] == [
        "conv_i3x224x224_o24_k3_s2_e1_se0_swish",
        "irb_i24x112x112_o40_k5_s2_e4_se1_swish",
        "tail_i40x56x56_o1280_k1_s1_e1_se0_relu",
    ]
    assert arch.resolution == 224


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ([{"layer_type": "head", "num_out_channels": 24}], "entry 0 must be"),
        ([{"layer_type": "data", "img_resolution": 224}, {"layer_type": "pool", "num_out_channels": 8}],
         "entry 1 \\(pool\\): layer_type 'pool' is unknown"),
        ([{"layer_type": "data", "img_resolution": 224},
          {"layer_type": "conv", "num_in_channels": 8, "num_out_channels": 8, "kernel_size": 3, "stride": 1}],
         "entry 1 \\(conv\\): num_in_channels 8 but the previous layer gives 3"),
        ([{"layer_type": "data", "img_resolution": 224}, {"layer_type": "conv", "num_out_channels": 8}],
         "entry 1 \\(conv\\) lacks 'kernel_size'"),
    ],
)  # fmt: skip
def test_load_gpunet_config_rejects_bad_entries(cfg: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_gpunet_config(cfg)


def test_load_gpunet_config_names_a_missing_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot read it"):
        load_gpunet_config(tmp_path / "nope.json")
