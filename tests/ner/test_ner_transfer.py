"""deploykit/ner/transfer.py: unlabelled texts as KD-only windows of a token classifier's distillation."""

from __future__ import annotations

import pytest
import torch
from conftest import MINILM

from deploykit.models import load_tokenizer
from deploykit.ner.align import IGNORE
from deploykit.ner.distill import token_kd_loss
from deploykit.ner.transfer import unlabeled_rows
from deploykit.train.kd import kd_loss
from deploykit.transfer import KD_ONLY


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MINILM)


def test_each_words_first_piece_is_kd_only_and_the_rest_ignored(tok):
    row = unlabeled_rows(["Mr Okonkwo flew to Kinshasa."], tok, max_length=32, stride=4)[0]
    pieces = tok.convert_ids_to_tokens(row["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and len(pieces) > 8  # surnames split into pieces
    expected = [IGNORE if p in ("[CLS]", "[SEP]") or p.startswith("##") else KD_ONLY for p in pieces]
    assert row["labels"] == expected and set(row) >= {"input_ids", "attention_mask", "labels"}
    every = unlabeled_rows(["Mr Okonkwo flew to Kinshasa."], tok, 32, 4, label_all_tokens=True)[0]["labels"]
    assert every == [IGNORE] + [KD_ONLY] * (len(pieces) - 2) + [IGNORE]


def test_a_long_text_becomes_overlapping_windows_of_max_length(tok):
    text = " ".join(f"word{i % 7}" for i in range(60))
    rows = unlabeled_rows([text, "short one"], tok, max_length=16, stride=4)
    assert len(rows) > 3 and all(len(r["input_ids"]) <= 16 for r in rows)
    assert sum(r["labels"].count(KD_ONLY) for r in rows) >= 60 + 2  # every word read at least once


def test_kd_only_positions_feed_the_kl_and_not_the_cross_entropy():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    labels = torch.tensor([[IGNORE, 1, 3, IGNORE], [IGNORE, KD_ONLY, KD_ONLY, IGNORE]])
    kw = {"temperature": 2.0, "alpha_kd": 0.7, "alpha_ce": 0.3}
    keep, gold = labels != IGNORE, labels >= 0
    expected = kd_loss(student[keep], teacher[keep], labels[keep].clamp_min(0), temperature=2.0, alpha_kd=0.7,
                       alpha_ce=0.0) + kd_loss(student[gold], None, labels[gold], temperature=2.0, alpha_kd=0.0,
                                               alpha_ce=0.3)
    assert token_kd_loss(student, teacher, labels, **kw).item() == pytest.approx(expected.item(), rel=1e-6)
    # a batch of unlabelled windows only: the KL alone, and the teacher moves it
    only = labels.clone()
    only[0, 1:3] = KD_ONLY
    kl = token_kd_loss(student, teacher, only, **kw)
    assert kl.item() == pytest.approx(kd_loss(student[keep], teacher[keep], labels[keep].clamp_min(0),
                                              temperature=2.0, alpha_kd=0.7, alpha_ce=0.0).item(), rel=1e-6)
    assert token_kd_loss(student, student, only, **kw).item() == pytest.approx(0.0, abs=1e-6)
