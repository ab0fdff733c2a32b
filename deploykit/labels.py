"""Class ids from a training file's labels: integer ids, or class names, never a class no training row has.

Integer labels 0..N-1 are the class ids a model's head indexes (GLUE, most hub datasets). Any other labels are
class names, given ids in sorted order or in `data.label_names`' order. Two ways data silently made classes up
before, now one line each: integer labels with gaps (labels 0 and 1,000,000 built a head of 1,000,001 classes; a
1-based file gained an empty class "0"), and one odd value in an integer column (a "nan" a spreadsheet wrote, or a
header line read as a row) that became a class of its own.
"""

from __future__ import annotations

import re

from deploykit.config import DataConfig
from deploykit.errors import UserError
from deploykit.records import INTEGER, where


def label_vocab(keys: list[str], cfg: DataConfig, origin: str, rows: list | None = None) -> tuple[list[str], dict]:
    """(class names in id order, {label key: id}) for the training rows' label keys (`records.label_keys`).

    Raises:
        UserError: a column of integer labels holding another value; a column where most rows hold a label of
            their own (a text column); integers that are not 0..N-1 (unless
            data.label_names lists every value as a class name); a negative id; a class of data.label_names that no
            training row has, or a label it lacks.
    """
    values = set(keys)
    names_given = cfg.label_names is not None
    integers = {v for v in values if INTEGER.fullmatch(v)}
    as_names = names_given and values <= set(cfg.label_names)  # the user named every value: each is a class name
    if integers and integers != values and not as_names:
        n = next(i for i, k in enumerate(keys) if k not in integers)
        at = where(rows[n], n + 1) if rows is not None else f"row {n + 1}"
        raise UserError(f"{origin}: {at} has label {keys[n]!r} in a column of integer labels ({len(values - integers)} "
                        "such value(s)); fix or remove those rows, or list every label in data.label_names to take "
                        "each one as a class name")
    if integers == values and not as_names:
        ids = sorted(int(v) for v in values)
        if ids[0] < 0:
            raise UserError(f"{origin}: negative label {ids[0]} in train (unlabelled rows?); remove them")
        k = len(cfg.label_names) if names_given else ids[-1] + 1
        if ids[-1] >= k:
            raise UserError(f"{origin}: data.label_names has {k} names but labels go up to {ids[-1]}")
        names = list(cfg.label_names or [str(i) for i in range(k)])
        _every_class_trained(names, {int(v) for v in values}, origin, integer=True)
        return names, {str(i): i for i in range(len(names))}
    if not names_given and len(values) > max(20, len(keys) / 2):  # most rows a class of their own
        raise UserError(f"{origin}: label column '{cfg.label_column}' holds {len(values):,} different values in "
                        f"{len(keys):,} rows (e.g. {keys[0][:40]!r}): a text column? A class needs many rows; set "
                        "data.label_column to the column of class labels")
    names = list(cfg.label_names) if names_given else sorted(values)
    unknown = values - set(names)
    if unknown:
        raise UserError(f"{origin}: labels {sorted(unknown)[:5]} are not in data.label_names")
    _every_class_trained(names, {names.index(v) for v in values}, origin, integer=False)
    return names, {n: i for i, n in enumerate(names)}


def _every_class_trained(names: list[str], seen: set[int], origin: str, integer: bool) -> None:
    """A class no training row has would be a head output that only ever learns to be unlikely."""
    empty = [i for i in range(len(names)) if i not in seen]
    if not empty or len(seen) < 2:  # one label only: data.load_task's own line says that
        return
    shown = ", ".join(f"{i} ({names[i]!r})" if integer else repr(names[i]) for i in empty[:4])
    more = f" and {len(empty) - 4} more" if len(empty) > 4 else ""
    if integer and names == [str(i) for i in range(len(names))]:
        raise UserError(f"{origin}: integer labels are class ids 0..N-1, but no training row has id {shown}{more} "
                        f"(labels {min(seen)}..{max(seen)}: 1-based, or codes?); renumber them from 0, or list every "
                        "label in data.label_names to take each one as a class name")
    raise UserError(f"{origin}: no training row has the class {shown}{more} of data.label_names; remove it from "
                    "data.label_names, or add training rows of it")


# what HF writes when a model was saved without label names
_DEFAULT_LABEL = re.compile(r"LABEL_\d+")


def check_labels(config, labels: list[str], what: str,
                 fix: str = "distil on the task the teacher was fine-tuned on (data.label_names sets the data's "
                            "names)") -> None:
    """Refuse a model whose labels (id order) differ from the data's; `fix` ends the one-line UserError.

    Names match names only, in order. HF's default names (LABEL_0, ...) and a data file's bare ids (0, 1, ... as
    the label column of SST-2's TSVs) say nothing of meaning, so either matches any names of the same count.
    """
    names = [str(config.id2label[i]) for i in range(config.num_labels)]
    ids = labels == [str(i) for i in range(len(labels))]
    if len(names) != len(labels) or (names != labels and not ids and
                                     not all(_DEFAULT_LABEL.fullmatch(n) for n in names)):
        shown = names if len(names) <= 12 else names[:10] + [f"... {len(names)} in all"]
        data = labels if len(labels) <= 12 else labels[:10] + [f"... {len(labels)} in all"]
        raise UserError(f"{what}: labels {shown} differ from the data's {data}; {fix}")
