"""deploykit/matching.py: training rows resampled to the lengths of the rows a model is judged on."""

import numpy as np

from deploykit.data import Split
from deploykit.matching import MIN_ROWS, length_matched, words


def split_of(lengths: list[int], pairs: bool = False) -> Split:
    texts = [" ".join(["w"] * n) for n in lengths]
    return Split(texts, [""] * len(texts) if pairs else None, [0] * len(texts))


def test_short_training_phrases_are_resampled_to_the_sentence_lengths():
    """SST-2's shape: training phrases (most of 2-8 words, a tail of sentences), judged on sentences."""
    rng = np.random.default_rng(0)
    train = split_of(list(rng.integers(2, 9, 6000)) + list(rng.integers(12, 40, 2000)))
    target = split_of(list(rng.integers(12, 40, 500)))
    idx, note = length_matched(train, target, seed=1, name="test")
    picked, want = words(train)[idx], words(target)
    assert abs(np.median(picked) - np.median(want)) <= 1
    assert np.percentile(picked, 10) >= 12 and len(idx) >= 1500  # the short phrases are left out, the tail kept
    assert idx == sorted(set(idx)) and "rows resampled to the test rows' lengths" in note
    assert length_matched(train, target, seed=1, name="test")[0] == idx  # seeded


def test_matching_lengths_keep_every_row():
    rng = np.random.default_rng(0)
    train, target = split_of(list(rng.integers(5, 30, 3000))), split_of(list(rng.integers(5, 30, 300)))
    idx, note = length_matched(train, target)
    assert idx is None and note.startswith("all training rows: their lengths match")


def test_too_few_long_rows_keep_every_row():
    train = split_of([3] * 5000 + [20] * (MIN_ROWS // 20))
    target = split_of([20] * 100)
    idx, note = length_matched(train, target)
    assert idx is None and "too few long ones" in note
