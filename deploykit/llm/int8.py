"""Quantize an exported causal-LM folder (model.onnx with KV cache): dynamic INT8 or weight-only blockwise.

    from deploykit.llm.int8 import quantize_causal
    quantize_causal("runs/chat/export", "runs/chat/int8", mode="dynamic")
    quantize_causal("runs/chat/export", "runs/chat/w8", mode="weight_only", bits=8, block_size=128)

`dynamic`: every MatMul with a weight becomes MatMulInteger (ONNX Runtime fuses it with the activation's
DynamicQuantizeLinear into DynamicQuantizeMatMul at load); activations are quantized per call, so
nothing is calibrated. `weight_only`: MatMulNBits with 2, 4 or 8-bit weights in blocks of
`block_size` along the input dimension (ONNX Runtime 1.32 supports those three widths);
`accuracy_level=4` lets its CPU kernel compute in int8, otherwise weights are dequantized to float.

Tied embeddings: the export constant-folds the lm_head's transposed copy of the embedding, so the
lm_head is an ordinary MatMul with its own weight and is quantized like the others (it is the largest
one: 28 M of SmolLM2's 135 M weights); the embedding lookup itself becomes GatherBlockQuantized over
8-bit blocks of the table (`quantize_embeddings`; `embeddings=False` keeps it float).
To keep the lm_head float, pass its node name (`lm_head_node`) in `exclude`.

Measured on SmolLM2-135M (2-core AMD without VNNI, batch 1, 32 new tokens, shared machine, 1 thread):
ORT FP32 24.8 tok/s; dynamic INT8 54.4 (lm_head float: 46.5, and no more faithful); weight-only
8-bit with accuracy_level 4: 50.4, 4-bit: 74.0. With accuracy_level None, 8-bit MatMulNBits fell to
~3 tok/s (a slow dequantizing path), so 4 is the default. Greedy text of every INT8 variant drifts
from FP32 on longer answers (1 in 5 prompts identical over 48 tokens; 4-bit diverges at once).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from deploykit.errors import UserError

MODES = ("dynamic", "weight_only")
NBITS = (2, 4, 8)
# operators to count in the report: integer ones, plus what stayed float
REPORTED_OPS = ("MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulNBits",
                "GatherBlockQuantized", "MatMul")


def _weight_matmuls(onnx_path: Path) -> list:
    from deploykit.onnx.ops import load_onnx

    graph = load_onnx(onnx_path, load_weights=False).graph
    inits = {i.name for i in graph.initializer}
    return [n for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits]


def quantizable_nodes(onnx_path: str | Path, mode: str = "dynamic") -> list[str]:
    """Names of the MatMuls `mode` would quantize (those with a constant weight), as `exclude` spells them.

    Attention's activation x activation MatMuls (scores, context) are not among them: both modes
    need a constant weight.
    """
    _check_mode(mode)
    return [n.name for n in _weight_matmuls(Path(onnx_path))]


def lm_head_node(onnx_path: str | Path) -> str | None:
    """The MatMul that writes the logits (the lm_head), or None if the graph has no such node."""
    from deploykit.onnx.ops import load_onnx

    graph = load_onnx(onnx_path, load_weights=False).graph
    producers = {o: n for n in graph.node for o in n.output}
    node = producers.get("logits")
    while node is not None and node.op_type != "MatMul":  # e.g. a Cast or Reshape after the MatMul
        node = producers.get(node.input[0])
    return node.name if node is not None else None


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"quantize.mode={mode!r} is not one of {', '.join(MODES)} for a causal LM")


def _op_report(onnx_path: Path) -> dict[str, int]:
    from deploykit.onnx.ops import load_onnx, op_counts

    counts = op_counts(load_onnx(onnx_path, load_weights=False))
    return {op: counts[op] for op in REPORTED_OPS if counts[op]}


def _copy_side_files(src: Path, dst: Path, onnx_path: Path) -> None:
    """config, generation_config, tokenizer: everything but the graph, its weights and the manifest."""
    from deploykit.onnx.ops import model_files

    skip = {p.name for p in model_files(onnx_path)} | {"manifest.json"}
    for item in src.iterdir():
        if item.is_file() and item.name not in skip:
            shutil.copy2(item, dst / item.name)


def _dynamic(src: Path, dst: Path, per_channel: bool, reduce_range: bool, exclude: list[str],
             external: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # MatMul only: Gather (the embedding) in INT8 costs accuracy and saves no time
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=per_channel,
                     reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                     use_external_data_format=external,
                     # the TorchScript graph leaves some value types unknown; float is the right guess
                     extra_options={"WeightSymmetric": True, "DefaultTensorType": onnx.TensorProto.FLOAT})


def embedding_gathers(model) -> list:
    """Gather nodes that look rows up in a 2-D float initializer: the token embedding table."""
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits
            and len(inits[n.input[0]].dims) == 2 and inits[n.input[0]].data_type == onnx.TensorProto.FLOAT]


def quantize_embeddings(path: Path) -> int:
    """Store each embedding table as 8-bit blocks read by ONNX Runtime's GatherBlockQuantized.

    The table is the largest float tensor left after MatMul quantization (SmolLM2: 28 M of 135 M weights,
    113 MB as float): without this an INT8 decoder stays near half its float size. Symmetric scales per
    block of hidden units (uint8 around a zero point of 128) keep each token vector's own range; the
    contrib op dequantizes only the rows looked up (a DequantizeLinear of the whole table in front of a
    Gather ran on every call: 70 % slower decoding, measured). Returns the number of tables quantized.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    done: set[str] = set()
    for node in embedding_gathers(model):
        name = node.input[0]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        rows, width = inits[name].dims
        block = next((b for b in (128, 64, 32, 16) if width % b == 0), None)
        if axis != 0 or block is None:
            continue  # not a row lookup, or a width no block size divides: leave it float
        if name not in done:
            table = numpy_helper.to_array(inits[name]).astype(np.float32).reshape(rows, width // block, block)
            scale = np.abs(table).max(axis=2) / 127.0
            scale[scale == 0] = 1.0
            q = (np.clip(np.round(table / scale[..., None]), -127, 127) + 128).astype(np.uint8).reshape(rows, width)
            model.graph.initializer.remove(inits[name])
            model.graph.initializer.extend([numpy_helper.from_array(q, f"{name}_q8"),
                                            numpy_helper.from_array(scale.astype(np.float32), f"{name}_scales"),
                                            numpy_helper.from_array(np.full(scale.shape, 128, np.uint8),
                                                                    f"{name}_zero_points")])
            done.add(name)
        quantized = helper.make_node("GatherBlockQuantized", [f"{name}_q8", node.input[1], f"{name}_scales",
                                                              f"{name}_zero_points"], list(node.output),
                                     name=f"{node.name}_q8", domain="com.microsoft", gather_axis=0,
                                     quantize_axis=1, block_size=block, bits=8)
        index = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(index, quantized)
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
    return len(done)


def _weight_only(src: Path, dst: Path, bits: int, block_size: int, exclude: list[str], external: bool,
                 accuracy_level: int | None, symmetric: bool, wide: list[str], wide_bits: int) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if bits not in NBITS:
        raise UserError(f"quantize.bits={bits}: weight-only MatMulNBits takes {', '.join(map(str, NBITS))}")
    if block_size < 16 or block_size & (block_size - 1):
        raise UserError(f"quantize.block_size={block_size} must be a power of two, at least 16")
    model = onnx.load(str(src))
    if wide:
        # first pass: only the `wide` nodes (the quantizer's nodes_to_include adds to op_types, it does not
        # restrict, so every other MatMul is excluded). Symmetric on purpose: 8-bit symmetric lost 0.5 pt on
        # SmolLM2, and a symmetric 8-bit lm_head can double as the tied embedding table (share_tied_embedding)
        others = [n.name for n in _weight_matmuls(src) if n.name not in set(wide)]
        quantizer = MatMulNBitsQuantizer(model, bits=wide_bits, block_size=block_size, is_symmetric=True,
                                         accuracy_level=accuracy_level, nodes_to_exclude=others,
                                         op_types_to_quantize=("MatMul",))
        quantizer.process()
        model = quantizer.model.model
    # second pass: the wide nodes are MatMulNBits now, so op_types=("MatMul",) leaves them alone
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                     accuracy_level=accuracy_level, nodes_to_exclude=exclude,
                                     op_types_to_quantize=("MatMul",))
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=external)


