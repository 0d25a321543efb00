"""The backend configuration: one object from the command line to the engine to the table's metadata.

:class:`BackendConfig` holds every user choice that changes a backend's numbers
(threads, CPU pinning, TensorRT's builder level and typing, CUDA graphs,
``torch.compile``), under one name each: the command-line flag is ``--`` plus
the name with ``-`` for ``_`` (``threads`` <-> ``--threads``, ``opt_level`` <->
``--opt-level``), the keyword option of :func:`kernels_bench.backends.get_backend`
is the name itself, and the backend stores it under that name in a table's
``backend_settings``. ``profiler.build`` makes one from its flags,
``profiler.validate`` reads it back from a table (:meth:`BackendConfig.from_metadata`),
the executors send it to their workers, and two configurations compare with
:meth:`BackendConfig.differences`.

What each backend runs on each device (:func:`precisions_for`, :func:`check_precision`)
is data here too, so a command refuses an impossible request before any engine
is imported. This module imports nothing beyond the standard library,
:mod:`kernels_bench.errors` and :mod:`tables.settings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kernels_bench.errors import PrecisionNotSupported
from tables.settings import normalized_backend_settings

#: Every precision name this project knows (each backend runs a subset).
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")

#: Backend names, in the order of preference on a GPU.
BACKENDS: tuple[str, ...] = ("tensorrt", "onnxruntime", "torch")

#: Device kinds of a backend.
DEVICE_KINDS: tuple[str, ...] = ("cpu", "cuda")

#: Largest CPU index ``--cpus`` accepts (a list is checked against this before it is expanded).
MAX_CPU_INDEX = 4095

#: Largest thread count a CPU backend accepts (and never more than the machine's logical CPUs, see
#: :meth:`BackendConfig.check_machine`).
MAX_THREADS = 1024

#: Precisions each backend runs meaningfully, per device kind (absent: the backend does not run there).
RUNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("onnxruntime", "cpu"): ("fp32", "int8"),
    ("onnxruntime", "cuda"): ("fp32", "fp16"),
    ("torch", "cpu"): ("fp32", "bf16"),
    ("torch", "cuda"): ("fp32", "fp16", "bf16"),
    ("tensorrt", "cuda"): ("fp32", "fp16", "int8"),
}

#: Why a backend refuses a precision: (backend, device kind or ``None`` for every device, precision) -> reason.
REFUSALS: dict[tuple[str, str | None, str], str] = {
    ("onnxruntime", None, "bf16"): "onnxruntime has no bf16 convolution kernels on these providers",
    ("onnxruntime", "cpu", "fp16"): "the CPU provider silently casts fp16 to fp32; time fp16 on a GPU backend",
    ("onnxruntime", "cuda", "int8"): (
        "the CUDA provider runs Q/DQ graphs as dequantized float; use the tensorrt backend for int8"
    ),
    ("torch", None, "int8"): "torch has no int8 inference path here; use onnxruntime or tensorrt for int8",
    ("torch", "cpu", "fp16"): (
        "torch has no fast fp16 convolution kernels on the CPU; use fp32 or bf16, or time fp16 on cuda"
    ),
    ("tensorrt", None, "bf16"): "the exporter writes no bf16 graphs for TensorRT; use fp16",
}


def device_kind(device: str) -> str:
    """``"cpu"`` -> ``"cpu"``; ``"cuda"`` / ``"cuda:N"`` -> ``"cuda"``; anything else is a ``ValueError``."""
    text = str(device)
    if text == "cpu":
        return "cpu"
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        return "cuda"
    raise ValueError(f"invalid device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")


def check_backend(backend: str) -> str:
    """``backend`` if it is a known backend name, else a ``ValueError`` listing them."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


def precisions_for(backend: str, device: str) -> tuple[str, ...]:
    """The precisions ``backend`` runs meaningfully on ``device`` (``()`` where it does not run at all)."""
    return RUNS.get((check_backend(backend), device_kind(device)), ())


def refusal(backend: str, device: str, precision: str) -> str | None:
    """Why ``backend`` on ``device`` does not run ``precision`` (``None`` when it does)."""
    kind = device_kind(device)
    if precision in precisions_for(backend, kind):
        return None
    return REFUSALS.get((backend, kind, precision)) or REFUSALS.get((backend, None, precision)) or ""


