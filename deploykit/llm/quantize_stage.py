"""`deploykit quantize --int8` for causal LMs: the KV-cache ONNX decoder in INT8, behind the exact-match gate.

    deploykit quantize --recipe recipes/sst2-smollm2.yaml --from runs/sst2-smollm2/prune --out runs/x/quantize

A PyTorch parent is exported first (deploykit/llm/onnx_export.py: greedy-token parity with PyTorch on
the task's prompts). `quantize.mode`: `dynamic` (INT8 weights and activations, MatMulInteger) or
`weight_only` (blockwise MatMulNBits, `quantize.bits` wide). The gate compares exact match on the
validation prompts with the float ONNX model; past `max_drop` the most error-prone MatMuls stay float
(the lm_head first, then by relative weight-quantization error), 1, 2, 4, ... of them, or, with
`quantize.fallback_bits`, get that many bits instead of float (4-bit SmolLM2 with an 8-bit lm_head:
smaller than all-8-bit and faster, since the tied embedding then shares the lm_head's weight). Called by
deploykit/stages/quantize.py when `data.task` is `generation`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import UserError

PARITY_PROMPTS = 20  # greedy-token parity of the export, as the issue asks


def weight_error(w: np.ndarray) -> float:
    """Relative error of symmetric per-column INT8 rounding of a MatMul weight [in, out]: one block per
    column spanning the whole input dimension."""
    return block_error(w, 8, w.shape[0], True)


def block_error(w: np.ndarray, bits: int, block_size: int, symmetric: bool) -> float:
    """Relative error of blockwise round-to-nearest of a MatMul weight [in, out] at `bits`, in blocks of
    `block_size` along the input dimension (the MatMulNBits layout); a last partial block is zero-padded."""
    k, n = w.shape
    pad = -k % block_size
    b = np.pad(w, ((0, pad), (0, 0))).reshape(-1, block_size, n)
    if symmetric:
        top = 2 ** (bits - 1) - 1
        scale = np.abs(b).max(axis=1, keepdims=True) / top
        scale[scale == 0] = 1.0
        q = np.clip(np.round(b / scale), -top - 1, top) * scale
    else:
        lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
        scale = (hi - lo) / (2**bits - 1)
        scale[scale == 0] = 1.0
        zero = np.clip(np.round(-lo / scale), 0, 2**bits - 1)
        q = (np.clip(np.round(b / scale) + zero, 0, 2**bits - 1) - zero) * scale
    return float(np.linalg.norm(b - q) / max(np.linalg.norm(b), 1e-12))


def rank_nodes(onnx_path: Path, mode: str, fallback: tuple[int, int, bool] | None = None) -> list[tuple[str, float]]:
    """MatMuls most likely to hurt in INT8 first: the lm_head (its error lands on every logit), then by
    relative rounding error of the weight. Data-free: per-node accuracy runs of a 30-layer decoder
    (210 MatMuls) would take hours on a CPU.

    `fallback` = (bits, block_size, symmetric) of a weight_only model whose gate widens nodes instead of
    keeping them float: then the score is the error at that width per weight, i.e. error removed per byte
    the wider copy costs. SmolLM2's 4-bit block errors differ little between MatMuls (0.075-0.093), so this
    widens the small attention projections first; measured there, the gate passed at 32 nodes (the lm_head
    + 31 k/v projections: 86.0 exact match, float 87.0), where the 48 MatMuls of largest 4-bit error (not
    per weight) 8-bit gave 85.0.
    """
    import onnx
    from onnx import numpy_helper

    from deploykit.llm.int8 import lm_head_node, quantizable_nodes

    names = set(quantizable_nodes(onnx_path, mode))
    model = onnx.load(str(onnx_path))
    inits = {i.name: i for i in model.graph.initializer}
    scores = {}
    for node in model.graph.node:
        if node.name in names:
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            w = w.reshape(w.shape[-2], w.shape[-1])
            scores[node.name] = block_error(w, *fallback) / w.size if fallback else weight_error(w)
    head = lm_head_node(onnx_path)
    if head in scores:
        scores[head] = float("inf")
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _float_folder(recipe: Recipe, parent: Artifact, work: Path, prompts: list[str]) -> tuple[Path, dict | None]:
    if parent.format == "onnx":
        return parent.path, None
    if parent.format != "pytorch":
        raise UserError(f"{parent.path}: cannot quantize a {parent.format} artifact; give a PyTorch or ONNX one")
    from deploykit.llm.onnx_export import export_causal_lm

    opset = recipe.export.opset if recipe.export else 17
    report = export_causal_lm(parent.path, None, work / "float", opset=opset, parity_prompts=prompts)
    return work / "float", report


def run(recipe: Recipe, parent: Artifact, out_dir: Path) -> Artifact:
    from transformers import AutoTokenizer

    from deploykit.llm.data import load_chat_task, render_prompt
    from deploykit.llm.int8 import quantize_causal
    from deploykit.llm.quality import evaluate_causal, scored_by_exact_match
    from deploykit.onnx.ops import file_size
    from deploykit.quant.gate import gate

    cfg = recipe.quantize
    if cfg.mode == "static":
        raise UserError("quantize.mode static (calibrated activations) is not supported for causal LMs; "
                        "use dynamic or weight_only")
    metric = "exact_match" if scored_by_exact_match(recipe.data) else None
    if metric is None:
        raise UserError("quantize gates causal LMs on exact answers; data.response_column holds free text "
                        "(recast a labelled task as generation)")
    task = load_chat_task(recipe.data)
    with tempfile.TemporaryDirectory(prefix="deploykit-quantize-") as tmpdir, staging(out_dir) as tmp:
        work = Path(tmpdir)
        tokenizer = AutoTokenizer.from_pretrained(parent.path)
        prompts = [render_prompt(tokenizer, p, recipe.data) for p in task.validation.prompts[:PARITY_PROMPTS]]
        float_dir, export_report = _float_folder(recipe, parent, work, prompts)
        reports: dict[int, dict] = {}

        def int8(float_nodes: list[str], attempt: int) -> Path:
            # with fallback_bits the gate's "float" nodes are quantized that wide instead
            wide = float_nodes if cfg.fallback_bits else []
            reports[attempt] = quantize_causal(float_dir, work / f"int8-{attempt}", mode=cfg.mode, bits=cfg.bits,
                                               block_size=cfg.block_size, per_channel=cfg.per_channel,
                                               exclude=[] if wide else float_nodes, symmetric=cfg.symmetric,
                                               wide=wide, wide_bits=cfg.fallback_bits or 8)
            return work / f"int8-{attempt}"

        fallback = (cfg.bits, cfg.block_size, cfg.symmetric) if cfg.fallback_bits else None

        def validation(folder: Path) -> dict:
            return evaluate_causal(folder, task.validation, recipe.data, runtime="ort", with_perplexity=False)

        result = gate(cfg.max_drop, cfg.max_float_nodes, validation, int8,
                      lambda: rank_nodes(float_dir / "model.onnx", cfg.mode, fallback), float_dir, metric=metric)
        for item in result.model.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        report = reports[len(result.tries) - 1]
        metrics = {"validation": {"float": result.reference, "int8": result.metrics, "drop": result.tries[-1]["drop"]},
                   "size_bytes": {"float": file_size(float_dir / "model.onnx"), "int8": file_size(tmp / "model.onnx")},
                   "quantized_ops": report["ops"]}
        manifest = write_manifest(tmp, stage="quantize", format="onnx", parent=parent,
                                  config=recipe.model_dump(include={"data", "quantize"}), metrics=metrics,
                                  onnx_file="model.onnx", int8={k: v for k, v in report.items() if k != "ops"},
                                  float_nodes=report["float_nodes"], fallback_nodes=report["wide_nodes"],
                                  fallback_bits=cfg.fallback_bits, tries=result.tries,
                                  sensitivity=[(n, float(f"{e:.4g}") if np.isfinite(e) else "lm_head")
                                               for n, e in result.ranking], export=export_report)
    sizes = metrics["size_bytes"]
    if cfg.fallback_bits:
        log(f"quantize: the gate's {len(report['wide_nodes'])} fallback nodes are {cfg.fallback_bits}-bit, not float")
    log(f"quantize: {report['quantized_nodes']} INT8 MatMuls ({cfg.mode}), {len(report['float_nodes'])} float, "
        f"{sizes['float'] / 1e6:.1f} -> {sizes['int8'] / 1e6:.1f} MB, validation {metric} "
        f"{result.metrics[metric]:.2f} (float {result.reference[metric]:.2f})")
    return Artifact(Path(out_dir).resolve(), manifest)
