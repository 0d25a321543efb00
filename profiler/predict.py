"""Predict whole models from a latency table: map an ONNX graph (or a torch module) onto block keys, sum them.

Command line::

    python -m profiler.predict --table T.parquet resnet18.onnx mobilenet_v2.onnx
    python -m profiler.predict --table T.parquet model.onnx --json
    python -m profiler.predict --table T.parquet model.onnx --input-shape 3x224x224   # dynamic H, W

For each model it prints the prediction, calibrated (when the table has a calibration) and raw
(the plain block sum), in ms per batch of the table's batch and ms per image, and the per-block
breakdown with the nodes of each block. Python::

    from profiler.predict import map_model, predict_model
    mapping = map_model("resnet18.onnx")              # ModelMapping: .keys, .unmapped
    result = predict_model(table, "resnet18.onnx")    # ModelPrediction: .ms_per_batch, .raw_ms_per_batch, ...
    result = predict_model(table, module, input_shape=(3, 224, 224))   # a torch nn.Module, exported first

The graph matching is :mod:`profiler.onnx_map`. A model is summed only when every node of it
belongs to a block: otherwise its nodes are listed with the reason and the command exits 1
(:class:`~profiler.onnx_map.UnmappableModel` in Python), never printing a partial sum. Keys the
table lacks give the table's missing-keys error: an archs file of exactly those keys is written
next to the model (``MODEL.onnx.missing_archs.json``) with the ``profiler.build`` command that
measures them. Bad input -- a file that is not ONNX or is truncated, an input with dynamic
spatial sizes, several inputs, a static batch other than the table's -- is one line and exit
status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.onnx_map import ModelMapping, UnmappableModel, map_graph
from tables.cli import CliParser, UsageError, WorkFailed, run_cli, text_arg
from tables.errors import one_line
from tables.paths import missing_archs_path

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from tables.predictor import Prediction
    from tables.table import LatencyTable


class BadModel(ValueError):
    """The model file or its input cannot be used (not ONNX, truncated, dynamic shapes, ...): exit status 2."""


# --------------------------------------------------------------------------- loading
def load_onnx(source: Any, *, name: str | None = None) -> tuple[onnx.ModelProto, str]:
    """An ONNX model and a label for messages, from a path, bytes or a ``ModelProto``.

    Raises :class:`BadModel` (one line) for a missing file, a file that is not ONNX or is
    truncated, and a model the ONNX checker refuses. Weights kept as external data are not
    read (only their shapes are needed).
    """
    import onnx

    data: bytes | str | None = None  # what the checker reads: bytes, or the path (external data beside it)
    if isinstance(source, onnx.ModelProto):
        model, label = source, name or "<model>"
    else:
        if isinstance(source, (bytes, bytearray)):
            data, label = bytes(source), name or "<bytes>"
        else:
            path = Path(source)
            label = name or str(path)
            if not path.exists():
                raise BadModel(f"ONNX model not found: {path}")
            if path.is_dir():
                raise BadModel(f"{path} is a folder, not an ONNX model file")
            data = str(path)
        try:
            model = onnx.load_model_from_string(data if isinstance(data, bytes) else Path(data).read_bytes())
        except Exception as exc:  # protobuf's DecodeError and friends
            raise BadModel(
                f"{label} is not an ONNX model or is truncated ({one_line(exc)}); export it again "
                "(torch.onnx.export) and check the file was copied whole"
            ) from None
    if not model.graph.node or not model.graph.input:
        raise BadModel(
            f"{label} is not an ONNX model (no graph nodes or inputs); give a .onnx file exported from torch"
        )
    try:
        onnx.checker.check_model(data if data is not None else model)  # not re-serialized
    except Exception as exc:  # onnx.checker.ValidationError
        raise BadModel(f"{label} is not a valid ONNX model (truncated or damaged?): {one_line(exc, 300)}") from None
    return model, label


def is_torch_module(obj: Any) -> bool:
    """True when ``obj`` is a torch ``nn.Module`` (without importing torch when nothing has)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def export_module(module: Any, input_shape: Sequence[int], *, batch: int = 1) -> bytes:
    """A torch ``nn.Module`` as a serialized ONNX model, exported in eval mode at ``batch`` x ``input_shape`` (C, H, W).

    Uses torch's TorchScript exporter (``dynamo=False``, constants folded: BN folded into the convs),
    much faster than the dynamo exporter for small graphs. The module's training mode is restored.
    Raises :class:`BadModel` when ``input_shape`` is not three positive sizes or the export fails.
    """
    import torch

    shape = _shape3(input_shape, "input_shape")
    example = torch.zeros((int(batch), *shape), dtype=torch.float32)
    buffer = io.BytesIO()
    training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                do_constant_folding=True,
            )
    except Exception as exc:
        raise BadModel(f"torch.onnx.export could not export {type(module).__name__}: {one_line(exc, 300)}") from None
    finally:
        module.train(training)
    return buffer.getvalue()


