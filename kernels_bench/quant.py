"""Explicit INT8 quantization: QuantizeLinear/DequantizeLinear pairs in an fp32 ONNX graph.

Both flavours are symmetric (int8, zero points 0), with per-channel weight
scales on axis 0 and per-tensor activation scales from one calibration run
(the fp32 graph run once by onnxruntime on a seeded standard-normal batch, every
tensor to calibrate exposed as an output; scale = max|x| / 127).

- ``"tensorrt"``: Q/DQ on the inputs of weighted layers (Conv, Gemm, MatMul:
  the activation and the weight), not on their outputs; biases stay float; the
  residual input of an elementwise Add is quantized so TensorRT fuses the add
  into the conv before it. This is the placement TensorRT's explicit-precision
  mode expects (see shared/notes/TENSORRT.md); :func:`check_tensorrt_qdq`
  lists departures from it.
- ``"onnxruntime"``: the placement of onnxruntime's static QDQ quantizer
  (``quantize_static``, QDQ format, per-channel, symmetric), written directly:
  every float input and output of the ops in :data:`ONNXRUNTIME_QDQ_OPS`
  (conv inputs and outputs included) gets one Q/DQ pair, weights are int8 with
  a DequantizeLinear (axis 0), biases int32 with scale input-scale x
  weight-scale, the pattern its CPU provider fuses into ``QLinearConv``.

onnx and onnxruntime are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnx

#: INT8 Q/DQ flavours, one per engine family.
FLAVOURS: tuple[str, ...] = ("tensorrt", "onnxruntime")

#: Layers whose inputs carry Q/DQ in the TensorRT flavour.
WEIGHTED_OPS: frozenset[str] = frozenset({"Conv", "Gemm", "MatMul"})

#: Ops whose float activations (inputs and outputs) carry Q/DQ in the onnxruntime flavour:
#: those onnxruntime's static QDQ quantizer quantizes among the ops block graphs contain.
ONNXRUNTIME_QDQ_OPS: frozenset[str] = frozenset({"Conv", "Gemm", "Add", "Mul", "Relu", "Clip", "Sigmoid", "MaxPool"})

#: Ops whose output the onnxruntime flavour quantizes with their input's scale (as ``quantize_static`` does),
#: which lets onnxruntime fold a Relu/Clip into the QLinearConv before it.
SCALE_SHARING_OPS: frozenset[str] = frozenset({"Relu", "Clip", "MaxPool"})

#: Name of the shared scalar int8 zero point of activations.
ZERO_POINT_NAME = "qdq_zero_point_int8"

_QMAX = 127.0


def _scale_from_range(max_abs: np.ndarray) -> np.ndarray:
    """Symmetric int8 scale ``max|x| / 127``; ranges that are zero or not finite get scale 1/127."""
    m = np.asarray(max_abs, dtype=np.float64)
    m = np.where(np.isfinite(m) & (m > 0), m, 1.0)
    return (m / _QMAX).astype(np.float32)


def calibration_inputs(model: onnx.ModelProto, batches: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``batches`` seeded standard-normal feeds for the model's (static-shape, float32) inputs."""
    from onnx import TensorProto

    initializers = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds: list[dict[str, np.ndarray]] = []
    for _ in range(batches):
        feed = {}
        for inp in model.graph.input:
            if inp.name in initializers:
                continue
            tt = inp.type.tensor_type
            if tt.elem_type != TensorProto.FLOAT:
                raise ValueError(f"cannot calibrate input {inp.name!r}: quantization needs an fp32 graph")
            shape = [d.dim_value for d in tt.shape.dim]
            if any(d <= 0 for d in shape):
                raise ValueError(f"cannot calibrate input {inp.name!r}: quantization needs static input shapes")
            feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        feeds.append(feed)
    return feeds


def activation_max_abs(
    model: onnx.ModelProto, names: list[str], *, calibration_batches: int = 1, seed: int = 0
) -> dict[str, float]:
    """max|x| of each named float tensor over the calibration feeds (onnxruntime CPU, no graph rewriting).

    One session, every named tensor exposed as an extra graph output, one run per feed.
    """
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    graph_inputs = {i.name for i in probe.graph.input}
    for name in names:
        if name not in present and name not in graph_inputs:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    result = dict.fromkeys(names, 0.0)
    for feed in calibration_inputs(model, calibration_batches, seed):
        values = dict(zip(outputs, session.run(None, feed)))
        values.update(feed)
        for name in names:
            result[name] = max(result[name], float(np.max(np.abs(values[name]))))
    return result


#: How the TensorRT flavour stores a weight: ``"int8"`` (an int8 initializer and a DequantizeLinear, what
#: TensorRT 10 and 11 read) or ``"float"`` (the float weight with a QuantizeLinear/DequantizeLinear pair, what
#: TensorRT 8.x needs: 8.4 refused int8 initializers).
QDQ_WEIGHTS: tuple[str, ...] = ("int8", "float")


