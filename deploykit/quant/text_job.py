"""The text classifier's quantize job (data.task classification): its float export, calibration and scores.

    from deploykit.quant.text_job import quantize_job
    job = quantize_job(recipe, parent)          # a deploykit.quant.encoder_job.EncoderQuantizeJob

deploykit/stages/quantize.py exports (or takes the ONNX parent), quantizes and gates; this module says how the
float graph is exported (the recipe's `export:` rewrites, parity on validation texts), which training rows
calibrate static INT8 (seeded, one fixed length) and how a graph is scored (accuracy per text, pooled over
windows where the model was trained on them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.config import Recipe
from deploykit.jobs import EncoderQuantize, QuantizeScorer

SENSITIVITY_ROWS = 128
CALIBRATION_BATCH = 16


def feeds(split, tokenizer, names: list[str], batch_size: int, max_length: int,
          fixed_length: int | None = None) -> list[dict[str, np.ndarray]]:
    """Graph-ready batches; a graph input the tokenizer does not give (token_type_ids) is zeros."""
    from deploykit.data import batches

    out = []
    for enc, _ in batches(split, tokenizer, batch_size, max_length, fixed_length):
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        out.append({n: np.asarray(enc[n], dtype=np.int64) if n in enc else np.zeros_like(ids) for n in names})
    return out


def calibration_feeds(recipe: Recipe, task, tokenizer, names: list[str]) -> list[dict[str, np.ndarray]]:
    """`calibration_samples` seeded training rows, padded or cut to one fixed length, `calibration_seq_len`."""
    from deploykit.quant.int8 import calibration_sample

    cfg = recipe.quantize
    rows = task.train.take(calibration_sample(len(task.train), cfg.calibration_samples, recipe.data.seed))
    return feeds(rows, tokenizer, names, CALIBRATION_BATCH, cfg.calibration_seq_len, cfg.calibration_seq_len)


def accuracy(onnx_path: Path, split, tokenizer, max_length: int, stride: int | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 of the graph on `split` (a dynamic-INT8 graph one row at a time)."""
    from deploykit.evaluate import eval_batch_size, metrics, ort_predictor, ort_session, predict

    logits = predict(ort_predictor(ort_session(onnx_path)), split, tokenizer, max_length, eval_batch_size(onnx_path),
                     stride)
    return metrics(logits, split.labels)


def quantize_job(recipe: Recipe, parent):
    """The classifier `parent` at its trained length; the export follows the recipe's `export:` section."""
    from transformers import AutoTokenizer

    from deploykit.config import ExportConfig
    from deploykit.data import fit_max_length, load_task
    from deploykit.windows import recorded, stride_for

    task = load_task(recipe.data)
    max_length = fit_max_length(recipe.data.max_length, parent.path, AutoTokenizer.from_pretrained(parent.path), task,
                                recorded=parent.manifest.get("max_length"))
    export = recipe.export or ExportConfig()
    parity = task.validation.head(recipe.export.parity_samples if recipe.export else 64)

    def scorer(side: Path, names: list[str]) -> QuantizeScorer:
        tokenizer = AutoTokenizer.from_pretrained(side)
        stride = stride_for(recipe.data, max_length, tokenizer, parent.manifest)  # data.long_texts: windows
        splits = {"validation": task.validation, "test": task.test}
        return QuantizeScorer(
            lambda path, split: accuracy(path, splits[split], tokenizer, max_length, stride),
            lambda: feeds(task.validation.head(SENSITIVITY_ROWS), tokenizer, names, 32, max_length),
            lambda: calibration_feeds(recipe, task, tokenizer, names), task.test is not None, recorded(stride))

    from deploykit.quant.encoder_job import EncoderQuantizeJob

    return EncoderQuantizeJob(recipe, parent, EncoderQuantize(
        max_length, {"texts": parity.texts, "pairs": parity.pairs, "trim_last_layer": export.trim_last_layer,
                     "remove_padding": export.remove_padding}, scorer, "accuracy"))
