"""Labelled text-classification data: local files, a local mirror of named datasets, or the hub.

    from deploykit.config import DataConfig
    task = load_task(DataConfig(name="sst2", data_dir="../shared/data"))
    task.train.texts[:2], task.labels          # ['when are bears bears and ', ...], ['0', '1']

Files are .tsv (tab-separated, no quoting, as GLUE ships them), .csv or .jsonl, UTF-8. A folder
holds train.* and optionally dev.*/validation.* and test.*; with no validation file a seeded,
stratified split of train is held out.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from deploykit import records
from deploykit.config import DataConfig
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.overlap import held_out
from deploykit.labels import label_vocab
from deploykit.records import SUFFIXES, label_keys, read_rows, where

SPLIT_STEMS = {"train": ("train",), "validation": ("dev", "validation", "valid", "val"), "test": ("test",)}


@dataclass
class Split:
    texts: list[str]
    pairs: list[str] | None
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: list[int]) -> Split:
        return Split([self.texts[i] for i in idx], None if self.pairs is None else [self.pairs[i] for i in idx],
                     [self.labels[i] for i in idx])

    def head(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else self.take(list(range(n)))

    # what becomes of a row longer than max_length (the `data.max_length: auto` log line says it)
    longer = "truncated"

    def token_ids(self, tokenizer) -> list[list[int]]:
        """Every row's token ids, special tokens included, untruncated."""
        args = (self.texts,) if self.pairs is None else (self.texts, self.pairs)
        return tokenizer(*args, truncation=False, verbose=False)["input_ids"]


@dataclass
class TaskData:
    train: Split
    validation: Split
    test: Split | None
    labels: list[str]
    source: str

    def split(self, name: str) -> Split:
        if name == "test" and self.test is None:
            raise UserError(f"data {self.source}: has no test split (add a test file or data.test_split)")
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


# ---------------------------------------------------------------- finding files

def _find_file(folder: Path, split: str, explicit: str | None) -> Path | None:
    if explicit:
        p = Path(explicit)
        p = p if p.is_absolute() or p.exists() else folder / explicit
        if not p.is_file():
            raise UserError(f"{p}: data file not found (data.{split}_file)")
        return p
    for stem in SPLIT_STEMS[split]:
        for suffix in SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


# ---------------------------------------------------------------- labels and splits

def _to_split(rows: list[dict], cfg: DataConfig, label_ids: dict, origin: str) -> Split:
    texts = records.texts(rows, cfg.text_column, origin)
    pairs = records.texts(rows, cfg.text_pair_column, origin, empty_ok=True) if cfg.text_pair_column else None
    labels = []
    for n, (row, key) in enumerate(zip(rows, label_keys(rows, cfg.label_column, origin)), 1):
        if key not in label_ids:
            raise UserError(f"{origin}: {where(row, n)} has label {key!r}, never seen in the training data")
        labels.append(label_ids[key])
    return Split(texts, pairs, labels)


def stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(rest, held_out): `fraction` of every label's rows, chosen with `seed`."""
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(split.labels):
        by_label[y].append(i)
    rng = random.Random(seed)
    held: list[int] = []
    for y in sorted(by_label):
        idx = by_label[y]
        rng.shuffle(idx)
        held.extend(idx[: max(1, round(len(idx) * fraction))] if len(idx) > 1 else [])
    held_set = set(held)
    rest = [i for i in range(len(split)) if i not in held_set]
    return split.take(rest), split.take(sorted(held))


# ---------------------------------------------------------------- entry point

def data_root(cfg: DataConfig | None) -> Path | None:
    """Where named data lives: data.data_dir, else $DEPLOYKIT_DATA_DIR; None when neither is set."""
    root = (cfg.data_dir if cfg is not None else None) or os.environ.get("DEPLOYKIT_DATA_DIR")
    return Path(root).expanduser() if root else None


def _local_folder(cfg: DataConfig) -> Path | None:
    if cfg.path is not None:
        return Path(cfg.path).expanduser()
    root = data_root(cfg)
    if root is not None and (root / cfg.name).exists():
        return root / cfg.name
    return None


