"""deploykit/quant/fit.py's question for OpenVINO: which int8 weights its CPU plugin multiplies in integers.

    from deploykit.quant.ov_fit import integer_weights
    integer_weights("runs/bench/openvino/model.xml")   # {weight name: its largest |integer value|}

OpenVINO's low-precision transformations make a MatMul (or Convolution) an integer product when one input is an
activation behind a FakeQuantize of at most 256 levels and the other a weight quantized to 8 bits: an int8 Constant
behind its decompression (Convert, Subtract zero point, Multiply scale: what `ov.convert_model` makes of an ONNX
DequantizeLinear and what `ov.save_model` makes of NNCF's weights), or a float Constant behind a FakeQuantize (a
QuantizeLinear of a float weight, the tensorrt preset, as `read_model` reads it). Read from the graph, not from the
compiled model, whose nodes no longer name their weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PRODUCTS = ("MatMul", "Convolution")
# ops between a quantized tensor and the product that use it, data on input 0 (Multiply: either, the other the scale)
DECOMPRESSION = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "Squeeze")
BYTE_LEVELS = 256  # a FakeQuantize of more levels (16-bit activations) stays float


def _source(output):
    """The node behind `output`, past Converts (a float16-compressed Constant is Constant -> Convert)."""
    node = output.get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node


def _constant(output) -> np.ndarray | None:
    node = _source(output)
    return np.asarray(node.get_data()) if node.get_type_name() == "Constant" else None


def _fake_quantized_ints(fq) -> np.ndarray | None:
    """The integer weights a FakeQuantize of a float Constant stands for, as offsets from its zero (None when its
    input is not a constant or it has more than 256 levels)."""
    levels = fq.get_attributes().get("levels", 0)
    weight, low, high = (_constant(fq.input_value(i)) for i in range(3))
    if weight is None or low is None or high is None or not 1 < levels <= BYTE_LEVELS:
        return None
    step = (high.astype(np.float64) - low) / (levels - 1)
    step = np.where(step > 0, step, 1.0)  # a channel of zeros: one level
    return np.round((np.clip(weight, low, high) - low) / step) - np.round(-low / step)


def _weight(output, depth: int = 0) -> tuple[str, np.ndarray] | None:
    """(name, integer values) of the 8-bit weight an input is decompressed from, or None (a float weight)."""
    node = output.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        if node.get_output_element_type(0).get_type_name() != "i8":
            return None
        return node.get_friendly_name(), np.asarray(node.get_data()).astype(np.int16)
    if kind == "FakeQuantize":
        ints = _fake_quantized_ints(node)
        return (node.get_friendly_name(), ints) if ints is not None else None
    if kind not in DECOMPRESSION or depth > 6:
        return None
    # Subtract's second input is the zero point (int8 too); Multiply's data may be either side of its scale
    inputs = (0, 1) if kind == "Multiply" else (0,)
    return next((w for i in inputs if (w := _weight(node.input_value(i), depth + 1)) is not None), None)


def _quantized_activation(output, depth: int = 0) -> bool:
    """Whether an input is an activation behind a FakeQuantize of at most 256 levels (through the ops OpenVINO
    reads an ONNX DequantizeLinear as, before its CPU plugin folds them)."""
    node = output.get_node()
    if node.get_type_name() == "FakeQuantize":
        return _constant(node.input_value(0)) is None and node.get_attributes().get("levels", 0) <= BYTE_LEVELS
    return node.get_type_name() in DECOMPRESSION and depth < 8 and \
        _quantized_activation(node.input_value(0), depth + 1)


def integer_weights(graph_path: str | Path) -> dict[str, int]:
    """The 8-bit weights of the products OpenVINO's CPU plugin computes in integers, as it reads a graph (an IR's
    model.xml, or ONNX): {weight name: its largest |integer value|}.

    A dynamic graph's MatMulInteger is read as an integer-typed MatMul, which the CPU plugin runs in float: exact, so
    not counted. 8-bit weights with 16-bit activations stay float too.

    Raises:
        RuntimeError: OpenVINO cannot read the graph.
    """
    import openvino as ov

    model = ov.Core().read_model(str(graph_path))
    weights: dict[str, int] = {}
    for node in model.get_ops():
        if node.get_type_name() not in PRODUCTS or not node.get_output_element_type(0).is_real():
            continue
        a, b = (node.input_value(i) for i in (0, 1))
        for activation, weight in ((a, b), (b, a)):
            if (found := _weight(weight)) is not None and _quantized_activation(activation):
                weights[found[0]] = int(np.abs(found[1]).max(initial=0))
                break
    return weights
