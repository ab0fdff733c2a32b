"""Causal-LM distillation: response-token KL/CE by hand, top-k approximation, teacher cache, training."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, TrainingArguments

from deploykit.errors import UserError
from deploykit.llm.kd import (TOPK_INDICES, TOPK_VALUES, CausalDistillTrainer, add_teacher_topk, causal_kd_loss,
                              teacher_topk)
from tiny_llama import make_tiny_llama

KW = dict(temperature=2.0, alpha_kd=0.5, alpha_ce=0.5)


def logits_and_labels(seed: int = 0, vocab: int = 7):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(2, 6, vocab, generator=g), torch.randn(2, 6, vocab, generator=g) * 3
    labels = torch.randint(0, vocab, (2, 6), generator=g)
    labels[0, :3] = -100  # prompt
    labels[1, :2] = -100
    labels[1, 5] = -100   # padding
    return s, t, labels


def test_without_the_kd_term_it_is_the_lm_cross_entropy():
    s, t, labels = logits_and_labels()
    expected = F.cross_entropy(s[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100)
    got = causal_kd_loss(s, labels, teacher_logits=t, temperature=3.0, alpha_kd=0.0, alpha_ce=1.0)
    assert torch.allclose(got, expected)
    assert torch.allclose(causal_kd_loss(s, labels, temperature=3.0, alpha_kd=0.0, alpha_ce=1.0), expected)


def test_kl_term_matches_a_hand_computation():
    # one response token (position 1 predicts labels[2]); student uniform, teacher softmax(ln 9, 0, 0 / 2)
    s = torch.zeros(1, 3, 3)
    t = torch.zeros(1, 3, 3)
    t[0, 1, 0] = math.log(9.0)
    t[0, 0] = t[0, 2] = torch.tensor([5.0, -5.0, 1.0])  # prompt / last position: must not count
    labels = torch.tensor([[-100, -100, 0]])
    p = [3 / 5, 1 / 5, 1 / 5]
    kl = sum(pi * math.log(pi / (1 / 3)) for pi in p)
    expected = 0.3 * kl * 4 + 0.7 * math.log(3.0)
    got = causal_kd_loss(s, labels, teacher_logits=t, temperature=2.0, alpha_kd=0.3, alpha_ce=0.7)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_only_response_positions_count():
    s, t, labels = logits_and_labels()
    base = causal_kd_loss(s, labels, teacher_logits=t, **KW)
    s2, t2 = s.clone(), t.clone()
    # positions whose next token is prompt or padding, and the last position (predicts nothing)
    for b, pos in ((0, 0), (0, 1), (0, 5), (1, 0), (1, 4), (1, 5)):
        s2[b, pos] += 50 * torch.randn(7)
        t2[b, pos] -= 50 * torch.randn(7)
    assert torch.allclose(causal_kd_loss(s2, labels, teacher_logits=t2, **KW), base)
    s2[0, 2, 0] += 1.0  # predicts labels[0, 3], a response token
    assert not torch.allclose(causal_kd_loss(s2, labels, teacher_logits=t2, **KW), base)


def test_topk_with_the_whole_vocabulary_is_the_exact_loss():
    s, t, labels = logits_and_labels()
    full = causal_kd_loss(s, labels, teacher_logits=t, **KW)
    assert torch.allclose(causal_kd_loss(s, labels, teacher_topk=teacher_topk(t, labels, 7), **KW), full)
    # a smaller k is an approximation, still a non-negative KL-like term
    approx = causal_kd_loss(s, labels, teacher_topk=teacher_topk(t, labels, 3), alpha_kd=1.0, alpha_ce=0.0,
                            temperature=1.0)
    assert approx.item() > 0 and not torch.allclose(approx, full)


def test_a_batch_without_response_tokens_gives_zero_and_keeps_the_graph():
    s = torch.randn(1, 4, 5, requires_grad=True)
    loss = causal_kd_loss(s, torch.full((1, 4), -100), teacher_logits=torch.randn(1, 4, 5), **KW)
    assert loss.item() == 0.0 and loss.requires_grad


# ---------------------------------------------------------------- cache and trainer on tiny Llamas

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(teacher folder, student folder): a peaked teacher (large init) and a differently seeded student."""
    root = tmp_path_factory.mktemp("llm-kd")
    return (make_tiny_llama(root / "teacher", seed=0, initializer_range=0.3),
            make_tiny_llama(root / "student", seed=1))


