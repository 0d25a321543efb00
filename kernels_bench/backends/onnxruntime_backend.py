"""onnxruntime: the CPU provider (the CI backend) and the CUDA provider.

CPU: a fixed intra-op thread count (option ``threads``, default 1), one inter-op
thread, sequential execution, every graph optimization. Input and outputs are
allocated once as ``OrtValue`` objects and bound with I/O binding, so a timed run
allocates nothing; runs are synchronous and timed with ``time.perf_counter_ns``.

CUDA (``device="cuda"``, needs onnxruntime-gpu): inputs and outputs are device
``OrtValue`` objects bound with I/O binding, so no host copy happens inside the
timed region. When torch with CUDA is importable, the session computes on a
dedicated ``torch.cuda.Stream`` handed to the provider as
``user_compute_stream``, runs do not synchronize
(``disable_synchronize_execution_providers``) and CUDA events recorded on that
stream time them (``clock="cuda_events"``). Without torch the runs synchronize
the device themselves and a host clock times them (``clock="host"``,
recorded as ``sync="run_synchronizes"``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kernels_bench.backends.base import CpuPinning, HostClockRunner, OnnxGraphBackend, RunnerBase, parse_device
from kernels_bench.config import BackendConfig
from kernels_bench.errors import BackendUnavailable, engine_missing, install_hint
from kernels_bench.gpu import gpu_environment
from kernels_bench.gpu_timing import SpinHold, device_state, flush_bytes
from kernels_bench.timing import Runner
from tables.host import host_environment

# ONNX tensor type strings -> numpy dtype names
_ORT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


#: First onnxruntime-gpu release whose Python API takes ``user_compute_stream`` as a provider option.
MIN_USER_STREAM_VERSION = (1, 18)

#: First onnxruntime-gpu release whose CUDA provider takes ``use_tf32``.
MIN_TF32_OPTION_VERSION = (1, 16)


def _import_ort(device: str) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise engine_missing("onnxruntime", device, error) from None
    return ort


class OnnxRuntimeBackend(OnnxGraphBackend):
    """onnxruntime on the CPU or CUDA provider.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: intra-op threads of the CPU provider (>= 1).
        cpus: CPU indices to pin this process to (Linux; see :class:`CpuPinning`); the
            previous affinity comes back on :meth:`close`. ``None`` leaves it alone.
        opset: ONNX opset for the export; ``None`` lets the exporter choose.
        cache_dir: where the exporter caches ONNX files; ``None`` for its default.
        seed: weight seed of the exported blocks.
        cudnn_conv_algo_search: the CUDA provider's ``cudnn_conv_algo_search``.
        tf32: allow TF32 in fp32 convolutions and matmuls on the CUDA provider (default off: ``use_tf32=0``).
    """

    name = "onnxruntime"
    target = "onnxruntime"

    def __init__(
        self,
        device: str = "cpu",
        *,
        threads: int = 1,
        opset: int | None = None,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        cudnn_conv_algo_search: str = "EXHAUSTIVE",
        cpus: Sequence[int] | None = None,
        tf32: bool = False,
    ) -> None:
        kind, index = parse_device(device)
        self.config = BackendConfig(self.name, device, threads=threads, cpus=tuple(cpus or ()), tf32=tf32)
        self._ort = _import_ort(kind)
        self.device = device
        self.device_kind = kind
        self.device_index = index
        self.threads = threads
        self.opset = opset
        self.cache_dir = cache_dir
        self.seed = seed
        self.cudnn_conv_algo_search = cudnn_conv_algo_search
        if kind == "cuda" and "CUDAExecutionProvider" not in self._ort.get_available_providers():
            raise BackendUnavailable(
                "the onnxruntime backend on cuda needs onnxruntime-gpu and a CUDA GPU, but the installed "
                f"onnxruntime offers only {self._ort.get_available_providers()}; install it (in an environment "
                f"without the CPU onnxruntime) with: {install_hint('ort-gpu')}"
            )
        self._pinning = CpuPinning(cpus)  # last: nothing after it can fail

    # ----- compile step --------------------------------------------------------
    def session_options(self) -> Any:
        """The ``SessionOptions`` every session of this backend uses."""
        ort = self._ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def load(self, prepared: Any) -> Runner:
        """Create a session for ``prepared`` (anything with a ``path`` to an ONNX file, or a path).

        Returns:
            A runner with input and outputs bound once; on the CPU timed with the
            host clock, on CUDA with events (see the module docstring).
        """
        path = Path(getattr(prepared, "path", prepared))
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist: export the graph first (prepare)")
        if self.device_kind == "cuda":
            return _OrtCudaRunner(self, path)
        return _ort_cpu_runner(self, path)

    # ----- description ---------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Provider, device, threads, execution mode and optimization level."""
        out: dict[str, Any] = {
            **self.config.to_dict(),
            "provider": "CUDAExecutionProvider" if self.device_kind == "cuda" else "CPUExecutionProvider",
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization": "all",
            "io_binding": True,
        }
        if self.device_kind == "cuda":
            out["cudnn_conv_algo_search"] = self.cudnn_conv_algo_search
        return out

    def close(self) -> None:
        """Give the process back the CPUs it had before this backend pinned it."""
        if not self.closed:
            self._pinning.restore()
        super().close()

    def environment(self) -> dict[str, Any]:
        """onnxruntime version, providers, device and host facts."""
        env: dict[str, Any] = {
            "engine": "onnxruntime",
            "engine_version": self._ort.__version__,
            "providers_available": list(self._ort.get_available_providers()),
            **host_environment(),
        }
        if self.device_kind == "cuda":
            env.update(gpu_environment(self.device_index))
        else:
            env["device_name"] = env["host_cpu"]
        return env


