"""The quantize job of encoders (text and token classifiers): ONNX Runtime INT8 of the exported float graph.

    job = EncoderQuantizeJob(recipe, parent, spec)      # spec: the kind's EncoderQuantize (export, scores)
    reference = job.prepare(work)                       # deploykit/stages/quantize.py runs the gate over the job

A PyTorch parent is exported first (fused unless `quantize.optimize: false`, parity-checked, deploykit/onnx/export.py);
an ONNX parent is taken as it is. The float graph goes through `quant_pre_process`, then INT8 with `quantize.preset`
(avx2, the default: 7-bit weights, the same answers on every CPU), dynamic or static QDQ (calibrated on the kind's
batches); the keep-float ranking is measured per node on the kind's sensitivity batches (deploykit/quant/int8.py).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from deploykit.artifact import Artifact
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.jobs import EncoderQuantize, QuantizeJob


def float_source(recipe: Recipe, parent: Artifact, work: Path, export_args: dict,
                 op_types: list[str], max_length: int) -> tuple[Path, Path, dict | None]:
    """(float .onnx, folder holding its config + tokenizer, export report or None)."""
    from deploykit.onnx.ops import load_onnx, quantized_op_counts

    if parent.format == "pytorch":
        from deploykit.config import ExportConfig
        from deploykit.onnx.export import export_onnx

        folder = work / "float"
        folder.mkdir()
        export = recipe.export or ExportConfig()
        # TensorRT parses standard ONNX only: no ONNX Runtime fusions for its Q/DQ models
        optimize = recipe.quantize.optimize and recipe.quantize.preset != "tensorrt"
        # quantizing Gather means the word table: keep it a Gather (fused, it would stay float in
        # EmbedLayerNormalization: 19.7 MB instead of 6.1 for the default recipe's pruned student)
        report = export_onnx(parent.path, None, folder, optimize=optimize, atol=export.atol, max_length=max_length,
                             fuse_embeddings="Gather" not in op_types, **export_args)
        return folder / "model.onnx", folder, report
    if parent.format != "onnx":
        raise UserError(f"{parent.path}: a {parent.format} artifact cannot be quantized; give a PyTorch or ONNX one")
    model = load_onnx(parent.onnx_path, min_opset=13)
    if quantized_op_counts(model)["quantized_matmuls"]:
        raise UserError(f"{parent.onnx_path}: already quantized; give its float parent")
    if not any(parent.path.glob("tokenizer*")):
        raise UserError(f"{parent.path}: no tokenizer files beside {parent.onnx_path.name}; the gate needs them "
                        "(export with `deploykit export`)")
    return parent.onnx_path, parent.path, None


def warn_unquantized_layers(onnx_path: Path, settings) -> None:
    """One line when weight MatMul/Gemm nodes stay float because `op_types` does not name their type (a
    packed export's linear layers are Gemm: static `[MatMul]` alone would leave them all float)."""
    from deploykit.onnx.ops import load_onnx
    from deploykit.quant.int8 import gemm_becomes_matmul

    covered = set(settings.op_types) | ({"Gemm"} if gemm_becomes_matmul(settings) else set())
    graph = load_onnx(onnx_path, load_weights=False).graph
    weights = {i.name for i in graph.initializer}
    left = Counter(n.op_type for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.op_type not in covered
                   and any(i in weights for i in n.input))
    if left:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(left.items()))
        log(f"quantize: weight layers left float because quantize.op_types {settings.op_types} does not name them: "
            f"{kinds}; add them to quantize.op_types to quantize them")


def check_mode(cfg) -> None:
    """UserError in one line for a `quantize.mode` no encoder takes; kinds call it before a chain trains."""
    if cfg.mode == "weight_only":
        raise UserError("quantize.mode weight_only is for causal LMs; use dynamic or static for encoders")


