"""Inference backends: ``tensorrt``, ``onnxruntime`` and ``torch``.

``get_backend(name, device=..., **options)`` returns a :class:`Backend`. Importing
this package needs neither torch, onnxruntime, TensorRT nor cuda-python: each
backend imports its engine when it is created and raises
:class:`BackendUnavailable` naming the pip extra to install when it is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from kernels_bench.backends.base import Backend
from kernels_bench.config import BACKENDS, BackendConfig
from kernels_bench.errors import BackendUnavailable, PrecisionNotSupported
from kernels_bench.timing import Runner

_CLASSES: dict[str, tuple[str, str]] = {
    "tensorrt": ("kernels_bench.backends.tensorrt_backend", "TensorRTBackend"),
    "onnxruntime": ("kernels_bench.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "torch": ("kernels_bench.backends.torch_backend", "TorchBackend"),
}


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name`` (imports its module, never its engine)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    module_name, class_name = _CLASSES[name]
    return getattr(importlib.import_module(module_name), class_name)


def get_backend(name: str, *, device: str = "cpu", **options: Any) -> Backend:
    """Create a backend.

    Args:
        name: one of :data:`BACKENDS`.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        **options: backend options (``threads``, ``compile``, ``cuda_graphs``,
            ``timing_cache``, ...; see each backend class).

    Raises:
        ValueError: unknown name or option.
        BackendUnavailable: the engine or the device is missing (the message names the pip extra).
    """
    cls = backend_class(name)
    try:
        return cls(device, **options)
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            raise ValueError(f"invalid option for the {name} backend: {error}") from None
        raise


def create_backend(config: BackendConfig, **extra: Any) -> Backend:
    """The backend a :class:`~kernels_bench.config.BackendConfig` describes (``extra``: options that change
    no number, such as a TensorRT timing-cache file or a weight seed)."""
    return get_backend(config.backend, device=config.device, **config.options(), **extra)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendConfig",
    "BackendUnavailable",
    "PrecisionNotSupported",
    "Runner",
    "backend_class",
    "create_backend",
    "get_backend",
]