def quantize_model(
    model: onnx.ModelProto, flavour: str, *, calibration_batches: int = 1, seed: int = 0, weights: str = "int8"
) -> onnx.ModelProto:
    """A copy of fp32 ``model`` with explicit int8 Q/DQ placed for ``flavour`` ("tensorrt" or "onnxruntime").

    Inputs and outputs stay float32. ``weights`` (TensorRT flavour): see
    :data:`QDQ_WEIGHTS`. Raises ``ValueError`` for an unknown flavour or weight
    form, or a graph without static float32 inputs.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown int8 flavour {flavour!r}: allowed {', '.join(FLAVOURS)}")
    if weights not in QDQ_WEIGHTS:
        raise ValueError(f"unknown int8 weight form {weights!r}: allowed {', '.join(QDQ_WEIGHTS)}")
    if calibration_batches < 1:
        raise ValueError(f"calibration_batches={calibration_batches}: need at least one calibration batch")
    if flavour == "tensorrt":
        return _quantize_tensorrt(model, calibration_batches, seed, weights)
    if weights != "int8":
        raise ValueError("the onnxruntime flavour stores int8 weights only (its QLinearConv reads them)")
    return _quantize_onnxruntime(model, calibration_batches, seed)


# ----- TensorRT flavour -----------------------------------------------------


def _weight_axis(node: onnx.NodeProto) -> int | None:
    """Output-channel axis of a weighted node's weight, or None for a per-tensor weight scale."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else None
    return None


