"""Validation rows that a training row already holds, kept out of validation.

    from deploykit.overlap import held_out, unseen_rows
    train, validation = held_out(train, validation, from_train=False)    # text classification Splits
    kept = unseen_rows(train_texts, validation_texts, from_train=True)   # indices, for any kind's rows
    train, validation = keep_rows(train, validation, kept, from_train=True)  # any kind's split, rows put back

A validation row whose text occurs word for word inside a training text (a duplicate, or, as in SST-2, a phrase
of a sentence that is itself a training row) measures what the model remembers, not how it does on new text.
Early stopping, the checkpoint kept and every gate read the validation rows. `data.validation_overlap: auto` (the
default) leaves such rows out when they are at most half of the validation (duplicates in a dataset: CoNLL-2003's
held-out slice repeats 206 training sentences of 1,404, mostly datelines) and otherwise keeps every row and says
so in a warning line: then the split itself shares text with training, and what is left is a different, smaller
set. SST-2 is that case: 5,969 of sst2/dev.tsv's 6,735 rows occur inside a training row. `drop` leaves those
out as well (766 whole sentences are left): measured end to end (bench/README.md, run 45), the teacher kept a
checkpoint 1.5 pt worse on test and recovery stopped earlier, −2.75 pt in all against run 39's −2.52, because 766
rows tell near checkpoints apart less well than 2,000 (and 682 of the 766 still have a training phrase covering at
least half their words). A file of unseen rows is the only full answer there.

Rows are compared after whitespace is collapsed and case folded (what an uncased tokenizer sees alike); a row
with a second text (a pair) counts as seen only when both texts equal a training row's. This module reads texts
only and imports nothing of the package but the console, so data.py and ner/data.py can call it.
"""

from __future__ import annotations

import dataclasses
import hashlib

from deploykit.console import log, warn

# substring search costs ~1 ms per validation row per 10 MB of training text (CPython's `in`); above this many
# characters scanned in all, only exact duplicates are looked for (a set lookup per row), and the log line says so
MAX_SCAN = 10 ** 11
# fewer held-out rows than this would leave the gates and early stopping too noisy to read: keep every row
MIN_HELD_OUT = 100
_cache: dict[str, list[bool]] = {}
_said: set[str] = set()  # every stage of a run loads the data: each line once per process


def _say(line: str, warning: bool = False) -> None:
    if line not in _said:
        _said.add(line)
        (warn if warning else log)(line)


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def seen_in_training(train_texts: list[str], validation_texts: list[str], train_pairs: list[str] | None = None,
                     validation_pairs: list[str] | None = None) -> tuple[list[bool], bool]:
    """(one bool per validation row: True where a training row holds it, whether substrings were searched).

    Single texts: True when the text is a training text or a run of whole words inside one. Pairs: True when
    (text, pair) equals a training row's. Substrings are searched only while the validation rows x the training
    characters stay under `MAX_SCAN`; above it, exact duplicates only."""
    if train_pairs is not None or validation_pairs is not None:
        rows = set(zip(map(_norm, train_texts), map(_norm, train_pairs or [""] * len(train_texts))))
        other = zip(map(_norm, validation_texts), map(_norm, validation_pairs or [""] * len(validation_texts)))
        return [k in rows for k in other], False
    # each training text between spaces, texts apart by a newline no normalized query holds: a match is whole words
    # of one text
    corpus = "\n".join(f" {_norm(t)} " for t in train_texts)
    queries = [_norm(t) for t in validation_texts]
    key = hashlib.sha256("\0".join([corpus, *queries]).encode("utf-8", "surrogatepass")).hexdigest()
    search = len(queries) * len(corpus) <= MAX_SCAN
    if key not in _cache:  # every stage of a run loads the data once: search once per process
        exact = set(map(_norm, train_texts))
        _cache[key] = [q in exact or (search and bool(q) and f" {q} " in corpus) for q in queries]
    return _cache[key], search


def seen_share(train_texts: list[str], validation_texts: list[str], train_pairs: list[str] | None = None,
               validation_pairs: list[str] | None = None) -> float:
    """The share (0 to 1) of validation rows a training row holds (`seen_in_training`); 0 for no rows."""
    seen, _ = seen_in_training(train_texts, validation_texts, train_pairs, validation_pairs)
    return sum(seen) / len(seen) if seen else 0.0


def unseen_rows(train_texts: list[str], validation_texts: list[str], train_pairs: list[str] | None = None,
                validation_pairs: list[str] | None = None, *, from_train: bool, mode: str = "auto",
                unit: str = "rows") -> list[int] | None:
    """Indices of the validation rows no training row holds (`seen_in_training`), said in one log line; None where
    every row stays: none is seen, fewer than `MIN_HELD_OUT` would remain, or (mode auto) the seen rows are most of
    the validation (then with a warning line: the split itself shares text with training).

    from_train: the validation rows were split off the training file, and the caller puts the others back there
    (they are training data); a validation file's other rows are left out of both."""
    seen, searched = seen_in_training(train_texts, validation_texts, train_pairs, validation_pairs)
    n_seen, n = sum(seen), len(seen)
    if not n_seen:
        return None
    pairs = train_pairs is not None or validation_pairs is not None  # pairs count as seen only as duplicates
    how = "occur inside a training text" if searched else "duplicate a training pair" if pairs else \
        "duplicate a training row (substrings not searched: too much text)"
    kept = [i for i, s in enumerate(seen) if not s]
    few = len(kept) < MIN_HELD_OUT
    if few or (mode == "auto" and n_seen > n / 2):
        why = f"and fewer than {MIN_HELD_OUT} others would be left" if few else "(most of the validation)"
        _say(f"data: warning: {n_seen:,} of {n:,} validation {unit} {how} {why}; every row stays, so validation "
             "figures read partly what the model remembers (give a validation file of unseen text" +
             (", or data.validation_overlap: drop)" if not few else ")"), warning=True)
        return None
    where = "they go back to training" if from_train else "left out"
    _say(f"data: {n_seen:,} of {n:,} validation {unit} {how}; validating on the other {len(kept):,} ({where}; "
         "data.validation_overlap: keep validates on all)")
    return kept


def held_out(train, validation, from_train: bool, mode: str = "auto") -> tuple:
    """(train, validation) of text classification (deploykit.data.Split) without the validation rows a training row
    holds (`unseen_rows`); rows split off train go back to it."""
    kept = unseen_rows(train.texts, validation.texts, train.pairs, validation.pairs, from_train=from_train, mode=mode)
    return (train, validation) if kept is None else keep_rows(train, validation, kept, from_train)


def keep_rows(train, validation, kept: list[int], from_train: bool) -> tuple:
    """(train, validation.take(kept)); the rows left out go to the end of train when they were split off it.
    Any kind's split: a dataclass of per-row lists (a None field stays None) with `take(indices)`."""
    if from_train:
        back = validation.take(sorted(set(range(len(validation))) - set(kept)))
        rows = {f.name: getattr(train, f.name) for f in dataclasses.fields(train)}
        train = type(train)(**{name: None if mine is None else mine + getattr(back, name) for name, mine in rows.items()})
    return train, validation.take(kept)
