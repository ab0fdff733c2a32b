"""ONNX Runtime INT8 building blocks for `deploykit quantize`: presets, pre-processing, calibration,
dynamic and static (QDQ) quantization, and per-node sensitivity.

    from deploykit.quant.int8 import Int8Settings, preprocess, quantize
    s = Int8Settings.for_preset("avx2", mode="dynamic")
    preprocess(Path("model.onnx"), Path("pre.onnx"))
    quantize(Path("pre.onnx"), Path("int8.onnx"), s)

Presets follow the instruction each CPU has for u8 x s8 dot products. With VNNI (AVX-512 VNNI,
AVX-VNNI, AMX) the 32-bit accumulation is exact; plain AVX2 multiplies through VPMADDUBSW, whose
int16 pair sums saturate on full-range 8-bit weights, so its preset quantizes weights to 7 bits
(`reduce_range`). ARM64's dot-product kernels need no reduction. 7-bit weights are exact everywhere, so the
recipe's default preset is `avx2` on every CPU: its graph answers alike wherever it is deployed
(deploykit/quant/fit.py refuses 8-bit ones where they would saturate).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from deploykit.errors import CheckError

# per mode, what gets quantized when the recipe gives no `quantize.op_types`:
# dynamic: MatMul and the fused Attention (QAttention); embeddings (Gather) stay float, they cost accuracy
# static: MatMul/Gemm only; measured, QDQ around every op was no faster than FP32
DEFAULT_OP_TYPES = {"dynamic": ["MatMul", "Attention"], "static": ["MatMul", "Gemm"]}
CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@dataclass(frozen=True)
class Int8Settings:
    """Everything that decides how a float graph becomes INT8 (recorded in the manifest)."""

    mode: str = "dynamic"
    preset: str = "avx512_vnni"
    reduce_range: bool = False
    per_channel: bool = True
    op_types: list[str] = field(default_factory=lambda: list(DEFAULT_OP_TYPES["dynamic"]))
    calibration: str = "minmax"
    signed_activations: bool = False
    activation_symmetric: bool = False
    qdq_pair_per_weight: bool = False
    # static: INT8 MatMul/Gemm kernels write float (QGemm, MatMulIntegerToFloat) instead of a QuantizeLinear after
    # each (ORT's OpTypesToExcludeOutputQuantization); dynamic kernels always write float
    float_outputs: bool = False
    # static: the attention products (Q·Kᵀ, softmax·V: MatMuls of two activations) stay float: quantizing both
    # inputs on every call costs more than the INT8 product saves on [heads, tokens, tokens]. Needs float_outputs
    # (a re-quantized projection output would hand them Q/DQ inputs ORT fuses to INT8 anyway); ORT's dynamic mode
    # never quantizes them
    float_attention: bool = False

    @classmethod
    def for_preset(cls, preset: str, mode: str = "dynamic", *, per_channel: bool = True,
                   op_types: list[str] | None = None, calibration: str = "minmax",
                   float_outputs: bool = False, float_attention: bool = False) -> Int8Settings:
        """Settings for a named preset; `auto` picks the preset of the CPU this runs on."""
        from deploykit.errors import UserError
        from deploykit.hardware import quant_preset

        name = quant_preset() if preset == "auto" else preset
        common = dict(mode=mode, preset=name, per_channel=per_channel,
                      op_types=list(op_types or DEFAULT_OP_TYPES[mode]), calibration=calibration,
                      float_outputs=float_outputs and mode == "static",
                      float_attention=float_attention and float_outputs and mode == "static")
        if name == "tensorrt":
            if mode != "static":
                raise UserError("quantize.preset=tensorrt needs quantize.mode=static (TensorRT reads Q/DQ scales)")
            # TensorRT takes symmetric int8 on both sides, a Q/DQ pair on every weight, one consumer per pair
            return cls(**common, signed_activations=True, activation_symmetric=True, qdq_pair_per_weight=True)
        return cls(**common, reduce_range=(name == "avx2"))

    def describe(self) -> dict:
        activations = f"{'int8' if self.signed_activations else 'uint8'} " \
                      f"{'symmetric' if self.activation_symmetric else 'asymmetric'}"
        return {"mode": self.mode, "preset": self.preset, "reduce_range": self.reduce_range,
                "per_channel": self.per_channel, "op_types": self.op_types,
                "calibration": self.calibration if self.mode == "static" else None,
                "activations": activations, "weights": "int8 symmetric",
                "matmul_outputs": "float" if self.mode == "dynamic" or self.float_outputs else "int8",
                "attention_matmuls": "float" if self.mode == "dynamic" or self.float_attention
                                     or "MatMul" not in self.op_types else "int8"}


def calibration_sample(n_rows: int, samples: int, seed: int, unit: str = "rows") -> list[int]:
    """`samples` seeded indices of `n_rows` training rows, ascending: static INT8's calibration set.

    Raises:
        UserError: the training split has fewer rows than `quantize.calibration_samples` asks for.
    """
    import random

    from deploykit.errors import UserError

    if n_rows < samples:
        raise UserError(f"quantize.calibration_samples={samples} but the training split has only {n_rows} {unit}; "
                        "lower quantize.calibration_samples")
    idx = list(range(n_rows))
    random.Random(seed).shuffle(idx)
    return sorted(idx[:samples])


def preprocess(src: Path, dst: Path) -> None:
    """`quant_pre_process` (shape inference + basic graph optimization), required before quantizing.

    Without it, dynamic INT8 of a fused graph fails on missing types and static INT8 finds no valid
    scale for the pooler. Fused graphs (ONNX Runtime contrib ops) need its symbolic shape inference;
    the plain TorchScript export is one that inference cannot complete, and a failed attempt leaves a
    `sym_shape_infer_temp.onnx` in the working directory, so plain graphs skip it.
    """
    from onnxruntime.quantization import quant_pre_process

    from deploykit.onnx.ops import load_onnx

    fused = any(n.domain == "com.microsoft" for n in load_onnx(src, load_weights=False).graph.node)
    # auto_merge / guess_output_rank: a fused graph whose embeddings stayed unfused (Gather + LayerNorm
    # beside fused Attention) is otherwise "incomplete" for the inference
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=not fused, auto_merge=fused, guess_output_rank=fused)


class FeedReader:
    """A `CalibrationDataReader` over prepared feeds (ORT only calls `get_next`, then `rewind` if asked)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._it: Iterator = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)


