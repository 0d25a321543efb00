"""One whole network as ordered, chained block keys (:class:`Architecture`)."""

from __future__ import annotations

from dataclasses import dataclass

from tables.key import BlockKey, chain_keys

#: Where an :class:`Architecture` came from.
ARCH_SOURCES: tuple[str, ...] = ("gpunet", "genet", "reference", "file")


@dataclass(frozen=True)
class Architecture:
    """One whole network as ordered block keys.

    Attributes:
        name: identifier (unique within a list of architectures).
        keys: the blocks in execution order; each key's input is the previous key's output.
        resolution: input image height = width, in pixels.
        source: ``"gpunet"``, ``"genet"``, ``"reference"`` or ``"file"``.
        encoding: the integer encoding in its search space, or ``None`` when it has none.

    Construction checks that the keys chain (raises ``ValueError`` at the first break).
    """

    name: str
    keys: tuple[BlockKey, ...]
    resolution: int
    source: str
    encoding: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"architecture name {self.name!r} is invalid: use a non-empty string")
        keys = tuple(self.keys)
        if not keys:
            raise ValueError(f"architecture {self.name!r} has no blocks: give at least one block key")
        for i, k in enumerate(keys):
            if not isinstance(k, BlockKey):
                raise ValueError(f"architecture {self.name!r} block {i} is {k!r}, not a BlockKey")
        object.__setattr__(self, "keys", keys)
        if self.source not in ARCH_SOURCES:
            raise ValueError(f"architecture source {self.source!r} is invalid: use one of {', '.join(ARCH_SOURCES)}")
        if isinstance(self.resolution, bool) or int(self.resolution) != self.resolution or self.resolution <= 0:
            raise ValueError(f"architecture {self.name!r} resolution {self.resolution!r} must be a positive integer")
        object.__setattr__(self, "resolution", int(self.resolution))
        if self.encoding is not None:
            object.__setattr__(self, "encoding", tuple(int(v) for v in self.encoding))
        try:
            chain_keys(keys)
        except ValueError as exc:
            raise ValueError(f"architecture {self.name!r}: {exc}") from None

    def __len__(self) -> int:
        return len(self.keys)


__all__ = ["ARCH_SOURCES", "Architecture"]
