"""Inference backends: ``tensorrt``, ``onnxruntime`` and ``torch``.

``get_backend(name, device=..., **options)`` returns a :class:`Backend`. Importing
this package needs neither torch, onnxruntime, TensorRT nor cuda-python: each
backend imports its engine when it is created and raises
:class:`BackendUnavailable` naming the pip extra to install when it is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from kernels_bench.backends.base import Backend, BackendUnavailable, PrecisionNotSupported
from kernels_bench.timing import Runner

#: Backend names accepted by :func:`get_backend`.
BACKENDS: list[str] = ["tensorrt", "onnxruntime", "torch"]

_CLASSES: dict[str, tuple[str, str]] = {
    "tensorrt": ("kernels_bench.backends.tensorrt_backend", "TensorRTBackend"),
    "onnxruntime": ("kernels_bench.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "torch": ("kernels_bench.backends.torch_backend", "TorchBackend"),
}


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
    if name not in _CLASSES:
        raise ValueError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    module_name, class_name = _CLASSES[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(device, **options)
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            raise ValueError(f"invalid option for the {name} backend: {error}") from None
        raise


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "PrecisionNotSupported", "Runner", "get_backend"]
