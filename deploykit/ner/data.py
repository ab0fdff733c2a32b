"""Tagged sentences for token classification: files or a folder, IOB2 tags checked, labels as ids.

    from deploykit.config import DataConfig
    task = load_tags(DataConfig(task="token_classification", path="../shared/data/conll2003"))
    task.validation.tokens[1], task.validation.tags[1]   # ['LONDON', '1996-08-30'], [1, 0]
    task.labels                                          # ['O', 'B-LOC', 'I-LOC', 'B-MISC', ...]

A folder holds train.* and optionally dev.* / validation.* and test.* (stems as deploykit/data.py's
SPLIT_STEMS), each .jsonl or CoNLL columns (.conll, .txt, .tsv, .iob, .bio); with no validation file a seeded
share of train is held out. Tags follow IOB2: O, B-TYPE, I-TYPE. An I- tag that starts an entity (after O,
after another type, or first in a sentence: IOB1 writes those) is counted and logged once per file, not
refused: seqeval reads it as an entity start, as conlleval does.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from deploykit.config import DataConfig
from deploykit.console import log
from deploykit.data import SPLIT_STEMS, _find_file, _local_folder, hub_dataset
from deploykit.errors import UserError
from deploykit.ner.readers import Sentences, from_records, read_conll, read_jsonl
from deploykit.overlap import keep_rows, unseen_rows

SUFFIXES = (".jsonl", ".conll", ".txt", ".tsv", ".iob", ".bio")
TAG = re.compile(r"O|[BI]-\S+")


@dataclass
class TagSplit:
    """Sentences with a tag id per word: `tags[i][j]` indexes `TagData.labels`."""

    tokens: list[list[str]]
    tags: list[list[int]]

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_words(self) -> int:
        return sum(len(t) for t in self.tokens)

    def take(self, idx: list[int]) -> TagSplit:
        return TagSplit([self.tokens[i] for i in idx], [self.tags[i] for i in idx])

    # a sentence longer than max_length is not cut: it becomes overlapping windows (deploykit/ner/align.py)
    longer = "split into windows"

    def token_ids(self, tokenizer) -> list[list[int]]:
        """Every sentence's word-piece ids, special tokens included, unwindowed (for `data.max_length: auto`)."""
        return tokenizer(self.tokens, is_split_into_words=True, truncation=False, verbose=False)["input_ids"]


@dataclass
class TagData:
    """The splits, the label of each id, and per file read (train, validation, test) how many I- tags started
    an entity (after O, another type, or the sentence start)."""

    train: TagSplit
    validation: TagSplit
    test: TagSplit | None
    labels: list[str]
    source: str
    stray_inside: dict[str, int]

    def split(self, name: str) -> TagSplit:
        """"train", "validation" or "test" (UserError when there is no test split)."""
        if name == "test" and self.test is None:
            raise UserError(f"data {self.source}: has no test split (add a test file or data.test_split)")
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


def label_list(tags: list[list[str]]) -> list[str]:
    """"O" first, then B-TYPE, I-TYPE for every type seen, types sorted: both of a pair even if one is unseen,
    so that every B- has the I- that `label_all_tokens` gives the pieces after a word's first."""
    types = sorted({t[2:] for sentence in tags for t in sentence if t != "O"})
    return ["O"] + [f"{p}-{name}" for name in types for p in "BI"]


