"""Small helpers over ONNX graphs shared by export, quantize and bench: load with clear errors, count ops.

    from deploykit.onnx.ops import load_onnx, op_counts, quantized_op_counts
    model = load_onnx("runs/int8/model.onnx", min_opset=13)
    quantized_op_counts(model)   # {'MatMulInteger': 20, 'QAttention': 6, 'quantized_matmuls': 26}
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from deploykit.errors import UserError

# operators that only appear once a graph holds integer arithmetic (QOperator or QDQ format)
QUANTIZED_OPS = ("MatMulInteger", "QAttention", "QLinearMatMul", "QGemm", "DynamicQuantizeMatMul",
                 "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QEmbedLayerNormalization",
                 "QGather")
# fused transformer operators written by ONNX Runtime's transformer optimizer
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization",
             "BiasGelu", "FastGelu", "Gelu", "LayerNormalization")


def opset_of(model) -> int:
    """The default-domain (ai.onnx) opset a model was written for."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def load_onnx(path: str | Path, min_opset: int = 13, load_weights: bool = True):
    """`onnx.load` that turns a wrong file or an old opset into one UserError line.

    Args:
        path: the .onnx file.
        min_opset: the oldest default-domain opset accepted (INT8 needs 13 for per-channel QDQ).
        load_weights: False reads only the graph (external weights stay on disk).

    Returns:
        The `onnx.ModelProto`.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except (DecodeError, ValueError, RuntimeError, OSError) as err:
        raise UserError(f"{path}: not an ONNX model ({type(err).__name__}); give a .onnx file written by "
                        "`deploykit export` or torch.onnx.export") from None
    if len(model.graph.node) == 0:
        raise UserError(f"{path}: not an ONNX model (no graph nodes); give a .onnx file written by `deploykit export`")
    opset = opset_of(model)
    if opset < min_opset:
        raise UserError(f"{path}: ONNX opset {opset} is too old (need >= {min_opset}); "
                        "re-export with `deploykit export --format onnx` (opset 17)")
    return model


def graph_inputs(onnx_path: str | Path) -> list[str]:
    """Names of a model's runtime inputs (graph inputs that are not weights)."""
    graph = load_onnx(onnx_path, load_weights=False).graph
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits]


def op_counts(model) -> Counter:
    """Node count per operator type (top-level graph)."""
    return Counter(node.op_type for node in model.graph.node)


def fused_op_counts(model) -> dict[str, int]:
    """How many fused transformer operators the graph holds (Attention, SkipLayerNormalization, ...)."""
    counts = op_counts(model)
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def quantized_op_counts(model) -> dict[str, int]:
    """Integer operators in the graph, plus `quantized_matmuls`: MatMul-like nodes that run in INT8.

    In QOperator format (dynamic INT8) those are MatMulInteger / QAttention / QLinearMatMul nodes; in
    QDQ format a float MatMul or Gemm whose weight comes out of a DequantizeLinear counts, because
    ONNX Runtime fuses that pattern into an integer kernel.
    """
    counts = op_counts(model)
    out = {op: counts[op] for op in QUANTIZED_OPS if counts[op]}
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    qdq_matmuls = sum(1 for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                      and len(n.input) > 1 and n.input[1] in dequantized)
    out["quantized_matmuls"] = (counts["MatMulInteger"] + counts["QAttention"] + counts["QLinearMatMul"]
                                + counts["QGemm"] + counts["DynamicQuantizeMatMul"] + qdq_matmuls)
    return out


def model_files(onnx_path: str | Path) -> list[Path]:
    """The graph file and every external-data file its initializers point to (whatever their names)."""
    import onnx

    onnx_path = Path(onnx_path)
    graph = onnx.load(str(onnx_path), load_external_data=False)
    external = {e.value for t in graph.graph.initializer for e in t.external_data if e.key == "location"}
    return [onnx_path] + [onnx_path.parent / name for name in sorted(external)]


def file_size(onnx_path: str | Path) -> int:
    """Bytes on disk of a model, including external-data files stored beside it."""
    return sum(p.stat().st_size for p in model_files(onnx_path) if p.is_file())
