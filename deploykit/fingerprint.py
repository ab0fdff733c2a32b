"""What a stage of `deploykit run` read besides its config: the bytes of the local files behind `data` (and the
stage's `unlabeled` texts), so that a run after the user edits a data file in place trains again instead of
calling the stage unchanged. Hub datasets are named by id and revision in the config; their cache is not read.

    stage_inputs(recipe, "distill")  # {'train.tsv': '3f1c…', 'dev.tsv': '…', 'test.tsv': '…', 'unlabeled': '…'}
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploykit.config import Recipe

_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime_ns) -> digest: each stage of a run asks for the same files


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (first 16 hex digits); read in 1 MiB blocks (~1 s a GB), once per process
    while the file's size and modification time stay the same."""
    info = Path(path).stat()
    key = (str(Path(path).resolve()), info.st_size, info.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()[:16]
    return _DIGESTS[key]


def data_files(recipe: Recipe) -> list[Path]:
    """The local files the recipe's task reads, found as its kind finds them (data.path as a file, or each
    split's file in the data folder, data.<split>_file wherever it points); [] for a hub dataset."""
    from deploykit.data import SPLIT_STEMS, _find_file, _local_folder
    from deploykit.kinds import kind_of

    data = recipe.data
    folder = _local_folder(data) if data is not None else None
    if folder is None or not folder.exists():
        return []
    if folder.is_file():
        return [folder]
    find = kind_of(data.task).find_file or _find_file
    found = (find(folder, split, getattr(data, f"{split}_file")) for split in SPLIT_STEMS)
    return list(dict.fromkeys(path for path in found if path is not None))


def stage_inputs(recipe: Recipe, stage: str) -> dict[str, str]:
    """{file name: digest} of the data files and of the stage's own `unlabeled` file (key "unlabeled")."""
    from deploykit.data import _local_folder
    from deploykit.transfer import unlabeled_path

    folder = _local_folder(recipe.data) if recipe.data is not None else None
    found = {_name(path, folder): file_digest(path) for path in data_files(recipe)}
    section = getattr(recipe, stage, None)
    unlabeled = getattr(section, "unlabeled", None)
    if unlabeled is not None:
        found["unlabeled"] = file_digest(unlabeled_path(unlabeled, recipe.data))
    return found


def _name(path: Path, folder: Path | None) -> str:
    """A file's key: its path inside the data folder (a moved folder keeps its keys), else its absolute path."""
    try:
        return str(path.resolve().relative_to(folder.resolve())) if folder is not None and folder.is_dir() \
            else path.name
    except ValueError:
        return str(path.resolve())
