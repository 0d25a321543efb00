"""torch: eager or ``torch.compile``, on the CPU or CUDA, fp32/fp16/bf16.

CPU: ``torch.set_num_threads`` is fixed (option ``threads``, default 1) for the
backend's lifetime and recorded; runs are synchronous and timed with
``time.perf_counter_ns``. fp16 is refused on the CPU (no fast fp16 convolution
kernels: the number would not describe a deployment).

CUDA: the module and its input live on the device; runs are enqueued on a
dedicated ``torch.cuda.Stream`` between two ``torch.cuda.Event(enable_timing=True)``
recorded on that stream, and the end event is waited on; ``cudnn.benchmark`` is
on. With ``cuda_graphs=True`` the forward pass is warmed up on the stream,
captured once into a CUDA graph and the timed region replays the graph.

int8 is refused on every device: use the onnxruntime or tensorrt backend.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kernels_bench.backends.base import (
    Backend,
    CpuPinning,
    HostClockRunner,
    RunnerBase,
    as_key_list,
    check_batch,
    parse_device,
)
from kernels_bench.config import BackendConfig
from kernels_bench.errors import BackendUnavailable, engine_missing
from kernels_bench.gpu import gpu_environment
from kernels_bench.gpu_timing import SpinHold, device_state, flush_bytes
from kernels_bench.timing import Runner
from tables.host import host_environment
from tables.key import BlockKey

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class TorchPrepared:
    """A torch module and the input it takes.

    Attributes:
        module: the eval-mode module, on the CPU in float32.
        input_shape: input shape, batch included.
        precision: ``fp32``, ``fp16`` or ``bf16``.
    """

    module: Any
    input_shape: tuple[int, ...]
    precision: str


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise engine_missing("torch", "cpu", error) from None
    return torch


class TorchBackend(Backend):
    """PyTorch inference.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: CPU threads (``torch.set_num_threads``), >= 1; restored on :meth:`close`.
        cpus: CPU indices to pin this process to (Linux; see :class:`CpuPinning`); the
            previous affinity comes back on :meth:`close`. ``None`` leaves it alone.
        compile: wrap the module in ``torch.compile``.
        compile_mode: ``torch.compile`` mode (``None`` for its default).
        cuda_graphs: on CUDA, capture the forward pass in a CUDA graph and replay it.
        seed: weight seed of the blocks.
    """

    name = "torch"

    def __init__(
        self,
        device: str = "cpu",
        *,
        threads: int = 1,
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graphs: bool = False,
        tf32: bool = False,
        seed: int = 0,
        cpus: Sequence[int] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        del cache_dir  # the torch backend runs its modules directly: it exports nothing to keep
        kind, index = parse_device(device)
        self.config = BackendConfig(
            self.name,
            device,
            threads=threads,
            cpus=tuple(cpus or ()),
            compile=compile,
            cuda_graphs=cuda_graphs,
            tf32=tf32,
        )
        self._torch = torch = _import_torch()
        if kind == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"the torch backend on {device} needs a CUDA build of torch and a GPU, but "
                f"torch {torch.__version__} sees none (torch.cuda.is_available() is False); "
                "install a CUDA torch wheel or use device='cpu'"
            )
        self.device = device
        self.device_kind = kind
        self.device_index = index
        self.threads = threads
        self.compile = bool(compile)
        self.compile_mode = compile_mode
        self.cuda_graphs = bool(cuda_graphs)
        self.seed = seed
        self._pinning = CpuPinning(cpus)  # may refuse; nothing is changed before it
        self._previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        self._previous_cudnn_benchmark = bool(torch.backends.cudnn.benchmark)
        self._previous_tf32 = (bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32))
        if kind == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = self.config.tf32  # one TF32 policy for every backend
            torch.backends.cudnn.allow_tf32 = self.config.tf32

    # ----- export step ---------------------------------------------------------
    def prepare(self, keys: BlockKey | Sequence[BlockKey], batch: int, precision: str) -> TorchPrepared:
        """Build the chained blocks as one eval-mode module (CPU, float32)."""
        self.check_precision(precision)
        from kernels_bench.blocks import build_network

        keys = as_key_list(keys)
        module = build_network(keys, seed=self.seed)
        return TorchPrepared(module, (check_batch(batch), *keys[0].input_shape), precision)

    def prepare_identity(self, input_shape: tuple[int, ...], precision: str) -> TorchPrepared:
        """A module that copies its input into a new tensor of the same size (one copy kernel)."""
        self.check_precision(precision)
        return TorchPrepared(_copy_module(self._torch), tuple(int(d) for d in input_shape), precision)

    # ----- compile step --------------------------------------------------------
    def load(self, prepared: TorchPrepared) -> Runner:
        """Move the module to the device and precision, compile it if asked, return its runner."""
        if not isinstance(prepared, TorchPrepared):
            raise TypeError(f"torch backend loads TorchPrepared objects, got {type(prepared).__name__}")
        self.check_precision(prepared.precision)
        torch = self._torch
        dtype = getattr(torch, _DTYPES[prepared.precision])
        device = torch.device(self.device)
        module = prepared.module.to(device=device, dtype=dtype).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(prepared.input_shape, generator=generator).to(device=device, dtype=dtype)
        model = torch.compile(module, mode=self.compile_mode) if self.compile else module
        info = {"threads": torch.get_num_threads(), "compiled": self.compile}
        if self.device_kind == "cuda":
            return _TorchCudaRunner(torch, model, x, device, self.cuda_graphs, info)

        def run_once() -> None:
            model(x)

        with torch.inference_mode():
            run_once()  # the first call of a compiled module compiles it: part of the compile step
        return HostClockRunner(run_once, info=info, context=torch.inference_mode)

    # ----- description ---------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Device, threads, compile mode, CUDA graphs, cudnn.benchmark."""
        torch = self._torch
        out: dict[str, Any] = {**self.config.to_dict(), "compile_mode": self.compile_mode or "default"}
        if self.device_kind == "cuda":
            out["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
        return out

    def environment(self) -> dict[str, Any]:
        """torch version, CUDA and cuDNN versions, device name, host facts."""
        torch = self._torch
        env: dict[str, Any] = {"engine": "torch", "engine_version": torch.__version__, **host_environment()}
        if self.device_kind == "cuda":
            env.update(gpu_environment(self.device_index))
            env["cuda_runtime"] = torch.version.cuda
            env["cudnn_version"] = torch.backends.cudnn.version()
        else:
            env["device_name"] = env["host_cpu"]
            env["interop_threads"] = torch.get_num_interop_threads()
        return env

    def close(self) -> None:
        """Restore the thread count, cuDNN autotuning and TF32 flags and the CPU affinity set before this backend."""
        if not self.closed:
            torch = self._torch
            torch.set_num_threads(self._previous_threads)
            torch.backends.cudnn.benchmark = self._previous_cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._previous_tf32
            self._pinning.restore()
        super().close()


def _copy_module(torch: Any) -> Any:
    class Copy(torch.nn.Module):
        """Returns a copy of its input: the cheapest graph with the same input and output size."""

        def forward(self, x: Any) -> Any:
            return x.clone()

    return Copy().eval()


class _TorchCudaRunner(RunnerBase):
    """Runs a module on a dedicated stream, timed by events recorded on it."""

    clock = "cuda_events"
    timer_resolution_ms = 0.0005

    def __init__(self, torch: Any, model: Any, x: Any, device: Any, cuda_graphs: bool, info: dict[str, Any]) -> None:
        super().__init__(info)
        self._torch = torch
        self._model = model
        self._x = x
        self._stream = torch.cuda.Stream(device=device)
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._graph = None
        # The input was made on the default stream: order the side stream after it.
        self._stream.wait_stream(torch.cuda.current_stream(device))
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            for _ in range(3):  # warm-up also triggers compilation and cudnn autotuning
                self._out = model(x)
        self._stream.synchronize()
        if cuda_graphs:
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph, stream=self._stream):
                self._out = model(x)
            self._graph = graph
        self.info["cuda_graphs"] = self._graph is not None
        self._device_index = self._stream.device.index or 0
        self._hold = SpinHold(torch, self._stream)
        self._scratch: Any = None
        self.info.update(self._hold.info())

    def _flush_l2(self) -> None:
        """Write a buffer twice the L2 cache's size on the stream (a cold-L2 sample starts after it)."""
        torch = self._torch
        if self._scratch is None:
            l2 = int(getattr(torch.cuda.get_device_properties(self._device_index), "L2_cache_size", 0) or 0)
            self._scratch = torch.empty(flush_bytes(l2), dtype=torch.uint8, device=self._stream.device)
        self._scratch.zero_()

    def device_state(self) -> dict[str, Any] | None:
        """The GPU's SM clock, temperature and throttle reasons now (NVML), or ``None``."""
        return device_state(self._device_index)

    def _timed(self, iters: int, cold_l2: bool) -> float:
        """Total GPU time of ``iters`` back-to-back forward passes (or graph replays), ms.

        The GPU is held by a spin kernel until the host has enqueued all of them,
        so the events time GPU work only (see :mod:`kernels_bench.gpu_timing`).
        """
        torch = self._torch
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            if cold_l2:
                self._flush_l2()
            self._hold.engage(iters)
            self._start.record(self._stream)
            t0 = time.perf_counter()
            if self._graph is not None:
                for _ in range(iters):
                    self._graph.replay()
            else:
                model, x = self._model, self._x
                for _ in range(iters):
                    self._out = model(x)
            self._end.record(self._stream)
            self._hold.note_enqueue((time.perf_counter() - t0) * 1e3, iters)
        self._end.synchronize()
        self.info["hold_short"] = self._hold.short
        return float(self._start.elapsed_time(self._end))

    def _release(self) -> None:
        """Drop the graph, module and tensors (after the stream's work is done)."""
        try:
            self._stream.synchronize()
        finally:
            self._graph = None
            self._model = None
            self._x = None
            self._out = None
            self._scratch = None
