"""Word tags on word pieces, in overlapping windows, and predictions put back one per word.

    win = encode_words(split.tokens, tok, max_length=128, tags=split.tags, labels=task.labels)
    win.encoding["input_ids"][k], win.labels[k]      # window k: piece ids, a tag id per piece or -100
    logits = model(...)                               # [windows, seq, labels], windows padded on the right
    predicted = words_from_windows(logits, win)       # [sentences][words]: one tag id per word

Alignment follows Hugging Face's run_ner example: a word's first piece carries its tag id, the pieces after
it carry -100 (ignored by the loss) or, with `label_all_tokens`, the I- version of the tag; special tokens
carry -100. A sentence longer than `max_length` pieces is not truncated: it becomes the windows the fast
tokenizer's overflow gives (`return_overflowing_tokens`, `stride` pieces shared by consecutive windows), and
every window is a training row whose words all carry their tags.

A word seen by two windows is predicted by the one where it has the most context: the larger of the two
windows' min(pieces before it, pieces after it), ties to the earlier window. This is the "max context" rule
of BERT's SQuAD windows (run_squad's _check_is_max_context). Averaging the two windows' logits was the other
choice; it lets the window that sees the word at its very edge, with no left (or right) context to tell
B- from I-, pull on the answer as much as the one that sees the whole entity, and it makes a word's answer
depend on how many windows happen to cover it. With max context one window decides every word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from deploykit.console import log
from deploykit.errors import UserError
from deploykit.windows import stride_for

IGNORE = -100  # the label id torch's cross entropy skips (ignore_index)
_SAID: set[tuple] = set()  # window counts logged in this process: every stage encodes the same splits


@dataclass
class Windows:
    """Sentences as model rows.

    Attributes:
        encoding: the tokenizer's columns (input_ids, attention_mask, ...), [windows][pieces], unpadded.
        labels: [windows][pieces] tag ids, IGNORE where a piece is not scored; None without tags.
        sentence_of: int64 [windows], the sentence each window comes from, ascending.
        owned: [windows] the (word, piece position) pairs whose prediction is read from that window: every
            word with pieces is owned by exactly one window.
        n_words: [sentences] words per sentence.
        unscored: (sentence, word) pairs of words with no pieces at all (the tokenizer dropped them, e.g. a
            lone zero-width space): `words_from_windows` gives them `missing` (O).
    """

    encoding: dict[str, list[list[int]]]
    labels: list[list[int]] | None
    sentence_of: np.ndarray
    owned: list[list[tuple[int, int]]]
    n_words: list[int]
    unscored: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sentence_of)

    def rows(self) -> list[dict[str, list[int]]]:
        """One dict per window (the encoding's columns, and `labels` when tagged), for `datasets.Dataset.from_list`
        and transformers' DataCollatorForTokenClassification."""
        cols = dict(self.encoding, **({"labels": self.labels} if self.labels is not None else {}))
        return [dict(zip(cols, values)) for values in zip(*cols.values())]


def inside_ids(labels: list[str]) -> list[int]:
    """For every label id, the id of its I- version (B-X -> I-X when I-X is a label; O and I-X stay)."""
    ids = {name: i for i, name in enumerate(labels)}
    return [ids.get(f"I-{name[2:]}", i) if name.startswith("B-") else i for i, name in enumerate(labels)]


def window_stride(stride: int | str, max_length: int, tokenizer) -> int:
    """Pieces consecutive windows share: "auto" is a quarter of max_length.

    Raises:
        UserError: a stride that leaves a window no new pieces (>= max_length less the special tokens).
    """
    # deploykit/windows.py's rule for the classifier's windows, so both task kinds read data.window_stride alike
    return stride_for(SimpleNamespace(long_texts="windows", window_stride=stride), max_length, tokenizer)


def encode_words(tokens: list[list[str]], tokenizer, max_length: int, stride: int | str = "auto",
                 tags: list[list[int]] | None = None, labels: list[str] | None = None,
                 label_all_tokens: bool = False) -> Windows:
    """Tokenize pre-split sentences into windows of at most `max_length` pieces (special tokens included).

    Args:
        tokens: [sentences][words].
        tokenizer: a fast tokenizer (word_ids() is fast-only); a byte-level BPE (RoBERTa) one must add a
            prefix space to each word (load it with add_prefix_space=True, as run_ner does).
        stride: pieces consecutive windows of one sentence share, or "auto" (`window_stride`).
        tags: [sentences][words] tag ids, or None to encode for prediction only.
        labels: the label names; needed with `label_all_tokens` to find each tag's I- version.
        label_all_tokens: the pieces after a word's first carry the I- version of its tag instead of IGNORE.

    Raises:
        UserError: a slow tokenizer, a bad stride, or label_all_tokens without labels.
        RuntimeError: the tokenizer's windows do not overlap by `stride` (a tokenizers version that windows
            differently): predictions could not be put back per word.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"token classification needs a fast tokenizer (word_ids()); {type(tokenizer).__name__} "
                        "is not one: load it with use_fast=True")
    if label_all_tokens and tags is not None and labels is None:
        raise UserError("data.label_all_tokens needs the label names (to give pieces the I- version of a tag)")
    stride = window_stride(stride, max_length, tokenizer)
    enc = tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=max_length, stride=stride,
                    return_overflowing_tokens=True)
    sentence_of = np.asarray(enc.pop("overflow_to_sample_mapping"), dtype=np.int64)
    inside = inside_ids(labels) if label_all_tokens and labels is not None else None
    out = Windows({k: list(v) for k, v in enc.items()}, [] if tags is not None else None, sentence_of,
                  [[] for _ in sentence_of], [len(t) for t in tokens])
    starts = np.searchsorted(sentence_of, np.arange(len(tokens) + 1))
    for s in range(len(tokens)):
        rows = list(range(starts[s], starts[s + 1]))
        _place(out, enc, s, rows, stride, None if tags is None else tags[s], inside)
    _say(out, stride, max_length)
    return out


def _place(out: Windows, enc, s: int, rows: list[int], stride: int, tags: list[int] | None,
           inside: list[int] | None) -> None:
    """Labels of sentence `s`'s windows `rows`, and the window that predicts each of its words."""
    word_ids = [enc.word_ids(r) for r in rows]
    content = [[p for p, w in enumerate(ids) if w is not None] for ids in word_ids]
    starts = window_starts([[enc["input_ids"][r][p] for p in pos] for r, pos in zip(rows, content)], stride,
                           f"sentence {s}")
    first: dict[int, int] = {}  # word -> its first and last piece in the whole sentence
    last: dict[int, int] = {}
    for k, pos in enumerate(content):
        for i, p in enumerate(pos):
            first.setdefault(word_ids[k][p], starts[k] + i)
            last[word_ids[k][p]] = starts[k] + i  # windows come in order: the last one seen is the last piece
    for k, pos in enumerate(content if tags is not None else []):
        row = [IGNORE] * len(word_ids[k])
        for i, p in enumerate(pos):
            w = word_ids[k][p]
            if first[w] == starts[k] + i:
                row[p] = tags[w]
            elif inside is not None:
                row[p] = inside[tags[w]]
        out.labels.append(row)
    for w in range(out.n_words[s]):
        if w not in first:
            out.unscored.append((s, w))
            continue
        k = max_context(starts, [len(pos) for pos in content], first[w], last[w])
        out.owned[rows[k]].append((w, content[k][first[w] - starts[k]]))


def window_starts(pieces: list[list[int]], stride: int, what: str) -> list[int]:
    """Where each window's pieces (special tokens left out) start in the whole text's pieces.

    The tokenizer's overflow starts each window `stride` pieces before the previous one ends; checked, as
    everything read back per word or piece depends on it.

    Raises:
        RuntimeError: consecutive windows of `what` do not share `stride` pieces.
    """
    starts: list[int] = []
    whole: list[int] = []
    for k, ids in enumerate(pieces):
        start = 0 if k == 0 else starts[-1] + len(pieces[k - 1]) - stride
        if k and stride and whole[start:start + stride] != ids[:stride]:
            raise RuntimeError(f"{what}: the tokenizer's windows do not overlap by {stride} pieces")
        starts.append(start)
        whole[start:] = ids
    return starts


def max_context(starts: list[int], lengths: list[int], first: int, last: int) -> int:
    """The window that predicts the span of whole-text pieces [first, last] (a word, or one piece): among those
    holding `first`, the one with the most pieces on the span's nearer side, ties to the earlier window."""
    best = max((min(first - starts[k], starts[k] + lengths[k] - 1 - last), -k)
               for k in range(len(starts)) if starts[k] <= first < starts[k] + lengths[k])
    return -best[1]


def _say(out: Windows, stride: int, max_length: int) -> None:
    """One log line (once per split and process) when sentences were windowed or words have no pieces."""
    split = int((np.bincount(out.sentence_of, minlength=len(out.n_words)) > 1).sum())
    key = (len(out.n_words), len(out), stride, max_length, len(out.unscored))
    if key in _SAID or not (split or out.unscored):
        return
    _SAID.add(key)
    parts = [f"{split:,} of {len(out.n_words):,} sentences longer than {max_length} pieces became windows "
             f"({len(out):,} rows in all, stride {stride})"] if split else []
    if out.unscored:
        parts.append(f"{len(out.unscored):,} words have no word piece and are predicted O")
    log("token classification: " + "; ".join(parts))


def words_from_windows(logits: np.ndarray | Sequence[np.ndarray], windows: Windows, missing: int = 0,
                       padding_side: str = "right") -> list[list[int]]:
    """One predicted tag id per word per sentence, read from the window that owns each word.

    Args:
        logits: [windows, seq, labels], or one [seq_k, labels] array per window (batches padded apart), rows
            in `windows`' order.
        missing: the id given to words without pieces (`Windows.unscored`): 0 is O in `data.label_list`.
        padding_side: where the windows were padded: "left" shifts every piece position by the padding.

    Returns:
        [sentences][words] label ids (argmax of the owning window's logits at the word's first piece).

    Raises:
        ValueError: not one logits row per window, or rows shorter than their window.
    """
    if len(logits) != len(windows):
        raise ValueError(f"{len(logits)} rows of logits for {len(windows)} windows")
    out = [[missing] * n for n in windows.n_words]
    for k, (s, owned) in enumerate(zip(windows.sentence_of, windows.owned)):
        row = np.asarray(logits[k])
        length = len(windows.encoding["input_ids"][k])
        if row.shape[0] < length:
            raise ValueError(f"window {k}: {row.shape[0]} logits for {length} pieces")
        shift = row.shape[0] - length if padding_side == "left" else 0
        for w, p in owned:
            out[s][w] = int(row[p + shift].argmax())
    return out
