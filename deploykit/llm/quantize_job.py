"""The causal LM's quantize job (data.task generation): the KV-cache ONNX decoder in INT8, behind the exact-match gate.

    deploykit quantize --recipe recipes/sst2-smollm2.yaml --from runs/sst2-smollm2/prune --out runs/x/quantize

A PyTorch parent is exported first (deploykit/llm/onnx_export.py: greedy-token parity with PyTorch on
the task's prompts). `quantize.mode`: `dynamic` (INT8 weights and activations, MatMulInteger) or
`weight_only` (blockwise MatMulNBits, `quantize.bits` wide). The gate compares exact match on the
validation prompts with the float ONNX model; past `max_drop` the most error-prone MatMuls stay float
(the lm_head first, then by relative weight-quantization error), 1, 2, 4, ... of them, or, with
`quantize.fallback_bits`, get that many bits instead of float (4-bit SmolLM2 with an 8-bit lm_head:
smaller than all-8-bit and faster, since the tied embedding then shares the lm_head's weight). deploykit/stages/
quantize.py stages the folder, runs the gate over this job, writes the manifest and logs, as for every kind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from deploykit.artifact import Artifact
from deploykit.config import Recipe
from deploykit.errors import UserError
from deploykit.jobs import QuantizeJob

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


class CausalQuantizeJob(QuantizeJob):
    """INT8 (dynamic) or blockwise 4/8-bit weights (weight_only) of a causal LM's KV-cache graph, scored by exact
    match on the validation prompts with ONNX Runtime.

    Raises (at construction): UserError for `quantize.mode: static` or a task without exact answers."""

    metric = "exact_match"

    def __init__(self, recipe: Recipe, parent: Artifact):
        from deploykit.llm.data import load_chat_task
        from deploykit.llm.quality import scored_by_exact_match
        from deploykit.quant.fit import reduce_range_for, warn_unfit

        if recipe.quantize.mode == "static":
            raise UserError("quantize.mode static (calibrated activations) is not supported for causal LMs; "
                            "use dynamic or weight_only")
        if recipe.quantize.fallback_bits and recipe.quantize.mode != "weight_only":
            raise UserError(f"quantize.fallback_bits with mode {recipe.quantize.mode} is for encoders; causal LMs "
                            "take it with mode weight_only")
        if not scored_by_exact_match(recipe.data):
            raise UserError("quantize gates causal LMs on exact answers; data.response_column holds free text "
                            "(recast a labelled task as generation)")
        self.recipe, self.parent, self.cfg = recipe, parent, recipe.quantize
        # dynamic INT8's weight width follows quantize.preset as the encoders' does (auto: this CPU's)
        self.reduce_range = reduce_range_for(self.cfg.preset)
        if self.cfg.mode == "dynamic":
            warn_unfit(self.cfg.preset)
        # with weight_only, the sensitive MatMuls may go 8-bit instead of float
        self.advice = (", or set quantize.fallback_bits 8" if self.cfg.mode == "weight_only" and
                       not self.cfg.fallback_bits and self.cfg.bits < 8 else "")
        self.task = load_chat_task(recipe.data)
        self.reports: dict[int, dict] = {}

    def prepare(self, work: Path) -> Path:
        from transformers import AutoTokenizer

        from deploykit.llm.data import render_prompt

        self.work = work
        tokenizer = AutoTokenizer.from_pretrained(self.parent.path)
        prompts = [render_prompt(tokenizer, p, self.recipe.data)
                   for p in self.task.validation.prompts[:PARITY_PROMPTS]]
        self.float_dir, self.export_report = _float_folder(self.recipe, self.parent, work, prompts)
        return self.float_dir

    def int8(self, float_nodes: list[str], attempt: int) -> Path:
        from deploykit.llm.int8 import quantize_causal

        cfg = self.cfg
        # with fallback_bits the gate's "float" nodes are quantized that wide instead
        wide = float_nodes if cfg.fallback_bits else []
        self.reports[attempt] = quantize_causal(self.float_dir, self.work / f"int8-{attempt}", mode=cfg.mode,
                                                bits=cfg.bits, block_size=cfg.block_size, per_channel=cfg.per_channel,
                                                exclude=[] if wide else float_nodes, symmetric=cfg.symmetric,
                                                wide=wide, wide_bits=cfg.fallback_bits or 8,
                                                reduce_range=self.reduce_range)
        return self.work / f"int8-{attempt}"

    def rank(self) -> list[tuple[str, float]]:
        cfg = self.cfg
        fallback = (cfg.bits, cfg.block_size, cfg.symmetric) if cfg.fallback_bits else None
        return rank_nodes(self.float_dir / "model.onnx", cfg.mode, fallback)

    def score(self, folder: Path) -> dict:
        from deploykit.llm.quality import evaluate_causal

        return evaluate_causal(folder, self.task.validation, self.recipe.data, runtime="ort", with_perplexity=False)

    def finish(self, result, out: Path) -> tuple[dict, dict]:
        from deploykit.onnx.ops import file_size

        for item in result.model.iterdir():
            if item.is_file():
                shutil.copy2(item, out / item.name)
        self.report = report = self.reports[len(result.tries) - 1]
        metrics = {"validation": {"float": result.reference, "int8": result.metrics, "drop": result.tries[-1]["drop"]},
                   "size_bytes": {"float": file_size(self.float_dir / "model.onnx"),
                                  "int8": file_size(out / "model.onnx")},
                   "quantized_ops": report["ops"]}
        return metrics, {"int8": {k: v for k, v in report.items() if k != "ops"},
                         "float_nodes": report["float_nodes"], "fallback_nodes": report["wide_nodes"],
                         "fallback_bits": self.cfg.fallback_bits,
                         "sensitivity": [(n, float(f"{e:.4g}") if np.isfinite(e) else "lm_head")
                                         for n, e in result.ranking], "export": self.export_report}

    def describe(self, result, metrics: dict) -> str:
        cfg, report, sizes, metric = self.cfg, self.report, metrics["size_bytes"], self.metric
        wide = (f"; the gate's {len(report['wide_nodes'])} fallback nodes are {cfg.fallback_bits}-bit, not float"
                if cfg.fallback_bits else "")
        return (f"quantize: {report['quantized_nodes']} INT8 MatMuls ({cfg.mode}), {len(report['float_nodes'])} "
                f"float, {sizes['float'] / 1e6:.1f} -> {sizes['int8'] / 1e6:.1f} MB, validation {metric} "
                f"{result.metrics[metric]:.2f} (float {result.reference[metric]:.2f}){wide}")


def quantize_job(recipe: Recipe, parent: Artifact) -> CausalQuantizeJob:
    return CausalQuantizeJob(recipe, parent)