def load_task(cfg: DataConfig) -> TaskData:
    """Load train/validation/test as `Split`s with integer labels; all errors are one-line UserErrors."""
    folder = _local_folder(cfg)
    if folder is None:
        return _load_hub(cfg)
    if not folder.exists():
        raise UserError(f"{folder}: data path not found (data.path)")
    files: dict[str, Path | None]
    if folder.is_file():
        files = {"train": folder, "validation": None, "test": None}
    else:
        files = {s: _find_file(folder, s, getattr(cfg, f"{s}_file")) for s in SPLIT_STEMS}
        if files["train"] is None:
            raise UserError(f"{folder}: no train file (train.tsv/.csv/.jsonl); set data.train_file")
        for split in ("validation", "test"):  # one file named as train (e.g. agnews/dev.tsv) is split, not reused
            if files[split] is not None and files[split].resolve() == files["train"].resolve():
                files[split] = None
    raw = {s: read_rows(p, cfg.column_names) for s, p in files.items() if p is not None}
    train_path = str(files["train"])
    records.check_column(raw["train"], cfg.text_column, train_path)  # the text first: a wrong column is the fix
    labels, ids = label_vocab(label_keys(raw["train"], cfg.label_column, train_path), cfg, train_path, raw["train"])
    splits = {s: _to_split(rows, cfg, ids, str(files[s])) for s, rows in raw.items()}
    return _finish(splits, labels, cfg, str(folder))


def _finish(splits: dict[str, Split], labels: list[str], cfg: DataConfig, source: str) -> TaskData:
    train = splits["train"]
    test = splits.get("test")
    if test is None and cfg.test_split > 0:
        train, test = stratified_split(train, cfg.test_split, cfg.seed)
    validation = splits.get("validation")
    from_train = validation is None  # held out of the training file, not given
    if cfg.validation_rows == "matched" and test is not None:
        from deploykit.matching import matched_validation

        train, validation = matched_validation(train, validation, test, cfg)
    if validation is None:
        train, validation = stratified_split(train, cfg.validation_split, cfg.seed + 1)
    if cfg.validation_overlap != "keep":
        train, validation = held_out(train, validation, from_train, cfg.validation_overlap)
    if cfg.max_train_samples:
        rng = random.Random(cfg.seed)
        idx = list(range(len(train)))
        rng.shuffle(idx)
        train = train.take(sorted(idx[: cfg.max_train_samples]))
    validation = validation.head(cfg.max_eval_samples)
    if len(train) == 0 or len(validation) == 0:
        raise UserError(f"data {source}: too few rows to train and validate")
    if len(set(train.labels)) < 2:  # it would train to a constant and validate at 100%
        raise UserError(f"data {source}: every training row has the label {labels[train.labels[0]]!r}; a classifier "
                        "needs rows of at least two labels (check data.label_column and data.max_train_samples)")
    return TaskData(train, validation, test, labels, source)


def hub_dataset(cfg: DataConfig):
    """`datasets.load_dataset(data.name, data.hub_config)` with a train split, for a name with no local folder.

    Raises:
        UserError: the dataset is neither local nor reachable on the hub, or it has no train split.
    """
    root = cfg.data_dir or os.environ.get("DEPLOYKIT_DATA_DIR")
    local = f"{root}/{cfg.name}" if root else "no data.data_dir or $DEPLOYKIT_DATA_DIR set"
    try:
        import datasets

        ds = datasets.load_dataset(cfg.name, cfg.hub_config)
    except Exception as err:  # noqa: BLE001 - hub failures come in many types; all mean "not available"
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise UserError(f"dataset {cfg.name!r}: not found locally ({local}) nor on the hub ({reason}); "
                        "set data.data_dir to a local mirror or data.path to your files") from None
    if "train" not in ds:
        raise UserError(f"dataset {cfg.name!r}: no train split on the hub (splits: {', '.join(ds)}); "
                        "set data.path to your files")
    return ds


