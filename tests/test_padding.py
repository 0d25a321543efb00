"""The key's padding mode: GPUNet as NVIDIA built it (stride-2 fused convs unpadded) and the padded variant.

NVIDIA's released GPUNet code leaves the kxk conv of its stride-2 fused inverted residuals
unpadded: (h - k) // 2 + 1 instead of ceil(h / 2). A key says so with ``pad="valid"``
(canonical suffix ``_pv``); ``pad="same"`` (no suffix) is every other conv and every key
written before the field existed.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from profiler import spaces
from profiler.networks import get_network
from profiler.spaces import gpunet
from profiler.spaces.staged import StageSpec
from tables.cost import key_cost, key_layers
from tables.key import KEY_FIELDS, PADDINGS, BlockKey, io_elements, parse_key

VALID = "fused_irb_i32x160x160_o64_k3_s2_e4_se0_swish_pv"
SAME = "fused_irb_i32x160x160_o64_k3_s2_e4_se0_swish"

#: Feature sizes of the released GPUNets that differ from the padded variant, and what the padded one has.
RELEASED_MAPS = {
    "gpunet-0": ({79, 39}, {80, 40}),
    "gpunet-1": ({71, 35}, {72, 36}),
    "gpunet-2": ({94, 46, 23}, {96, 48, 24}),
}
#: MACs of the padded variant over the released network, percent more (issue 14: +1.7% / +2.0% / +3.8%).
EXTRA_MACS_PCT = {"gpunet-0": 1.7, "gpunet-1": 2.0, "gpunet-2": 3.8}


# --------------------------------------------------------------------------- the key
def test_both_canonical_forms_round_trip() -> None:
    valid, same = parse_key(VALID), parse_key(SAME)
    assert (valid.pad, same.pad) == ("valid", "same")
    assert (str(valid), str(same)) == (VALID, SAME)
    assert parse_key(str(valid)) == valid and parse_key(str(same)) == same
    assert valid != same and valid.replace(pad="same") == same and same.replace(pad="valid") == valid
    assert str(BlockKey("fused_irb", 32, 160, 160, 64, 3, 2, 4, False, "swish", "valid")) == VALID


def test_old_key_strings_parse_to_pad_same_and_keep_their_string_and_seed() -> None:
    from kernels_bench.weights import weight_seed

    for text in ("irb_i64x40x40_o128_k5_s2_e6_se1_swish", SAME, "conv_pool_i3x224x224_o64_k7_s2_e1_se0_relu"):
        key = parse_key(text)
        assert key.pad == "same" and str(key) == text
        assert weight_seed(key) == zlib.crc32(text.encode())  # the seed of a key written before the field existed


def test_pad_is_a_key_field_after_act() -> None:
    assert KEY_FIELDS[-2:] == ("act", "pad") and PADDINGS == ("same", "valid")
    assert parse_key(VALID).as_dict()["pad"] == "valid"
    assert BlockKey(**parse_key(VALID).as_dict()) == parse_key(VALID)


def test_valid_leaves_the_strided_conv_unpadded_in_every_shape_rule() -> None:
    key = BlockKey("fused_irb", 24, 56, 57, 48, 5, 2, 4, pad="valid")
    assert key.out_hw == (26, 27) and key.output_shape == (48, 26, 27) and key.next_input() == (48, 26, 27)
    assert key.strided_padding == 0 and key.replace(pad="same").strided_padding == 2
    assert key.io_elements == 24 * 56 * 57 + 48 * 26 * 27
    layers = {layer.path: layer for layer in key_layers(key)}
    assert layers["expand.0"].output == (key.mid_channels, 26, 27)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"block": "irb"}, r"field pad='valid': allowed same for block irb \(only fused_irb take valid\)"),
        ({"block": "conv", "e": 1}, r"field pad='valid': allowed same for block conv \(only fused_irb take valid\)"),
        ({"s": 1}, r"field pad='valid': allowed same for stride 1"),
        ({"pad": "full"}, r"field pad='full': allowed one of same, valid"),
        ({"h": 4, "w": 4, "k": 5}, r"field h/w='4x4': allowed a feature map of at least 5x5 for stride 2, kernel 5"),
    ],
)
def test_pad_is_refused_where_it_means_nothing(fields: dict, message: str) -> None:
    values = {"block": "fused_irb", "cin": 8, "h": 16, "w": 16, "cout": 8, "k": 3, "s": 2, "e": 2, "pad": "valid"}
    values.update(fields)
    with pytest.raises(ValueError, match=message):
        BlockKey(**values)


@pytest.mark.parametrize("text", [SAME + "_ps", SAME + "_pvalid", SAME + "_p", "irb_i8x8x8_o8_k3_s2_e2_se0_relu_pv"])
def test_other_pad_suffixes_and_valid_elsewhere_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="block key"):
        parse_key(text)


def test_the_vectorized_io_elements_takes_pads_and_needs_kernels_for_valid() -> None:
    keys = [parse_key(VALID), parse_key(SAME), BlockKey("conv", 3, 9, 9, 8, 3, 2)]
    cols = list(zip(*[(k.block, k.cin, k.h, k.w, k.cout, k.s) for k in keys]))
    pads, ks = [k.pad for k in keys], [k.k for k in keys]
    assert io_elements(*cols, pad=pads, k=ks).tolist() == [k.io_elements for k in keys]
    assert io_elements(*cols).tolist() == [k.replace(pad="same").io_elements for k in keys]
    with pytest.raises(ValueError, match="pad 'valid' need their kernel sizes; pass k="):
        io_elements(*cols, pad=pads)
    with pytest.raises(ValueError, match="field pad='full': allowed one of same, valid"):
        io_elements(*cols, pad=["full", "same", "same"], k=ks)


# --------------------------------------------------------------------------- the GPUNet networks
def _sizes(name: str) -> set[int]:
    keys = get_network(name).keys
    return {k.h for k in keys} | {k.out_hw[0] for k in keys if not k.block_type.classifier}


@pytest.mark.parametrize("name", sorted(RELEASED_MAPS))
def test_gpunet_feature_maps_are_those_of_nvidias_released_models(name: str) -> None:
    released, padded = RELEASED_MAPS[name]
    assert _sizes(name) - _sizes(f"{name}-padded") == released
    assert _sizes(f"{name}-padded") - _sizes(name) == padded
    unpadded = [k for k in get_network(name).keys if k.pad == "valid"]
    assert unpadded and all(k.block == "fused_irb" and k.s == 2 for k in unpadded)
    assert [k.out_hw[0] for k in unpadded] == sorted(released, reverse=True)[: len(unpadded)]


@pytest.mark.parametrize("name", sorted(EXTRA_MACS_PCT))
def test_the_padded_gpunets_cost_the_documented_extra_macs(name: str) -> None:
    macs = sum(key_cost(k).macs for k in get_network(name).keys)
    padded = sum(key_cost(k).macs for k in get_network(f"{name}-padded").keys)
    assert padded > macs
    assert round(100 * (padded / macs - 1), 1) == EXTRA_MACS_PCT[name]


# --------------------------------------------------------------------------- the space
def test_both_gpunet_spaces_resolve_by_name() -> None:
    assert spaces.resolve_space("gpunet") is gpunet.SPACE
    assert spaces.resolve_space("GPUNet-Padded") is gpunet.PADDED_SPACE
    assert "gpunet-padded" in spaces.SPACE_NAMES
    with pytest.raises(ValueError, match="gpunet-padded"):
        spaces.resolve_space("gpunet-unpadded")


def test_a_stage_takes_valid_only_where_a_key_can() -> None:
    common = {"kernels": (3,), "layers": (1,), "acts": ("relu",), "filters": (16,)}
    assert StageSpec("fused_irb", 2, pad="valid", **common).kernel_sized
    with pytest.raises(ValueError, match="stage: pad 'valid' needs a stride-2 stage of fused_irb; use pad 'same'"):
        StageSpec("irb", 2, pad="valid", **common)
    with pytest.raises(ValueError, match="needs a stride-2 stage"):
        StageSpec("fused_irb", 1, pad="valid", **common)
    with pytest.raises(ValueError, match="pad 'full' is unknown; use one of same, valid"):
        StageSpec("fused_irb", 2, pad="full", **common)


@pytest.mark.parametrize("space", [gpunet.SPACE, gpunet.PADDED_SPACE], ids=lambda sp: sp.name)
def test_predict_many_equals_predict_over_both_gpunet_spaces(space) -> None:
    from profiler.nas import synthetic_table
    from tables.calibration import Calibration
    from tables.predictor import predict, predict_many

    enc = space.sample(64, seed=7)
    table = synthetic_table({k for e in enc for k in space.arch_keys(e)})
    loop = np.array([predict(table, space.arch_keys(e)).ms_per_batch for e in enc])
    assert np.array_equal(predict_many(table, enc, space), loop)
    table.calibration = Calibration("io_linear", a=0.5, b=0.1, io_ms_per_mel=0.25)  # sums each key's input + output
    loop = np.array([predict(table, space.arch_keys(e)).ms_per_batch for e in enc])
    assert np.array_equal(predict_many(table, enc, space), loop)
    io = table.batch * sum(k.io_elements for k in space.arch_keys(enc[0])) / 1e6
    assert predict(table, space.arch_keys(enc[0]), calibrated=False).io_mel == pytest.approx(io, rel=1e-12)


def test_a_user_space_file_takes_a_stage_pad(tmp_path) -> None:
    from profiler.spaces.userfile import load_space

    path = tmp_path / "space.yaml"
    path.write_text(
        "space:\n"
        "  resolutions: [64]\n"
        "  stages:\n"
        "    - {type: conv, stride: 2, filters: 16}\n"
        "    - {type: fused_irb, stride: 2, kernel: [3, 5], filters: 24, expansion: 4, pad: valid}\n"
        "    - {type: tail, filters: 64}\n"
    )
    space = load_space(path)
    assert {str(k) for k in space.space_keys() if k.block == "fused_irb"} == {
        "fused_irb_i16x32x32_o24_k3_s2_e4_se0_relu_pv",
        "fused_irb_i16x32x32_o24_k5_s2_e4_se0_relu_pv",
    }
    assert {k.h for k in space.space_keys() if k.block == "tail"} == {15, 14}
    path.write_text(path.read_text().replace("fused_irb, stride: 2", "fused_irb, stride: 1"))
    with pytest.raises(ValueError, match="stage 1: pad 'valid' needs a stride-2 stage of fused_irb"):
        load_space(path)


# --------------------------------------------------------------------------- torch module == emitted graph
def test_a_chain_with_unpadded_keys_is_the_torch_network_in_onnx() -> None:
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from kernels_bench.blocks import build_network
    from kernels_bench.onnx_graphs import block_graph, reference_state_dict

    keys = [
        parse_key("conv_i3x32x32_o16_k3_s2_e1_se0_swish"),
        parse_key("fused_irb_i16x16x16_o24_k5_s2_e4_se1_swish_pv"),
        parse_key("fused_irb_i24x6x6_o24_k3_s1_e2_se0_relu"),
        parse_key("fused_irb_i24x6x6_o32_k3_s2_e3_se0_relu_pv"),
        parse_key("tail_i32x2x2_o64_k1_s1_e1_se0_relu"),
    ]
    net = build_network(keys)
    net.load_state_dict({n: torch.from_numpy(v) for n, v in reference_state_dict(keys).items()}, strict=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    model = block_graph(keys, 2, opset=17).SerializeToString()
    got = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
