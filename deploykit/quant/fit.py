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
NNCF names the same fault for OpenVINO (its `OverflowFix`: "8-bit instructions of older Intel CPU generations (based on
SSE, AVX-2, and AVX-512 instruction sets) suffer from the so-called saturation (overflow) issue").
"""

from __future__ import annotations

import functools
from pathlib import Path

# ONNX Runtime's integer kernels -> input index of the int8 weight each multiplies with 8-bit activations
WEIGHT_INPUT = {"MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1, "QAttention": 1,
                "QLinearMatMul": 3, "QGemm": 3, "QLinearConv": 3}
SEVEN_BITS = 64  # the largest |w| reduce_range writes (int8 symmetric: [-64, 64]); 255 * 64 * 2 fits int16


def wide_weights(model) -> tuple[list[str], int]:
    """The int8 weights of `model`'s integer kernels whose values need all 8 bits, and how many such weights it has.

    Args:
        model: an `onnx.ModelProto` with its weights loaded, as ONNX Runtime runs it (`optimized_graph`): which Q/DQ
            pairs become integer kernels is ONNX Runtime's choice (a weight dequantized for a float MatMul, as
            `quantize.fallback_bits: 8` writes, stays float), and a float weight behind a QuantizeLinear (the tensorrt
            preset) is folded into an int8 one there.

    Returns:
        (names of the weights with some |w| > 64, count of int8 weights that integer kernels multiply).
    """
    import numpy as np
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    weights = {node.input[index] for node in model.graph.node
               if (index := WEIGHT_INPUT.get(node.op_type)) is not None and len(node.input) > index}
    int8 = sorted(w for w in weights if w in inits and inits[w].data_type == TensorProto.INT8)
    wide = [w for w in int8 if np.abs(numpy_helper.to_array(inits[w]).astype(np.int16)).max(initial=0) > SEVEN_BITS]
    return wide, len(int8)


def optimized_graph(onnx_path: str | Path):
    """`onnx_path` as ONNX Runtime's CPU provider runs it on this machine: its QDQ fusions made, constants folded.

    Returns:
        The optimized `onnx.ModelProto` (weights loaded), or None when ONNX Runtime cannot load the graph (the
        session the caller opens next says why, in its own words).
    """
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="deploykit-fit-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        # weights beside the graph, so that a causal LM past protobuf's 2 GB limit is written too
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
        try:
            ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
            return onnx.load(str(out))
        except Exception:  # noqa: BLE001 - ORT's own exception types; the caller's session reports the fault
            return None


def openvino_wide_weights(graph_path: str | Path) -> tuple[list[str], int]:
    """`wide_weights` as OpenVINO reads a graph (an IR's model.xml, or ONNX; deploykit/quant/ov_fit.py).

    Raises:
        RuntimeError: OpenVINO cannot read the graph.
    """
    from deploykit.quant.ov_fit import integer_weights

    weights = integer_weights(graph_path)
    return sorted(name for name, largest in weights.items() if largest > SEVEN_BITS), len(weights)


def saturation_fault(graph_path: str | Path, runtime: str = "ort") -> str | None:
    """Why `runtime` (ort or openvino) on this CPU would not compute the INT8 products of `graph_path` (an ONNX graph,
    or an OpenVINO IR's model.xml, which only OpenVINO runs) exactly; None when it would.

    None at once on a CPU with VNNI or on ARM (no graph is read); otherwise ONNX Runtime optimizes the graph once
    (about a second for an encoder) to see which weights its integer kernels take, or OpenVINO reads it; the answer is
    kept until a file in the graph's folder changes.
    """
    from deploykit.hardware import quant_preset

    if quant_preset() != "avx2":
        return None
    # deploykit.load asks twice (its check, then its loader's note), and an LLM's optimized copy is big
    return _read_fault(*_files_key(Path(graph_path), runtime))


def _files_key(graph_path: Path, runtime: str) -> tuple[str, str, tuple]:
    """The graph, the runtime, and every file beside the graph (its external weights, an IR's model.bin) as they are
    now: a rewritten folder is read afresh."""
    path = graph_path.resolve()
    files = tuple(sorted((p.name, (st := p.stat()).st_mtime_ns, st.st_size) for p in path.parent.iterdir()
                         if p.is_file())) if path.parent.is_dir() else ()
    return str(path), runtime, files


@functools.lru_cache(maxsize=4)
def _read_fault(graph_path: str, runtime: str, files: tuple) -> str | None:
    if runtime == "openvino" or Path(graph_path).suffix == ".xml":
        try:
            wide, total = openvino_wide_weights(graph_path)
        except (ImportError, RuntimeError):  # no openvino, or an IR it cannot read: the loader says which
            return None
    else:
        model = optimized_graph(graph_path)
        wide, total = wide_weights(model) if model is not None else ([], 0)
    if not wide:
        return None
    return (f"{len(wide)} of its {total} INT8 weight matrices use all 8 bits (made for a CPU with VNNI, ARM or "
            "TensorRT), and this CPU has no VNNI: its uint8 x int8 products saturate here and answers change")


# presets whose weights use all 8 bits: for CPUs with VNNI (avx512_vnni), ARM dot products (arm64), TensorRT
FULL_RANGE_PRESETS = ("avx512_vnni", "arm64", "tensorrt")


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
        from deploykit.console import warn

        target = {"avx512_vnni": "a CPU with VNNI", "arm64": "an ARM CPU", "tensorrt": "TensorRT"}[preset]
        warn(f"warning: quantize.preset={preset} writes 8-bit weights for {target}; this CPU has no VNNI, so their "
            "products saturate in ONNX Runtime here: the accuracy gate scores other answers than the target's, and "
            "deploykit.load refuses the graph on this machine")
