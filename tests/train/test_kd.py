"""Distillation losses and DistillTrainer on tiny models: hand-checked losses, caching, training."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from deploykit.config import DataConfig, TrainConfig
from deploykit.data import load_task, to_dataset
from deploykit.errors import UserError
from deploykit.layers import keep_layers
from deploykit.models import load_tokenizer
from deploykit.train.kd import (
    TEACHER_LOGITS,
    DistillTrainer,
    add_teacher_logits,
    hidden_mse,
    kd_loss,
    uniform_layer_map,
)
from deploykit.transfer import KD_ONLY
from tests.conftest import make_tiny_model

FAST = TrainConfig(epochs=1, max_steps=40, learning_rate=3e-3, batch_size=16, eval_batch_size=32,
                   warmup_ratio=0.0, early_stopping_patience=None, bf16="off", logging_steps=1000)


def test_kd_loss_is_plain_cross_entropy_without_the_kd_term():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 3, (8,))
    got = kd_loss(s, t, y, temperature=4.0, alpha_kd=0.0, alpha_ce=1.0)
    assert torch.allclose(got, F.cross_entropy(s, y))
    # with no KD term the teacher is not needed at all
    assert torch.allclose(kd_loss(s, None, y, temperature=4.0, alpha_kd=0.0, alpha_ce=1.0), got)


def test_kd_loss_matches_a_hand_computation():
    # student logits (0, 0): uniform at any T; teacher (ln 9, 0) at T=2 -> softmax(ln 3, 0) = (3/4, 1/4)
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(9.0), 0.0]])
    y = torch.tensor([0])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = 0.3 * kl * 2.0 ** 2 + 0.7 * math.log(2.0)
    got = kd_loss(s, t, y, temperature=2.0, alpha_kd=0.3, alpha_ce=0.7)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_an_unlabelled_row_feeds_the_kl_and_the_cross_entropy_averages_the_labelled_ones():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([2, KD_ONLY, 0, KD_ONLY])
    kw = {"temperature": 2.0, "alpha_kd": 0.6, "alpha_ce": 0.4}
    kl = kd_loss(s, t, y, temperature=2.0, alpha_kd=0.6, alpha_ce=0.0)  # every row, labelled or not
    expected = kl + 0.4 * F.cross_entropy(s[[0, 2]], y[[0, 2]])
    assert kd_loss(s, t, y, **kw).item() == pytest.approx(expected.item(), rel=1e-6)
    assert kl.item() == pytest.approx(kd_loss(s, t, torch.zeros(4, dtype=torch.long), temperature=2.0, alpha_kd=0.6,
                                              alpha_ce=0.0).item(), rel=1e-6)
    # a batch of unlabelled rows only: the KL alone, no NaN from an empty mean
    assert kd_loss(s, t, torch.full((4,), KD_ONLY), **kw).item() == pytest.approx(kl.item(), rel=1e-6)


def test_kd_term_vanishes_when_student_equals_teacher():
    logits = torch.randn(4, 5)
    assert kd_loss(logits, logits.clone(), torch.zeros(4, dtype=torch.long), temperature=3.0,
                   alpha_kd=1.0, alpha_ce=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_uniform_layer_map_ends_on_the_last_teacher_layer():
    assert uniform_layer_map(3, 6) == [1, 3, 5]
    assert uniform_layer_map(2, 4) == [1, 3]
    assert uniform_layer_map(4, 4) == [0, 1, 2, 3]


def test_hidden_mse_ignores_padding():
    torch.manual_seed(0)
    s = tuple(torch.randn(2, 5, 8) for _ in range(3))
    t = tuple(torch.randn(2, 5, 8) for _ in range(5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    base = hidden_mse(s, t, [1, 3], mask)
    s2 = tuple(x.clone() for x in s)
    s2[1][0, 3:] += 100.0  # change only padded positions
    assert torch.allclose(hidden_mse(s2, t, [1, 3], mask), base)
    assert hidden_mse(t, t, [0, 1, 2, 3], mask).item() == 0.0


# ---------------------------------------------------------------- trainer on tiny models

@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    """A 4-layer tiny BERT fine-tuned on the tiny task (once per module), so its soft labels carry signal."""
    from transformers import Trainer

    from deploykit.train.trainer import build_trainer
    from tests.conftest import write_task

    root = tmp_path_factory.mktemp("kd")
    folder = make_tiny_model(root / "teacher", "bert", num_hidden_layers=4)
    tok = load_tokenizer(str(folder))
    task = load_task(DataConfig(path=str(write_task(root / "task")), max_length=32))
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    build_trainer(model, FAST, root / "work", tok, to_dataset(task.train, tok, 32), None, trainer_cls=Trainer).train()
    return model, tok, task


@pytest.fixture
def setup(trained_teacher):
    """(teacher, tokenizer, train dataset, validation dataset); a fresh copy of the teacher per test."""
    teacher, tok, task = trained_teacher
    return copy.deepcopy(teacher), tok, to_dataset(task.train, tok, 32), to_dataset(task.validation, tok, 32)


def trainer_for(student, teacher, tok, train, val, tmp_path, **kd):
    from deploykit.train.trainer import build_trainer

    kd = {"temperature": 2.0, "alpha_kd": 0.5, "alpha_ce": 0.5, **kd}
    return build_trainer(student, FAST, tmp_path / "work", tok, train, val, stage="distill",
                         trainer_cls=DistillTrainer, teacher=teacher, **kd)


def test_cached_teacher_logits_equal_live_ones(setup):
    teacher, tok, train, _ = setup
    cached = add_teacher_logits(train, teacher, DataCollatorWithPadding(tok), batch_size=7)
    assert cached.column_names[-1] == TEACHER_LOGITS and len(cached) == len(train)
    teacher.eval()
    with torch.no_grad():
        for i in (0, 5, len(train) - 1):
            row = {k: torch.tensor([train[i][k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
            live = teacher(**row).logits[0]
            assert torch.allclose(torch.tensor(cached[i][TEACHER_LOGITS]), live, atol=1e-5)


def test_loss_with_cached_logits_equals_loss_with_live_teacher(setup, tmp_path):
    teacher, tok, train, val = setup
    student = keep_layers(copy.deepcopy(teacher), [0, 2])
    trainer = trainer_for(student, teacher, tok, train, val, tmp_path, cache_teacher_logits=True)
    assert TEACHER_LOGITS in trainer.train_dataset.column_names
    assert TEACHER_LOGITS in trainer.eval_dataset.column_names
    batch = next(iter(trainer.get_eval_dataloader()))
    assert TEACHER_LOGITS in batch  # the Trainer keeps the column through its column filter
    student.eval()
    with torch.no_grad():
        with_cache = trainer.compute_loss(student, batch)
        live = trainer.compute_loss(student, {k: v for k, v in batch.items() if k != TEACHER_LOGITS})
    assert torch.allclose(with_cache, live, atol=1e-5)


def test_distillation_lowers_the_loss(setup, tmp_path):
    teacher, tok, train, val = setup
    # a fresh 2-layer student starts far from the teacher, so the drop is large and not luck
    student = AutoModelForSequenceClassification.from_pretrained(make_tiny_model(tmp_path / "s", "bert", seed=1))
    # no evaluation during training (here and below): the best-accuracy checkpoint would be reloaded
    trainer = trainer_for(student, teacher, tok, train, None, tmp_path, cache_teacher_logits=True)
    before = trainer.evaluate(trainer.train_dataset)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(trainer.train_dataset)
    assert after["eval_loss"] < 0.5 * before
    assert "eval_accuracy" in after  # evaluation hands back the logits only, and metrics work on them
    # the teacher is frozen
    assert all(not p.requires_grad for p in trainer.teacher.parameters())


def test_separate_narrower_student_trains_a_projection_that_is_not_saved(setup, tmp_path):
    teacher, tok, train, val = setup  # BERT, hidden 64, 4 layers
    student_dir = make_tiny_model(tmp_path / "student", "distilbert", seed=1, dim=32, hidden_dim=64, n_layers=2)
    student = AutoModelForSequenceClassification.from_pretrained(student_dir)
    trainer = trainer_for(student, teacher, tok, train, None, tmp_path, alpha_kd=1.0, alpha_ce=0.0,
                          alpha_hidden=1.0, cache_teacher_logits=True)
    assert trainer.layer_map == [1, 3] and trainer.live_teacher
    assert TEACHER_LOGITS not in trainer.train_dataset.column_names  # live teacher: nothing to cache
    w0 = trainer.projection.weight.detach().clone()
    before = trainer.evaluate(val)["eval_loss"]
    trainer.train()
    assert trainer.evaluate(val)["eval_loss"] < before
    assert not torch.equal(w0, trainer.projection.weight)  # trained alongside the student
    trainer.model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    assert set(reloaded.state_dict()) == set(student.state_dict())


def test_attention_transfer_trains_and_needs_matching_heads(setup, tmp_path):
    teacher, tok, train, val = setup
    student = keep_layers(copy.deepcopy(teacher), [1, 3])
    trainer = trainer_for(student, teacher, tok, train, None, tmp_path, alpha_attention=1.0, layer_map=[1, 3])
    before = trainer.evaluate(val)["eval_loss"]
    trainer.train()
    assert trainer.evaluate(val)["eval_loss"] < before
    other = make_tiny_model(tmp_path / "two-heads", "bert", num_attention_heads=2)
    with pytest.raises(UserError, match="same head count"):
        trainer_for(AutoModelForSequenceClassification.from_pretrained(other), teacher, tok, train, val,
                    tmp_path, alpha_attention=1.0)


def test_bad_trainer_settings(setup, tmp_path):
    teacher, tok, train, val = setup
    student = keep_layers(copy.deepcopy(teacher), [0, 2])
    with pytest.raises(UserError, match="teacher layer 4 out of range"):
        trainer_for(student, teacher, tok, train, val, tmp_path, alpha_hidden=1.0, layer_map=[0, 4])
    with pytest.raises(UserError, match="3 entries but the student has 2"):
        trainer_for(student, teacher, tok, train, val, tmp_path, layer_map=[0, 1, 2])
    with pytest.raises(UserError, match="all loss weights are 0"):
        trainer_for(student, teacher, tok, train, val, tmp_path, alpha_kd=0.0, alpha_ce=0.0)
