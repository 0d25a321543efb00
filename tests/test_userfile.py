"""User files: architecture lists and staged spaces from JSON/YAML, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.networks import network_keys
from profiler.spaces import userfile
from profiler.spaces.staged import StagedSpace

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_architectures_load_with_their_names_and_sources() -> None:
    archs = userfile.load_architectures(EXAMPLES / "my_archs.json")
    assert [a.name for a in archs] == [
        "tiny-convnet", "gpunet-0-like", "genet-light-k5", "gpunet-0-released", "resnet-18",
    ]  # fmt: skip
    assert [a.source for a in archs] == ["file", "file", "file", "file", "reference"]
    assert archs[0].resolution == 64 and len(archs[0].keys) == 4
    assert archs[1].encoding is not None and len(archs[1].encoding) == 41
    assert list(archs[3].keys) == network_keys("gpunet-0")
    assert list(archs[4].keys) == network_keys("resnet-18")


def test_example_space_loads_samples_and_enumerates() -> None:
    space = userfile.load_space(EXAMPLES / "my_space.yaml")
    assert isinstance(space, StagedSpace) and space.name == "my-space"
    assert space.resolutions == (160, 192, 224)
    keys = space.space_keys()
    for enc in space.sample(32, seed=0):
        assert set(space.arch_keys(enc)) <= keys
    assert isinstance(userfile.load(EXAMPLES / "my_space.yaml"), StagedSpace)


def test_yaml_architecture_list_at_top_level(tmp_path: Path) -> None:
    p = tmp_path / "archs.yml"
    p.write_text("- name: a\n  blocks: [conv_i3x32x32_o8_k3_s2_e1_se0_relu, tail_i8x16x16_o64_k1_s1_e1_se0_relu]\n")
    (arch,) = userfile.load(p)  # type: ignore[misc]
    assert arch.name == "a" and arch.resolution == 32


def test_fractional_expansions_are_encoded_in_percent(tmp_path: Path) -> None:
    p = tmp_path / "space.yaml"
    p.write_text(
        "resolutions: [64]\n"
        "stages:\n"
        "  - {type: conv, stride: 2, filters: 16}\n"
        "  - {type: bl, stride: 2, filters: [32, 64], expansion: [0.25, 0.5], layers: [1, 2]}\n"
        "  - {type: pool_fc, filters: 1000}\n"
    )
    space = userfile.load_space(p)
    assert [p.codes for p in space.positions] == [(64,), (32, 64), (25, 50), (1, 2)]
    assert str(space.arch_keys([64, 64, 50, 1])[1]) == "bl_i16x32x32_o64_k3_s2_e0.5_se0_relu"


ARCH_CASES = [
    ("bad.json", "{not json", "invalid JSON at line 1"),
    ("a.json", json.dumps([{"blocks": []}]), "architecture 0 needs a non-empty string 'name'"),
    ("a.json", json.dumps([{"name": "x", "gpunet": [1], "genet": [1]}]), "must have exactly one of"),
    ("a.json", json.dumps([{"name": "x", "blocks": ["conv_bad"]}]), "architecture 0 \\('x'\\) field 'blocks': invalid"),
    ("a.json", json.dumps([{"name": "x", "gpunet": [224] * 3}]), "field 'gpunet': gpunet encoding has 3 integers"),
    ("a.json", json.dumps([{"name": "x", "network": "vgg"}]), "field 'network': unknown network 'vgg'"),
    ("a.json", json.dumps([{"name": "x", "gpunet_config": "missing.json"}]), "cannot read it"),
    ("a.json", json.dumps([{"name": "x", "network": "resnet-18", "extra": 1}]), "unknown fields \\['extra'\\]"),
    ("a.json", json.dumps([{"name": "x", "network": "resnet-18"}] * 2), "architecture 1 \\('x'\\) repeats a name"),
    ("a.json", json.dumps({"nets": []}), "expected a list of architectures"),
    ("a.txt", "[]", "unsupported file type .txt"),
    ("a.yaml", "- name: [unclosed\n", "invalid YAML at line"),
]


@pytest.mark.parametrize(("fname", "text", "message"), ARCH_CASES)
def test_malformed_architecture_files_give_one_line_errors(tmp_path: Path, fname: str, text: str, message: str) -> None:
    p = tmp_path / fname
    p.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        userfile.load(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


SPACE_CASES = [
    ("stages: [{type: conv, stride: 2, filters: 8}]", "space lacks 'resolutions'"),
    ("resolutions: [64]\nstages: [{type: convx, filters: 8}]", "stage 0: type 'convx' is unknown"),
    ("resolutions: [64]\nstages: [{type: conv, filters: 8, se: [0, 1]}]", "stage 0: block conv takes no SE"),
    ("resolutions: [64]\nstages: [{type: conv, stride: 2, filters: 8, layers: [0, 1]}]",
     "stage 0: a stage that may have 0 layers must have stride 1"),
    ("resolutions: [64]\nstages: [{type: tail, filters: 8}, {type: conv, filters: 8}]",
     "stage 0 is a tail classifier but is not the last stage"),
    ("resolutions: {min: 64}\nstages: [{type: conv, filters: 8}]", "resolutions: a range needs 'min' and 'max'"),
    ("resolutions: [64]\nstages: [{type: conv, filters: 8, kernel: 4}]", "stage 0: kernel choices \\[4\\] must be odd"),
    ("resolutions: [64]\nstages: [{type: conv, filters: 8, colour: red}]", "stage 0: unknown fields \\['colour'\\]"),
    ("resolutions: [64]\nstages: [{type: conv, filters: 8, act: gelu}]",
     "stage 0: activations \\['gelu'\\] are invalid"),
    ("resolutions: [2]\nstages: [{type: conv, stride: 2, filters: 8}, {type: conv, stride: 2, filters: 8}]",
     "resolution 2 is too small"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), SPACE_CASES)
def test_malformed_space_files_give_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        userfile.load_space(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_asking_for_the_wrong_kind_of_file_says_so() -> None:
    with pytest.raises(ValueError, match="holds a search space, not a list of architectures"):
        userfile.load_architectures(EXAMPLES / "my_space.yaml")
    with pytest.raises(ValueError, match="holds no search space"):
        userfile.load_space(EXAMPLES / "my_archs.json")


def test_a_yaml_file_whose_aliases_expand_without_bound_is_refused_before_it_is_expanded(tmp_path):
    lines = ["a0: &a0 [" + ", ".join(["x"] * 9) + "]"]
    for i in range(1, 30):  # 9**30 values once expanded
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="aliases expand it to more than"):
        userfile.read_document(path)


def test_a_file_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(ValueError, match="is not a text file"):
        userfile.read_document(path)
