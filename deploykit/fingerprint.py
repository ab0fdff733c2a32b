"""What a stage of `deploykit run` read besides its config: the bytes of the local files behind `data` (and the
stage's `unlabeled` texts), so that a run after the user edits a data file in place trains again instead of
calling the stage unchanged. Hub datasets are named by id and revision in the config; their cache is not read.

    stage_inputs(recipe, "distill")  # {'train.tsv': '3f1c…', 'dev.tsv': '…', 'test.tsv': '…', 'unlabeled': '…'}
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploykit.config import Recipe

# every suffix a task kind reads a split from (deploykit/records.py, deploykit/ner/data.py)
DATA_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".conll", ".txt", ".iob", ".bio", ".parquet")


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
    """The local files the recipe's task may read: data.path (a file, or the data files of that folder) or
    <data_dir>/<name>/, and data.train/validation/test_file wherever they point; [] for a hub dataset."""
    from deploykit.data import _local_folder

    data = recipe.data
    if data is None:
        return []
    folder = _local_folder(data)
    files: list[Path] = []
    if folder is not None and folder.is_file():
        files.append(folder)
    elif folder is not None and folder.is_dir():
        files += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
        for explicit in (data.train_file, data.validation_file, data.test_file):
            path = Path(explicit).expanduser() if explicit else None
            if path is not None and not path.is_absolute():
                path = folder / path
            if path is not None and path.is_file() and path not in files:
                files.append(path)
    return files


def stage_inputs(recipe: Recipe, stage: str) -> dict[str, str]:
    """{file name: digest} of the data files and of the stage's own `unlabeled` file (key "unlabeled")."""
    from deploykit.transfer import unlabeled_path

    found = {path.name: file_digest(path) for path in data_files(recipe)}
    section = getattr(recipe, stage, None)
    unlabeled = getattr(section, "unlabeled", None)
    if unlabeled is not None:
        found["unlabeled"] = file_digest(unlabeled_path(unlabeled, recipe.data))
    return found