def _numpy_dtype(type_str: str) -> str:
    try:
        return _ORT_TYPES[type_str]
    except KeyError:
        raise ValueError(f"graph input type {type_str} is not supported: inputs must be float32 or float16") from None


def _random_input(session: Any) -> tuple[str, Any]:
    """The single input's name and seeded random data of its (static) shape and type."""
    import numpy as np

    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"graph has {len(inputs)} inputs: block graphs must have exactly one")
    spec = inputs[0]
    shape = tuple(spec.shape)
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"graph input {spec.name} has a dynamic shape {shape}: export with a fixed batch")
    data = np.random.default_rng(0).standard_normal(shape).astype(_numpy_dtype(spec.type))
    return spec.name, data


def _ort_cpu_runner(backend: OnnxRuntimeBackend, path: Path) -> HostClockRunner:
    ort = backend._ort
    session = ort.InferenceSession(
        str(path), sess_options=backend.session_options(), providers=["CPUExecutionProvider"]
    )
    name, data = _random_input(session)
    # One plain run gives the output shapes and dtypes, then everything is bound once.
    results = session.run(None, {name: data})
    binding = session.io_binding()
    x = ort.OrtValue.ortvalue_from_numpy(data, "cpu", 0)
    binding.bind_ortvalue_input(name, x)
    outputs = []
    for spec, value in zip(session.get_outputs(), results):
        out = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), value.dtype, "cpu", 0)
        binding.bind_ortvalue_output(spec.name, out)
        outputs.append(out)
    run_options = ort.RunOptions()
    keep = [x, outputs]  # the bound OrtValues must outlive the binding

    def run_once() -> None:
        session.run_with_iobinding(binding, run_options)

    def release() -> None:
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        keep.clear()

    info = {"provider": "CPUExecutionProvider", "threads": backend.threads, "inter_op_threads": 1}
    return HostClockRunner(run_once, release=release, info=info)


