"""Whether an INT8 graph computes on this CPU what it computed where it was quantized.

    from deploykit.quant.fit import saturation_fault
    saturation_fault(Path("runs/sst2-minilm/quantize/model.onnx"))   # None, or why its answers change here

ONNX Runtime multiplies uint8 activations by int8 weights. With VNNI (AVX-512 VNNI, AVX-VNNI, AMX) the products
add up exactly in int32. Plain AVX2, and AVX-512 without VNNI, multiply through VPMADDUBSW, which adds each pair of
u8 x s8 products into an int16 that saturates once weights use all 8 bits (255 * 127 * 2 > 32767); 7-bit weights
(|w| <= 64, `reduce_range`) cannot saturate. ONNX Runtime's quantization guide: reduce_range "is designed for the
U8S8 format on AVX2 and AVX512 (non-VNNI) machines to mitigate saturation issues". So a graph quantized with the
avx512_vnni or arm64 preset gives other answers on such a CPU: an SST-2 classifier built with the avx512_vnni preset
changed 17 of 872 test answers on an AVX2-only EPYC against the same graph computed exactly, 16 on OpenVINO's CPU
plugin (bench/README.md, "Thirty-third session"), and 8-bit SmolLM2 weights gave garbage text (deploykit/llm/int8.py).
"""

from __future__ import annotations

from pathlib import Path

# operator -> input index of the int8 weight it multiplies with uint8 activations in an integer kernel
WEIGHT_INPUT = {"MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1, "QAttention": 1,
                "QLinearMatMul": 3, "QGemm": 3, "QLinearConv": 3}
# a DequantizeLinear'd weight goes to an integer kernel when ORT fuses it with a DequantizeLinear'd activation
FUSED_PRODUCTS = ("MatMul", "Gemm", "Conv")
SEVEN_BITS = 64  # the largest |w| reduce_range writes (int8 symmetric: [-64, 64]); 255 * 64 * 2 fits int16


def wide_weights(model) -> tuple[list[str], int]:
    """The int8 weights of integer products whose values need all 8 bits, and how many such weights there are.

    Args:
        model: an `onnx.ModelProto` with its weights loaded.

    Returns:
        (names of the weights with some |w| > 64, count of int8 weights that integer kernels multiply).
    """
    import numpy as np
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    weights: list[str] = []
    for node in model.graph.node:
        if node.op_type in WEIGHT_INPUT and len(node.input) > WEIGHT_INPUT[node.op_type]:
            weights.append(node.input[WEIGHT_INPUT[node.op_type]])
        elif node.op_type in FUSED_PRODUCTS and len(node.input) >= 2:
            sources = [producers.get(name) for name in node.input[:2]]
            if all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
                weights += [s.input[0] for s in sources if s.input[0] in inits]
    int8 = sorted({w for w in weights if w in inits and inits[w].data_type == TensorProto.INT8})
    wide = [w for w in int8 if np.abs(numpy_helper.to_array(inits[w]).astype(np.int16)).max(initial=0) > SEVEN_BITS]
    return wide, len(int8)


def saturation_fault(onnx_path: str | Path) -> str | None:
    """Why ONNX Runtime on this CPU would not compute `onnx_path`'s INT8 products exactly; None when it would.

    None at once on a CPU with VNNI or on ARM (no graph is read); otherwise the graph's weights are read once.
    """
    from deploykit.hardware import quant_preset

    if quant_preset() != "avx2":
        return None
    from deploykit.onnx.ops import load_onnx

    wide, total = wide_weights(load_onnx(onnx_path, min_opset=1))
    if not wide:
        return None
    return (f"{len(wide)} of its {total} INT8 weight matrices use all 8 bits (quantized for a CPU with VNNI), and "
            "this CPU has no VNNI: its uint8 x int8 products saturate here (ONNX Runtime and OpenVINO alike) and "
            "answers change")


# presets whose weights use all 8 bits: written for CPUs with VNNI (avx512_vnni) or ARM dot products (arm64)
FULL_RANGE_PRESETS = ("avx512_vnni", "arm64")


def reduce_range_for(preset: str) -> bool | None:
    """7-bit weights for `quantize.preset` (dynamic INT8 of a causal LM): None for `auto` (this CPU's choice)."""
    if preset == "tensorrt":
        from deploykit.errors import UserError

        raise UserError("quantize.preset=tensorrt is for encoder classifiers (static Q/DQ for TensorRT engines); a "
                        "causal LM takes auto, avx2, avx512_vnni or arm64")
    return None if preset == "auto" else preset == "avx2"


def warn_unfit(preset: str) -> None:
    """Say at quantize time that a preset forced for another CPU computes other answers on this one."""
    from deploykit.hardware import quant_preset

    if preset in FULL_RANGE_PRESETS and quant_preset() == "avx2":
        from deploykit.console import log

        log(f"warning: quantize.preset={preset} writes 8-bit weights for a CPU with VNNI (or ARM); this CPU has no "
            "VNNI, so their products saturate here: the accuracy gate scores other answers than that CPU's, and "
            "deploykit.load refuses the graph on this machine")