def chat_dataset(folder, n: int = 16):
    from datasets import Dataset

    tok = AutoTokenizer.from_pretrained(folder)
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for i in range(n):
        prompt = tok.apply_chat_template([{"role": "user", "content": "Review: " + "the movie was good " * (i % 4)}],
                                         add_generation_prompt=True, tokenize=False)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok(("positive" if i % 2 else "negative, quite boring") + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows["input_ids"].append(p + r)
        rows["attention_mask"].append([1] * len(p + r))
        rows["labels"].append([-100] * len(p) + r)
    return tok, Dataset.from_dict(rows)


def trainer_for(folders, tmp_path, steps: int = 0, **kd):
    teacher = AutoModelForCausalLM.from_pretrained(folders[0])
    student = AutoModelForCausalLM.from_pretrained(folders[1])
    tok, data = chat_dataset(folders[0])
    args = TrainingArguments(output_dir=str(tmp_path / "work"), max_steps=steps or 1, learning_rate=1e-2,
                             per_device_train_batch_size=4, per_device_eval_batch_size=5, warmup_steps=0,
                             save_strategy="no", report_to=[], use_cpu=True, logging_steps=1000, seed=0)
    trainer = CausalDistillTrainer(model=student, args=args, train_dataset=data, eval_dataset=data,
                                   data_collator=DataCollatorForSeq2Seq(tok, padding=True), teacher=teacher,
                                   **{**KW, **kd})
    return trainer, teacher, student, data


def test_cached_topk_equals_the_teachers_own_topk(models):
    teacher = AutoModelForCausalLM.from_pretrained(models[0]).eval()
    tok, data = chat_dataset(models[0])
    cached = add_teacher_topk(data, teacher, DataCollatorForSeq2Seq(tok, padding=True), k=5, batch_size=3)
    with torch.no_grad():
        for i in range(len(data)):
            ids, labels = torch.tensor([data[i]["input_ids"]]), torch.tensor([data[i]["labels"]])
            values, indices = teacher_topk(teacher(input_ids=ids).logits, labels, 5)
            assert len(cached[i][TOPK_VALUES]) == int((labels[0, 1:] != -100).sum())
            assert torch.allclose(torch.tensor(cached[i][TOPK_VALUES]), values, atol=1e-5)
            assert torch.equal(torch.tensor(cached[i][TOPK_INDICES]), indices)


def test_cached_and_live_teacher_give_the_same_loss(models, tmp_path):
    trainer, teacher, student, _ = trainer_for(models, tmp_path, topk=6, cache_teacher_logits=True)
    assert {TOPK_VALUES, TOPK_INDICES} <= set(trainer.train_dataset.column_names)
    batch = next(iter(trainer.get_train_dataloader()))
    # the Trainer keeps the cache columns through its column filter; the collator stacks them per token
    assert batch[TOPK_VALUES].shape == (int((batch["labels"][:, 1:] != -100).sum()), 6)
    student.eval()
    with torch.no_grad():
        cached = trainer.compute_loss(student, batch)
        live = trainer.compute_loss(student, {k: v for k, v in batch.items() if k not in (TOPK_VALUES, TOPK_INDICES)})
    assert torch.allclose(cached, live, atol=1e-5)


def test_distillation_lowers_the_kd_loss_and_uses_the_cache(models, tmp_path):
    trainer, teacher, student, data = trainer_for(models, tmp_path, steps=30, topk=16, cache_teacher_logits=True,
                                                  alpha_kd=1.0, alpha_ce=0.0)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.5 * before
    assert not calls  # every step read the cache: the teacher never ran after it was cached
    assert all(not p.requires_grad for p in teacher.parameters())


def test_hidden_state_mse_runs_on_a_student_of_teacher_layers(models, tmp_path):
    from deploykit.layers import keep_layers

    trainer, teacher, student, _ = trainer_for(models, tmp_path, steps=2, topk=0, alpha_hidden=1.0)
    keep_layers(trainer.model, [1])
    trainer.layer_map = [1]
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss) and loss.item() > 0


def test_caching_without_topk_is_a_user_error(models, tmp_path):
    with pytest.raises(UserError, match="top-k"):
        trainer_for(models, tmp_path, topk=0, cache_teacher_logits=True)
