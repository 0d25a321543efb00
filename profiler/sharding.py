"""A deterministic split of a key set into N shards, for batch schedulers (Slurm arrays, cloud batch jobs).

Key ``k`` belongs to shard ``int(sha1(str(k)), 16) % N + 1`` (shards are numbered
1..N). The split depends only on each key's canonical string, so it is

- stable: the same key lands in the same shard on every machine, in every run,
  whatever the order of the input and whatever else is in the set;
- complete: every key is in exactly one shard (the union of the shards is the
  whole set, two shards never share a key).

A shard ``I`` of ``N`` writes its own table ``<table stem>.shard-I-of-N.parquet``,
so that all shards can share one output folder; ``python -m profiler.merge``
joins them into one table.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import TypeVar

from tables.key import BlockKey

K = TypeVar("K", BlockKey, str)

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")

#: How the split is made; stored in a shard table's metadata.
SHARD_METHOD = "sha1(canonical key string) mod count"


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``: shard 2 of 8 (1-based); ``ValueError`` names what is wrong."""
    m = _SHARD_RE.match(str(text))
    if m is None:
        raise ValueError(f"--shard {text!r} is not I/N: write e.g. --shard 1/4 (shard 1 of 4, numbered from 1)")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise ValueError(f"--shard {text}: the number of shards must be at least 1")
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text}: the shard number must be from 1 to {count} (shards are numbered from 1)")
    return index, count


def shard_of(key: BlockKey | str, count: int) -> int:
    """The shard (1..count) that ``key`` belongs to."""
    if count < 1:
        raise ValueError(f"the number of shards must be at least 1, got {count}")
    digest = hashlib.sha1(str(key).encode("utf-8")).hexdigest()
    return int(digest, 16) % count + 1


def select_shard(keys: Iterable[K], index: int, count: int) -> list[K]:
    """The keys of shard ``index`` of ``count``, in their input order."""
    if not 1 <= index <= count:
        raise ValueError(f"shard {index} of {count} does not exist: shards are numbered 1..{count}")
    return [k for k in keys if shard_of(k, count) == index]


def shard_table_name(table_name: str, index: int, count: int) -> str:
    """``cpu_onnxruntime_fp32_b1.parquet`` -> ``cpu_onnxruntime_fp32_b1.shard-2-of-4.parquet``."""
    stem = table_name[: -len(".parquet")] if table_name.endswith(".parquet") else table_name
    return f"{stem}.shard-{index}-of-{count}.parquet"


def shard_metadata(index: int, count: int) -> dict[str, object]:
    """The ``shard`` entry of a shard table's metadata."""
    return {"index": index, "count": count, "method": SHARD_METHOD}