def _shape3(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise BadModel(f"{what} {shape!r} is not a shape; give channels, height, width, e.g. (3, 224, 224)") from None
    if len(dims) != 3 or min(dims) <= 0:
        raise BadModel(f"{what} {shape!r} must be three positive sizes: channels, height, width (e.g. 3x224x224)")
    return dims  # type: ignore[return-value]


def _dim_text(dim: Any) -> str:
    return str(dim.dim_value) if dim.HasField("dim_value") else (dim.dim_param or "?")


def image_input(
    model: onnx.ModelProto, label: str, input_shape: Sequence[int] | None = None
) -> tuple[str, int | None, tuple[int, int, int]]:
    """(input name, static batch or ``None``, (C, H, W)) of a model's one image input.

    ``input_shape`` (C, H, W, or N, C, H, W) gives the sizes the model leaves dynamic; a static size
    it contradicts is refused. Raises :class:`BadModel` for several inputs, an input that is not
    N x C x H x W, and dynamic channels or spatial sizes without ``input_shape``.
    """
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise BadModel(
            f"{label} has {len(inputs)} inputs ({names}); models with one image input (N, C, H, W) are mapped"
        )
    inp = inputs[0]
    dims = list(inp.type.tensor_type.shape.dim)
    if len(dims) != 4:
        shape = "x".join(_dim_text(d) for d in dims) or "unknown"
        raise BadModel(f"{label}: input '{inp.name}' has shape {shape}; an image input is N x C x H x W")
    static = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    given: list[int | None] = [None, None, None, None]
    if input_shape is not None:
        values = [int(v) for v in input_shape]
        if len(values) not in (3, 4) or min(values) <= 0:
            raise BadModel(f"input shape {list(input_shape)} must be C x H x W or N x C x H x W, positive sizes")
        given[4 - len(values) :] = values
    sizes: list[int | None] = []
    for i, (have, want) in enumerate(zip(static, given)):
        if have is not None and want is not None and have != want:
            shape = "x".join(_dim_text(d) for d in dims)
            wanted = "x".join(str(v) for v in given if v is not None)
            raise BadModel(
                f"{label}: input '{inp.name}' is {shape}, which the input shape given ({wanted}) contradicts"
            )
        sizes.append(have if have is not None else want)
        if sizes[-1] is None and i > 0:
            shape = "x".join(_dim_text(d) for d in dims)
            which = ("channels", "height", "width")[i - 1]
            raise BadModel(
                f"{label}: input '{inp.name}' has a dynamic {which} ({shape}); export it with static shapes "
                "(a fixed example input, no dynamic_axes on C, H, W) or pass --input-shape CxHxW "
                "(input_shape=(C, H, W))"
            )
    return inp.name, sizes[0], (int(sizes[1]), int(sizes[2]), int(sizes[3]))  # type: ignore[arg-type]


def map_model(
    source: Any, *, input_shape: Sequence[int] | None = None, name: str | None = None, batch: int = 1
) -> ModelMapping:
    """Load a model and map its graph onto block keys (:func:`profiler.onnx_map.map_graph`).

    ``source``: a path to an ``.onnx`` file, its bytes, an ``onnx.ModelProto`` or a torch
    ``nn.Module`` (exported at ``batch`` x ``input_shape`` first; ``input_shape`` (C, H, W) is then
    required). ``input_shape`` gives the sizes an ONNX model leaves dynamic. Raises
    :class:`BadModel` for input that cannot be used; unmapped nodes are listed in the result.
    """
    if is_torch_module(source):
        if input_shape is None:
            raise BadModel(f"give input_shape=(C, H, W) to map the torch module {type(source).__name__}")
        name = name or type(source).__name__
        source = export_module(source, list(input_shape)[-3:], batch=batch)
    model, label = load_onnx(source, name=name)
    input_name, model_batch, shape = image_input(model, label, input_shape)
    return map_graph(model, input_name, shape, batch=model_batch, label=label)


@dataclass
class ModelPrediction:
    """A mapped model's predicted latency.

    Attributes:
        mapping: how the graph was mapped (:class:`~profiler.onnx_map.ModelMapping`).
        prediction: :func:`tables.predictor.predict` of its keys (calibrated when the table has a calibration).
    """

    mapping: ModelMapping
    prediction: Prediction

    @property
    def ms_per_batch(self) -> float:
        """Predicted latency of one inference of a batch of the table's batch size, ms (calibrated if possible)."""
        return self.prediction.ms_per_batch

    @property
    def ms_per_image(self) -> float:
        """:attr:`ms_per_batch` divided by the table's batch, ms per image."""
        return self.prediction.ms_per_image

    @property
    def raw_ms_per_batch(self) -> float:
        """The plain sum of the blocks' table entries, ms per batch."""
        return self.prediction.sum_ms

    @property
    def raw_ms_per_image(self) -> float:
        """:attr:`raw_ms_per_batch` divided by the table's batch, ms per image."""
        return self.prediction.sum_ms / self.prediction.batch

    @property
    def calibrated(self) -> bool:
        """Whether :attr:`ms_per_batch` went through the table's calibration."""
        return self.prediction.calibrated

    def breakdown(self) -> list[dict[str, Any]]:
        """One dict per block: position, stage, key, block type, latency_ms (ms per batch), nodes (names)."""
        rows = self.prediction.breakdown.to_dict("records")
        for row, block in zip(rows, self.mapping.blocks):
            row["nodes"] = list(block.nodes)
            row["position"], row["stage"] = int(row["position"]), int(row["stage"])
            row["latency_ms"] = float(row["latency_ms"])
        return rows

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the model, its input, both predictions (ms per batch and per image) and the breakdown."""
        m = self.mapping
        return {
            "model": m.source,
            "mapped": True,
            "input": m.input_name,
            "input_shape": list(m.input_shape),
            "model_batch": m.batch,
            "batch": self.prediction.batch,
            "nodes": m.n_nodes,
            "blocks": len(m.blocks),
            "calibrated": self.calibrated,
            "ms_per_batch": self.ms_per_batch,
            "ms_per_image": self.ms_per_image,
            "raw_ms_per_batch": self.raw_ms_per_batch,
            "raw_ms_per_image": self.raw_ms_per_image,
            "interval": {
                "level": self.prediction.level,
                "low_ms": self.prediction.low_ms,
                "high_ms": self.prediction.high_ms,
                "basis": self.prediction.interval_basis,
            },
            "n_estimated": self.prediction.n_estimated,
            "estimated_keys": list(self.prediction.estimated_keys),
            "breakdown": self.breakdown(),
        }


def check_batch(mapping: ModelMapping, table: LatencyTable) -> None:
    """:class:`BadModel` when the model's static batch is not the table's (a dynamic batch takes the table's)."""
    if mapping.batch is not None and mapping.batch != table.batch:
        raise BadModel(
            f"{mapping.source}: input '{mapping.input_name}' has batch {mapping.batch}, but the table was measured "
            f"at batch {table.batch}; export the model with batch {table.batch} (or a dynamic batch) or use a "
            f"table of batch {mapping.batch}"
        )


def predict_model(
    table: LatencyTable,
    source: Any,
    *,
    input_shape: Sequence[int] | None = None,
    calibrated: bool = True,
    name: str | None = None,
    estimate_missing: bool = False,
    level: float = 0.9,
) -> ModelPrediction:
    """Map a model (see :func:`map_model`; a torch module is exported at the table's batch) and predict it.

    Raises :class:`BadModel` for unusable input or a static batch other than the table's,
    :class:`~profiler.onnx_map.UnmappableModel` when some node belongs to no block (nothing is summed),
    and :class:`tables.table.MissingKeysError` for keys the table lacks (unless ``estimate_missing``: they are
    then estimated, see :func:`tables.predictor.predict`, as is the interval at ``level``).
    """
    from tables.predictor import predict

    mapping = map_model(source, input_shape=input_shape, name=name, batch=table.batch)
    check_batch(mapping, table)
    keys = mapping.require_complete()
    return ModelPrediction(
        mapping, predict(table, keys, calibrated=calibrated, estimate_missing=estimate_missing, level=level)
    )


# --------------------------------------------------------------------------- CLI
def parse_shape(text: str) -> tuple[int, ...]:
    """``"3x224x224"`` (or ``"1x3x224x224"``) -> a tuple of ints; ``argparse`` error on anything else."""
    try:
        dims = tuple(int(p) for p in text.lower().replace(",", "x").split("x"))
    except ValueError:
        dims = ()
    if len(dims) not in (3, 4) or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not CxHxW or NxCxHxW (positive sizes), e.g. 3x224x224")
    return dims


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m profiler.predict``."""
    p = CliParser(
        prog="python -m profiler.predict",
        description="Map ONNX models onto a latency table's block keys and predict their latency.",
    )
    p.add_argument("models", nargs="+", type=text_arg, metavar="MODEL.onnx", help="ONNX model files")
    p.add_argument("--table", type=text_arg, required=True, help="latency table (.parquet or a folder)")
    p.add_argument("--input-shape", type=parse_shape, help="CxHxW (or NxCxHxW) for models exported with dynamic sizes")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument(
        "--estimate-missing",
        action="store_true",
        help="estimate the keys the table lacks from its measured keys (counted, and widening the interval) "
        "instead of refusing",
    )
    p.add_argument("--level", type=float, default=0.9, help="nominal coverage of the prediction interval (default 0.9)")
    return p


def _unmapped_text(mapping: ModelMapping) -> str:
    lines = [
        f"{mapping.source}: cannot be mapped: {len(mapping.unmapped)} of {mapping.n_nodes} nodes belong to no block"
    ]
    width = max(len(u.name) for u in mapping.unmapped)
    lines += [f"  {u.name:<{width}}  {u.op:<18} {u.reason}" for u in mapping.unmapped]
    return "\n".join(lines)


def _prediction_text(result: ModelPrediction, table: LatencyTable) -> str:
    m = result.mapping
    cal = table.calibration
    if result.calibrated and cal is not None:
        how = f"calibrated ({cal.model})"
    else:
        how = "no calibration: the raw block sum"
    lines = [
        f"{m.source}: {len(m.blocks)} blocks from a {'x'.join(map(str, m.input_shape))} input ({m.n_nodes} nodes), "
        f"batch {table.batch}",
        f"  predicted {result.ms_per_batch:.4g} ms per batch, {result.ms_per_image:.4g} ms per image ({how}); "
        f"raw block sum {result.raw_ms_per_batch:.4g} ms per batch, {result.raw_ms_per_image:.4g} ms per image",
    ]
    p = result.prediction
    lines.append(
        f"  {p.level * 100:.0f}% interval {p.low_ms:.4g} .. {p.high_ms:.4g} ms per batch ({p.interval_basis})"
        + (f"; {p.n_estimated} of {len(m.blocks)} blocks estimated, not measured (marked *)" if p.n_estimated else "")
    )
    estimated = set(p.estimated_keys)
    rows = result.breakdown()
    width = max(len(r["key"]) for r in rows)
    lines.append(f"  {'#':>3}  {'ms/batch':>10}  {'key':<{width}}  nodes")
    for r in rows:
        nodes = r["nodes"]
        span = nodes[0] if len(nodes) == 1 else f"{nodes[0]} .. {nodes[-1]} ({len(nodes)})"
        mark = "*" if r["key"] in estimated else " "
        lines.append(f"  {r['position']:>3}  {r['latency_ms']:>10.4g}{mark} {r['key']:<{width}}  {span}")
    return "\n".join(lines)


def _missing_keys_error(
    missing: dict[str, Any], lacking: list[str], table: LatencyTable, table_path: Path
) -> UsageError:
    """The one-line error for keys the table lacks, after writing them as an archs file next to the first model."""
    from profiler.tablebuild import build_command
    from tables.table import write_archs_file

    archs_file = missing_archs_path(lacking[0])
    write_archs_file(missing.values(), archs_file)
    folder = table_path.parent if table_path.is_file() else table_path
    return UsageError(
        f"{len(missing)} block key(s) of {', '.join(lacking)} are not in the table {table_path} "
        f"(first: {next(iter(missing))}); they are listed in {archs_file}; profile them with: "
        f"{build_command(table.metadata, archs_file, folder)} (or predict with --estimate-missing to estimate "
        "them from the table's measured keys)"
    )


def run(args: argparse.Namespace) -> int:
    """Map, predict and print every model; returns 0, or raises for bad input (2) and unmappable models (1)."""
    from tables.predictor import predict
    from tables.table import LatencyTable, MissingKeysError

    table_path = Path(args.table)
    if not table_path.exists():
        raise UsageError(f"latency table not found: {table_path}; build it with python -m profiler.build")
    if not 0.0 < args.level < 1.0:
        raise UsageError(f"--level must be a fraction in (0, 1), got {args.level:g}: e.g. 0.9 for a 90% interval")
    table = LatencyTable.load(table_path)
    mappings = [map_model(Path(m), input_shape=args.input_shape) for m in args.models]
    for mapping in mappings:
        check_batch(mapping, table)
    bad = [m for m in mappings if not m.complete]
    good = [m for m in mappings if m.complete]
    if bad and not args.json:
        print("\n\n".join(_unmapped_text(m) for m in bad))
    results: list[ModelPrediction] = []
    missing: dict[str, Any] = {}
    lacking: list[str] = []
    for m in good:
        try:
            results.append(
                ModelPrediction(m, predict(table, m.keys, estimate_missing=args.estimate_missing, level=args.level))
            )
        except MissingKeysError as exc:
            missing.update((str(k), k) for k in exc.keys)
            lacking.append(m.source)
    if missing:
        raise _missing_keys_error(missing, lacking, table, table_path)
    if args.json:
        docs = {id(r.mapping): r.as_dict() for r in results}
        for m in bad:
            docs[id(m)] = {"model": m.source, "mapped": False, "unmapped": [u.__dict__ for u in m.unmapped]}
        print(
            json.dumps(
                {"table": {**table.identity, "path": str(table_path)}, "models": [docs[id(m)] for m in mappings]},
                indent=1,
            )
        )
    elif results:
        print(("\n\n" if bad else "") + "\n\n".join(_prediction_text(r, table) for r in results))
    if bad:
        first = bad[0].first_cause()
        assert first is not None
        names = ", ".join(f"{m.source} ({len(m.unmapped)} nodes)" for m in bad)
        raise WorkFailed(
            f"{len(bad)} of {len(mappings)} model(s) could not be mapped onto block keys: {names}; "
            f"{first.op} '{first.name}' of {bad[0].source}: {first.reason}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 predicted, 1 a model could not be mapped, 2 bad input)."""
    return run_cli(run, build_parser(), argv)


__all__ = [
    "BadModel",
    "ModelPrediction",
    "UnmappableModel",
    "build_parser",
    "check_batch",
    "export_module",
    "image_input",
    "is_torch_module",
    "load_onnx",
    "main",
    "map_model",
    "parse_shape",
    "predict_model",
]


if __name__ == "__main__":
    sys.exit(main())