class _OrtCudaRunner(RunnerBase):
    """CUDA provider session with device I/O binding, timed on its compute stream."""

    def __init__(self, backend: OnnxRuntimeBackend, path: Path) -> None:
        super().__init__({"provider": "CUDAExecutionProvider"})
        ort = backend._ort
        # user_compute_stream reaches the provider from Python from 1.18 on; older releases time host-synchronized runs
        streams = version_tuple(ort.__version__) >= MIN_USER_STREAM_VERSION
        self._torch = _torch_cuda() if streams else None
        options: dict[str, Any] = {
            "device_id": backend.device_index,
            "cudnn_conv_algo_search": backend.cudnn_conv_algo_search,
        }
        if not backend.config.tf32:  # passed only to turn it off, so releases without the option still load
            if version_tuple(ort.__version__) < MIN_TF32_OPTION_VERSION:
                raise BackendUnavailable(
                    f"onnxruntime {ort.__version__} cannot turn TF32 off on the CUDA provider (use_tf32 came in "
                    "1.16), so its fp32 is not fp32: install onnxruntime-gpu>=1.16, or pass --tf32 to accept TF32"
                )
            options["use_tf32"] = "0"
        if self._torch is not None:
            torch = self._torch
            self._stream = torch.cuda.Stream(device=backend.device_index)
            options["user_compute_stream"] = str(self._stream.cuda_stream)
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self.clock = "cuda_events"
            self.timer_resolution_ms = 0.0005
            self.info["sync"] = "events_on_user_compute_stream"
        else:
            from kernels_bench.timing import host_clock_resolution_ms

            self.clock = "host"
            self.timer_resolution_ms = host_clock_resolution_ms()
            self.info["sync"] = "run_synchronizes" if streams else "run_synchronizes (onnxruntime < 1.18)"
        self._session = ort.InferenceSession(
            str(path),
            sess_options=backend.session_options(),
            providers=[("CUDAExecutionProvider", options), "CPUExecutionProvider"],
        )
        check_cuda_provider(self._session.get_providers())
        name, data = _random_input(self._session)
        results = self._session.run(None, {name: data})
        self._binding = self._session.io_binding()
        self._x = ort.OrtValue.ortvalue_from_numpy(data, "cuda", backend.device_index)
        self._binding.bind_ortvalue_input(name, self._x)
        self._outputs = []
        for spec, value in zip(self._session.get_outputs(), results):
            out = ort.OrtValue.ortvalue_from_shape_and_type(
                list(value.shape), value.dtype, "cuda", backend.device_index
            )
            self._binding.bind_ortvalue_output(spec.name, out)
            self._outputs.append(out)
        self._run_options = ort.RunOptions()
        self._device_index = backend.device_index
        self._hold: SpinHold | None = None
        self._scratch: Any = None
        if self._torch is not None:
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
            self._hold = SpinHold(self._torch, self._stream)
            self.info.update(self._hold.info())

    def device_state(self) -> dict[str, Any] | None:
        """The GPU's SM clock, temperature and throttle reasons now (NVML), or ``None``."""
        return device_state(self._device_index)

    def _flush_l2(self) -> None:
        torch = self._torch
        if self._scratch is None:
            l2 = int(getattr(torch.cuda.get_device_properties(self._device_index), "L2_cache_size", 0) or 0)
            self._scratch = torch.empty(flush_bytes(l2), dtype=torch.uint8, device=f"cuda:{self._device_index}")
        with torch.cuda.stream(self._stream):
            self._scratch.zero_()

    def _timed(self, iters: int, cold_l2: bool) -> float:
        """Total GPU time of ``iters`` back-to-back runs, ms (the GPU held until all are enqueued)."""
        session, binding, opts = self._session, self._binding, self._run_options
        if self._torch is None:
            start = time.perf_counter_ns()
            for _ in range(iters):
                session.run_with_iobinding(binding, opts)
            return (time.perf_counter_ns() - start) / 1e6
        if cold_l2:
            self._flush_l2()
        assert self._hold is not None
        self._hold.engage(iters)
        self._start.record(self._stream)
        t0 = time.perf_counter()
        for _ in range(iters):
            session.run_with_iobinding(binding, opts)
        self._end.record(self._stream)
        self._hold.note_enqueue((time.perf_counter() - t0) * 1e3, iters)
        self._end.synchronize()
        self.info["hold_short"] = self._hold.short
        return float(self._start.elapsed_time(self._end))

    def _release(self) -> None:
        """Drop the session and its device buffers."""
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()
        self._outputs.clear()
        self._x = None
        self._session = None
        self._scratch = None


def version_tuple(version: str) -> tuple[int, int]:
    """``"1.18.1"`` -> ``(1, 18)`` (digits of the first two parts; a part without any counts as 0)."""
    parts = []
    for p in (str(version).split(".") + ["0", "0"])[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return parts[0], parts[1]


def check_cuda_provider(providers: Sequence[str]) -> None:
    """Refuse a session that did not get the CUDA provider (onnxruntime falls back to the CPU silently).

    Timing such a session with events on the CUDA stream would time an idle
    stream. Raises :class:`~kernels_bench.errors.BackendUnavailable` naming the
    providers it got.
    """
    got = list(providers)
    if got and got[0] == "CUDAExecutionProvider":
        return
    raise BackendUnavailable(
        f"onnxruntime did not give this session the CUDA provider (it got {', '.join(got) or 'none'}), so it "
        "would run on the CPU: check the CUDA and cuDNN libraries onnxruntime-gpu needs (its log names the one "
        "that failed to load)"
    )


def _torch_cuda() -> Any:
    """torch if it is importable and sees a GPU, else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None
