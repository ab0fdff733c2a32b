"""`deploykit quantize --int8`: ONNX Runtime INT8 (dynamic, or static QDQ) behind an accuracy gate.

    deploykit quantize --from runs/sst2/finetune --int8 --data sst2 --out runs/sst2/quantize
    deploykit quantize --from runs/sst2/export --int8 --mode static --set quantize.calibration=percentile

A PyTorch input is exported first (fused, parity-checked, see `deploykit/onnx/export.py`). The float graph
goes through `quant_pre_process`, then INT8 with the preset of this CPU (`quantize.preset: auto`).
The gate evaluates the INT8 model against its float parent on the validation split; when it loses
more than `quantize.max_drop` points, nodes are ranked by sensitivity and the most sensitive stay in
float (1, 2, 4, ... up to `quantize.max_float_nodes`) until the gate holds, or the stage fails with
every try's figures (the loop is `deploykit.quant.gate`, the INT8 steps `deploykit.quant.int8`).
`deploykit.quant.baseline.standard_baseline` builds the by-hand recipe (Optimum's avx512_vnni dynamic
preset on a plain export) that `deploykit bench` compares against.

How the float graph is exported and how a graph is scored come from the task's kind (`Kind.quantize_job`):
text classifiers (deploykit/quant/text_job.py: accuracy, static calibration on training rows), token
classifiers (deploykit/ner/quantize.py: entity F1 over words, dynamic only); causal LMs quantize weights
with their own runner (deploykit/llm/quantize_stage.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.kinds import kind_of


def _float_source(recipe: Recipe, parent: Artifact, work: Path, export_args: dict,
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


def _warn_unquantized_layers(onnx_path: Path, settings) -> None:
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


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path) -> Artifact:
    """INT8-quantize `parent` (PyTorch: exported first; ONNX: used as is) into `out_dir`.

    Raises:
        UserError: no input or data, a mode or artifact the kind cannot take, too few calibration rows.
        GateError: no try within `quantize.max_float_nodes` keeps the kind's metric within `quantize.max_drop`.
    """
    from deploykit.onnx.export import copy_side_files
    from deploykit.onnx.ops import graph_inputs
    from deploykit.quant.gate import gate, gate_metrics
    from deploykit.quant.int8 import Int8Settings, preprocess, quantize, sensitivity

    cfg = recipe.quantize
    if parent is None:
        raise UserError("quantize needs an input artifact: --from FOLDER (a fine-tuned model or its ONNX export)")
    if recipe.data is None:
        raise UserError("quantize needs a data section (or --data NAME_OR_PATH): the gate evaluates on its "
                        "validation split")
    kind = kind_of(recipe.data.task)
    if (own := kind.runner("quantize")) is not None:
        return own(recipe, parent, out_dir)
    if kind.quantize_job is None:
        raise UserError(f"quantize: data.task {kind.name} cannot be quantized to INT8 yet")
    job = kind.quantize_job(recipe, parent)  # a mode the kind does not take is refused here
    if cfg.mode == "weight_only":
        raise UserError("quantize.mode weight_only is for causal LMs; use dynamic or static for encoders")
    settings = Int8Settings.for_preset(cfg.preset, cfg.mode, per_channel=cfg.per_channel, op_types=cfg.op_types,
                                       calibration=cfg.calibration)
    with tempfile.TemporaryDirectory(prefix="deploykit-quantize-") as tmpdir, staging(out_dir) as tmp:
        work = Path(tmpdir)
        float_onnx, side, export_report = _float_source(recipe, parent, work, job.export_args, settings.op_types,
                                                        job.max_length)
        scorer = job.scorer(side, graph_inputs(float_onnx))
        if cfg.mode == "static" and scorer.calibration_feeds is None:
            raise UserError(f"quantize.mode static: data.task {kind.name} is quantized dynamic only here; "
                            "set quantize.mode dynamic")
        calib = scorer.calibration_feeds() if cfg.mode == "static" else None
        pre = work / "pre.onnx"
        preprocess(float_onnx, pre)
        _warn_unquantized_layers(pre, settings)
        cache = work / "calibration.json"  # static ranges: calibrated once, reused by every try

        def int8(float_nodes: list[str], attempt: int) -> Path:
            quantize(pre, work / f"int8-{attempt}.onnx", settings, exclude=float_nodes, calibration=calib,
                     calibration_cache=cache)
            return work / f"int8-{attempt}.onnx"

        def rank() -> list[tuple[str, float]]:
            return sensitivity(pre, settings, scorer.sensitivity_feeds(), calibration=calib, calibration_cache=cache)

        result = gate(cfg.max_drop, cfg.max_float_nodes, lambda path: scorer.score(path, "validation"), int8, rank,
                      pre, metric=kind.metric)
        shutil.copy2(result.model, tmp / "model.onnx")
        copy_side_files(side, tmp, float_onnx.name)
        metrics = gate_metrics(result, float_onnx, tmp / "model.onnx")
        if scorer.has_test:
            metrics["test"] = {"float": scorer.score(pre, "test"), "int8": scorer.score(tmp / "model.onnx", "test")}
        manifest = write_manifest(tmp, stage="quantize", format="onnx", parent=parent,
                                  config=recipe.model_dump(include={"data", "quantize"}), metrics=metrics,
                                  onnx_file="model.onnx", int8=settings.describe(), float_nodes=result.float_nodes,
                                  tries=result.tries, sensitivity=result.ranking,
                                  export=export_report, max_length=job.max_length, **scorer.record)
    sizes, key = metrics["size_bytes"], kind.metric
    log(f"quantize: {metrics['quantized_ops']['quantized_matmuls']} INT8 matmuls, {len(result.float_nodes)} nodes "
        f"float, {sizes['float'] / 1e6:.1f} -> {sizes['int8'] / 1e6:.1f} MB, validation {key} "
        f"{result.metrics[key]:.2f} (float {result.reference[key]:.2f})")
    return Artifact(Path(out_dir).resolve(), manifest)
