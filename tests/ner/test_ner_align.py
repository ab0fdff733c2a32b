"""deploykit/ner/align.py: word tags on word pieces, windows, and predictions put back one per word.

Run on the packaged MiniLM's WordPiece tokenizer and on a tiny RoBERTa-style byte-level BPE one.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from ner_tokenizers import bpe_tokenizer, minilm_tokenizer

from deploykit.errors import UserError
from deploykit.ner.align import IGNORE, encode_words, inside_ids, words_from_windows

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.fixture
def minilm_tok():
    return minilm_tokenizer()


@pytest.fixture
def bpe_tok():
    return bpe_tokenizer()


@pytest.fixture(params=["wordpiece", "bpe"])
def any_tok(request):
    return minilm_tokenizer() if request.param == "wordpiece" else bpe_tokenizer()


WORDS = ["Peter", "Lewandowski", "went", "to", "Brussels", "and", "London", "on", "Friday"]


def piece_count(tok, word: str) -> int:
    return len(tok([[word]], is_split_into_words=True, add_special_tokens=False)["input_ids"][0])


def one_hot(windows, tags: list[list[int]], n_labels: int = len(LABELS), seed: int = 0) -> list[np.ndarray]:
    """Logits per window: noise everywhere, a clear winner (the gold tag) at each word's first piece."""
    rng = np.random.default_rng(seed)
    out = []
    for k, s in enumerate(windows.sentence_of):
        row = rng.normal(size=(len(windows.encoding["input_ids"][k]), n_labels)).astype(np.float32)
        for w, p in windows.owned[k]:
            row[p, tags[s][w]] = 10.0
        out.append(row)
    return out


def test_a_word_split_into_three_pieces_is_scored_once(minilm_tok):
    assert minilm_tok.tokenize("Lewandowski") == ["lew", "##ando", "##wski"]
    tags = [[3, 4, 0, 0, 1, 0, 1, 0, 0]]  # Peter/B-PER Lewandowski/I-PER ... Brussels/B-LOC London/B-LOC
    win = encode_words([WORDS], minilm_tok, max_length=64, tags=tags)
    assert len(win) == 1 and win.sentence_of.tolist() == [0]
    pieces = minilm_tok.convert_ids_to_tokens(win.encoding["input_ids"][0])
    labels = dict(zip(pieces, win.labels[0]))
    assert [labels["lew"], labels["##ando"], labels["##wski"]] == [4, IGNORE, IGNORE]
    assert labels["[CLS]"] == labels["[SEP]"] == IGNORE
    # one scored piece per word, in word order, and one owner per word
    assert [y for y in win.labels[0] if y != IGNORE] == tags[0]
    assert [w for w, _ in win.owned[0]] == list(range(len(WORDS)))
    assert pieces[win.owned[0][1][1]] == "lew"


def test_bpe_words_are_scored_on_their_first_piece(bpe_tok):
    assert piece_count(bpe_tok, "Lewandowski") >= 3
    tags = [[3, 4, 0, 0, 1, 0, 1, 0, 0]]
    win = encode_words([WORDS], bpe_tok, max_length=64, tags=tags)
    pieces = bpe_tok.convert_ids_to_tokens(win.encoding["input_ids"][0])
    assert pieces[0] == "<s>" and pieces[-1] == "</s>" and win.labels[0][0] == win.labels[0][-1] == IGNORE
    scored = [(p, y) for p, y in zip(pieces, win.labels[0]) if y != IGNORE]
    assert [y for _, y in scored] == tags[0]
    assert all(p.startswith("Ġ") for p, _ in scored)  # every word's first piece carries the prefix space


def test_label_all_tokens_gives_later_pieces_the_inside_tag(minilm_tok):
    assert inside_ids(LABELS) == [0, 2, 2, 4, 4]
    assert inside_ids(["O", "B-X", "B-Y", "I-Y"]) == [0, 1, 3, 3]  # B-X has no I-X: the pieces keep B-X
    tags = [[0, 3, 0, 0, 1, 0, 0, 0, 0]]  # Lewandowski/B-PER: its later pieces are I-PER
    win = encode_words([WORDS], minilm_tok, max_length=64, tags=tags, labels=LABELS, label_all_tokens=True)
    pieces = minilm_tok.convert_ids_to_tokens(win.encoding["input_ids"][0])
    labels = dict(zip(pieces, win.labels[0]))
    assert [labels["lew"], labels["##ando"], labels["##wski"]] == [3, 4, 4]
    assert labels["[CLS]"] == IGNORE and IGNORE not in win.labels[0][1:-1]
    with pytest.raises(UserError, match="label_all_tokens needs the label names"):
        encode_words([WORDS], minilm_tok, max_length=64, tags=tags, label_all_tokens=True)


def long_sentence(rng: random.Random, n: int) -> tuple[list[str], list[int]]:
    vocab = WORDS + ["Gascoigne", "Ouagadougou", "1996-08-30", "a", "the"]
    words = [rng.choice(vocab) for _ in range(n)]
    return words, [rng.randrange(len(LABELS)) for _ in words]


