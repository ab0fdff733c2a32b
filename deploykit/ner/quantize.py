"""The token classifier's quantize job (data.task token_classification): dynamic INT8 of its per-token graph,
gated on entity F1.

    deploykit quantize --from runs/ner/finetune --recipe ner.yaml --out runs/ner/quantize   # quantize.mode: dynamic

The float graph is the plain export (`deploykit/onnx/export.py`: every position, checked on every real token;
padding-free when `export.remove_padding: true` is written out); deploykit/stages/quantize.py quantizes its
MatMuls (and Gather with `quantize.op_types`) with activation scales computed at run time, and the gate scores
the INT8 graph's entity F1 on the validation split (one window per batch: a dynamic graph's scales span the batch),
keeping the most sensitive nodes float until it loses at most `quantize.max_drop` points. Static INT8 (calibration
on fixed-length batches) is not built for this kind: it is refused in one line.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.errors import UserError
from deploykit.jobs import QuantizeJob, QuantizeScorer

TASK = "token_classification"
SENSITIVITY_SENTENCES = 64  # validation sentences the keep-float ranking reads


def quantize_job(recipe, parent) -> QuantizeJob:
    """The token classifier `parent` at its trained length and window stride (its manifests', else the recipe's)."""
    from deploykit.ner.align import encode_words
    from deploykit.ner.data import load_tags
    from deploykit.ner.scoring import parity_texts, score_folder, trained_windows

    check_mode(recipe.quantize)
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
            return [{n: _padded(windows.encoding[n][i], n, width, tokenizer) for n in names if n in windows.encoding}
                    for i in range(len(windows))]

        return QuantizeScorer(lambda path, split: score_folder(side, splits[split], task.labels, max_len, stride,
                                                               onnx_path=path),
                              sensitivity_feeds, None, task.test is not None, {"task": TASK, "window_stride": stride})

    return QuantizeJob(max_len, {"texts": parity_texts(recipe, n), "trim_last_layer": False,
                                 "remove_padding": padding_free(recipe.export)}, scorer)


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
