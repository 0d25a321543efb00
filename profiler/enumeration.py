"""Which keys (and which whole architectures) a table build or a validation run needs.

Spaces are named ``gpunet``, ``genet`` (= ``genet-normal``), ``genet-light``,
``genet-normal``, ``genet-large``, or given as the path of a user space file
(:mod:`profiler.spaces.userfile`). Key lists come back deduplicated in a
deterministic order: exact space enumerations sorted by key string, everything
else in first-seen order.

Exact key counts (one enumeration each, cached per process): GPUNet 132,990;
GENet light 298,161; normal and large 763,848 (most of them from the DW
super-blocks' 121 x 121 input/output width pairs).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from profiler import networks
from profiler.spaces import Architecture, genet, gpunet, userfile
from profiler.spaces.staged import StagedSpace
from tables.key import BlockKey

#: Built-in space names accepted by :func:`resolve_space`.
SPACE_NAMES: tuple[str, ...] = ("gpunet", "genet", "genet-light", "genet-normal", "genet-large")


def unique_keys(key_lists: Iterable[Iterable[BlockKey]]) -> list[BlockKey]:
    """Concatenate key lists, dropping repeats; keeps the order in which keys are first seen."""
    seen: dict[BlockKey, None] = {}
    for keys in key_lists:
        for k in keys:
            seen.setdefault(k, None)
    return list(seen)


def resolve_space(space: str | Path | StagedSpace) -> StagedSpace:
    """A space name (see :data:`SPACE_NAMES`), a user space file path, or a space -> :class:`StagedSpace`."""
    if isinstance(space, StagedSpace):
        return space
    text = str(space).strip()
    low = text.lower()
    if low == "gpunet":
        return gpunet.SPACE
    if low in ("genet", "genet-light", "genet-normal", "genet-large"):
        return genet.space("normal" if low == "genet" else low)
    path = Path(text)
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        return userfile.load_space(path)
    raise ValueError(f"unknown space {text!r}; use one of {', '.join(SPACE_NAMES)} or a .json/.yaml space file")


def keys_for_space(space: str | Path | StagedSpace) -> list[BlockKey]:
    """Every key of a whole space (exact), sorted by key string."""
    return sorted(resolve_space(space).space_keys(), key=str)


def architectures_for_sample(space: str | Path | StagedSpace, n: int, seed: int = 0) -> list[Architecture]:
    """``n`` Sobol-sampled architectures of a space, named ``<space>-sample-<i>``, with their encodings."""
    sp = resolve_space(space)
    rows = sp.sample(n, seed)
    width = len(str(max(n - 1, 0)))
    return [sp.architecture(row, f"{sp.name}-sample-{i:0{width}d}") for i, row in enumerate(rows)]


def keys_for_sample(space: str | Path | StagedSpace, n: int, seed: int = 0) -> list[BlockKey]:
    """Unique keys of ``n`` Sobol-sampled architectures of a space (first-seen order)."""
    sp = resolve_space(space)
    return unique_keys(sp.arch_keys(row) for row in sp.sample(n, seed))


def architectures_for_networks(names: Iterable[str] | str) -> list[Architecture]:
    """Named reference networks as architectures; ``"all"`` gives every network of ``NETWORKS``."""
    names = [names] if isinstance(names, str) else list(names)
    if [n.strip().lower() for n in names] == ["all"]:
        names = list(networks.NETWORKS)
    return [networks.get_network(n) for n in names]


def keys_for_networks(names: Iterable[str] | str) -> list[BlockKey]:
    """Unique keys of the named reference networks (first-seen order)."""
    return unique_keys(a.keys for a in architectures_for_networks(names))


def architectures_for_archs_file(path: str | Path) -> list[Architecture]:
    """The architectures of a user file (:func:`profiler.spaces.userfile.load_architectures`)."""
    return userfile.load_architectures(path)


def keys_for_archs_file(path: str | Path) -> list[BlockKey]:
    """Unique keys of the architectures of a user file (first-seen order)."""
    return unique_keys(a.keys for a in architectures_for_archs_file(path))


__all__ = [
    "SPACE_NAMES",
    "architectures_for_archs_file",
    "architectures_for_networks",
    "architectures_for_sample",
    "keys_for_archs_file",
    "keys_for_networks",
    "keys_for_sample",
    "keys_for_space",
    "resolve_space",
    "unique_keys",
]
