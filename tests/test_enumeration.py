"""Key enumeration for spaces, samples, named networks and architecture files."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from profiler import enumeration, spaces
from profiler.networks import network_keys
from profiler.spaces import genet, gpunet
from tables.key import BlockKey

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
A = BlockKey("conv", 3, 32, 32, 8, 3, 2)
B = BlockKey("conv", 8, 16, 16, 8, 3, 1)
C = BlockKey("tail", 8, 16, 16, 64, 1, 1)


def test_unique_keys_keeps_first_seen_order() -> None:
    assert enumeration.unique_keys([[A, B, B], [C, A], [B]]) == [A, B, C]


def test_space_names_resolve_and_unknown_names_are_listed() -> None:
    assert spaces.resolve_space("GPUNet") is gpunet.SPACE
    assert spaces.resolve_space("genet") is genet.space("normal")
    assert spaces.resolve_space("genet-light") is genet.space("light")
    with pytest.raises(ValueError, match=r"unknown space 'fbnet'; use one of gpunet, genet, .* or a \.json/\.yaml"):
        spaces.resolve_space("fbnet")


def test_keys_for_space_of_a_user_file_equal_the_brute_force_union(tmp_path: Path) -> None:
    p = tmp_path / "space.yaml"
    p.write_text(
        "space:\n"
        "  resolutions: [64, 96]\n"
        "  stages:\n"
        "    - {type: conv, stride: 2, filters: [8, 16]}\n"
        "    - {type: irb, stride: 2, filters: [16, 24], kernel: [3, 5], expansion: [2, 4], layers: [1, 2]}\n"
        "    - {type: irb, stride: 1, filters: [24, 32], se: [0, 1], layers: [0, 1, 2]}\n"
        "    - {type: xx, stride: 1, layers: [1, 2]}\n"
        "    - {type: tail, filters: 128, act: swish}\n"
    )
    space = spaces.resolve_space(p)
    brute = set()
    for enc in itertools.product(*(pos.codes for pos in space.positions)):
        brute.update(space.arch_keys(enc))
    keys = enumeration.keys_for_space(p)
    assert set(keys) == brute and len(keys) == len(brute)
    assert [str(k) for k in keys] == sorted(str(k) for k in keys)


def test_keys_for_networks_deduplicate_across_networks() -> None:
    keys = enumeration.keys_for_networks(["resnet-18", "resnet-34"])
    assert len(keys) == len(set(keys))
    assert set(keys) == set(network_keys("resnet-18")) | set(network_keys("resnet-34"))
    assert len(enumeration.architectures_for_networks("all")) == 11


def test_sample_architectures_are_named_encoded_and_reproducible() -> None:
    archs = enumeration.architectures_for_sample("gpunet", 12, seed=7)
    assert [a.name for a in archs[:2]] == ["gpunet-sample-00", "gpunet-sample-01"]
    assert all(a.source == "gpunet" and a.encoding is not None for a in archs)
    keys = enumeration.keys_for_sample("gpunet", 12, seed=7)
    assert keys == enumeration.unique_keys(a.keys for a in archs)
    assert keys == enumeration.keys_for_sample(gpunet.SPACE, 12, seed=7)


def test_genet_sample_architectures_use_the_genet_source() -> None:
    (arch,) = enumeration.architectures_for_sample("genet-large", 1)
    assert arch.source == "genet" and len(arch.encoding or ()) == 21


def test_keys_for_archs_file_cover_every_architecture() -> None:
    archs = enumeration.architectures_for_archs_file(EXAMPLES / "my_archs.json")
    keys = enumeration.keys_for_archs_file(EXAMPLES / "my_archs.json")
    assert set(keys) == {k for a in archs for k in a.keys} and len(keys) == len(set(keys))