def tied_embedding(onnx_path: Path) -> str | None:
    """The embedding table's initializer name when the lm_head's weight is exactly its transpose (tied
    embeddings: the export constant-folds the transposed copy, so the file holds the table twice)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    head = lm_head_node(onnx_path)
    inits = {i.name: i for i in model.graph.initializer}
    node = next((n for n in model.graph.node if n.name == head), None)
    if node is None or node.input[1] not in inits:
        return None
    weight = numpy_helper.to_array(inits[node.input[1]])
    for gather in embedding_gathers(model):
        table = inits[gather.input[0]]
        if list(table.dims) == list(weight.shape[::-1]) and np.array_equal(numpy_helper.to_array(table), weight.T):
            return gather.input[0]
    return None


def share_tied_embedding(path: Path, table: str, head: str) -> bool:
    """Point the lookup of the tied `table` at the 8-bit lm_head's MatMulNBits weight; drop the float table.

    MatMulNBits stores its weight [N, K/block, block] per output column, i.e. per vocabulary row of the
    tied table in blocks along the hidden size: a Reshape to [vocab, hidden] is exactly the 8-bit table
    GatherBlockQuantized reads (its scales [vocab, K/block] already have the right shape, and both ops
    default an absent uint8 zero point to 128, checked in tests/llm). SmolLM2: saves the 30 MB second table.
    Only for a symmetric 8-bit lm_head without zero points; returns False (nothing changed) otherwise.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    attrs = lambda n: {a.name: helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    node = next((n for n in model.graph.node if n.op_type == "MatMulNBits" and n.name == f"{head}_Q8"), None)
    if node is None or attrs(node).get("bits") != 8 or len(node.input) > 3:
        return False
    gathers = [n for n in embedding_gathers(model) if n.input[0] == table]
    if not gathers or any(next((a.i for a in g.attribute if a.name == "axis"), 0) != 0 for g in gathers):
        return False
    k, n, block = attrs(node)["K"], attrs(node)["N"], attrs(node)["block_size"]
    if k % block:
        return False  # the last block is padded: the reshape would not be the table
    shape = f"{table}_shared_shape"
    model.graph.initializer.append(numpy_helper.from_array(np.array([n, k], np.int64), shape))
    reshape = helper.make_node("Reshape", [node.input[1], shape], [f"{table}_shared_q8"], name=f"{table}_shared")
    nodes = list(model.graph.node)
    first = min(nodes.index(g) for g in gathers)
    for g in gathers:
        index = list(model.graph.node).index(g)
        model.graph.node.remove(g)
        model.graph.node.insert(index, helper.make_node(
            "GatherBlockQuantized", [f"{table}_shared_q8", g.input[1], node.input[2]], list(g.output),
            name=f"{g.name}_q8", domain="com.microsoft", gather_axis=0, quantize_axis=1, block_size=block, bits=8))
    model.graph.node.insert(first, reshape)
    old = next(i for i in model.graph.initializer if i.name == table)
    model.graph.initializer.remove(old)
    onnx.save(model, str(path))
    return True


def quantize_causal(src_folder: str | Path, dst_folder: str | Path, *, mode: str = "dynamic", bits: int = 8,
                    block_size: int = 128, per_channel: bool = True, reduce_range: bool | None = None,
                    exclude: list[str] | None = None, accuracy_level: int | None = 4,
                    embeddings: bool = True, symmetric: bool = True, wide: list[str] | None = None,
                    wide_bits: int = 8) -> dict:
    """Quantize `src_folder/model.onnx` into `dst_folder` (written atomically; no manifest).

    Args:
        src_folder: an exported causal-LM folder (model.onnx + config + tokenizer).
        dst_folder: the folder to create (replaced if it exists).
        mode: `dynamic` (INT8 weights and activations) or `weight_only` (MatMulNBits).
        bits: weight width for `weight_only` (2, 4 or 8); `dynamic` is always 8.
        block_size: weights per scale along the input dimension (`weight_only`).
        per_channel: one scale per output column (`dynamic`); per tensor otherwise.
        reduce_range: 7-bit weights (`dynamic`); None = this CPU's preset: on only without VNNI, where
            the u8 x s8 kernel's int16 pair sums saturate on full-range weights (measured on SmolLM2
            without VNNI: 8-bit per-channel weights gave garbage text, 7-bit the FP32 answer).
        exclude: MatMul node names kept float (see `quantizable_nodes`, `lm_head_node`).
        accuracy_level: MatMulNBits compute type (4 = int8 activations, fastest on x86; None = float).
        embeddings: store the token embedding table in 8 bits too (`quantize_embeddings`); a table tied
            to an lm_head quantized to 8 bits is read from the lm_head's weight (`share_tied_embedding`).
        symmetric: `weight_only` blocks without zero points; False stores one per block (asymmetric
            4-bit kept 1.5 more exact-match points on SmolLM2 than symmetric).
        wide: MatMul names quantized `wide_bits` wide (symmetric) instead of `bits` (`weight_only`):
            the accuracy gate's fallback for sensitive nodes that need not stay float.
        wide_bits: width of the `wide` nodes; must exceed `bits`.

    Returns:
        A report: mode, settings, operator counts (by type), quantized / kept-float / wide node counts,
        size in bytes before and after (external data files included).
    """
    from deploykit.artifact import staging
    from deploykit.onnx.ops import file_size, model_files

    _check_mode(mode)
    if reduce_range is None:
        from deploykit.hardware import quant_preset

        reduce_range = quant_preset() == "avx2"
    src_folder = Path(src_folder)
    src = src_folder / "model.onnx" if src_folder.is_dir() else src_folder
    candidates = quantizable_nodes(src, mode)  # a file that is not ONNX fails here, in one line
    exclude, wide = list(exclude or []), list(wide or [])
    for key, names in (("exclude", exclude), ("fallback", wide)):
        unknown = sorted(set(names) - set(candidates))
        if unknown:
            raise UserError(f"quantize.{key} names {unknown[:3]}, not MatMuls with weights in {src}; "
                            "see quantizable_nodes()")
    if wide and mode != "weight_only":
        raise UserError(f"quantize: wider fallback nodes need mode weight_only, not {mode}")
    if wide and (wide_bits not in NBITS or wide_bits <= bits):
        raise UserError(f"quantize.fallback_bits={wide_bits} must be 4 or 8 and wider than quantize.bits={bits}")
    if set(wide) & set(exclude):
        raise UserError(f"quantize: {sorted(set(wide) & set(exclude))[:3]} both float and {wide_bits}-bit")
    external = len(model_files(src)) > 1
    head = lm_head_node(src)
    tied = tied_embedding(src) if embeddings and mode == "weight_only" and head in wide else None
    with staging(dst_folder) as tmp:
        dst = tmp / "model.onnx"
        if mode == "dynamic":
            _dynamic(src, dst, per_channel, reduce_range, exclude, external)
        else:
            _weight_only(src, dst, bits, block_size, exclude, external, accuracy_level, symmetric, wide, wide_bits)
        shared = bool(tied) and wide_bits == 8 and share_tied_embedding(dst, tied, head)
        tables = quantize_embeddings(dst) if embeddings else 0
        _copy_side_files(src.parent, tmp, src)
        ops = _op_report(dst)
        size_after = file_size(dst)
        files_after = len(model_files(dst))
    settings = ({"per_channel": per_channel, "reduce_range": reduce_range, "bits": 8} if mode == "dynamic"
                else {"bits": bits, "block_size": block_size, "accuracy_level": accuracy_level,
                      "symmetric": symmetric, "wide_bits": wide_bits})
    settings["int8_embedding_tables"] = tables + shared
    settings["embedding_shared_with_lm_head"] = shared
    return {"mode": mode, **settings, "onnx_file": "model.onnx", "ops": ops,
            "quantized_nodes": len(candidates) - len(exclude), "float_nodes": exclude, "wide_nodes": wide,
            "size_bytes_before": file_size(src), "size_bytes_after": size_after,
            "files_before": len(model_files(src)), "files_after": files_after}