def _quantize_weight(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weight and its scale: per output channel (``axis`` 0) or per tensor (``axis`` None)."""
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        scale = _scale_from_range(np.max(np.abs(w)))
        return np.clip(np.round(w / scale), -_QMAX, _QMAX).astype(np.int8), scale
    scale = _scale_from_range(np.max(np.abs(w.reshape(w.shape[0], -1)), axis=1))
    wq = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -_QMAX, _QMAX).astype(np.int8)
    return wq, scale


def _quantize_tensorrt(
    model: onnx.ModelProto, calibration_batches: int, seed: int, weights: str = "int8"
) -> onnx.ModelProto:
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    # Decide which tensor feeds which (node, input slot) through an activation Q/DQ, and which weights.
    act_slots: list[tuple[int, int, str]] = []  # (node index, input index, tensor)
    weight_slots: list[tuple[int, int, str, int | None]] = []
    for idx, node in enumerate(graph.node):
        if node.op_type in WEIGHTED_OPS:
            for slot in (0, 1):
                name = node.input[slot]
                if name in initializers:
                    if slot == 1:
                        weight_slots.append((idx, slot, name, _weight_axis(node)))
                else:
                    act_slots.append((idx, slot, name))
        elif node.op_type == "Add" and len(node.input) == 2 and not any(i in initializers for i in node.input):
            from_weighted = [producer.get(i) is not None and producer[i].op_type in WEIGHTED_OPS for i in node.input]
            # The input not produced by a weighted layer is the residual; with two conv inputs
            # (projection shortcut) the second one, the shortcut, is.
            slot = from_weighted.index(False) if False in from_weighted else 1
            act_slots.append((idx, slot, node.input[slot]))

    act_names = list(dict.fromkeys(name for _, _, name in act_slots))
    ranges = activation_max_abs(model, act_names, calibration_batches=calibration_batches, seed=seed)

    new_inits: list[onnx.TensorProto] = []
    zero = ZERO_POINT_NAME
    new_inits.append(numpy_helper.from_array(np.zeros((), dtype=np.int8), zero))
    pending: dict[int, list[onnx.NodeProto]] = {}
    rename: dict[tuple[int, int], str] = {}
    emitted: dict[str, str] = {}

    for idx, slot, name in act_slots:
        if name not in emitted:
            scale_name, q_name, dq_name = f"{name}_act_scale", f"{name}_quantized", f"{name}_dequantized"
            new_inits.append(numpy_helper.from_array(_scale_from_range(np.array(ranges[name])), scale_name))
            pending.setdefault(idx, []).extend(
                [
                    helper.make_node("QuantizeLinear", [name, scale_name, zero], [q_name], name=f"{name}_Q"),
                    helper.make_node("DequantizeLinear", [q_name, scale_name, zero], [dq_name], name=f"{name}_DQ"),
                ]
            )
            emitted[name] = dq_name
        rename[(idx, slot)] = emitted[name]

    replaced_weights: dict[str, str] = {}  # weight initializer -> its DequantizeLinear output
    for idx, slot, name, axis in weight_slots:
        if name in replaced_weights:  # a weight shared by several layers is quantized once
            rename[(idx, slot)] = replaced_weights[name]
            continue
        wq, scale = _quantize_weight(numpy_helper.to_array(initializers[name]), axis)
        zp_name = zero
        if axis is not None:
            zp_name = f"{name}_zero_point"
            new_inits.append(numpy_helper.from_array(np.zeros(wq.shape[0], dtype=np.int8), zp_name))
        q_name, scale_name, dq_name = f"{name}_int8", f"{name}_scale", f"{name}_dequantized"
        new_inits.append(numpy_helper.from_array(scale, scale_name))
        attrs = {"axis": axis} if axis is not None else {}
        if weights == "int8":
            new_inits.append(numpy_helper.from_array(wq, q_name))
        else:  # the float weight itself, quantized in the graph
            pending.setdefault(idx, []).append(
                helper.make_node("QuantizeLinear", [name, scale_name, zp_name], [q_name], name=f"{name}_Q", **attrs)
            )
        pending.setdefault(idx, []).append(
            helper.make_node("DequantizeLinear", [q_name, scale_name, zp_name], [dq_name], name=f"{name}_DQ", **attrs)
        )
        rename[(idx, slot)] = dq_name
        replaced_weights[name] = dq_name

    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for idx, node in enumerate(graph.node):
        out.graph.node.extend(pending.get(idx, []))
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for slot in range(len(new.input)):
            if (idx, slot) in rename:
                new.input[slot] = rename[(idx, slot)]
        out.graph.node.append(new)
    still_used = {i for n in out.graph.node for i in n.input}
    kept = [i for i in out.graph.initializer if i.name not in replaced_weights or i.name in still_used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + new_inits)
    onnx.checker.check_model(out)
    return out


# ----- onnxruntime flavour ---------------------------------------------------


def _quantize_onnxruntime(model: onnx.ModelProto, calibration_batches: int, seed: int) -> onnx.ModelProto:
    """Q/DQ on every float activation of the ops in :data:`ONNXRUNTIME_QDQ_OPS`, int8 weights, int32 biases."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    constants = set(initializers) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    graph_outputs = {o.name for o in graph.output}

    # Activations: the float tensors the quantized ops read (weights and biases excluded) or write.
    acts: dict[str, None] = {}
    for node in graph.node:
        if node.op_type not in ONNXRUNTIME_QDQ_OPS:
            continue
        inputs = node.input[:1] if node.op_type in WEIGHTED_OPS else node.input
        acts.update((name, None) for name in inputs if name and name not in constants)
        acts.update((name, None) for name in node.output if name)
    ranges = activation_max_abs(model, list(acts), calibration_batches=calibration_batches, seed=seed)
    scales = {name: _scale_from_range(np.array(ranges[name])) for name in acts}
    for node in graph.node:
        if node.op_type in SCALE_SHARING_OPS and node.input[0] in scales:
            scales[node.output[0]] = scales[node.input[0]]

    zero = ZERO_POINT_NAME
    new_inits: list[onnx.TensorProto] = [numpy_helper.from_array(np.zeros((), dtype=np.int8), zero)]
    nodes: list[onnx.NodeProto] = []
    dequantized: dict[str, str] = {}  # activation -> the DequantizeLinear output its consumers read

    def quantize_activation(name: str, source: str) -> None:
        """Q/DQ of activation ``name`` read from tensor ``source`` (``name`` itself unless a graph output)."""
        scale_name = f"{name}_scale"
        new_inits.append(numpy_helper.from_array(scales[name], scale_name))
        q_name = f"{name}_QuantizeLinear_Output"
        dq_name = name if name in graph_outputs else f"{name}_DequantizeLinear_Output"
        nodes.append(helper.make_node("QuantizeLinear", [source, scale_name, zero], [q_name], name=f"{name}_Q"))
        nodes.append(helper.make_node("DequantizeLinear", [q_name, scale_name, zero], [dq_name], name=f"{name}_DQ"))
        dequantized[name] = dq_name

    for inp in graph.input:
        if inp.name in acts:
            quantize_activation(inp.name, inp.name)

    quantized_weights: set[str] = set()
    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        if node.op_type in ONNXRUNTIME_QDQ_OPS:
            for slot, name in enumerate(node.input):
                if name in dequantized:
                    new.input[slot] = dequantized[name]
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in initializers:
            weight = node.input[1]
            axis = _weight_axis(node)
            wq, w_scale = _quantize_weight(numpy_helper.to_array(initializers[weight]), axis)
            attrs = {"axis": axis} if axis is not None else {}
            new.input[1] = f"{weight}_DequantizeLinear_Output"
            if weight not in quantized_weights:
                quantized_weights.add(weight)
                w_zp = zero if axis is None else f"{weight}_zero_point"
                if axis is not None:
                    new_inits.append(numpy_helper.from_array(np.zeros(wq.shape[0], dtype=np.int8), w_zp))
                new_inits += [
                    numpy_helper.from_array(wq, f"{weight}_quantized"),
                    numpy_helper.from_array(w_scale, f"{weight}_scale"),
                ]
                nodes.append(
                    helper.make_node(
                        "DequantizeLinear",
                        [f"{weight}_quantized", f"{weight}_scale", w_zp],
                        [new.input[1]],
                        name=f"{weight}_DQ",
                        **attrs,
                    )
                )
            if len(node.input) > 2 and node.input[2] in initializers and node.input[0] in scales:
                bias = node.input[2]
                b_scale = (scales[node.input[0]] * w_scale).astype(np.float32)
                b = numpy_helper.to_array(initializers[bias]).astype(np.float64)
                bq = np.clip(np.round(b / b_scale), -(2**31), 2**31 - 1).astype(np.int32)
                stem = f"{new.name or new.output[0]}_bias"
                new_inits += [
                    numpy_helper.from_array(bq, f"{stem}_quantized"),
                    numpy_helper.from_array(np.broadcast_to(b_scale, bq.shape).copy(), f"{stem}_scale"),
                    numpy_helper.from_array(np.zeros(bq.shape, dtype=np.int32), f"{stem}_zero_point"),
                ]
                new.input[2] = f"{stem}_DequantizeLinear_Output"
                nodes.append(
                    helper.make_node(
                        "DequantizeLinear",
                        [f"{stem}_quantized", f"{stem}_scale", f"{stem}_zero_point"],
                        [new.input[2]],
                        name=f"{stem}_DQ",
                        axis=0,
                    )
                )
        for slot, name in enumerate(node.output):
            if name in graph_outputs and name in acts:
                new.output[slot] = f"{name}_QuantizeLinear_Input"
        nodes.append(new)
        for slot, name in enumerate(node.output):
            if name in acts:
                quantize_activation(name, new.output[slot])

    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + new_inits)
    onnx.checker.check_model(out)
    return out