def _load_hub(cfg: DataConfig) -> TaskData:
    ds = hub_dataset(cfg)
    feature = ds["train"].features.get(cfg.label_column)
    names = getattr(feature, "names", None)
    rows = {s: [dict(r) for r in ds[s] if r.get(cfg.label_column, -1) != -1] for s in ds}
    if names and cfg.label_names is None:
        cfg = cfg.model_copy(update={"label_names": list(names)})
    origin = f"hub:{cfg.name}/train"
    labels, ids = label_vocab(label_keys(rows["train"], cfg.label_column, origin), cfg, origin, rows["train"])
    splits = {}
    for hub_split, ours in (("train", "train"), ("validation", "validation"), ("test", "test")):
        if rows.get(hub_split):
            splits[ours] = _to_split(rows[hub_split], cfg, ids, f"hub:{cfg.name}/{hub_split}")
    return _finish(splits, labels, cfg, f"hub:{cfg.name}")


# ---------------------------------------------------------------- tokenization

# model types whose position ids start after the padding index (transformers' RobertaEmbeddings
# create_position_ids_from_input_ids): a table of N rows holds N - (pad_token_id + 1) tokens.
# MPNet does the same with a padding index fixed at 1, whatever its config says.
POSITIONS_AFTER_PAD = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                                 "data2vec-text", "longformer", "luke", "ibert", "xmod", "markuplm", "lilt",
                                 "layoutlmv3"})


def usable_positions(model_config, tokenizer=None) -> int | None:
    """How many tokens one input of this model may hold: its position table less any offset; None if unbounded.

    Args:
        model_config: a transformers config, or a model folder (its config.json; a folder without one: None).
        tokenizer: consulted for the pad id when an offset model's config has none.
    """
    if isinstance(model_config, (str, Path)):
        if not (Path(model_config) / "config.json").is_file():
            return None
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(model_config)
    table = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if not table:
        return None
    model_type, pad = getattr(model_config, "model_type", None), getattr(model_config, "pad_token_id", None)
    if model_type == "mpnet":
        return table - 2
    if model_type in POSITIONS_AFTER_PAD:
        pad = pad if pad is not None else getattr(tokenizer, "pad_token_id", None)
        return table - (1 if pad is None else pad) - 1
    return table


_CUTS_LOGGED: set[tuple[int, int]] = set()
_AUTO: dict[tuple, int] = {}  # auto lengths computed in this process: every stage and gate asks again
AUTO_PERCENTILE = 99
AUTO_SAMPLE = 10000


def token_lengths(split: Split, tokenizer, limit: int = AUTO_SAMPLE, seed: int = 0) -> list[int]:
    """Tokens per row (special tokens included, untruncated) of up to `limit` rows drawn with `seed`.

    `split` is a `Split` or any split with `take` and `token_ids` (deploykit/ner/data.py's TagSplit of words)."""
    idx = list(range(len(split)))
    if len(idx) > limit:
        idx = sorted(random.Random(seed).sample(idx, limit))
    return [len(ids) for ids in split.take(idx).token_ids(tokenizer)]


