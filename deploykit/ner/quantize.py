"""`deploykit quantize` of a token classifier: dynamic INT8 of its per-token ONNX graph, gated on entity F1.

    deploykit quantize --from runs/ner/finetune --recipe ner.yaml --out runs/ner/quantize   # quantize.mode: dynamic

The float graph is the plain export (`deploykit/onnx/export.py`: every position, checked on every token); ONNX
Runtime quantizes its MatMuls with activation scales computed at run time, and the gate (deploykit/quant/gate.py)
scores the INT8 graph's entity F1 on the validation split (one window per batch: a dynamic graph's scales span the
batch) and keeps the most sensitive nodes float until it loses at most `quantize.max_drop` points. Static INT8
(calibration on fixed-length batches) is not built for this kind: it is refused in one line.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.console import log
from deploykit.errors import UserError

SENSITIVITY_SENTENCES = 64  # validation sentences the keep-float ranking reads


def run(recipe, parent: Artifact, out_dir: Path, score: Callable[[Path, Path, object], dict], task, max_length: int,
        stride: int, texts: list[str] | None) -> Artifact:
    """Quantize `parent` (PyTorch, or its float ONNX export) into `out_dir`.

    Args:
        score: (folder with config + tokenizer, .onnx path, split) -> entity scores ({"f1", ...}) of that graph.
        task: the kind's TagData; its validation split gates, its test split is reported.
        max_length / stride: the trained windows.
        texts: the float export's parity texts (None: built-in sentences).
    """
    from deploykit.ner.align import encode_words
    from deploykit.onnx.export import copy_side_files, export_onnx
    from deploykit.onnx.ops import graph_inputs, load_onnx, quantized_op_counts
    from deploykit.quant.gate import gate, gate_metrics
    from deploykit.quant.int8 import Int8Settings, preprocess, quantize, sensitivity

    cfg = recipe.quantize
    check_mode(cfg)
    settings = Int8Settings.for_preset(cfg.preset, cfg.mode, per_channel=cfg.per_channel, op_types=cfg.op_types)
    with tempfile.TemporaryDirectory(prefix="deploykit-quantize-") as tmpdir, staging(out_dir) as tmp:
        work = Path(tmpdir)
        export_report = None
        if parent.format == "pytorch":
            side = work / "float"
            side.mkdir()
            export = recipe.export
            export_report = export_onnx(parent.path, None, side, optimize=cfg.optimize,
                                        atol=export.atol if export else 1e-4, texts=texts, max_length=max_length,
                                        fuse_embeddings="Gather" not in settings.op_types,
                                        remove_padding=padding_free(export))
            float_onnx = side / "model.onnx"
        elif parent.format == "onnx":
            side, float_onnx = parent.path, parent.onnx_path
            if quantized_op_counts(load_onnx(float_onnx, min_opset=13))["quantized_matmuls"]:
                raise UserError(f"{float_onnx}: already quantized; give its float parent")
        else:
            raise UserError(f"{parent.path}: a {parent.format} artifact cannot be quantized; give a PyTorch or ONNX one")
        pre = work / "pre.onnx"
        preprocess(float_onnx, pre)
        tokenizer = _tokenizer(side)
        names = graph_inputs(float_onnx)

        def int8(float_nodes: list[str], attempt: int) -> Path:
            quantize(pre, work / f"int8-{attempt}.onnx", settings, exclude=float_nodes)
            return work / f"int8-{attempt}.onnx"

        def rank() -> list[tuple[str, float]]:
            windows = encode_words(task.validation.tokens[:SENSITIVITY_SENTENCES], tokenizer, max_length, stride)
            # one window per feed (dynamic scales span a batch), all padded to one width: the ranking stacks them
            width = max(len(ids) for ids in windows.encoding["input_ids"])
            feeds = [{n: _padded(windows.encoding[n][i], n, width, tokenizer) for n in names if n in windows.encoding}
                     for i in range(len(windows))]
            return sensitivity(pre, settings, feeds)

        result = gate(cfg.max_drop, cfg.max_float_nodes, lambda path: score(side, path, task.validation), int8, rank,
                      pre, metric="f1")
        shutil.copy2(result.model, tmp / "model.onnx")
        copy_side_files(side, tmp, float_onnx.name)
        metrics = gate_metrics(result, float_onnx, tmp / "model.onnx")
        if task.test is not None:
            metrics["test"] = {"float": score(side, pre, task.test), "int8": score(side, tmp / "model.onnx", task.test)}
        manifest = write_manifest(tmp, stage="quantize", format="onnx", parent=parent,
                                  config=recipe.model_dump(include={"data", "quantize"}), metrics=metrics,
                                  onnx_file="model.onnx", int8=settings.describe(), float_nodes=result.float_nodes,
                                  tries=result.tries, sensitivity=result.ranking, export=export_report,
                                  task="token_classification", max_length=max_length, window_stride=stride)
    log(f"quantize: {metrics['quantized_ops']['quantized_matmuls']} INT8 matmuls, {len(result.float_nodes)} nodes "
        f"float, validation entity F1 {result.metrics['f1']:.2f} (float {result.reference['f1']:.2f})")
    return Artifact(Path(out_dir).resolve(), manifest)


def padding_free(export_cfg) -> bool:
    """Whether a token classifier's graph skips padding: only when the recipe asks (`export.remove_padding: true`
    written out; its default is a text classifier's). The packed encoder then scatters every real token back
    (deploykit/onnx/packing.py without the last-layer trim), so logits keep their [batch, seq, labels] shape."""
    return bool(export_cfg is not None and "remove_padding" in export_cfg.model_fields_set and export_cfg.remove_padding)


def check_mode(cfg) -> None:
    if cfg.mode != "dynamic":
        raise UserError(f"quantize.mode {cfg.mode}: data.task token_classification is quantized dynamic only here "
                        "(static calibration is not built for per-token graphs); set quantize.mode dynamic")


def _tokenizer(folder: Path):
    from deploykit.models import load_tokenizer

    tokenizer = load_tokenizer(str(folder))
    tokenizer.padding_side = "right"
    return tokenizer


def _padded(row: list[int], name: str, width: int, tokenizer):
    """One window's column as an int64 [1, width] array, padded on the right."""
    import numpy as np

    fill = (tokenizer.pad_token_id or 0) if name == "input_ids" else 0
    return np.asarray([list(row) + [fill] * (width - len(row))], dtype=np.int64)
