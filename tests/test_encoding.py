from __future__ import annotations

import numpy as np
import pytest

from deploykit import encoding
from deploykit.data import Split, encode
from deploykit.models import load_tokenizer
from tests.conftest import MINILM

TEXTS = ["it 's a charming and often affecting journey .", "unflinchingly bleak and desperate ",
         "Ünïcödé façade — “quoted” text… with emoji 🙂 and 中文", "", "  ", "[CLS] [PAD] [UNK] [MASK]",
         " ".join(["long"] * 300)]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MINILM)


def reference(tokenizer, split: Split, max_length: int) -> dict[str, np.ndarray]:
    return dict(encode(split, tokenizer, max_length, padding=True, return_tensors="np"))


@pytest.mark.parametrize("max_length", [8, 64, 512])
@pytest.mark.parametrize("pairs", [False, True])
def test_backend_gives_the_transformers_ids_mask_and_type_ids(tokenizer, max_length, pairs):
    enc = encoding.encoder_for(tokenizer, max_length)
    assert enc.__name__ == "fast"
    split = Split(TEXTS, list(reversed(TEXTS)) if pairs else None, [0] * len(TEXTS))
    want, got = reference(tokenizer, split, max_length), enc(split)
    assert set(got) == set(want) == {"input_ids", "token_type_ids", "attention_mask"}
    for key in want:
        assert got[key].dtype == np.int64
        np.testing.assert_array_equal(got[key], want[key])
    for one in range(len(TEXTS)):  # one text alone is padded to nothing, as the transformers call pads it
        row = split.take([one])
        np.testing.assert_array_equal(enc(row)["input_ids"], reference(tokenizer, row, max_length)["input_ids"])


def test_encoding_leaves_the_callers_tokenizer_as_it_was(tokenizer):
    enc = encoding.encoder_for(tokenizer, 16)
    tokenizer(["x"], truncation=True, max_length=100, padding=False)  # the caller's own settings
    before = (tokenizer.backend_tokenizer.truncation, tokenizer.backend_tokenizer.padding)
    got = enc(Split(TEXTS, None, [0] * len(TEXTS)))
    assert got["input_ids"].shape == (len(TEXTS), 16)
    assert (tokenizer.backend_tokenizer.truncation, tokenizer.backend_tokenizer.padding) == before


def test_a_backend_that_differs_on_the_probe_leaves_the_transformers_call(tokenizer, monkeypatch):
    real = encoding._backend_copy
    monkeypatch.setattr(encoding, "_backend_copy", lambda tok, n: real(tok, n + 1))  # truncates one token later
    enc = encoding.encoder_for(tokenizer, 16)
    assert enc.__name__ == "reference"
    split = Split(TEXTS, None, [0] * len(TEXTS))
    np.testing.assert_array_equal(enc(split)["input_ids"], reference(tokenizer, split, 16)["input_ids"])


class PythonTokenizer:
    """A tokenizer without a Rust backend (transformers' Python tokenizers report is_fast False)."""
    is_fast = False

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, *args, **kw):
        return self.inner(*args, **kw)


def test_a_tokenizer_without_a_rust_backend_keeps_the_transformers_call(tokenizer):
    slow = PythonTokenizer(tokenizer)
    enc = encoding.encoder_for(slow, 32)
    assert enc.__name__ == "reference"
    split = Split(TEXTS[:3], None, [0] * 3)
    np.testing.assert_array_equal(enc(split)["attention_mask"], reference(tokenizer, split, 32)["attention_mask"])
