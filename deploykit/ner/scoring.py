"""Token classifiers scored as sentences: word-piece windows in, entity-level F1 over words out.

    from deploykit.ner.scoring import encode, score_folder
    windows = encode(split, tokenizer, max_length, data, labels)          # deploykit/ner/align.py's Windows
    score_folder("runs/ner/finetune", split, labels, max_length, stride)   # {"f1", "precision", "recall", ...}

What every stage of the token_classification kind (deploykit/kinds/token_classification.py) uses to build its
training windows and to score a model, a Trainer or a folder the same way: the windows are put back one tag per
word and whole sentences are scored with seqeval (deploykit/ner/metric.py).
"""

from __future__ import annotations

from deploykit.errors import UserError
from deploykit.models import load_tokenizer


def tokenizer_for(source: str, trust_remote_code: bool):
    """The model's fast tokenizer; a byte-level BPE one (RoBERTa) with a prefix space before every word, as it
    sees words inside a sentence (pre-split words would otherwise be encoded as if each started the text)."""
    tokenizer = load_tokenizer(source, trust_remote_code)
    pre = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    if type(pre).__name__ == "ByteLevel" and not getattr(tokenizer, "add_prefix_space", True):
        tokenizer = load_tokenizer(source, trust_remote_code, add_prefix_space=True)
    tokenizer.padding_side = "right"  # words_from_windows reads piece positions from the left
    return tokenizer


def encode(split, tokenizer, max_length: int, data, labels: list[str]):
    """`split`'s sentences as labelled word-piece windows (deploykit/ner/align.py), as the data section asks."""
    from deploykit.ner.align import encode_words

    return encode_words(split.tokens, tokenizer, max_length, data.window_stride, split.tags, labels,
                        data.label_all_tokens)


def as_dataset(windows):
    """The windows as a `datasets.Dataset` the Trainer reads (input_ids, attention_mask, labels, ...)."""
    import datasets

    return datasets.Dataset.from_list(windows.rows())


def sentence_metrics(windows, split, labels: list[str]):
    """A Trainer `compute_metrics` scoring the windows of `split` (in dataset order) as whole sentences: entity
    F1, precision and recall over words, and F1 per type as `f1_<TYPE>` (Trainer metrics are flat numbers)."""
    from deploykit.ner.metric import window_scores

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        scores = window_scores(logits, windows, split.tags, labels)
        flat = {f"f1_{name}": value for name, value in scores.pop("per_type").items()}
        scores["sentences"] = scores.pop("n")
        return {**scores, **flat}

    return compute


def scored(trainer, dataset, windows, split, labels: list[str], prefix: str) -> dict:
    """{"f1", "precision", "recall", "per_type", "entities", "sentences", "loss", ...} of `split` through the
    Trainer (the same batching and float32 forward as its per-epoch evaluation)."""
    kept = trainer.compute_metrics
    trainer.compute_metrics = sentence_metrics(windows, split, labels)
    try:
        out = trainer.evaluate(dataset, metric_key_prefix=prefix)
    finally:
        trainer.compute_metrics = kept
    out = {k.removeprefix(f"{prefix}_"): v for k, v in out.items()}
    per_type = {k.removeprefix("f1_"): out.pop(k) for k in list(out) if k.startswith("f1_")}
    return {**out, "per_type": per_type, "windows": len(windows)}


def score_folder(folder, split, labels: list[str], max_length: int, stride: int, batch_size: int = 32,
                 onnx_path=None) -> dict:
    """`entity_scores` of the token classifier in `folder` (PyTorch, or the ONNX graph `onnx_path` beside its
    config and tokenizer) on `split`'s sentences, in windows."""
    from transformers import AutoConfig

    from deploykit.evaluate import eval_batch_size, ort_predictor, ort_session, torch_predictor

    tokenizer = load_tokenizer(str(folder))
    check_tags(AutoConfig.from_pretrained(folder), labels, str(folder))
    if onnx_path is not None:
        predict = ort_predictor(ort_session(onnx_path))
        batch_size = min(batch_size, eval_batch_size(onnx_path))  # dynamic INT8: one window at a time
    else:
        from transformers import AutoModelForTokenClassification

        predict = torch_predictor(AutoModelForTokenClassification.from_pretrained(folder, use_safetensors=True))
    return score_with(predict, tokenizer, split, labels, max_length, stride, batch_size)


def score_with(predict, tokenizer, split, labels: list[str], max_length: int, stride: int | None,
               batch_size: int = 32) -> dict:
    """`entity_scores` on `split`'s sentences of `predict` (deploykit.evaluate's batch -> logits [batch, seq, tags])."""
    import numpy as np
    from transformers import DataCollatorForTokenClassification

    from deploykit.ner.align import encode_words
    from deploykit.ner.metric import window_scores

    tokenizer.padding_side = "right"  # words_from_windows reads piece positions from the left
    windows = encode_words(split.tokens, tokenizer, max_length, stride)
    rows, collate = windows.rows(), DataCollatorForTokenClassification(tokenizer, return_tensors="np")
    logits = []
    for i in range(0, len(rows), batch_size):
        logits += list(predict(dict(collate(rows[i:i + batch_size]))))  # one [seq, tags] array per window
    return window_scores([np.asarray(x) for x in logits], windows, split.tags, labels)


def check_tags(config, labels: list[str], what: str) -> None:
    """Refuse a model whose tags are not the data's, in the same order (a tag id means one thing to both)."""
    tags = [str(config.id2label[i]) for i in range(config.num_labels)]
    if tags != list(labels):
        raise UserError(f"{what}: the model's tags ({', '.join(tags)}) are not the data's ({', '.join(labels)}); "
                        "give data.label_names in the model's order")


def trained_windows(recipe, artifact) -> tuple[int, int | None]:
    """(max_length, window stride) the artifact was trained with (its manifests'); the stride falls back to the
    recipe's data.window_stride, or None without a data section (the predictor's "auto")."""
    from transformers import AutoConfig

    from deploykit.lineage import trained_length, trained_stride
    from deploykit.ner.align import window_stride

    tokenizer = load_tokenizer(str(artifact.path))
    max_len = trained_length(artifact, AutoConfig.from_pretrained(artifact.path), tokenizer, None)
    stride = trained_stride(artifact, max_len, tokenizer)
    if stride is None and recipe.data is not None:
        stride = window_stride(recipe.data.window_stride, max_len, tokenizer)
    return max_len, stride




def parity_texts(recipe, n: int) -> list[str] | None:
    """Up to `n` validation sentences, words joined by spaces, for an export's parity check (None without a data
    section: the export's built-in texts)."""
    from deploykit.ner.data import load_tags

    if recipe.data is None:
        return None
    return [" ".join(words) for words in load_tags(recipe.data).validation.tokens[:n]]
