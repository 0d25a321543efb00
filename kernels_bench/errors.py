"""The backends' errors and install hints: what a user reads when an engine, a device or a precision is missing.

Imports nothing beyond the standard library, so the CLIs can refuse a request
before any engine is imported.
"""

from __future__ import annotations

#: pip extra that provides each engine (``pip install -e '.[extra]'`` from a source tree).
EXTRAS: dict[str, str] = {
    "cpu": ".[cpu]",
    "ort-gpu": ".[ort-gpu]",
    "tensorrt": ".[tensorrt]",
    "tensorrt-cu12": ".[tensorrt-cu12]",
    "tensorrt8": ".[tensorrt8]",
    "reports": ".[reports]",
    "ray": ".[ray]",
}


class BackendUnavailable(RuntimeError):
    """The engine (or the device) a backend needs is not installed or not present: bad input, exit status 2."""

    exit_status = 2


class PrecisionNotSupported(ValueError):
    """A backend cannot run a precision meaningfully on its device."""


def install_hint(extra: str) -> str:
    """The pip command that installs an extra, e.g. ``pip install -e '.[cpu]'``."""
    return f"pip install -e '{EXTRAS[extra]}'"


#: The Python module each backend's engine is, and the pip extra that provides it per device kind.
ENGINES: dict[str, tuple[str, dict[str, str]]] = {
    "onnxruntime": ("onnxruntime", {"cpu": "cpu", "cuda": "ort-gpu"}),
    "torch": ("torch", {"cpu": "cpu", "cuda": "cpu"}),
    "tensorrt": ("tensorrt", {"cuda": "tensorrt"}),
}

#: What to say besides the install line when an engine is missing.
_ALTERNATIVES: dict[str, str] = {
    "tensorrt": " (TensorRT comes from NVIDIA's package index), or pick another backend: --backend torch (CUDA) "
    "or --backend onnxruntime",
}


def engine_missing(backend: str, device_kind: str, error: BaseException | None = None) -> BackendUnavailable:
    """The :class:`BackendUnavailable` of a backend whose engine module is not installed (or fails to import)."""
    module, extras = ENGINES[backend]
    extra = extras.get(device_kind) or next(iter(extras.values()))
    unavailable = missing(module, backend, extra, error)
    return BackendUnavailable(f"{unavailable}{_ALTERNATIVES.get(backend, '')}")


def check_engine_installed(backend: str, device_kind: str) -> None:
    """Raise :func:`engine_missing`'s error when the backend's engine module cannot be found; imports nothing."""
    import importlib.util

    module = ENGINES[backend][0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise engine_missing(backend, device_kind)


def missing(module: str, backend: str, extra: str, error: BaseException | None = None) -> BackendUnavailable:
    """A :class:`BackendUnavailable` for a module that failed to import, naming the extra that provides it."""
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    return BackendUnavailable(
        f"the {backend} backend needs the Python package {module!r}, which could not be imported{detail}; "
        f"install it with: {install_hint(extra)}"
    )


__all__ = [
    "ENGINES",
    "EXTRAS",
    "BackendUnavailable",
    "PrecisionNotSupported",
    "check_engine_installed",
    "engine_missing",
    "install_hint",
    "missing",
]