class EncoderQuantizeJob(QuantizeJob):
    """ONNX Runtime INT8 (dynamic, or static QDQ) of an encoder's float graph, scored the kind's way (`spec`).

    Raises (at construction): UserError for `quantize.mode: weight_only` (causal LMs only)."""

    def __init__(self, recipe: Recipe, parent: Artifact, spec: EncoderQuantize):
        from deploykit.quant.fit import warn_unfit
        from deploykit.quant.int8 import Int8Settings

        cfg = recipe.quantize
        check_mode(cfg)
        self.recipe, self.parent, self.spec, self.metric = recipe, parent, spec, spec.metric
        self.fallback_nodes: list[str] = []  # of the last try: the nodes `fallback_bits` gave narrow weights
        # calibrated activation ranges often hold where per-batch dynamic ones do not
        self.advice = ", or try --mode static" if cfg.mode == "dynamic" else ""
        self.settings = Int8Settings.for_preset(cfg.preset, cfg.mode, per_channel=cfg.per_channel,
                                                op_types=cfg.op_types, calibration=cfg.calibration,
                                                float_outputs=cfg.float_outputs,
                                                float_attention=cfg.float_attention)
        warn_unfit(self.settings.preset)

    def prepare(self, work: Path) -> Path:
        from deploykit.onnx.ops import graph_inputs
        from deploykit.quant.int8 import preprocess

        cfg = self.recipe.quantize
        self.work = work
        self.float_onnx, self.side, self.export_report = float_source(self.recipe, self.parent, work,
                                                                      self.spec.export_args, self.settings.op_types,
                                                                      self.spec.max_length)
        self.scorer = self.spec.scorer(self.side, graph_inputs(self.float_onnx))
        if cfg.mode == "static" and self.scorer.calibration_feeds is None:
            raise UserError(f"quantize.mode static: data.task {self.recipe.data.task} is quantized dynamic only "
                            "here; set quantize.mode dynamic")
        self.calibration = self.scorer.calibration_feeds() if cfg.mode == "static" else None
        self.pre = work / "pre.onnx"
        preprocess(self.float_onnx, self.pre)
        warn_unquantized_layers(self.pre, self.settings)
        self.cache = work / "calibration.json"  # static ranges: calibrated once, reused by every try
        return self.pre

    def int8(self, float_nodes: list[str], attempt: int) -> Path:
        from deploykit.quant.int8 import fallback_weights, quantize

        self.fallback_nodes = []
        out = self.work / f"int8-{attempt}.onnx"
        quantize(self.pre, out, self.settings, exclude=float_nodes, calibration=self.calibration,
                 calibration_cache=self.cache)
        if self.recipe.quantize.fallback_bits and float_nodes:
            self.fallback_nodes = fallback_weights(out, float_nodes, self.recipe.quantize.fallback_bits)
        return out

    def rank(self) -> list[tuple[str, float]]:
        from deploykit.quant.int8 import sensitivity

        return sensitivity(self.pre, self.settings, self.scorer.sensitivity_feeds(), calibration=self.calibration,
                           calibration_cache=self.cache)

    def score(self, path: Path) -> dict:
        return self.scorer.score(path, "validation")

    def finish(self, result, out: Path) -> tuple[dict, dict]:
        from deploykit.onnx.export import copy_side_files
        from deploykit.quant.gate import gate_metrics

        shutil.copy2(result.model, out / "model.onnx")
        copy_side_files(self.side, out, self.float_onnx.name)
        metrics = gate_metrics(result, self.float_onnx, out / "model.onnx")
        if self.scorer.has_test:
            metrics["test"] = {"float": self.scorer.score(self.pre, "test"),
                               "int8": self.scorer.score(out / "model.onnx", "test")}
        return metrics, {"int8": self.settings.describe(), "float_nodes": result.float_nodes,
                         "fallback_nodes": self.fallback_nodes, "sensitivity": result.ranking, "export": self.export_report,
                         "max_length": self.spec.max_length, **self.scorer.record}

    def describe(self, result, metrics: dict) -> str:
        sizes, key = metrics["size_bytes"], self.metric
        wide = (f" ({len(self.fallback_nodes)} of them with {self.recipe.quantize.fallback_bits}-bit weights)"
                if self.fallback_nodes else "")
        return (f"quantize: {metrics['quantized_ops']['quantized_matmuls']} INT8 matmuls, {len(result.float_nodes)} "
                f"nodes float{wide}, {sizes['float'] / 1e6:.1f} -> {sizes['int8'] / 1e6:.1f} MB, validation {key} "
                f"{result.metrics[key]:.2f} (float {result.reference[key]:.2f})")
