"""Entity-level precision, recall and F1 of predicted tags, per word, with seqeval (the standard NER metric).

    entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])
    # {'f1': 100.0, 'precision': 100.0, 'recall': 100.0, 'per_type': {'PER': 100.0}, 'entities': 1, 'n': 1}
    window_scores(logits, windows, split.tags, task.labels)     # the same, from [windows, seq, labels] logits

An entity counts as found only when its type and its first and last word both match. Scores are micro
averages over entities, in percent rounded as deploykit/evaluate.py's (so a gate's `max_drop: 0.5` is half an
F1 point). The default mode is conlleval's, which seqeval reproduces: an I- tag after O or after another type
starts an entity. `strict` applies IOB2 to the letter instead (such a tag then starts nothing).
Scores are over words, never word pieces: predictions are first put back per word (deploykit/ner/align.py).
"""

from __future__ import annotations

import warnings

import numpy as np

from deploykit.ner.align import Windows, words_from_windows


def _names(seqs: list[list], labels: list[str] | None, what: str) -> list[list[str]]:
    """Tag strings; ids (Python or numpy ints) looked up in `labels`."""
    out = []
    for seq in seqs:
        if any(not isinstance(t, str) for t in seq):
            if labels is None:
                raise ValueError(f"{what} tags are ids: pass the label names")
            seq = [t if isinstance(t, str) else labels[int(t)] for t in seq]
        out.append(list(seq))
    return out


def _percent(x) -> float:
    return round(float(x) * 100, 3)


def entity_scores(gold: list[list], pred: list[list], labels: list[str] | None = None,
                  strict: bool = False) -> dict:
    """Entity-level micro precision / recall / F1, and F1 per entity type, in percent.

    Args:
        gold: [sentences][words] the true tags, as strings (IOB2) or ids into `labels`.
        pred: [sentences][words] the predicted tags, same shape.
        labels: the name of every id; needed when either holds ids.
        strict: seqeval's mode="strict" with scheme IOB2 instead of conlleval's reading.

    Returns:
        {"f1", "precision", "recall": percent, "per_type": {type: F1 percent} over the types in gold or
        predictions, "entities": gold entities, "n": sentences}. With no entity in gold nor predictions every
        score is 0.0, as seqeval gives it.

    Raises:
        ValueError: gold and predictions of different shapes, or ids without `labels`.
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    bad = next((i for i, (g, p) in enumerate(zip(gold, pred)) if len(g) != len(p)), None)
    if bad is not None:
        raise ValueError(f"sentence {bad}: {len(gold[bad])} gold tags but {len(pred[bad])} predicted")
    y_true, y_pred = _names(gold, labels, "gold"), _names(pred, labels, "predicted")
    with warnings.catch_warnings():
        # with no entity at all, seqeval's macro average (unused here) takes the mean of nothing and warns
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0,
                                       **({"mode": "strict", "scheme": IOB2} if strict else {}))
    micro = report["micro avg"]
    per_type = {name: _percent(row["f1-score"]) for name, row in report.items() if not name.endswith(" avg")}
    return {"f1": _percent(micro["f1-score"]), "precision": _percent(micro["precision"]),
            "recall": _percent(micro["recall"]), "per_type": per_type, "entities": int(micro["support"]),
            "n": len(gold)}


def window_scores(logits: np.ndarray | list[np.ndarray], windows: Windows, gold: list[list[int]],
                  labels: list[str], strict: bool = False) -> dict:
    """`entity_scores` of the predictions in windows' logits ([windows, seq, labels], padded on the right),
    put back one per word (`align.words_from_windows`), against the gold tag ids [sentences][words]."""
    missing = labels.index("O") if "O" in labels else 0  # a word without pieces is predicted outside any entity
    return entity_scores(gold, words_from_windows(logits, windows, missing), labels, strict)