# ----- rule check -----------------------------------------------------------


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def check_tensorrt_qdq(model: onnx.ModelProto) -> list[str]:
    """Departures from the Q/DQ placement TensorRT accepts; an empty list means none.

    One line per violation: a missing or non-zero zero point, a zero point
    that is not int8, a scale that is not positive, a per-channel scale without
    an explicit ``axis=0`` or on an activation, a DequantizeLinear of an int32
    tensor (quantized bias), and a Q on the output of a weighted layer unless
    every reader of it is an elementwise Add (the residual input of a fused
    add) or the activation input of the next weighted layer (its input Q).
    """

    consts = _constants(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    problems: list[str] = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        label = f"{node.op_type} {node.name or node.output[0]!r}"
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            problems.append(f"{label}: scale is not a constant")
        elif not np.all(np.isfinite(scale) & (scale > 0)):
            problems.append(f"{label}: scale has values that are not positive")
        if zp is None:
            problems.append(f"{label}: zero point missing (defaults to uint8); give an int8 zero point of 0")
        else:
            if zp.dtype != np.int8:
                problems.append(f"{label}: zero point is {zp.dtype}, not int8")
            if np.any(zp != 0):
                problems.append(f"{label}: zero point is not 0 (TensorRT needs symmetric quantization)")
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        per_channel = scale is not None and scale.size > 1
        if per_channel and axis != 0:
            problems.append(f"{label}: per-channel scale without an explicit axis=0")
        if node.op_type == "QuantizeLinear" and per_channel and node.input[0] not in consts:
            problems.append(f"{label}: per-channel scale on an activation (activations are per-tensor)")
        if node.op_type == "DequantizeLinear":
            data = consts.get(node.input[0])
            if data is not None and data.dtype == np.int32:
                problems.append(f"{label}: int32 (bias) DequantizeLinear; keep biases in float")
        if node.op_type == "QuantizeLinear":
            src = producer.get(node.input[0])
            if src is not None and src.op_type in WEIGHTED_OPS:
                # the output of a weighted layer may carry a Q only where it is the input Q of what reads it: the
                # residual input of an Add (so the add fuses), or the activation input of the next weighted layer
                # (a block that ends in a bare conv feeding one that starts with one)
                dq_outputs = [o for dq in consumers.get(node.output[0], []) for o in dq.output]
                users = [(c, o) for o in dq_outputs for c in consumers.get(o, [])]
                allowed = all(u.op_type == "Add" or (u.op_type in WEIGHTED_OPS and u.input[0] == o) for u, o in users)
                if not users or not allowed:
                    problems.append(
                        f"{label}: quantizes the output of {src.op_type} {src.name!r}; quantize inputs only"
                    )
    return problems
