"""Unlabelled texts for knowledge distillation (`distill.unlabeled`, `prune.unlabeled`): the "transfer set".

    texts = read_unlabeled(recipe.distill.unlabeled, recipe.data)   # ['Toshiba Corp. announced Tuesday ...', ...]

Hinton et al. (2015) distil on a transfer set that need not be labelled: the teacher's soft targets are the whole
lesson. Labelled rows teach the student what the teacher does on the training distribution; unlabelled text from
the deployment's domain (news for a news tagger) teaches it on words and contexts the labelled rows never held.
The kind turns the texts into training rows whose only target is the teacher's logits: per text for text
classifiers (`add_unlabeled` below), per word for token classifiers (deploykit/ner/transfer.py).
"""

from __future__ import annotations

import random
from pathlib import Path

from deploykit.console import log
from deploykit.errors import UserError

KD_ONLY = -1  # the label of a position the KD term reads and the cross-entropy skips (no gold label there)


def unlabeled_path(cfg, data) -> Path:
    """The file `cfg` names: `path` as given, or `name` under data.data_dir / $DEPLOYKIT_DATA_DIR.

    Raises:
        UserError: no data dir for a `name`, or no such file.
    """
    from deploykit.data import data_root

    if cfg.path is not None:
        path = Path(cfg.path).expanduser()
    else:
        root = data_root(data)
        if root is None:
            raise UserError(f"unlabeled.name {cfg.name}: no data dir to find it in; set data.data_dir or "
                            "$DEPLOYKIT_DATA_DIR, or give unlabeled.path")
        path = root / cfg.name
    if not path.is_file():
        raise UserError(f"unlabeled texts {path}: file not found (unlabeled.{'path' if cfg.path else 'name'})")
    return path


def check_unlabeled(recipe) -> None:
    """Read every `unlabeled:` file the recipe names, so that a wrong path or column fails before any training
    (`deploykit run` and `deploykit validate` call it), not when distillation starts after the teacher."""
    for stage in ("distill", "prune"):
        section = getattr(recipe, stage, None)
        if section is not None and section.unlabeled is not None:
            read_unlabeled(section.unlabeled, recipe.data, quiet=True)


def read_unlabeled(cfg, data, quiet: bool = False) -> list[str]:
    """The texts of `cfg` (an UnlabeledConfig): blank ones dropped, a seeded sample of `max_rows` (data.seed);
    logged unless `quiet`.

    Raises:
        UserError: a missing file or column, an unsupported type, or no texts (records.py's one-line faults).
    """
    from deploykit.records import read_lines, read_rows, texts

    path = unlabeled_path(cfg, data)
    if path.suffix == ".txt":
        found = read_lines(path)
    else:
        rows = read_rows(path, cfg.column_names)
        if cfg.text_column not in rows[0]:
            raise UserError(f"{path}: no column '{cfg.text_column}' (columns: {', '.join(map(str, rows[0]))}); "
                            "set unlabeled.text_column, or unlabeled.column_names for a file without a header row")
        found = texts(rows, cfg.text_column, str(path), empty_ok=True)  # an unlabelled row without text is left out
    found = [t for t in found if t.strip()]
    if not found:
        raise UserError(f"{path}: no texts in column '{cfg.text_column}'")
    if cfg.max_rows is not None and cfg.max_rows < len(found):
        seed = data.seed if data is not None else 42
        found = [found[i] for i in sorted(random.Random(seed).sample(range(len(found)), cfg.max_rows))]
    if not quiet:
        log(f"unlabeled: {len(found)} texts from {path}, taught by the teacher's logits only")
    return found


def add_unlabeled(train, unlabeled, data, tokenizer, max_length: int, stride: int | None = None):
    """`train` (a `to_dataset` Dataset) followed by the rows of the unlabelled texts `unlabeled` names (an
    UnlabeledConfig; None: `train` as it is), labelled KD_ONLY: the KD term reads them, the
    cross-entropy does not. Windows of a long text keep `text_of` ids after those of `train`."""
    if unlabeled is None:
        return train
    import datasets

    from deploykit.data import Split, to_dataset
    from deploykit.windows import TEXT_OF

    texts = read_unlabeled(unlabeled, data)
    extra = to_dataset(Split(texts, None, [KD_ONLY] * len(texts)), tokenizer, max_length, stride, "unlabeled")
    if TEXT_OF in extra.column_names:
        offset = max(train[TEXT_OF]) + 1 if len(train) else 0
        extra = extra.map(lambda row: {TEXT_OF: row[TEXT_OF] + offset})
    return datasets.concatenate_datasets([train, extra])
