"""The token classifier's quantize job (data.task token_classification): dynamic or static INT8 of its per-token
graph, gated on entity F1.

    deploykit quantize --from runs/ner/finetune --recipe ner.yaml --out runs/ner/quantize   # quantize.mode: static

The float graph is the plain export (`deploykit/onnx/export.py`: every position, checked on every real token;
padding-free when `export.remove_padding: true` is written out); deploykit/stages/quantize.py quantizes its
MatMuls (and Gather with `quantize.op_types`) with activation scales computed at run time, and the gate scores
the INT8 graph's entity F1 on the validation split (one window per batch: a dynamic graph's scales span the batch),
keeping the most sensitive nodes float until it loses at most `quantize.max_drop` points. Static INT8 calibrates
its activation ranges on `quantize.calibration_samples` seeded training sentences, as windows padded to the
trained window length (deploykit/quant/int8.py collects entropy and percentile histograms one batch at a time, since
the padding-free graph's packed activations differ in shape from batch to batch whatever the padding).
"""

from __future__ import annotations

from pathlib import Path

from deploykit.jobs import EncoderQuantize, QuantizeScorer
from deploykit.ner.align import encode_words

TASK = "token_classification"
SENSITIVITY_SENTENCES = 64  # validation sentences the keep-float ranking reads
CALIBRATION_BATCH = 16      # windows per calibration batch


def quantize_job(recipe, parent):
    """The token classifier `parent` at its trained length and window stride (its manifests', else the recipe's)."""
    from deploykit.ner.data import load_tags
    from deploykit.ner.scoring import parity_texts, score_folder, trained_windows

    task = load_tags(recipe.data)
    max_len, stride = trained_windows(recipe, parent)
    n = recipe.export.parity_samples if recipe.export else 64

    def scorer(side: Path, names: list[str]) -> QuantizeScorer:
        tokenizer = _tokenizer(side)
        splits = {"validation": task.validation, "test": task.test}

        def sensitivity_feeds() -> list[dict]:
            windows = encode_words(task.validation.tokens[:SENSITIVITY_SENTENCES], tokenizer, max_len, stride)
            # one window per feed (dynamic scales span a batch), all padded to one width: the ranking stacks them
            width = max(len(ids) for ids in windows.encoding["input_ids"])
            return [_feed(windows, [i], names, width, tokenizer) for i in range(len(windows))]

        def calibration_feeds() -> list[dict]:
            return _calibration_feeds(recipe.quantize, recipe.data.seed, task.train, tokenizer, names, max_len, stride)

        return QuantizeScorer(lambda path, split: score_folder(side, splits[split], task.labels, max_len, stride,
                                                               onnx_path=path),
                              sensitivity_feeds, calibration_feeds, task.test is not None,
                              {"task": TASK, "window_stride": stride})

    from deploykit.quant.encoder_job import EncoderQuantizeJob

    return EncoderQuantizeJob(recipe, parent, EncoderQuantize(
        max_len, {"texts": parity_texts(recipe, n), "trim_last_layer": False,
                  "remove_padding": padding_free(recipe.export)}, scorer, "f1"))


def padding_free(export_cfg) -> bool:
    """Whether a token classifier's graph skips padding: only when the recipe asks (`export.remove_padding: true`
    written out; its default is a text classifier's). The packed encoder then scatters every real token back
    (deploykit/onnx/packing.py without the last-layer trim), so logits keep their [batch, seq, labels] shape."""
    return bool(export_cfg is not None and "remove_padding" in export_cfg.model_fields_set and export_cfg.remove_padding)


def _calibration_feeds(cfg, seed: int, train, tokenizer, names: list[str], max_len: int, stride) -> list[dict]:
    """Batches of CALIBRATION_BATCH windows of `cfg.calibration_samples` seeded training sentences, each padded
    to `max_len` (no window is longer); the windows past the last full batch are left out."""
    from deploykit.quant.int8 import calibration_sample

    picked = calibration_sample(len(train), cfg.calibration_samples, seed, "sentences")
    windows = encode_words(train.take(picked).tokens, tokenizer, max_len, stride)
    n = max(CALIBRATION_BATCH, len(windows) - len(windows) % CALIBRATION_BATCH)
    rows = list(range(min(n, len(windows))))
    return [_feed(windows, rows[i:i + CALIBRATION_BATCH], names, max_len, tokenizer)
            for i in range(0, len(rows), CALIBRATION_BATCH)]


def _feed(windows, rows: list[int], names: list[str], width: int, tokenizer) -> dict:
    """The graph inputs `names` of windows `rows` as int64 [len(rows), width] arrays, padded on the right; an input
    the tokenizer does not give (token_type_ids) is zeros."""
    import numpy as np

    def column(name: str) -> np.ndarray:
        if name not in windows.encoding:
            return np.zeros((len(rows), width), dtype=np.int64)
        return np.concatenate([_padded(windows.encoding[name][i], name, width, tokenizer) for i in rows])

    return {name: column(name) for name in names}


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