def check_precision(backend: str, device: str, precision: str) -> None:
    """Raise :class:`PrecisionNotSupported` unless ``backend`` runs ``precision`` on ``device``.

    Needs no engine: the same rule the backend object applies once it exists.
    """
    if precision not in PRECISIONS:
        raise PrecisionNotSupported(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    kind = device_kind(device)
    runs = precisions_for(backend, kind)
    if not runs:
        where = "a GPU (device cuda)" if kind == "cpu" else "the CPU"
        raise PrecisionNotSupported(f"the {backend} backend does not run on {kind}: it needs {where}")
    reason = refusal(backend, kind, precision)
    if reason is not None:
        detail = f": {reason}" if reason else ""
        raise PrecisionNotSupported(
            f"the {backend} backend on {kind} does not run {precision}{detail} (it runs {', '.join(runs)})"
        )


def parse_cpus(text: str) -> list[int]:
    """CPU indices from a list such as ``"1"``, ``"0,2"`` or ``"0-3,6"``; sorted, without repeats.

    Raises:
        ValueError: an empty list, an item that is not a non-negative integer or an ascending
            ``A-B`` range, or an index above :data:`MAX_CPU_INDEX` (checked before a range is expanded).
    """
    cpus: set[int] = set()
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise ValueError("empty CPU list: name CPUs such as 1 or 0,2 or 0-3")
    for item in items:
        lo, sep, hi = item.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            first = last = -1
        if first < 0 or last < first:
            raise ValueError(f"invalid CPU list {text!r}: use indices and ranges such as 1 or 0,2 or 0-3")
        if last > MAX_CPU_INDEX:
            raise ValueError(f"CPU index {last} in {text!r} is beyond {MAX_CPU_INDEX}: name CPUs this machine has")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpus(cpus: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 6]`` -> ``"0-3,6"``: the ``--cpus`` text of a CPU list."""
    out: list[str] = []
    values = sorted({int(c) for c in cpus})
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(out)


@dataclass(frozen=True)
class Field:
    """One option of :class:`BackendConfig`: which backends take it, where it applies, its help text."""

    name: str
    backends: tuple[str, ...]
    help: str
    devices: tuple[str, ...] = DEVICE_KINDS

    @property
    def flag(self) -> str:
        """The command-line flag: ``--`` + the name with ``-`` for ``_``."""
        return "--" + self.name.replace("_", "-")


#: The options of :class:`BackendConfig` that change numbers, in command-line order.
FIELDS: tuple[Field, ...] = (
    Field("threads", ("onnxruntime", "torch"), "CPU threads of the onnxruntime/torch CPU runs (default 1)"),
    Field(
        "cpus",
        ("onnxruntime", "torch"),
        "onnxruntime/torch: pin the measuring process to these CPUs (Linux), e.g. 1 or 0-3",
    ),
    Field("opt_level", ("tensorrt",), "TensorRT builder optimization level 0-5 (default 3)", ("cuda",)),
    Field(
        "strongly_typed",
        ("tensorrt",),
        "TensorRT 10: build strongly typed networks (11.x always is; 8.6 never)",
        ("cuda",),
    ),
    Field("cuda_graphs", ("torch", "tensorrt"), "replay CUDA graphs (torch and tensorrt on a GPU)", ("cuda",)),
    Field(
        "tf32",
        ("tensorrt", "onnxruntime", "torch"),
        "allow TF32 math in fp32 on the GPU (default off in every backend: fp32 means fp32; recorded)",
        ("cuda",),
    ),
    Field("compile", ("torch",), "torch backend: torch.compile instead of eager"),
)

_FIELD = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class BackendConfig:
    """A backend and every option of it that changes the numbers.

    Attributes:
        backend: ``tensorrt``, ``onnxruntime`` or ``torch``.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        threads: CPU threads of onnxruntime's CPU provider / ``torch.set_num_threads`` (>= 1).
        cpus: CPUs the measuring process is pinned to (onnxruntime, torch); ``()``: not pinned.
        opt_level: TensorRT builder optimization level 0-5; ``None``: TensorRT's default (3).
        strongly_typed: TensorRT typing; ``None``: the version's default (weak on 8.6/10.x, strong on 11.x).
        cuda_graphs: replay CUDA graphs (torch and tensorrt on a GPU).
        tf32: allow TF32 math for fp32 on the GPU (every backend; default False, one policy for all three:
            TensorRT clears its TF32 flag, torch turns ``allow_tf32`` off for matmul and cuDNN, onnxruntime's
            CUDA provider gets ``use_tf32=0``).
        compile: ``torch.compile`` (torch).
        cache_dir: where exported graphs and TensorRT timing caches are kept; changes no number,
            so it is neither compared nor stored.

    Construction checks each value and that it applies to the backend and device:
    an option for another backend (``--opt-level`` with onnxruntime, ``--cuda-graphs``
    on the CPU) is a ``ValueError`` naming it.
    """

    backend: str
    device: str = "cpu"
    threads: int = 1
    cpus: tuple[int, ...] = ()
    opt_level: int | None = None
    strongly_typed: bool | None = None
    cuda_graphs: bool = False
    tf32: bool = False
    compile: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check_backend(self.backend)
        kind = device_kind(self.device)
        if not precisions_for(self.backend, kind):
            where = "a GPU device profile" if kind == "cpu" else "the cpu device profile"
            raise ValueError(f"the {self.backend} backend does not run on {kind}: it needs {where}")
        threads = self.threads
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"invalid threads={threads!r}: use an integer from 1 to {MAX_THREADS}")
        cpus = tuple(sorted({int(c) for c in self.cpus}))
        if any(c < 0 or c > MAX_CPU_INDEX for c in cpus):
            raise ValueError(f"invalid cpus={list(self.cpus)!r}: use CPU indices from 0 to {MAX_CPU_INDEX}")
        object.__setattr__(self, "cpus", cpus)
        level = self.opt_level
        if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 5):
            raise ValueError(f"invalid opt_level={level!r}: use an integer from 0 to 5 (TensorRT's default is 3)")
        if self.strongly_typed is not None:
            object.__setattr__(self, "strongly_typed", bool(self.strongly_typed))
        object.__setattr__(self, "cuda_graphs", bool(self.cuda_graphs))
        object.__setattr__(self, "tf32", bool(self.tf32))
        object.__setattr__(self, "compile", bool(self.compile))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", str(self.cache_dir))
        defaults = BackendConfig.__dataclass_fields__
        for f in FIELDS:
            value = getattr(self, f.name)
            if value == defaults[f.name].default:
                continue
            if self.backend not in f.backends:
                raise ValueError(
                    f"{f.flag} is an option of the {' and '.join(f.backends)} backend"
                    f"{'s' if len(f.backends) > 1 else ''}, not of {self.backend}: drop it or choose that backend"
                )
            if kind not in f.devices:
                raise ValueError(f"{f.flag} needs a GPU (device cuda): drop it on the cpu profile")

    # ----- what the backend takes, what the table stores -------------------------------
    @property
    def device_kind(self) -> str:
        """``"cpu"`` or ``"cuda"``."""
        return device_kind(self.device)

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions this backend runs on this device."""
        return precisions_for(self.backend, self.device)

    def check_precision(self, precision: str) -> None:
        """Raise :class:`~kernels_bench.errors.PrecisionNotSupported` unless the backend runs ``precision`` here."""
        check_precision(self.backend, self.device, precision)

    def applies(self, name: str) -> bool:
        """Whether option ``name`` (a :data:`FIELDS` name) is one this backend takes on this device."""
        f = _FIELD[name]
        return self.backend in f.backends and self.device_kind in f.devices

    def options(self) -> dict[str, Any]:
        """The keyword options of :func:`kernels_bench.backends.get_backend` for this configuration.

        Only the options this backend takes; ``cpus`` only when pinned, ``opt_level``
        and ``strongly_typed`` only when set (else the engine's default applies).
        """
        out: dict[str, Any] = {}
        for f in FIELDS:
            if not self.applies(f.name):
                continue
            value = getattr(self, f.name)
            if f.name == "cpus":
                if value:
                    out["cpus"] = list(value)
            elif value is not None:
                out[f.name] = value
        if self.cache_dir is not None:
            out["cache_dir"] = self.cache_dir
        return out

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored under the same names in a table's ``backend_settings``.

        ``backend``, ``device`` and every option this backend takes (``cpus`` as a
        list, ``[]`` when not pinned); not ``cache_dir``.
        """
        out: dict[str, Any] = {"backend": self.backend, "device": self.device}
        for f in FIELDS:
            if self.applies(f.name):
                value = getattr(self, f.name)
                out[f.name] = list(value) if f.name == "cpus" else value
        return out

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], *, backend: str | None = None) -> BackendConfig:
        """A configuration from stored settings (:meth:`to_dict`, or a backend's ``settings()``).

        Other keys (engine facts such as the provider or the TensorRT version) are
        ignored; the names older tables used (``intra_op_threads``, ``cpu_affinity``,
        ``builder_optimization_level``) are read too. ``backend`` fills a missing
        ``backend`` entry.
        """
        data = {
            k: v for k, v in normalized_backend_settings(settings).items() if k in _FIELD or k in ("backend", "device")
        }
        name = str(data.pop("backend", None) or backend or "")
        device = str(data.pop("device", "cpu") or "cpu")
        kind = device_kind(device)
        values: dict[str, Any] = {}
        for f in FIELDS:
            if f.name not in data or name not in f.backends or kind not in f.devices:
                continue
            value = data[f.name]
            if f.name == "cpus":
                value = tuple(int(c) for c in (value or ()))
            elif f.name == "threads":
                value = int(value) if value is not None else 1
            elif f.name == "opt_level":
                value = int(value) if value is not None else None
            values[f.name] = value
        return cls(name, device, **values)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> BackendConfig:
        """The configuration a table was built with (its ``backend`` and ``backend_settings``)."""
        settings = metadata.get("backend_settings") or {}
        if not isinstance(settings, Mapping):
            raise ValueError("table metadata backend_settings is not a JSON object; rebuild the table")
        return cls.from_dict(settings, backend=str(metadata.get("backend") or ""))

    def cli_args(self) -> list[str]:
        """The command-line flags that ask for this configuration (``--backend`` first)."""
        args = ["--backend", self.backend]
        defaults = BackendConfig.__dataclass_fields__
        for f in FIELDS:
            if not self.applies(f.name):
                continue
            value = getattr(self, f.name)
            if f.name == "threads":
                args += [f.flag, str(value)]
            elif f.name == "cpus":
                if value:
                    args += [f.flag, format_cpus(value)]
            elif f.name == "opt_level":
                if value is not None:
                    args += [f.flag, str(value)]
            elif value and value != defaults[f.name].default:
                args.append(f.flag)
        return args

    def replace(self, **changes: Any) -> BackendConfig:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def differences(self, other: BackendConfig) -> list[tuple[str, Any, Any]]:
        """``(name, this value, other value)`` for every setting that differs (``cache_dir`` aside)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            (name, mine.get(name), theirs.get(name))
            for name in dict.fromkeys([*mine, *theirs])
            if mine.get(name) != theirs.get(name)
        ]

    def check_machine(self, usable_cpus: Sequence[int], logical_cpus: int) -> None:
        """Refuse settings this machine cannot honour: CPUs it does not let this process use, more threads
        than it has logical CPUs (``ValueError`` naming them)."""
        outside = [c for c in self.cpus if c not in set(usable_cpus)]
        if outside:
            raise ValueError(
                f"--cpus names CPU(s) {format_cpus(outside)} that this process cannot use "
                f"(it may use {format_cpus(usable_cpus)}): choose among those"
            )
        if self.applies("threads") and self.device_kind == "cpu" and self.threads > logical_cpus:
            raise ValueError(
                f"--threads {self.threads} is more than the {logical_cpus} logical CPUs of this machine: "
                "more threads than CPUs only measures their contention; use at most that many"
            )


__all__ = [
    "BACKENDS",
    "DEVICE_KINDS",
    "FIELDS",
    "MAX_CPU_INDEX",
    "MAX_THREADS",
    "PRECISIONS",
    "REFUSALS",
    "RUNS",
    "BackendConfig",
    "Field",
    "check_backend",
    "check_precision",
    "device_kind",
    "format_cpus",
    "parse_cpus",
    "precisions_for",
    "refusal",
]