def auto_max_length(task: TaskData | Split, tokenizer, usable: int | None = None) -> int:
    """`data.max_length: auto`: the 99th percentile of the rows' token counts, rounded up to a multiple of 8.

    Taken over the training rows *and* the validation rows, whichever is longer: a training file of short
    phrases (SST-2: median 7 words) scored on sentences (median 19) would otherwise truncate the inputs the
    model is judged on. One log line gives the length and the share of rows it truncates. `task` may also be
    tagged words (deploykit/ner/data.py's TagData or TagSplit), whose longer sentences become windows.
    """
    splits = [task.train, task.validation] if hasattr(task, "validation") else [task]
    first = splits[0]
    key = (tuple(len(s) for s in splits), repr(first.take([0])) if len(first) else "", type(tokenizer).__name__,
           len(tokenizer), usable)
    if key in _AUTO:
        return _AUTO[key]
    import numpy as np

    lengths = [token_lengths(s, tokenizer) for s in splits if len(s)]
    if not lengths:
        raise UserError("data.max_length: auto needs training rows to measure; give data.max_length a number")
    # inverted_cdf: the shortest length that at least 99% of the rows fit in (no interpolation)
    value = max(int(np.percentile(np.asarray(ls), AUTO_PERCENTILE, method="inverted_cdf")) for ls in lengths)
    value = max(8, -(-value // 8) * 8)
    if usable is not None:
        value = min(value, usable)
    every = [n for ls in lengths for n in ls]
    cut = sum(n > value for n in every) / len(every)
    where = f" (the model holds {usable})" if usable is not None and value == usable else ""
    log(f"data.max_length auto: {value} tokens{where}, the {AUTO_PERCENTILE}th percentile of {len(every):,} "
        f"training and validation rows; {cut:.1%} of them are {first.longer} (longest {max(every)})")
    _AUTO[key] = value
    return value


def fit_max_length(max_length: int | str, model_config, tokenizer=None, task: TaskData | Split | None = None,
                   recorded: int | None = None) -> int:
    """`data.max_length` resolved (`auto`) and cut to what the model's position table can take.

    Every stage that encodes texts for a classifier passes `recipe.data.max_length` through this: a longer
    input would index past the position embeddings and crash in the first forward pass. `deploykit
    validate` can call it to warn before any work (the result is smaller than `max_length` exactly when
    the recipe asks for more than the model holds).

    Args:
        max_length: the requested truncation length (`recipe.data.max_length`), or "auto" (`auto_max_length`).
        model_config: a transformers config, or a model folder holding config.json.
        tokenizer: gives the pad id of a RoBERTa-type model whose config lacks one; needed for "auto".
        task: the rows "auto" measures (the task, or one split).
        recorded: the length the input artifact was trained with (its manifest's `max_length`): what "auto"
            gives when present, so a stage run on its own agrees with the chain.

    Returns:
        min(max_length, usable positions): max_position_embeddings, less pad_token_id + 1 for RoBERTa-type
        models (XLM-R, CamemBERT, ...), whose positions start after the padding index.
    """
    usable = usable_positions(model_config, tokenizer)
    if max_length == "auto" and isinstance(recorded, int) and not isinstance(recorded, bool):
        max_length = recorded
    if max_length == "auto":
        if task is None or tokenizer is None:
            raise ValueError("data.max_length auto is resolved from the task's rows and the tokenizer")
        return auto_max_length(task, tokenizer, usable)
    if usable is None or max_length <= usable:
        return max_length
    if (max_length, usable) not in _CUTS_LOGGED:  # every stage and gate calls this: say it once per run
        _CUTS_LOGGED.add((max_length, usable))
        log(f"data.max_length {max_length} is longer than the model's {usable} positions: inputs are truncated "
            f"to {usable} tokens")
    return usable


def encode(split: Split, tokenizer, max_length: int, padding: bool | str = False, **kw):
    args = (split.texts,) if split.pairs is None else (split.texts, split.pairs)
    return tokenizer(*args, truncation=True, max_length=max_length, padding=padding, **kw)


def to_dataset(split: Split, tokenizer, max_length: int, stride: int | None = None, where: str = ""):
    """A `datasets.Dataset` of token ids + `labels`, padded later by the collator (dynamic padding).

    With `stride` (`data.long_texts: windows`, see deploykit/windows.py) each text gives one row per window,
    labelled with the text's label, plus a `text_of` column (the split row it came from) by which evaluation
    pools the windows' logits; `where` names the split in the log line that counts the windows.
    """
    import datasets

    if stride is None:
        enc, labels, extra = encode(split, tokenizer, max_length), list(split.labels), {}
    else:
        from deploykit.windows import TEXT_OF, encode_windows, say

        enc, text_of = encode_windows(split, tokenizer, max_length, stride)
        say(text_of, len(split), stride, where)
        labels, extra = [split.labels[i] for i in text_of], {TEXT_OF: text_of.tolist()}
    cols = {k: list(v) for k, v in enc.items()}
    return datasets.Dataset.from_dict({**cols, "labels": labels, **extra})


def batches(split: Split, tokenizer, batch_size: int, max_length: int,
            fixed_length: int | None = None) -> Iterator[tuple[dict, list[int]]]:
    """(numpy inputs, labels) batches in order; padded to the longest, or to `fixed_length`."""
    for start in range(0, len(split), batch_size):
        part = split.take(list(range(start, min(start + batch_size, len(split)))))
        if fixed_length:
            enc = encode(part, tokenizer, fixed_length, padding="max_length", return_tensors="np")
        else:
            enc = encode(part, tokenizer, max_length, padding=True, return_tensors="np")
        yield dict(enc), part.labels