def gemm_becomes_matmul(settings: Int8Settings) -> bool:
    """Dynamic quantization rewrites every Gemm into a MatMul (named `<gemm>_MatMul`) before it
    quantizes, so `MatMul` in its op_types covers Gemm layers too; static QDQ treats them apart."""
    return settings.mode == "dynamic" and "MatMul" in settings.op_types


def quantizable_nodes(onnx_path: Path, settings: Int8Settings) -> list[str]:
    """Names of the nodes quantization would touch, as `nodes_to_exclude` must spell them: the
    candidates for staying float."""
    from deploykit.onnx.ops import load_onnx

    graph = load_onnx(onnx_path, load_weights=False).graph
    inits = {i.name for i in graph.initializer}
    names = []
    for node in graph.node:
        if node.op_type == "Gemm" and gemm_becomes_matmul(settings):
            names.append(f"{node.name}_MatMul")
        elif node.op_type in settings.op_types and not (
                settings.mode == "dynamic" and node.op_type == "MatMul" and not any(i in inits for i in node.input)):
            # dynamic mode leaves MatMuls between two activations (attention scores) float; QDQ does not
            names.append(node.name)
    return names


def quantize(src: Path, dst: Path, settings: Int8Settings, *, exclude: list[str] | None = None,
             only: list[str] | None = None, calibration: list[dict[str, np.ndarray]] | None = None,
             calibration_cache: Path | None = None) -> None:
    """Quantize the pre-processed float graph `src` into `dst`.

    Args:
        src: float model, already through `preprocess`.
        dst: where the INT8 model goes.
        settings: mode, preset and operator types.
        exclude: node names kept in float (the accuracy gate's choice).
        only: quantize just these nodes (per-node sensitivity).
        calibration: feeds for static mode; with entropy or percentile ranges their activations may differ in shape
            from batch to batch (`histogram_ranges`).
        calibration_cache: a file holding activation ranges; computed once, reused by later calls.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    extra = {"WeightSymmetric": True, "ActivationSymmetric": settings.activation_symmetric,
             "AddQDQPairToWeight": settings.qdq_pair_per_weight,
             "DedicatedQDQPair": settings.qdq_pair_per_weight}
    if settings.float_outputs:
        # no QuantizeLinear/DequantizeLinear pair between an INT8 MatMul/Gemm and the float op after it (bias add,
        # GELU, layer norm): 209 -> 178 ONNX Runtime nodes on the SST-2 final graph, 13% faster at batch 1
        extra["OpTypesToExcludeOutputQuantization"] = [t for t in ("MatMul", "Gemm") if t in settings.op_types]
    if settings.reduce_range and "Gather" in settings.op_types:
        # 7 bits keep AVX2's u8 x s8 pair sums from saturating in a MatMul; a table only ever read by Gather
        # multiplies nothing, so it keeps all 8 bits (precision at no cost; on CoNLL the F1 change was within noise)
        extra["TensorQuantOverrides"] = {name: [{"reduce_range": False}] for name in lookup_tables(src)}
    exclude = list(exclude or [])
    if settings.float_attention and "MatMul" in settings.op_types:
        exclude += [name for name in activation_matmuls(src) if name not in exclude]
    common = dict(op_types_to_quantize=settings.op_types, per_channel=settings.per_channel,
                  reduce_range=settings.reduce_range, weight_type=QuantType.QInt8,
                  nodes_to_exclude=exclude, nodes_to_quantize=list(only or []) or None)
    if settings.mode == "dynamic":
        quantize_dynamic(str(src), str(dst), extra_options=extra, **common)
        return
    reader = FeedReader(calibration) if calibration else None
    method = getattr(CalibrationMethod, CALIBRATION[settings.calibration])
    # minmax stays on quantize_static's own collection, which takes batches of any shape (its recorded figures)
    with tempfile.TemporaryDirectory(prefix="deploykit-calib-") as work:
        if calibration and method != CalibrationMethod.MinMax and not (calibration_cache and calibration_cache.is_file()):
            calibration_cache = calibration_cache or Path(work) / "calibration.json"
            histogram_ranges(src, settings.op_types, method, calibration, calibration_cache, Path(work))
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8 if settings.signed_activations else QuantType.QUInt8,
                        calibrate_method=method, calibration_cache_path=calibration_cache, extra_options=extra, **common)


def fallback_weights(path: Path, nodes: list[str], bits: int) -> list[str]:
    """Store the weights of the MatMul/Gemm `nodes` that quantization left float `bits` wide again, the nodes computing
    in float: the activation rounding that made them sensitive is gone, the file stays near its INT8 size.
    Rewrites `path` in place.

    bits 8: INT8, symmetric, one scale per output channel, a DequantizeLinear in front (ONNX Runtime keeps it and
    dequantizes on every call: 1 byte per weight, some time per call). bits 16: float16 and a Cast (ONNX Runtime's
    constant folding turns it into a float32 weight when the session loads: 2 bytes per weight on disk, no cost per
    call; bench/README.md "CoNLL-2003 runs 36 and 37": 0.82 ms at batch 1 against 0.98 with INT8 weights, 0.81 all-INT8).

    Args:
        path: an INT8 graph from `quantize` whose `nodes` were excluded (dynamic mode names a Gemm `<gemm>_MatMul`).
        nodes: the gate's float nodes; Gather tables and weights shared with another node stay float.
        bits: 8 or 16.

    Returns:
        The names (as `nodes` spells them) of the nodes rewritten.

    Raises:
        CheckError: a stored weight differs from its float one by more than its rounding (a broken rewrite), or
            exceeds float16's range.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers = _readers(graph)
    asked = {n.removesuffix("_MatMul"): n for n in nodes} | {n: n for n in nodes}  # graph name -> the gate's name
    done = []
    for node in list(graph.node):
        if node.name not in asked or node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        name = node.input[1]
        if name not in inits or len(readers[name]) != 1 or len(inits[name].dims) != 2:
            continue
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        try:
            stored, decode = _int8_per_channel(w, 0 if trans_b else 1) if bits == 8 else _float16(w)
        except CheckError as e:
            raise CheckError(f"{node.name}: {e}", check="fallback weights") from e
        graph.initializer.remove(inits[name])
        graph.initializer.extend(numpy_helper.from_array(a, f"{name}_{key}") for key, a in stored.items())
        graph.node.insert(list(graph.node).index(node), helper.make_node(
            decode["op"], [f"{name}_{key}" for key in stored], [f"{name}_decoded"],
            name=f"{node.name}_weight_{decode['op']}", **decode["attrs"]))
        node.input[1] = f"{name}_decoded"
        done.append(asked[node.name])
    if done:
        onnx.save(model, str(path))
    return done


