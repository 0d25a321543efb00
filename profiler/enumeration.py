"""Which keys (and which whole architectures) a table build or a validation run needs.

Spaces are named ``gpunet``, ``genet`` (= ``genet-normal``), ``genet-light``,
``genet-normal``, ``genet-large``, or given as the path of a user space file
(:mod:`profiler.spaces.userfile`). Key lists come back deduplicated in a
deterministic order: exact space enumerations sorted by key string, everything
else in first-seen order.

Exact key counts (one enumeration each, cached per process): GPUNet 229,550
(gpunet-padded 132,990); GENet light 298,161; normal and large 763,848 (most of them from the DW
super-blocks' 121 x 121 input/output width pairs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from profiler import networks
from profiler.spaces import Architecture, resolve_space, userfile
from profiler.spaces.staged import StagedSpace
from tables.cli import UsageError
from tables.key import BlockKey


def unique_keys(key_lists: Iterable[Iterable[BlockKey]]) -> list[BlockKey]:
    """Concatenate key lists, dropping repeats; keeps the order in which keys are first seen."""
    seen: dict[BlockKey, None] = {}
    for keys in key_lists:
        for k in keys:
            seen.setdefault(k, None)
    return list(seen)


#: Most keys a whole-space enumeration may hold (GENet-normal has 763,848; each key takes about 1 KB in memory).
MAX_SPACE_KEYS = 2_000_000


def check_space_size(sp: StagedSpace, limit: int = MAX_SPACE_KEYS) -> int:
    """The space's key-count bound, counted arithmetically; a usage error naming what to narrow above ``limit``."""
    bound, per_stage = sp.key_count_bound()
    if bound > limit:
        worst = max(range(len(per_stage)), key=per_stage.__getitem__)
        st = sp.stages[worst]
        raise UsageError(
            f"space {sp.name} has up to {bound:,} keys, more than the {limit:,} a build enumerates; its stage "
            f"{worst} ({st.block}) alone gives up to {per_stage[worst]:,}: narrow that stage's choices (filters, "
            "kernels, expansions, SE, activations) or the resolutions, or profile a sample (--sample N)"
        )
    return bound


def keys_for_space(space: str | Path | StagedSpace) -> list[BlockKey]:
    """Every key of a whole space (exact), sorted by key string; refused above :data:`MAX_SPACE_KEYS`."""
    sp = resolve_space(space)
    check_space_size(sp)
    return sorted(sp.space_keys(), key=str)


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


@dataclass
class KeySource:
    """What to profile: the keys and a description for the table's metadata."""

    keys: list[BlockKey]
    description: dict[str, object] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # keys per source, before deduplication


def network_names(text: str) -> list[str]:
    """``--networks a,b`` or ``all`` as names; an empty list is a usage error."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise UsageError("--networks is empty: give e.g. --networks resnet-50,gpunet-0 or all")
    return names


def collect_keys(
    *,
    space: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    networks_text: str | None = None,
    archs: str | None = None,
    limit: int | None = None,
) -> KeySource:
    """Resolve ``--space``/``--sample``/``--networks``/``--archs`` into one deduplicated key list.

    With none of them: the keys of every reference network. ``--sample`` without
    ``--space`` samples GPUNet. ``limit`` keeps the first N keys (smoke runs).
    """
    lists: list[list[BlockKey]] = []
    desc: dict[str, object] = {}
    counts: dict[str, int] = {}
    if sample is not None and sample <= 0:
        raise UsageError(f"--sample must be a positive number of architectures, got {sample}")
    if space and sample is None:
        keys = keys_for_space(space)
        lists.append(keys)
        desc["space"] = space
        counts[f"space {space}"] = len(keys)
    elif sample is not None:
        where = space or "gpunet"
        keys = keys_for_sample(where, sample, seed)
        lists.append(keys)
        desc["sample"] = {"space": where, "n": sample, "seed": seed, "method": "sobol"}
        counts[f"sample {sample} of {where}"] = len(keys)
    if networks_text is not None:
        names = network_names(networks_text)
        keys = keys_for_networks(names)
        lists.append(keys)
        desc["networks"] = names
        counts["networks " + ",".join(names)] = len(keys)
    if archs is not None:
        if not str(archs).strip():
            raise UsageError("--archs is empty: give the path of a JSON/YAML file listing architectures")
        keys = keys_for_archs_file(archs)
        lists.append(keys)
        desc["archs"] = str(archs)
        counts[f"archs {archs}"] = len(keys)
    if not lists:
        names = list(networks.NETWORKS)
        keys = keys_for_networks(names)
        lists.append(keys)
        desc["networks"] = names
        counts["reference networks"] = len(keys)
    keys = unique_keys(lists)
    if limit is not None:
        if limit <= 0:
            raise UsageError(f"--limit must be positive, got {limit}")
        keys = keys[:limit]
        desc["limit"] = limit
    return KeySource(keys, desc, counts)


__all__ = [
    "MAX_SPACE_KEYS",
    "KeySource",
    "architectures_for_archs_file",
    "architectures_for_networks",
    "architectures_for_sample",
    "check_space_size",
    "collect_keys",
    "keys_for_archs_file",
    "keys_for_networks",
    "keys_for_sample",
    "keys_for_space",
    "network_names",
    "unique_keys",
]
