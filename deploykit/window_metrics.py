"""Trainer evaluations of windowed datasets scored per text (`data.long_texts: windows`).

    pool_metrics_of(trainer, eval_dataset)            # early stopping and the checkpoint kept follow texts
    test = evaluate_pooled(trainer, test_dataset, "test")

A windowed dataset has one row per window (deploykit/windows.py); these hooks pool the windows' logits back
into one answer per text before accuracy is computed, so every reported score is per text. Apart from
windows.py because they need the task metrics (deploykit/evaluate.py), which reads data, which reads windows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deploykit.evaluate import metrics
from deploykit.windows import TEXT_OF, pool, windowed


def pooled_metrics(text_of) -> Callable:
    """A Trainer `compute_metrics` for a windowed evaluation set: accuracy and macro-F1 of the pooled texts.

    Args:
        text_of: the dataset's `text_of` column (the Trainer evaluates in dataset order).

    Returns:
        compute(EvalPrediction of [windows, labels] logits) -> {"accuracy", "macro_f1", "texts"}: percent, and
        how many texts were scored (so a manifest shows its scores are per text, not per window).
    """
    text_of = np.asarray(text_of, dtype=np.int64)
    n_texts = int(text_of.max()) + 1 if len(text_of) else 0
    first = np.searchsorted(text_of, np.arange(n_texts))  # text_of ascends: a text's first window

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        out = metrics(pool(np.asarray(logits), text_of, n_texts), np.asarray(pred.label_ids)[first])
        out["texts"] = out.pop("n")
        return out

    return compute


def pool_metrics_of(trainer, dataset) -> None:
    """Make `trainer`'s evaluations score `dataset` (its validation set) per text when it holds windows, so
    the checkpoint kept and early stopping follow the pooled accuracy; a no-op otherwise."""
    if windowed(dataset):
        trainer.compute_metrics = pooled_metrics(dataset[TEXT_OF])


def evaluate_pooled(trainer, dataset, prefix: str) -> dict:
    """`trainer.evaluate(dataset)` with metrics per text for a windowed `dataset` (keys without `prefix_`)."""
    kept = trainer.compute_metrics
    pool_metrics_of(trainer, dataset)
    try:
        out = trainer.evaluate(dataset, metric_key_prefix=prefix)
    finally:
        trainer.compute_metrics = kept
    return {k.removeprefix(f"{prefix}_"): v for k, v in out.items()}