def _int8_per_channel(w: np.ndarray, axis: int) -> tuple[dict, dict]:
    # axis: the output channels (B is [N, K] under Gemm's transB, else [K, N])
    scale = (np.maximum(np.abs(w).max(axis=1 - axis), 1e-12) / 127.0).astype(np.float32)
    per = scale.reshape((-1, 1) if axis == 0 else (1, -1))
    q = np.clip(np.rint(w / per), -127, 127).astype(np.int8)
    if np.any(np.abs(q.astype(np.float32) * per - w) > 0.5001 * per + 1e-7):
        raise CheckError("INT8 fallback weights off by more than half a step; not rewritten")
    return ({"wq": q, "wq_scale": scale, "wq_zero_point": np.zeros(scale.shape, np.int8)},
            {"op": "DequantizeLinear", "attrs": {"axis": axis}})


def _float16(w: np.ndarray) -> tuple[dict, dict]:
    import onnx

    half = w.astype(np.float16)
    if not np.all(np.isfinite(half)) or np.any(np.abs(half.astype(np.float32) - w) > 2 ** -10 * np.abs(w) + 2 ** -24):
        raise CheckError("float16 fallback weights out of range or off by more than their rounding; not rewritten "
                         "(set quantize.fallback_bits 8)")
    return {"w16": half}, {"op": "Cast", "attrs": {"to": onnx.TensorProto.FLOAT}}


