"""The token classifier's prune job (data.task token_classification): the encoder pruning engine on word-piece
windows, scored by entity F1 over words, recovered with per-token KD from the unpruned model.

    deploykit prune --from runs/ner/distill --recipe ner.yaml --set prune.ffn=0.5 --out runs/ner/prune

FFN neurons, width (residual channels with whole heads) and depth are cut as for text classifiers
(deploykit/stages/prune.py); the per-token head keeps every tag. Vocabulary pruning is refused: a tagger reads
words its training sentences never held, and a piece cut from the vocabulary would turn such a word into
[UNK] (a piece any word may split into cannot be proven kept from the training text alone).
"""

from __future__ import annotations

import random

from deploykit.console import log
from deploykit.errors import UserError
from deploykit.jobs import PruneJob
from deploykit.overlap import seen_share
from deploykit.pruning.units import EncoderCut

TASK = "token_classification"
BATCH = 16  # windows per importance / reload-check batch


def check_units(cfg) -> None:
    """UserError in one line for what a token classifier's pruning does not take."""
    if cfg.vocab:
        raise UserError(f"prune.vocab: data.task {TASK} keeps its whole vocabulary (a word never seen in training "
                        "may split into pieces the training sentences do not hold); set prune.vocab false")
    if cfg.recovery_min_words:
        raise UserError(f"prune.recovery_min_words counts the words of text rows; data.task {TASK} ranks and "
                        "recovers on every training sentence: remove it")


def prune_job(recipe, source: str, parent) -> PruneJob:
    """The token classifier in `source`, its head kept, ranked on a seeded sample of training windows."""
    from transformers import AutoConfig, DataCollatorForTokenClassification

    from deploykit.data import fit_max_length
    from deploykit.evaluate import torch_predictor
    from deploykit.models import load_classifier, resolve_source
    from deploykit.ner.align import window_stride
    from deploykit.ner.data import load_tags
    from deploykit.ner.distill import TokenDistillTrainer
    from deploykit.ner.scoring import as_dataset, check_tags, encode, score_with, sentence_metrics, tokenizer_for
    from deploykit.ner.transfer import training_set

    cfg, data, trust = recipe.prune, recipe.data, recipe.model.trust_remote_code
    check_units(cfg)
    task = load_tags(data)
    tokenizer = tokenizer_for(source, trust)
    def load(source: str, revision: str | None = None):
        model = load_classifier(source, labels=task.labels, trust_remote_code=trust, revision=revision,
                                new_head=False, task=TASK)
        check_tags(model.config, task.labels, source)
        return model

    def load_teacher(source: str):
        # load_classifier names the tags as the data does: the teacher's own tags, in its order, are checked first
        model = load(source)
        check_tags(AutoConfig.from_pretrained(resolve_source(source), trust_remote_code=trust), task.labels,
                   f"teacher {source}")
        return model

    def validation_seen() -> float:
        # the teacher trained on the whole training file, not on data.max_train_samples of it
        full = load_tags(data.model_copy(update={"max_train_samples": None})).train if data.max_train_samples \
            else task.train
        return seen_share([" ".join(t) for t in full.tokens], [" ".join(t) for t in task.validation.tokens])

    model = load(source, recipe.model.revision)
    manifest = parent.manifest if parent is not None else None
    max_len = fit_max_length(data.max_length, model.config, tokenizer, task,
                             recorded=manifest.get("max_length") if manifest else None)
    stride = window_stride(data.window_stride, max_len, tokenizer)
    train_win = encode(task.train, tokenizer, max_len, data, task.labels)
    val_win = encode(task.validation, tokenizer, max_len, data, task.labels)
    log(f"prune: importance and recovery on all {len(task.train)} training sentences ({len(train_win)} windows)"
        + (", recovery also on unlabelled text (KD only)" if cfg.unlabeled is not None else ""))
    collate = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")

    def tensors(rows: list[dict]) -> list[dict]:
        return [dict(collate(rows[i:i + BATCH])) for i in range(0, len(rows), BATCH)]

    train_rows = train_win.rows()
    picked = sorted(random.Random(data.seed).sample(range(len(train_rows)),
                                                    min(len(train_rows), cfg.importance_batches * BATCH)))
    splits = {"validation": task.validation, "test": task.test}

    def evaluate(model, tokenizer, split: str) -> dict | None:
        rows = splits[split]
        return None if rows is None else score_with(torch_predictor(model), tokenizer, rows, task.labels, max_len,
                                                    stride)

    return PruneJob(model, tokenizer, task.labels, tensors([train_rows[i] for i in picked]),
                    lambda model, tokenizer: tensors(val_win.rows()[:2 * BATCH]), evaluate,
                    lambda: (training_set(train_win, cfg.unlabeled, data, tokenizer, max_len, stride)[0],
                             as_dataset(val_win)), TokenDistillTrainer,
                    trainer_args={"collator": DataCollatorForTokenClassification(tokenizer), "best_metric": "f1"},
                    compute_metrics=sentence_metrics(val_win, task.validation, task.labels),
                    # per-token logits of every window are too large to cache: the teacher runs live
                    kd_args=lambda distill: {"cache_teacher_logits": False}, load_teacher=load_teacher,
                    max_length=max_len, record={"task": TASK, "window_stride": stride}, cut=EncoderCut(),
                    validation_seen=validation_seen)