@pytest.mark.parametrize("max_length, stride", [(16, 4), (12, 0), (24, 9)])
def test_windows_put_every_word_back_exactly_once(any_tok, max_length, stride):
    rng = random.Random(max_length)
    sentences = [long_sentence(rng, n) for n in (60, 3, 0, 25, 41)]
    tokens, tags = [s for s, _ in sentences], [t for _, t in sentences]
    win = encode_words(tokens, any_tok, max_length=max_length, stride=stride, tags=tags)
    assert max(len(ids) for ids in win.encoding["input_ids"]) == max_length  # windows fill up, none longer
    counts = np.bincount(win.sentence_of, minlength=len(tokens))
    assert counts[0] > 3 and counts[1] == counts[2] == 1  # the 60-word sentence is windowed, short ones are not
    owned = sorted((int(s), w) for s, pairs in zip(win.sentence_of, win.owned) for w, _ in pairs)
    assert owned == [(s, w) for s, t in enumerate(tokens) for w in range(len(t))] and not win.unscored
    # every window scores the first piece of every word it holds from the start (training sees them all)
    for k, s in enumerate(win.sentence_of):
        for w, p in win.owned[k]:
            assert win.labels[k][p] == tags[s][w]
    assert words_from_windows(one_hot(win, tags), win) == tags


def test_a_word_in_two_windows_is_read_where_it_has_more_context(minilm_tok):
    words = [f"w{i}" for i in range(20)]  # "w", "##7": two pieces a word, the second names the word
    win = encode_words([words], minilm_tok, max_length=12, stride=4)
    pieces = [minilm_tok.convert_ids_to_tokens(ids)[1:-1] for ids in win.encoding["input_ids"]]

    def context(j: int, w: int) -> int | None:
        """Pieces of window j on the word's nearer side, or None when j lacks the whole word."""
        for q in range(len(pieces[j]) - 1):
            if pieces[j][q:q + 2] == ["w", f"##{w}"]:
                return min(q, len(pieces[j]) - (q + 2))
        return None

    shared = 0
    for k, pairs in enumerate(win.owned):
        for w, p in pairs:
            others = [c for j in range(len(win)) if j != k and (c := context(j, w)) is not None]
            shared += bool(others)
            assert context(k, w) is not None and all(c <= context(k, w) for c in others)
    assert shared >= 4  # words in the overlaps really were in two windows


def test_padding_side_and_words_without_pieces(minilm_tok):
    tokens = [["Peter", "\u200b", "Lewandowski"], []]
    tags = [[3, 0, 4], []]
    win = encode_words(tokens, minilm_tok, max_length=16, tags=tags)
    assert win.unscored == [(0, 1)] and win.labels[1] == [IGNORE, IGNORE]  # the zero-width space has no piece
    logits = one_hot(win, [[3, 2, 4], []])
    assert words_from_windows(logits, win) == [[3, 0, 4], []]  # the word without pieces is O
    seq = max(len(r) for r in logits)
    left = np.stack([np.pad(r, ((seq - len(r), 0), (0, 0)), constant_values=-50) for r in logits])
    assert words_from_windows(left, win, padding_side="left") == [[3, 0, 4], []]
    with pytest.raises(ValueError, match="1 rows of logits for 2 windows"):
        words_from_windows(logits[:1], win)


def test_a_stride_without_room_is_refused(minilm_tok):
    with pytest.raises(UserError, match=r"data.window_stride 14 must be >= 0 and below the 14 text tokens"):
        encode_words([WORDS], minilm_tok, max_length=16, stride=14)
    assert len(encode_words([WORDS * 5], minilm_tok, max_length=16)) > 1  # auto: a quarter of max_length


def test_the_kind_gives_a_byte_level_tokenizer_a_prefix_space_before_every_word(tmp_path):
    """Saved with add_prefix_space=False, a RoBERTa-type tokenizer would encode every word as if it began the text;
    the token_classification kind reloads it with the prefix space its training sentences had."""
    from conftest import tiny_config
    from transformers import RobertaTokenizerFast

    from deploykit.ner.scoring import tokenizer_for as _tokenizer

    bpe_tokenizer().save_pretrained(tmp_path / "bpe")
    plain = RobertaTokenizerFast.from_pretrained(tmp_path / "bpe", add_prefix_space=False)
    plain.save_pretrained(tmp_path / "model")
    tiny_config("roberta", vocab_size=len(plain)).save_pretrained(tmp_path / "model")  # the tokenizer's own size
    words = [["Peter", "met", "Brussels"]]
    want = bpe_tokenizer()(words, is_split_into_words=True)["input_ids"]
    assert plain(words, is_split_into_words=True)["input_ids"] != want
    assert _tokenizer(str(tmp_path / "model"), False)(words, is_split_into_words=True)["input_ids"] == want