def activation_matmuls(onnx_path: Path) -> list[str]:
    """MatMul nodes whose inputs are all activations (no initializer, no Constant): in a transformer the attention
    products Q·Kᵀ and softmax·V, whose INT8 form quantizes both inputs on every call."""
    from deploykit.onnx.ops import load_onnx

    graph = load_onnx(onnx_path, load_weights=False).graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not constants.intersection(n.input)]


def lookup_tables(onnx_path: Path) -> list[str]:
    """Initializers read only as the data input of Gather nodes (embedding tables), never by a MatMul or Gemm (a
    tied output layer) or any other node."""
    from deploykit.onnx.ops import load_onnx

    graph = load_onnx(onnx_path, load_weights=False).graph
    readers = _readers(graph)
    return [i.name for i in graph.initializer if set(readers.get(i.name, [])) == {("Gather", 0)}]


def _readers(graph) -> dict[str, list[tuple[str, int]]]:
    """tensor name -> (op type, input slot) of every node that reads it, once per read."""
    readers: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            readers.setdefault(name, []).append((node.op_type, slot))
    return readers


def histogram_ranges(src: Path, op_types: list[str], method, calibration: list[dict[str, np.ndarray]],
                     cache: Path, work: Path) -> None:
    """Entropy or percentile activation ranges of `src` on the `calibration` feeds, written to `cache` (ORT's JSON
    calibration cache, which `quantize_static(calibration_cache_path=...)` then reads); the calibrator's augmented
    copy of the graph goes to the folder `work`.

    Why not inside quantize_static: its histogram calibrators stack every batch's activations into one array, which
    fails on a graph whose activations change shape between batches, as the padding-free graph's do (it packs the
    real tokens only; onnxruntime issue #18792). Collected one batch per `collect_data` call, ORT's own histogram
    collector merges the batches instead (the same calibrator and settings quantize_static would build).
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    calibrator = create_calibrator(Path(src), op_types, augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=method)
    for feed in calibration:
        calibrator.collect_data(FeedReader([feed]))
    save_tensors_data(calibrator.compute_data(), cache)


def logits_on(onnx_path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    from deploykit.evaluate import ort_predictor, ort_session

    predictor = ort_predictor(ort_session(onnx_path))
    return np.concatenate([predictor(f) for f in feeds])


def sensitivity(src: Path, settings: Int8Settings, feeds: list[dict[str, np.ndarray]], *,
                calibration: list[dict[str, np.ndarray]] | None = None,
                calibration_cache: Path | None = None) -> list[tuple[str, float]]:
    """Rank nodes by how far quantizing each one alone moves the logits (mean squared error).

    Quantizing one node at a time isolates its own error; comparing inside a fully quantized graph
    would blame late nodes for error that accumulated upstream.

    Returns:
        (node name, MSE vs the float logits), most sensitive first.
    """
    reference = logits_on(src, feeds)
    scores = []
    with tempfile.TemporaryDirectory(prefix="deploykit-sens-") as work:
        probe = Path(work) / "one.onnx"
        for name in quantizable_nodes(src, settings):
            quantize(src, probe, settings, only=[name], calibration=calibration, calibration_cache=calibration_cache)
            scores.append((name, float(np.mean((logits_on(probe, feeds) - reference) ** 2))))
    return sorted(scores, key=lambda s: -s[1])
