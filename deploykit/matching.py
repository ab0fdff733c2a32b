"""Training rows resampled to the length distribution of the rows a model is judged on.

    from deploykit.matching import length_matched
    idx, note = length_matched(task.train, task.validation, seed=42)

Prune importance and recovery learn from the training rows. When those are much shorter than the
validation rows (SST-2 trains on phrases, median 7 words, and is scored on sentences, median 19), a
pruned model recovers on inputs unlike the ones it serves, and loses most on the long ones. This
picks the largest subset of the training rows whose word-count histogram matches the validation
rows' (stratified by validation length deciles), and keeps every row when the two already match,
so it needs no per-dataset threshold (it replaces `prune.recovery_min_words: 15`, tuned on SST-2).
`data.validation_rows: matched` holds out validation rows the same way (deploykit.data), so that early stopping,
the checkpoint kept and the gates read rows shaped like the test rows. Splits are deploykit.data.Split (texts,
pairs); this module reads their texts only and imports nothing of the package but the console, so data.py can
call it.
"""

from __future__ import annotations

import random

import numpy as np

from deploykit.console import log

BINS = 10  # validation length deciles
# training rows count as matching when their median length is within this factor of validation's
MATCH_RATIO = 0.8
MIN_ROWS = 256  # a resampled set smaller than this is too little to recover on: keep every row instead


def words(split) -> np.ndarray:
    """Words per row (both texts of a pair)."""
    pairs = split.pairs or [""] * len(split)
    return np.asarray([len(t.split()) + len(p.split()) for t, p in zip(split.texts, pairs)])


def length_matched(train, target, seed: int = 0, name: str = "validation",
                   pool: str = "training") -> tuple[list[int] | None, str]:
    """Indices of training rows whose length distribution matches `target`'s, or None for all rows.

    Only the lengths of `target`'s texts are read, never its labels; `name` names it in the note, `pool` the rows
    drawn from.

    Returns:
        (indices in training order, or None when the lengths already match or too few rows would remain;
        one line saying what was chosen and why).
    """
    have, want = words(train), words(target)
    if not len(have) or not len(want):
        return None, "no rows to compare"
    med_have, med_want = float(np.median(have)), float(np.median(want))
    summary = f"{pool} median {med_have:g} words, {name} {med_want:g}"
    if med_have >= MATCH_RATIO * med_want:
        return None, f"all {pool} rows: their lengths match the {name} rows' ({summary})"
    edges = np.unique(np.quantile(want, np.linspace(0, 1, BINS + 1)[1:-1]))
    share = np.bincount(np.searchsorted(edges, want, side="right"), minlength=len(edges) + 1) / len(want)
    bins = np.searchsorted(edges, have, side="right")
    members = [np.flatnonzero(bins == b) for b in range(len(edges) + 1)]
    # the largest n such that every bin can give n * share rows
    n = min(len(m) / s for m, s in zip(members, share) if s > 0)
    if n < MIN_ROWS:
        return None, f"all {pool} rows: too few long ones to match the {name} lengths ({summary})"
    rng = random.Random(seed)
    idx: list[int] = []
    for m, s in zip(members, share):
        take = min(len(m), int(round(n * s)))
        idx += rng.sample([int(i) for i in m], take)
    picked = float(np.median(have[idx]))
    return sorted(idx), (f"{len(idx):,} of {len(have):,} {pool} rows resampled to the {name} rows' lengths "
                         f"({summary}; resampled median {picked:g})")


def matched_validation(train, validation, test, cfg) -> tuple:
    """(train, validation) with validation rows shaped like the test rows (their texts' lengths only, never their
    labels): the validation file's rows resampled to them, else rows held out of train the same way (at most half
    the matching rows, so that training keeps long ones too). The validation is unchanged (None: a random share
    follows) when the lengths already match or too few rows would."""
    pool = validation if validation is not None else train
    idx, note = length_matched(pool, test, cfg.seed + 1, "test", "validation" if validation is not None else "training")
    if idx is None:
        log(f"data.validation_rows matched: {note}; the validation rows stay as they are")
        return train, validation
    if validation is not None:
        log(f"data.validation_rows matched: validation = {note}")
        return train, validation.take(idx)
    n = min(len(idx) // 2, cfg.max_eval_samples or round(cfg.validation_split * len(train)))
    held = sorted(random.Random(cfg.seed + 1).sample(idx, n))
    held_set = set(held)
    log(f"data.validation_rows matched: {n:,} validation rows held out of {note}")
    return train.take([i for i in range(len(train)) if i not in held_set]), train.take(held)
