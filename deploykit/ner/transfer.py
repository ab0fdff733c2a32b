"""Unlabelled texts as training rows of a token classifier's KD stages (`distill.unlabeled`, `prune.unlabeled`).

    rows = unlabeled_rows(texts, tokenizer, max_length=62, stride=15)
    rows[0]["labels"]          # [-100, -1, -1, -100, -1, ...]: KD_ONLY on each word's first piece

A text is tokenized as the predictor tokenizes one (deploykit/ner/predict.py: raw text, the tokenizer's own word
split, windows of `max_length` pieces sharing `stride`), so the student is taught on words cut as deployment will
cut them. The pieces finetune trains on (a word's first; all of them with `label_all_tokens`) are marked KD_ONLY:
deploykit/ner/distill.py's loss reads the teacher's logits there and no gold tag. A window that starts inside a
word counts that word's first piece in the window as its first (the teacher still labels it).
"""

from __future__ import annotations

from deploykit.ner.align import IGNORE
from deploykit.transfer import KD_ONLY


def unlabeled_rows(texts: list[str], tokenizer, max_length: int, stride: int,
                   label_all_tokens: bool = False) -> list[dict[str, list[int]]]:
    """One training row per window: the tokenizer's columns and `labels` (KD_ONLY or IGNORE per piece).

    Args:
        texts: raw texts, [texts].
        tokenizer: the model's fast tokenizer (deploykit/ner/scoring.tokenizer_for).
        max_length: pieces per window, special tokens included (the trained max_length).
        stride: pieces consecutive windows of one text share.
        label_all_tokens: every piece of a word is read by the KD term, not only its first.

    Returns:
        [windows] dicts of input_ids, attention_mask (and token_type_ids where the tokenizer gives them), labels.
    """
    enc = tokenizer(texts, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True)
    columns = [c for c in enc.keys() if c != "overflow_to_sample_mapping"]
    rows = []
    for r in range(len(enc["input_ids"])):
        words = enc.word_ids(r)
        labels = [KD_ONLY if w is not None and (label_all_tokens or p == 0 or words[p - 1] != w) else IGNORE
                  for p, w in enumerate(words)]
        rows.append({**{c: enc[c][r] for c in columns}, "labels": labels})
    return rows


def training_set(windows, unlabeled, data, tokenizer, max_length: int, stride: int):
    """The labelled `windows` (deploykit/ner/align.py) as a `datasets.Dataset`, followed by the windows of the
    unlabelled texts `unlabeled` names (an UnlabeledConfig, or None for none); and a phrase for the stage's log."""
    import datasets

    from deploykit.transfer import read_unlabeled

    rows = windows.rows()
    if unlabeled is None:
        return datasets.Dataset.from_list(rows), ""
    extra = unlabeled_rows(read_unlabeled(unlabeled, data), tokenizer, max_length, stride, data.label_all_tokens)
    return datasets.Dataset.from_list(rows + extra), f" + {len(extra)} windows of unlabelled text (KD only)"