def check_scheme(s: Sentences, names: list[str] | None = None) -> int:
    """Refuse a tag outside IOB2 (or outside `names`); return how many I- tags start an entity.

    Raises:
        UserError: naming the file and the line of the first such tag.
    """
    stray, first = 0, None
    allowed = set(names) if names is not None else None
    for i, sentence in enumerate(s.tags):
        prev = "O"  # a sentence starts outside any entity
        for j, tag in enumerate(sentence):
            if allowed is not None and tag not in allowed:
                raise UserError(f"{s.origin}: {s.where(i, j)}: tag {tag!r} is not in data.label_names "
                                f"({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
            if not TAG.fullmatch(tag):
                raise UserError(f"{s.origin}: {s.where(i, j)}: tag {tag!r} is outside the IOB2 scheme "
                                "(O, B-TYPE, I-TYPE)")
            if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
                stray += 1
                first = first or s.where(i, j)
            prev = tag
    if stray:
        log(f"{s.origin}: {stray:,} I- tag{'s' * (stray != 1)} start an entity (after O, another type or the "
            f"sentence start; first at {first}): read as entity starts, as conlleval does")
    return stray


def read_file(path: Path, cfg: DataConfig) -> Sentences:
    """A .jsonl file by its columns, anything else as CoNLL columns."""
    if path.suffix == ".jsonl":
        return read_jsonl(path, cfg.tokens_column, cfg.tags_column, cfg.label_names)
    return read_conll(path, cfg.label_names)


def to_split(s: Sentences, labels: list[str], given: bool) -> tuple[TagSplit, int]:
    """Ids of `s`'s tags in `labels` (`given`: they are data.label_names, else train's tags), and how many
    I- tags start an entity (`check_scheme`).

    Raises:
        UserError: a tag outside the scheme or the labels (naming its line).
    """
    stray = check_scheme(s, labels if given else None)
    ids = {name: i for i, name in enumerate(labels)}
    for i, sentence in enumerate(s.tags):
        for j, tag in enumerate(sentence):
            if tag not in ids:
                raise UserError(f"{s.origin}: {s.where(i, j)}: tag {tag!r} never appears in the training data; "
                                "list every tag in data.label_names")
    return TagSplit(s.tokens, [[ids[t] for t in sentence] for sentence in s.tags]), stray


def _find(folder: Path, split: str, explicit: str | None) -> Path | None:
    """data.<split>_file resolved as deploykit/data.py does, else the first <stem><suffix> in `folder`."""
    if explicit:
        return _find_file(folder, split, explicit)
    return next((folder / f"{stem}{suffix}" for stem in SPLIT_STEMS[split] for suffix in SUFFIXES
                 if (folder / f"{stem}{suffix}").is_file()), None)


def hold_out(split: TagSplit, fraction: float, seed: int) -> tuple[TagSplit, TagSplit]:
    """(rest, held_out): `fraction` of the sentences (at least one), drawn with `seed`, both in file order."""
    idx = list(range(len(split)))
    random.Random(seed).shuffle(idx)
    held = set(idx[: max(1, round(len(idx) * fraction))])
    return (split.take([i for i in range(len(split)) if i not in held]), split.take(sorted(held)))


def held_out_sentences(train: TagSplit, validation: TagSplit, from_train: bool,
                       mode: str = "auto") -> tuple[TagSplit, TagSplit]:
    """Validation without the sentences whose words occur inside a training sentence (deploykit/overlap.py: most
    are datelines such as "LONDON 1996-08-22"); those split off train go back to it."""
    kept = unseen_rows([" ".join(t) for t in train.tokens], [" ".join(t) for t in validation.tokens],
                       from_train=from_train, mode=mode, unit="sentences")
    return (train, validation) if kept is None else keep_rows(train, validation, kept, from_train)


def read_hub(cfg: DataConfig) -> tuple[dict[str, Sentences], list[str] | None]:
    """A hub dataset's train / validation / test as Sentences, and the tag names of its tags column when that
    is a sequence of `ClassLabel` (conll2003, wnut_17: ids in the rows, names in the features), else
    data.label_names (None when neither: the tags are strings)."""
    ds = hub_dataset(cfg)
    feature = ds["train"].features.get(cfg.tags_column)
    declared = getattr(getattr(feature, "feature", None), "names", None)  # Sequence(ClassLabel) / List(ClassLabel)
    names = list(cfg.label_names or declared or []) or None
    return {split: from_records([dict(row) for row in ds[split]], cfg.tokens_column, cfg.tags_column, names,
                                f"hub:{cfg.name}/{split}")
            for split in ("train", "validation", "test") if split in ds}, names


def load_tags(cfg: DataConfig) -> TagData:
    """Train / validation / test as `TagSplit`s with ids into one label list (`data.task: token_classification`).

    data.path, or data.name as a folder under data.data_dir ($DEPLOYKIT_DATA_DIR), as deploykit/data.py finds
    it, else data.name on the hub (`read_hub`); data.test_split, max_train_samples and max_eval_samples act as
    they do for classifiers.

    Raises:
        UserError: a missing path or train file, a hub dataset that cannot be read, or any fault of the files
            (one line naming file and line, or hub split and row).
    """
    root = _local_folder(cfg)
    bad = next((n for n in cfg.label_names or [] if not TAG.fullmatch(n)), None)
    if bad is not None:
        raise UserError(f"data.label_names: {bad!r} is not an IOB2 tag (O, B-TYPE, I-TYPE)")
    if root is None:  # a hub dataset
        raw, names = read_hub(cfg)
        bad = next((n for n in names or [] if not TAG.fullmatch(n)), None)
        if bad is not None:
            raise UserError(f"hub:{cfg.name}: tag name {bad!r} is not an IOB2 tag (O, B-TYPE, I-TYPE); set "
                            "data.label_names to the IOB2 names in id order")
        return _tag_data(cfg, raw, list(names) if names else label_list(raw["train"].tags), names is not None,
                         f"hub:{cfg.name}")
    if not root.exists():
        raise UserError(f"{root}: data path not found (data.path)")
    if root.is_file():
        files = {"train": root, "validation": None, "test": None}
    else:
        files = {s: _find(root, s, getattr(cfg, f"{s}_file")) for s in SPLIT_STEMS}
        if files["train"] is None:
            raise UserError(f"{root}: no train file (train{'/'.join(SUFFIXES)}); set data.train_file")
        for split in ("validation", "test"):  # as deploykit/data.py: a file named as train is split, not reused
            if files[split] is not None and files[split].resolve() == files["train"].resolve():
                files[split] = None
        # data.test_file naming the file that would also be found as validation (conll2003's dev.jsonl, the set
        # every paper reports on): it is the test set, and validation is held out of train, never the same rows
        if cfg.test_file and not cfg.validation_file and files["validation"] is not None \
                and files["test"] is not None and files["validation"].resolve() == files["test"].resolve():
            files["validation"] = None
            log(f"data: {files['test'].name} is data.test_file; validation is a seeded "
                f"{cfg.validation_split:.0%} of {files['train'].name}")
    raw = {s: read_file(p, cfg) for s, p in files.items() if p is not None}
    labels = list(cfg.label_names) if cfg.label_names else label_list(raw["train"].tags)
    return _tag_data(cfg, raw, labels, cfg.label_names is not None, str(root))


def _tag_data(cfg: DataConfig, raw: dict[str, Sentences], labels: list[str], given: bool, root: str) -> TagData:
    """TagData from the sentences read per split: tags as ids into `labels`, held-out splits where missing."""
    done = {s: to_split(sentences, labels, given) for s, sentences in raw.items()}
    splits = {s: split for s, (split, _) in done.items()}
    train, validation, test = splits["train"], splits.get("validation"), splits.get("test")
    # seeds as deploykit/data.py draws its held-out rows: the same recipe holds out the same share
    if test is None and cfg.test_split > 0:
        train, test = hold_out(train, cfg.test_split, cfg.seed)
    from_train = validation is None
    if validation is None:
        train, validation = hold_out(train, cfg.validation_split, cfg.seed + 1)
    if cfg.validation_overlap != "keep":  # CoNLL-2003: 206 of 1,404 held-out sentences repeat a training one
        train, validation = held_out_sentences(train, validation, from_train, cfg.validation_overlap)
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        train = train.take(sorted(random.Random(cfg.seed).sample(range(len(train)), cfg.max_train_samples)))
    if cfg.max_eval_samples:
        validation = validation.take(list(range(min(cfg.max_eval_samples, len(validation)))))
    if len(train) == 0:
        raise UserError(f"data {root}: too few sentences to train and validate")
    return TagData(train, validation, test, labels, root, {s: stray for s, (_, stray) in done.items()})
