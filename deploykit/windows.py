"""Long texts as overlapping windows whose logits are pooled (`data.long_texts: windows`).

    stride = stride_for(recipe.data, max_length=128, tokenizer=tok)     # 32: a quarter of max_length
    enc, text_of = encode_windows(split, tok, 128, stride)              # one row per window; text_of[row] = text
    logits = pool(window_logits, text_of, len(split))                   # [texts, labels]: mean over windows

A text of n tokens becomes the windows the tokenizer's own overflow gives (`return_overflowing_tokens`,
`stride`, `overflow_to_sample_mapping`): each holds at most max_length tokens, specials included, and
shares `stride` tokens with the one before. A text that fits is one window, encoded exactly as truncation
would encode it, so its logits are unchanged. Every window is one model row, so a graph scored one row at a
time (dynamic INT8, `evaluate.eval_batch_size`) scores one window at a time.

Pooling is the mean of the windows' logits, the "mean pooling over fractions" of the hierarchical long-text
baseline in Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?" (section 5.3), and what the
sliding-window recipe for long-document classification does. Mean rather than max: every part of the text
counts once (max lets the single most confident window decide, so one off-topic passage can flip a long
review), and the mean of logits is the mean of the windows' log-odds, which a softmax then reads as one answer.
Training matches it: each window of a training text is a training row with the text's label.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deploykit.console import log
from deploykit.errors import UserError

AUTO_FRACTION = 4  # window_stride auto: max_length // 4 tokens of overlap
TEXT_OF = "text_of"  # dataset column: the split row a training/evaluation window comes from
_SAID: set[tuple] = set()  # window counts logged in this process: every stage and gate encodes the same splits


def stride_for(data, max_length: int, tokenizer, recorded: dict | None = None) -> int | None:
    """Tokens consecutive windows share, or None to truncate.

    Args:
        data: the recipe's DataConfig (or None): `long_texts: windows` gives its `window_stride`.
        max_length: the resolved window length (`data.fit_max_length`), special tokens included.
        tokenizer: gives the special-token count a window spends on [CLS]/[SEP].
        recorded: the input artifact's manifest: a model trained on windows (`window_stride` recorded) is
            scored on windows by every later stage, as its `max_length` is inherited.

    Returns:
        The stride in tokens, or None when neither the recipe nor the manifest asks for windows.

    Raises:
        UserError: a stride that leaves a window no new tokens (>= max_length less the special tokens).
    """
    stride = None
    if data is not None and getattr(data, "long_texts", "truncate") == "windows":
        stride = data.window_stride
    elif recorded and isinstance(recorded.get("window_stride"), int):
        stride = recorded["window_stride"]
    if stride is None:
        return None
    if stride == "auto":
        stride = max_length // AUTO_FRACTION
    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if not 0 <= stride < room:
        raise UserError(f"data.window_stride {stride} must be >= 0 and below the {room} text tokens a window of "
                        f"max_length {max_length} holds; lower data.window_stride")
    return int(stride)


def recorded(stride: int | None) -> dict:
    """The manifest keys of a stage that used windows ({} for truncation): later stages and `deploykit.load`
    read them back."""
    return {} if stride is None else {"long_texts": "windows", "window_stride": stride}


def encode_windows(split, tokenizer, max_length: int, stride: int, **kw):
    """Every text of `split` as its windows.

    Args:
        split: a `data.Split` of single texts (pairs are refused: see DataConfig.long_texts).
        kw: passed to the tokenizer (e.g. `padding=True, return_tensors="np"`).

    Returns:
        (encoding without `overflow_to_sample_mapping`, text_of: int64 [windows], the split row of each window,
        ascending).

    Raises:
        UserError: sentence pairs.
    """
    if split.pairs is not None:
        raise UserError("data.long_texts: windows reads single texts; sentence pairs are truncated "
                        "(use long_texts: truncate)")
    enc = tokenizer(split.texts, truncation=True, max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, **kw)
    text_of = np.asarray(enc.pop("overflow_to_sample_mapping"), dtype=np.int64)
    return enc, text_of


def say(text_of: np.ndarray, n_texts: int, stride: int, where: str = "") -> None:
    """One log line (once per split and process): how many texts were split into how many windows."""
    split_texts = int((np.bincount(text_of, minlength=n_texts) > 1).sum())
    key = (n_texts, len(text_of), stride, where)
    if key in _SAID:
        return
    _SAID.add(key)
    log(f"data.long_texts windows{' (' + where + ')' if where else ''}: {split_texts:,} of {n_texts:,} texts "
        f"split into {len(text_of) - (n_texts - split_texts):,} windows (stride {stride}); "
        f"{len(text_of):,} rows in all")


def pool(logits: np.ndarray, text_of: np.ndarray, n_texts: int) -> np.ndarray:
    """Mean of each text's window logits: [windows, labels] -> [n_texts, labels] (dtype kept).

    Raises:
        ValueError: a text with no window, or `text_of` not as long as `logits`.
    """
    logits, text_of = np.asarray(logits), np.asarray(text_of)
    counts = np.bincount(text_of, minlength=n_texts)
    if len(text_of) != len(logits) or len(counts) != n_texts or not counts.all():
        raise ValueError(f"{len(logits)} window logits for {len(text_of)} windows of {n_texts} texts")
    sums = np.zeros((n_texts, logits.shape[-1]), dtype=np.float64)
    np.add.at(sums, text_of, logits)
    return (sums / counts[:, None]).astype(logits.dtype)


def score(predictor: Callable[[dict], np.ndarray], split, tokenizer, max_length: int, stride: int,
          batch_size: int = 64, announce: bool = True) -> np.ndarray:
    """Pooled logits [texts, labels] of `split`: windows batched by length (1 per batch for a dynamic-INT8
    graph: `batch_size` 1), padded per batch, then averaged per text in input order."""
    enc, text_of = encode_windows(split, tokenizer, max_length, stride)
    if announce:
        say(text_of, len(split), stride)
    rows = [dict(zip(enc.keys(), values)) for values in zip(*enc.values())]
    order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")
    out: list[np.ndarray] = [None] * len(rows)  # type: ignore[list-item]
    for start in range(0, len(order), batch_size):
        idx = [int(i) for i in order[start:start + batch_size]]
        batch = tokenizer.pad([rows[i] for i in idx], padding=True, return_tensors="np")
        for i, row in zip(idx, predictor(dict(batch))):
            out[i] = row
    return pool(np.stack(out), text_of, len(split))


def windowed(dataset) -> bool:
    """Whether a tokenized dataset holds windows (a `text_of` column) rather than one row per text."""
    return dataset is not None and TEXT_OF in getattr(dataset, "column_names", ())
