"""deploykit/ner/distill.py: the per-token KD loss reads tagged word pieces only."""

from __future__ import annotations

import pytest
import torch

from deploykit.ner.distill import IGNORED, token_kd_loss
from deploykit.train.kd import kd_loss

KW = {"temperature": 2.0, "alpha_kd": 0.7, "alpha_ce": 0.3}


def test_positions_without_a_tag_do_not_change_the_loss():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    labels = torch.tensor([[IGNORED, 1, IGNORED, 3, IGNORED], [IGNORED, 0, 2, IGNORED, IGNORED]])
    loss = token_kd_loss(student, teacher, labels, **KW)
    keep = labels != IGNORED
    # the same as the sequence-level loss over the four tagged pieces, each weighing one position
    assert loss.item() == pytest.approx(kd_loss(student[keep], teacher[keep], labels[keep], **KW).item(), rel=1e-6)
    noisy_s, noisy_t = student.clone(), teacher.clone()
    noisy_s[~keep], noisy_t[~keep] = 100.0, -100.0  # padding and continuation pieces: anything at all
    assert token_kd_loss(noisy_s, noisy_t, labels, **KW).item() == pytest.approx(loss.item(), rel=1e-6)


def test_a_batch_without_a_tagged_piece_gives_zero_with_a_gradient():
    student = torch.randn(1, 3, 4, requires_grad=True)
    loss = token_kd_loss(student, torch.randn(1, 3, 4), torch.full((1, 3), IGNORED), **KW)
    loss.backward()
    assert loss.item() == 0.0 and student.grad is not None and not student.grad.any()


def test_pure_cross_entropy_needs_no_teacher():
    student, labels = torch.randn(1, 3, 4), torch.tensor([[2, IGNORED, 0]])
    loss = token_kd_loss(student, None, labels, temperature=1.0, alpha_kd=0.0, alpha_ce=1.0)
    expected = torch.nn.functional.cross_entropy(student[0, [0, 2]], torch.tensor([2, 0]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
