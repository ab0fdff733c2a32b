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
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.kinds import kind_of

SENSITIVITY_ROWS = 128
CALIBRATION_BATCH = 16


def _feeds(split, tokenizer, names: list[str], batch_size: int, max_length: int,
           fixed_length: int | None = None) -> list[dict[str, np.ndarray]]:
    """Graph-ready batches; a graph input the tokenizer does not give (token_type_ids) is zeros."""
    from deploykit.data import batches

    out = []
    for enc, _ in batches(split, tokenizer, batch_size, max_length, fixed_length):
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        out.append({n: np.asarray(enc[n], dtype=np.int64) if n in enc else np.zeros_like(ids) for n in names})
    return out


def _calibration_feeds(recipe: Recipe, task, tokenizer, names: list[str]) -> list[dict[str, np.ndarray]]:
    """`calibration_samples` seeded training rows, padded to one fixed length (ORT's histogram
    calibrators stack every batch, so shapes must agree)."""
    cfg = recipe.quantize
    if len(task.train) < cfg.calibration_samples:
        raise UserError(f"quantize.calibration_samples={cfg.calibration_samples} but the training split has only "
                        f"{len(task.train)} rows; lower quantize.calibration_samples")
    idx = list(range(len(task.train)))
    random.Random(recipe.data.seed).shuffle(idx)
    rows = task.train.take(sorted(idx[:cfg.calibration_samples]))
    return _feeds(rows, tokenizer, names, CALIBRATION_BATCH, cfg.calibration_seq_len, cfg.calibration_seq_len)


def _accuracy(onnx_path: Path, split, tokenizer, max_length: int, stride: int | None = None) -> dict[str, float]:
    from deploykit.evaluate import eval_batch_size, metrics, ort_predictor, ort_session, predict

    logits = predict(ort_predictor(ort_session(onnx_path)), split, tokenizer, max_length, eval_batch_size(onnx_path),
                     stride)
    return metrics(logits, split.labels)


def _float_source(recipe: Recipe, parent: Artifact, work: Path, texts,
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
        report = export_onnx(parent.path, None, folder, optimize=optimize, atol=export.atol,
                             texts=texts.texts, pairs=texts.pairs, max_length=max_length,
                             fuse_embeddings="Gather" not in op_types, trim_last_layer=export.trim_last_layer,
                             remove_padding=export.remove_padding)
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
    """INT8-quantize `parent` (PyTorch: exported first; ONNX: used as is) into `out_dir`."""
    from transformers import AutoTokenizer

    from deploykit.data import fit_max_length, load_task
    from deploykit.onnx.export import copy_side_files
    from deploykit.onnx.ops import graph_inputs
    from deploykit.quant.gate import gate, gate_metrics
    from deploykit.quant.int8 import Int8Settings, preprocess, quantize, sensitivity
    from deploykit.windows import recorded, stride_for

    cfg = recipe.quantize
    if parent is None:
        raise UserError("quantize needs an input artifact: --from FOLDER (a fine-tuned model or its ONNX export)")
    if recipe.data is None:
        raise UserError("quantize needs a data section (or --data NAME_OR_PATH): the gate evaluates on its "
                        "validation split")
    if (own := kind_of(recipe.data.task).runner("quantize")) is not None:
        return own(recipe, parent, out_dir)
    if cfg.mode == "weight_only":
        raise UserError("quantize.mode weight_only is for causal LMs; use dynamic or static for encoders")
    task = load_task(recipe.data)
    max_length = fit_max_length(recipe.data.max_length, parent.path, AutoTokenizer.from_pretrained(parent.path), task,
                                recorded=parent.manifest.get("max_length"))
    settings = Int8Settings.for_preset(cfg.preset, cfg.mode, per_channel=cfg.per_channel, op_types=cfg.op_types,
                                       calibration=cfg.calibration)
    with tempfile.TemporaryDirectory(prefix="deploykit-quantize-") as tmpdir, staging(out_dir) as tmp:
        work = Path(tmpdir)
        parity = task.validation.head(recipe.export.parity_samples if recipe.export else 64)
        float_onnx, side, export_report = _float_source(recipe, parent, work, parity, settings.op_types, max_length)
        tokenizer = AutoTokenizer.from_pretrained(side)
        stride = stride_for(recipe.data, max_length, tokenizer, parent.manifest)  # data.long_texts: windows
        names = graph_inputs(float_onnx)
        calib = _calibration_feeds(recipe, task, tokenizer, names) if cfg.mode == "static" else None
        pre = work / "pre.onnx"
        preprocess(float_onnx, pre)
        _warn_unquantized_layers(pre, settings)
        cache = work / "calibration.json"  # static ranges: calibrated once, reused by every try

        def int8(float_nodes: list[str], attempt: int) -> Path:
            quantize(pre, work / f"int8-{attempt}.onnx", settings, exclude=float_nodes, calibration=calib,
                     calibration_cache=cache)
            return work / f"int8-{attempt}.onnx"

        def rank() -> list[tuple[str, float]]:
            feeds = _feeds(task.validation.head(SENSITIVITY_ROWS), tokenizer, names, 32, max_length)
            return sensitivity(pre, settings, feeds, calibration=calib, calibration_cache=cache)

        def validation(path: Path) -> dict:
            return _accuracy(path, task.validation, tokenizer, max_length, stride)

        result = gate(cfg.max_drop, cfg.max_float_nodes, validation, int8, rank, pre)
        shutil.copy2(result.model, tmp / "model.onnx")
        copy_side_files(side, tmp, float_onnx.name)
        metrics = gate_metrics(result, float_onnx, tmp / "model.onnx")
        if task.test is not None:
            metrics["test"] = {"float": _accuracy(pre, task.test, tokenizer, max_length, stride),
                               "int8": _accuracy(tmp / "model.onnx", task.test, tokenizer, max_length, stride)}
        manifest = write_manifest(tmp, stage="quantize", format="onnx", parent=parent,
                                  config=recipe.model_dump(include={"data", "quantize"}), metrics=metrics,
                                  onnx_file="model.onnx", int8=settings.describe(), float_nodes=result.float_nodes,
                                  tries=result.tries, sensitivity=result.ranking,
                                  export=export_report, max_length=max_length, **recorded(stride))
    sizes = metrics["size_bytes"]
    log(f"quantize: {metrics['quantized_ops']['quantized_matmuls']} INT8 matmuls, {len(result.float_nodes)} nodes "
        f"float, {sizes['float'] / 1e6:.1f} -> {sizes['int8'] / 1e6:.1f} MB, validation "
        f"{result.metrics['accuracy']:.2f} (float {result.reference['accuracy']:.2f})")
    return Artifact(Path(out_dir).resolve(), manifest)
