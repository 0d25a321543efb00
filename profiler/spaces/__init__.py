"""Search spaces as data (import without torch).

Every space or named network ends as an :class:`Architecture`: an ordered,
chained tuple of :class:`~tables.key.BlockKey` plus the input resolution.

- :mod:`profiler.spaces.staged` -- the stage-by-stage space machinery
  (encode, decode, validate, Sobol sampling, exact key enumeration).
- :mod:`profiler.spaces.gpunet` -- GPUNet's space (Table 1) and 41-integer encoding (Table 2),
  as NVIDIA built it (``gpunet``) and with every conv padded (``gpunet-padded``).
- :mod:`profiler.spaces.genet` -- GENet's MasterNet super-blocks and LLR-NAS perturbation space.
- :mod:`profiler.spaces.userfile` -- a user's architectures or own staged space from JSON/YAML.

:func:`resolve_space` is the one place a space name (or a space file) becomes a
space object; everything that accepts ``--space`` or ``space="gpunet"`` calls it.
The table layer (:mod:`tables`) takes space objects only.
"""

from __future__ import annotations

from pathlib import Path

from profiler.spaces import genet, gpunet, userfile
from profiler.spaces.architecture import ARCH_SOURCES, Architecture
from profiler.spaces.staged import StagedSpace

#: Built-in space names accepted by :func:`resolve_space` (``genet`` is GENet-normal's space; ``gpunet-padded``
#: is GPUNet with its fused stride-2 convs padded, ``gpunet`` as NVIDIA built it).
SPACE_NAMES: tuple[str, ...] = ("gpunet", "genet", "genet-light", "genet-normal", "genet-large", "gpunet-padded")


def resolve_space(space: str | Path | StagedSpace) -> StagedSpace:
    """A staged search space from a name, a user space file or a space object.

    Names (case-insensitive): ``gpunet`` (as NVIDIA built it: the fused stride-2
    convs unpadded), ``gpunet-padded`` (every conv padded); ``genet`` (GENet-normal's perturbation
    space), ``genet-light``, ``genet-normal``, ``genet-large``. A path ending in
    ``.json``, ``.yaml`` or ``.yml`` is a user space file
    (:func:`profiler.spaces.userfile.load_space`). A :class:`StagedSpace` is
    returned as it is. Anything else is a ``ValueError`` listing what is accepted.
    """
    if isinstance(space, StagedSpace):
        return space
    text = str(space).strip()
    low = text.lower()
    if low == "gpunet":
        return gpunet.SPACE
    if low == "gpunet-padded":
        return gpunet.PADDED_SPACE
    if low in ("genet", "genet-light", "genet-normal", "genet-large"):
        return genet.space("normal" if low == "genet" else low)
    if Path(text).suffix.lower() in (".json", ".yaml", ".yml"):
        return userfile.load_space(Path(text))
    raise ValueError(f"unknown space {text!r}; use one of {', '.join(SPACE_NAMES)} or a .json/.yaml space file")


__all__ = ["ARCH_SOURCES", "SPACE_NAMES", "Architecture", "StagedSpace", "resolve_space"]
