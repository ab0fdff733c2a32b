"""Per-token knowledge distillation for token classifiers (the token_classification kind's `distill_job`).

    trainer = build_trainer(student, cfg, work, tokenizer, train_windows, val_windows, stage="distill",
                            trainer_cls=TokenDistillTrainer, teacher=teacher, collator=..., best_metric="f1")

The KL on temperature-softened logits and the cross-entropy on gold tags are taken over the word pieces that
carry a tag (a word's first piece; every piece with `label_all_tokens`), the positions finetune trained and
entity F1 scores: padding and continuation pieces teach nothing a prediction reads. Windows of unlabelled text
(`distill.unlabeled`, deploykit/ner/transfer.py) mark those pieces KD_ONLY: the KL reads them, the cross-entropy
does not. Hidden-state and attention terms are deploykit.train.kd's, over every real token.
"""

from __future__ import annotations

import torch

from deploykit.jobs import DistillJob
from deploykit.train.kd import DistillTrainer, kd_loss

TASK = "token_classification"
IGNORED = -100  # the label of a position no loss reads (transformers' CrossEntropyLoss ignore_index)


def token_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor, *,
                  temperature: float, alpha_kd: float, alpha_ce: float) -> torch.Tensor:
    """deploykit.train.kd.kd_loss over the tagged positions only, each term averaged over its positions.

    Args:
        student_logits: (batch, seq, tags).
        teacher_logits: (batch, seq, tags), or None when `alpha_kd` is 0.
        labels: (batch, seq) tag ids; IGNORED (-100) where no term reads the position, KD_ONLY (-1) where only
            the KD term does (a word of an unlabelled text, deploykit/transfer.py).

    Returns:
        A scalar tensor; 0 (with a gradient path) for a batch without a tagged position.
    """
    keep = labels != IGNORED
    if not bool(keep.any()):
        return student_logits.sum() * 0.0
    teacher = teacher_logits[keep] if teacher_logits is not None else None
    return kd_loss(student_logits[keep], teacher, labels[keep], temperature=temperature, alpha_kd=alpha_kd,
                   alpha_ce=alpha_ce)


class TokenDistillTrainer(DistillTrainer):
    """deploykit.train.kd.DistillTrainer with the logits terms taken per tagged word piece (`token_kd_loss`).

    The teacher runs live at every step: a cache of per-token logits would hold seq x tags floats per window."""

    def logits_loss(self, student_logits, labels, teacher_out, cached: dict) -> torch.Tensor:
        teacher_logits = teacher_out.logits if teacher_out is not None else None
        return token_kd_loss(student_logits, teacher_logits, labels, temperature=self.temperature,
                             alpha_kd=self.alpha_kd, alpha_ce=self.alpha_ce)


def distill_job(recipe, teacher_src: str, parent) -> DistillJob:
    """Per-token KD (deploykit/ner/distill.py) on the teacher's word-piece windows, the checkpoint kept by entity F1
    of whole sentences; the teacher is scored on the same windows first."""
    from transformers import DataCollatorForTokenClassification

    from deploykit.data import fit_max_length
    from deploykit.evaluate import torch_predictor
    from deploykit.models import load_classifier
    from deploykit.ner.align import window_stride
    from deploykit.ner.data import load_tags
    from deploykit.ner.scoring import (
        as_dataset,
        check_tags,
        encode,
        score_with,
        scored,
        sentence_metrics,
        tokenizer_for,
    )
    from deploykit.ner.transfer import training_set
    from deploykit.train.distillation import build_student

    cfg, data, trust = recipe.distill, recipe.data, recipe.model.trust_remote_code
    task = load_tags(data)
    tokenizer = tokenizer_for(teacher_src, trust)
    teacher = load_classifier(teacher_src, trust_remote_code=trust, new_head=False, task=TASK)
    check_tags(teacher.config, task.labels, f"teacher {teacher_src}")
    student, kept, layer_map = build_student(
        cfg, teacher, tokenizer, lambda source: load_classifier(source, labels=task.labels, trust_remote_code=trust,
                                                                task=TASK), trust)
    manifest = parent.manifest if parent is not None else None
    max_len = fit_max_length(data.max_length, teacher.config, tokenizer, task,
                             recorded=manifest.get("max_length") if manifest else None)
    stride = window_stride(data.window_stride, max_len, tokenizer)
    val_win = encode(task.validation, tokenizer, max_len, data, task.labels)
    splits = {"validation": task.validation, **({"test": task.test} if task.test is not None else {})}
    teacher_predict = torch_predictor(teacher)
    teacher_metrics = {name: score_with(teacher_predict, tokenizer, split, task.labels, max_len, stride,
                                        cfg.eval_batch_size) for name, split in splits.items()}
    validation = as_dataset(val_win)

    def finish(trainer):
        val = scored(trainer, validation, val_win, task.validation, task.labels, "eval")
        test = None
        if task.test is not None:
            test_win = encode(task.test, tokenizer, max_len, data, task.labels)
            test = scored(trainer, as_dataset(test_win), test_win, task.test, task.labels, "test")
        return val, test, teacher_metrics

    train_win = encode(task.train, tokenizer, max_len, data, task.labels)
    train_ds, extra = training_set(train_win, cfg.unlabeled, data, tokenizer, max_len, stride)
    return DistillJob(teacher, student, tokenizer, kept, layer_map, train_ds, validation,
                      TokenDistillTrainer, task.labels,
                      f"{len(task.train)} train / {len(task.validation)} validation sentences ({len(train_win)} / "
                      f"{len(val_win)} windows){extra}, max_length {max_len}, per-token KD",
                      finish, trainer_args={"collator": DataCollatorForTokenClassification(tokenizer),
                                            "best_metric": "f1"},
                      compute_metrics=sentence_metrics(val_win, task.validation, task.labels),
                      cache_teacher_logits=False, max_length=max_len,
                      record={"task": TASK, "window_stride": stride})


