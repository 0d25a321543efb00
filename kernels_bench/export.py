"""ONNX export of block keys: one static-shape graph per key (or per chain of keys), cached on disk.

Two ways to the fp32 graph (``method``):

- ``"direct"`` (default): :func:`kernels_bench.onnx_graphs.block_graph` writes
  the graph straight from the keys with numpy and ``onnx.helper``: seeded
  weights, BN folded, the same nodes as the TorchScript export of
  :mod:`kernels_bench.blocks` (tests/test_onnx_graphs.py proves both compute
  the same function with the same op types). No torch import, no tracing.
- ``"torch"`` (reference): the torch module of :mod:`kernels_bench.blocks`
  exported with the TorchScript exporter (``dynamo=False``), constants folded,
  so every BatchNormalization is folded into the conv before it.

Precisions:

- ``fp32``: the graph above.
- ``fp16``: the fp32 graph converted to float16 throughout (input, output,
  weights, constants). Strongly typed TensorRT takes precision from the graph.
- ``int8``: the fp32 graph with explicit Q/DQ (:mod:`kernels_bench.quant`), in
  the flavour of the target engine ("tensorrt" or "onnxruntime"); input and
  output stay float32.

Graphs are cached as ``<cache_dir>/<sha256>.onnx``, the hash covering the key
strings, batch, precision, flavour, opset, seed, method and
:data:`EXPORT_FORMAT_VERSION`; files are written atomically. The default cache
directory is ``$LATENCY_CACHE_DIR`` when set, else ``~/.cache/nas-latency/onnx``.

torch (only for ``method="torch"``), onnx and onnxruntime are imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kernels_bench.config import PRECISIONS
from tables.atomic import write_bytes
from tables.key import BlockKey, chain_keys, parse_key

if TYPE_CHECKING:  # pragma: no cover
    import onnx

#: Bump when the exported graphs change for the same inputs (invalidates every cache entry).
EXPORT_FORMAT_VERSION = 2

#: Ways to build the fp32 graph: "direct" (numpy + onnx.helper, the default) or "torch" (TorchScript export).
METHODS: tuple[str, ...] = ("direct", "torch")

#: Precisions the exporter writes: every precision but bf16 (ONNX graphs for bf16 are not written; the
#: torch backend runs bf16 from its modules).
EXPORT_PRECISIONS: tuple[str, ...] = tuple(p for p in PRECISIONS if p != "bf16")

#: Engine families a graph can be exported for (they differ in opset choice and INT8 flavour).
TARGETS: tuple[str, ...] = ("onnxruntime", "tensorrt")

#: Opset used for every target unless a caller passes one (see :func:`choose_opset`).
DEFAULT_OPSET = 17

#: Highest opset TensorRT 8.x's ONNX parser reads.
TENSORRT8_MAX_OPSET = 17

#: Opsets accepted: 13 is the first with per-axis Q/DQ; 20 is the highest TensorRT 10 parses.
OPSET_RANGE: tuple[int, int] = (13, 20)

#: Float types around int8 Q/DQ: float32, or float16 (strongly typed TensorRT, the float type of the graph).
QDQ_FLOATS: tuple[str, ...] = ("float32", "float16")

#: First opset whose QuantizeLinear/DequantizeLinear take float16 inputs and scales.
FP16_QDQ_MIN_OPSET = 19

INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass(frozen=True)
class ExportedGraph:
    """One ONNX file on disk and what a backend needs to run it.

    ``input_shape`` and ``output_shapes`` include the batch; ``input_dtype`` is
    "float32" or "float16"; ``flavour`` is the INT8 Q/DQ flavour ("tensorrt",
    "onnxruntime") or None; ``export_s`` is the wall time of this call in
    seconds (small on a cache hit).
    """

    path: Path
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    precision: str
    flavour: str | None
    opset: int
    cache_hit: bool
    export_s: float


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}: allowed {', '.join(TARGETS)}")


def _check_precision(precision: str) -> None:
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"the exporter writes no {precision!r} graphs: allowed {', '.join(EXPORT_PRECISIONS)}")


def choose_opset(target: str, engine_version: str | None = None) -> int:
    """The ONNX opset to export for ``target`` ("onnxruntime" or "tensorrt").

    TensorRT 8.6's parser reads opsets up to 17 and TensorRT 10 reads 9 to 20;
    17 is used for every TensorRT version so that engines of all versions are
    built from the same graphs (a caller may pass a higher opset to
    :func:`export_keys` for TensorRT >= 10). onnxruntime also gets 17.
    ``engine_version`` ("8.6.1", "10.3.0") must start with a major version
    number when given. Raises ``ValueError`` for an unknown target or an
    unreadable version.
    """
    _check_target(target)
    if engine_version is not None:
        m = re.match(r"^\s*(\d+)(\.\d+)*", str(engine_version))
        if m is None:
            raise ValueError(f"unreadable engine version {engine_version!r}: expected e.g. '8.6.1' or '10.3.0'")
        if target == "tensorrt" and int(m.group(1)) < 10:
            return TENSORRT8_MAX_OPSET
    return DEFAULT_OPSET


def default_cache_dir() -> Path:
    """``$LATENCY_CACHE_DIR`` when set, else ``~/.cache/nas-latency/onnx``."""
    env = os.environ.get("LATENCY_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nas-latency" / "onnx"


def _normalize_keys(keys: BlockKey | str | Sequence[BlockKey | str]) -> list[BlockKey]:
    if isinstance(keys, (BlockKey, str)):
        keys = [keys]
    out = [parse_key(k) if isinstance(k, str) else k for k in keys]
    if not out:
        raise ValueError("export_keys needs at least one block key")
    for k in out:
        if not isinstance(k, BlockKey):
            raise ValueError(f"export_keys needs BlockKey objects or key strings, got {type(k).__name__}")
    chain_keys(out)
    return out


def _check_opset(opset: int) -> int:
    lo, hi = OPSET_RANGE
    if isinstance(opset, bool) or not isinstance(opset, int) or not lo <= opset <= hi:
        raise ValueError(f"opset={opset!r} not supported: use an integer from {lo} to {hi}")
    return opset


def _cache_path(cache_dir: Path | str | None, payload: dict[str, object]) -> Path:
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    payload = {**payload, "format": EXPORT_FORMAT_VERSION}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return directory / f"{digest}.onnx"


def _export_fp32(keys: list[BlockKey], batch: int, opset: int, seed: int) -> onnx.ModelProto:
    """The fp32 ONNX graph of the chained keys at ``batch``, BN folded, by the TorchScript exporter."""
    import io

    import onnx
    import torch

    from kernels_bench.blocks import build_network

    module = build_network(keys, seed=seed)
    example = torch.zeros((batch, *keys[0].input_shape), dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL,
        )
    model = onnx.load_from_string(buf.getvalue())
    left = [n.name or n.output[0] for n in model.graph.node if n.op_type == "BatchNormalization"]
    if left:
        raise RuntimeError(f"BatchNormalization not folded at export for {[str(k) for k in keys]}: {left}")
    return model


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of fp32 ``model`` in float16: inputs, outputs, float initializers, Constant nodes and Casts.

    Intermediate ``value_info`` is dropped (shape inference restores it). The
    result passes ``onnx.checker`` with full shape and type checking.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph

    def convert_tensor(t: onnx.TensorProto) -> onnx.TensorProto:
        if t.data_type != TensorProto.FLOAT:
            return t
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)

    converted = [convert_tensor(t) for t in g.initializer]
    del g.initializer[:]
    g.initializer.extend(converted)
    for vi in (*g.input, *g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Constant" and a.name == "value":
                a.t.CopyFrom(convert_tensor(a.t))
            elif node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    onnx.checker.check_model(out, full_check=True)
    return out


def export_keys(
    keys: BlockKey | str | Sequence[BlockKey | str],
    batch: int,
    precision: str,
    *,
    target: str = "onnxruntime",
    opset: int | None = None,
    cache_dir: Path | str | None = None,
    seed: int = 0,
    method: str = "direct",
    qdq_weights: str = "int8",
    qdq_float: str = "float32",
) -> ExportedGraph:
    """Export one key, or a chain of keys as one network, to a cached static-shape ONNX file.

    ``batch`` is the fixed batch size (images per inference); ``precision``
    one of fp32, fp16, int8; ``target`` "onnxruntime" or "tensorrt" (it picks
    the INT8 flavour and, when ``opset`` is None, the opset via
    :func:`choose_opset`); ``seed`` seeds the weights and the INT8 calibration
    data; ``method`` builds the fp32 graph "direct" (numpy + onnx.helper, no
    torch) or "torch" (TorchScript export of the torch module, the reference).
    For int8: ``qdq_weights`` is how weights are stored (see
    :data:`kernels_bench.quant.QDQ_WEIGHTS`), ``qdq_float`` the float type around
    the Q/DQ: "float32", or "float16" for strongly typed TensorRT, which runs
    what is not quantized in the graph's own float type (the opset is then at
    least 19, the first whose Q/DQ take float16). Raises ``ValueError`` for an
    unknown precision, target, method or int8 form, a batch below 1, an
    unsupported opset or keys that do not chain.
    """
    start = time.perf_counter()
    _check_precision(precision)
    _check_target(target)
    if method not in METHODS:
        raise ValueError(f"unknown export method {method!r}: allowed {', '.join(METHODS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r}: use a positive integer batch size")
    key_list = _normalize_keys(keys)
    opset = _check_opset(choose_opset(target) if opset is None else opset)
    flavour = target if precision == "int8" else None
    if qdq_float not in QDQ_FLOATS:
        raise ValueError(f"unknown int8 float type {qdq_float!r}: allowed {', '.join(QDQ_FLOATS)}")
    if precision != "int8":
        qdq_weights, qdq_float = "int8", "float32"  # no Q/DQ: the options change nothing
    elif qdq_float == "float16":
        opset = max(opset, FP16_QDQ_MIN_OPSET)
    path = _cache_path(
        cache_dir,
        {
            "keys": [str(k) for k in key_list],
            "batch": batch,
            "precision": precision,
            "flavour": flavour,
            "opset": opset,
            "seed": int(seed),
            "method": method,
            **({"qdq_weights": qdq_weights, "qdq_float": qdq_float} if precision == "int8" else {}),
        },
    )
    hit = path.exists()
    if not hit:
        if method == "direct":
            from kernels_bench.onnx_graphs import block_graph

            model = block_graph(key_list, batch, opset=opset, seed=seed)
        else:
            model = _export_fp32(key_list, batch, opset, seed)
        if precision == "fp16":
            model = to_float16(model)
        elif precision == "int8":
            from kernels_bench.quant import quantize_model

            model = quantize_model(model, target, seed=seed, weights=qdq_weights)
            if qdq_float == "float16":
                model = to_float16(model)
        write_bytes(path, model.SerializeToString())
    return ExportedGraph(
        path=path,
        input_name=INPUT_NAME,
        input_shape=(batch, *key_list[0].input_shape),
        input_dtype="float16" if precision == "fp16" or qdq_float == "float16" else "float32",
        output_names=(OUTPUT_NAME,),
        output_shapes=((batch, *key_list[-1].output_shape),),
        precision=precision,
        flavour=flavour,
        opset=opset,
        cache_hit=hit,
        export_s=time.perf_counter() - start,
    )


def export_identity(
    input_shape: tuple[int, ...], precision: str, *, opset: int = DEFAULT_OPSET, cache_dir: Path | str | None = None
) -> ExportedGraph:
    """A one-node Identity graph (output = input, same shape and dtype) for measuring a backend's floor.

    ``input_shape`` includes the batch. The tensor is float16 for ``fp16`` and
    float32 otherwise (an int8 graph keeps float32 input and output). The
    Identity node joins graph input to graph output, so onnxruntime keeps and
    runs it. Raises ``ValueError`` for an unknown precision, a shape with
    non-positive sizes or an unsupported opset.
    """
    start = time.perf_counter()
    _check_precision(precision)
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"input_shape={input_shape!r}: use a tuple of positive integers, batch first")
    opset = _check_opset(opset)
    dtype = "float16" if precision == "fp16" else "float32"
    path = _cache_path(cache_dir, {"identity": list(shape), "dtype": dtype, "opset": opset})
    hit = path.exists()
    if not hit:
        import onnx
        from onnx import TensorProto, helper

        elem = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
        graph = helper.make_graph(
            [helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME], name="identity")],
            "identity",
            [helper.make_tensor_value_info(INPUT_NAME, elem, shape)],
            [helper.make_tensor_value_info(OUTPUT_NAME, elem, shape)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="kernels_bench")
        # The IR version that goes with the opset, not onnx's newest, so older parsers (TensorRT 8.6) read it.
        model.ir_version = helper.find_min_ir_version_for([model.opset_import[0]])
        onnx.checker.check_model(model, full_check=True)
        write_bytes(path, model.SerializeToString())
    return ExportedGraph(
        path=path,
        input_name=INPUT_NAME,
        input_shape=shape,
        input_dtype=dtype,
        output_names=(OUTPUT_NAME,),
        output_shapes=(shape,),
        precision=precision,
        flavour=None,
        opset=opset,
        cache_hit=hit,
        export_s=time.perf_counter() - start,
    )
