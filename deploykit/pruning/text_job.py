"""The text classifier's prune job (data.task classification): rows, batches, scores and vocabulary pruning.

    from deploykit.pruning.text_job import prune_job
    job = prune_job(recipe, "runs/sst2/distill", parent)     # a deploykit.kinds.base.PruneJob

deploykit/stages/prune.py cuts, recovers, saves and checks; this module says which rows rank the units and
recover the model (`recovery_rows`), how a model is scored (accuracy per text, pooled over windows) and how
the vocabulary is cut to the training texts' tokens, checked on their logits.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from deploykit.config import Recipe
from deploykit.console import log
from deploykit.data import Split, batches
from deploykit.errors import CheckError, UserError
from deploykit.jobs import PruneJob
from deploykit.overlap import seen_share
from deploykit.pruning.units import EncoderCut

VOCAB_CHECK_TEXTS = 256  # training texts on which the vocabulary-pruned model must match the unpruned one
BATCH = 16  # rows per importance / reload-check batch: enough signal, little memory


def tensor_batches(split: Split, tokenizer, n_batches: int, batch_size: int, max_length: int, seed: int) -> list[dict]:
    """`n_batches` seeded random batches of `split` as tensors with labels (importance, reload check)."""
    import torch

    idx = list(range(len(split)))
    random.Random(seed).shuffle(idx)
    part = split.take(sorted(idx[: n_batches * batch_size]))
    out = []
    for enc, labels in batches(part, tokenizer, batch_size, max_length):
        out.append({**{k: torch.from_numpy(np.asarray(v)) for k, v in enc.items()},
                    "labels": torch.tensor(labels)})
    return out


def prune_vocab(model, tokenizer, recipe: Recipe, scratch: Path, max_length: int):
    """Vocabulary pruning, checked: the pruned model with its new tokenizer must give the same logits.

    The vocabulary comes from the whole training file even when `data.max_train_samples` limits
    the recovery fine-tune: that limit saves training time, and fewer tokens would turn more
    test words into [UNK].
    """
    from deploykit.data import load_task
    from deploykit.evaluate import predict, torch_predictor
    from deploykit.pruning.vocab import prune_vocab as cut

    train = load_task(recipe.data.model_copy(update={"max_train_samples": None})).train
    sample = train.head(VOCAB_CHECK_TEXTS)
    reference = predict(torch_predictor(model), sample, tokenizer, max_length)
    tokenizer, kept = cut(model, tokenizer, train.texts, train.pairs, scratch)
    diff = float(np.abs(predict(torch_predictor(model), sample, tokenizer, max_length) - reference).max())
    if diff > 1e-4:
        raise CheckError(f"vocabulary pruning changed logits on training texts by {diff:.2e} (> 1e-4); "
                         "set prune.vocab: false", check="vocabulary pruning")
    return tokenizer, kept, diff


def recovery_rows(recipe: Recipe, task) -> Split:
    """The rows importance and recovery learn from: a pruned model loses most on inputs unlike the ones it
    recovered on, and a training file of short phrases (SST-2: median 7 words, test sentences 19) hardly
    shows the parent's behaviour on long ones. `recovery_rows: matched` resamples the training rows to the
    lengths of the test rows (the stand-in for deployment inputs; lengths only, no labels), else of the
    validation rows; `recovery_min_words` keeps the whole training file's rows of at least that many words."""
    from deploykit.data import load_task
    from deploykit.matching import length_matched

    train = task.train
    n = recipe.prune.recovery_min_words
    if not n:
        if recipe.prune.recovery_rows == "all":
            return train
        target, name = (task.test, "test") if task.test is not None else (task.validation, "validation")
        idx, note = length_matched(train, target, recipe.data.seed, name)
        log(f"prune: importance and recovery on {note}")
        return train if idx is None else train.take(idx)
    full = load_task(recipe.data.model_copy(update={"max_train_samples": None})).train
    pairs = full.pairs or [""] * len(full)  # a text pair counts both texts' words
    idx = [i for i, (text, pair) in enumerate(zip(full.texts, pairs)) if len(text.split()) + len(pair.split()) >= n]
    if not idx:
        raise UserError(f"prune.recovery_min_words={n}: no training row has {n} words; lower it")
    cap = recipe.data.max_train_samples
    if cap and len(idx) > cap:
        idx = sorted(random.Random(recipe.data.seed).sample(idx, cap))
    log(f"prune: importance and recovery on {len(idx)} training rows of >= {n} words")
    return full.take(idx)


def prune_job(recipe: Recipe, source: str, parent) -> PruneJob:
    """The classifier in `source` with its head kept (a head of another label count is refused, not re-initialised:
    pruning keeps a trained model's behaviour), ranked and recovered on `recovery_rows`, scored per text."""
    from transformers import AutoConfig

    from deploykit.data import fit_max_length, load_task, to_dataset
    from deploykit.evaluate import metrics, predict, torch_predictor
    from deploykit.labels import check_labels
    from deploykit.models import load_classifier, load_tokenizer, resolve_source
    from deploykit.train.kd import DistillTrainer
    from deploykit.transfer import add_unlabeled
    from deploykit.window_metrics import pooled_metrics
    from deploykit.windows import TEXT_OF, recorded, stride_for, windowed

    cfg, data, seed = recipe.prune, recipe.data, recipe.data.seed
    task = load_task(data)
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
    def load(source: str, revision: str | None = None):
        return load_classifier(source, labels=task.labels, trust_remote_code=recipe.model.trust_remote_code,
                               revision=revision, new_head=False)

    def load_teacher(source: str):
        # load_classifier names the labels as the data does: the teacher's own names, in its order, are checked first
        model = load(source)
        check_labels(AutoConfig.from_pretrained(resolve_source(source),
                                                trust_remote_code=recipe.model.trust_remote_code),
                     task.labels, f"teacher {source}")
        return model

    def validation_seen() -> float:
        # the teacher trained on the whole training file, not on data.max_train_samples of it
        full = load_task(data.model_copy(update={"max_train_samples": None})).train if data.max_train_samples \
            else task.train
        return seen_share(full.texts, task.validation.texts, full.pairs, task.validation.pairs)

    model = load(source, recipe.model.revision)
    manifest = parent.manifest if parent is not None else None
    max_len = fit_max_length(data.max_length, model.config, tokenizer, task,
                             recorded=manifest.get("max_length") if manifest else None)
    stride = stride_for(data, max_len, tokenizer, manifest)
    train = recovery_rows(recipe, task)

    def evaluate(model, tokenizer, split: str) -> dict | None:
        rows = {"validation": task.validation, "test": task.test}[split]
        if rows is None:
            return None
        return metrics(predict(torch_predictor(model), rows, tokenizer, max_len, stride=stride), rows.labels)

    validation = to_dataset(task.validation, tokenizer, max_len, stride, "validation") if cfg.recovery else None
    # windows: the recovery checkpoint kept is the best per text, not per window
    pooled = pooled_metrics(validation[TEXT_OF]) if validation is not None and windowed(validation) else None
    return PruneJob(
        model, tokenizer, task.labels, tensor_batches(train, tokenizer, cfg.importance_batches, BATCH, max_len, seed),
        lambda model, tokenizer: tensor_batches(task.validation, tokenizer, 2, BATCH, max_len, seed), evaluate,
        lambda: (add_unlabeled(to_dataset(train, tokenizer, max_len, stride, "train"), cfg.unlabeled, data, tokenizer,
                               max_len, stride), validation), DistillTrainer,
        prune_vocab=lambda model, tokenizer, scratch, length: prune_vocab(model, tokenizer, recipe, scratch, length),
        compute_metrics=pooled, load_teacher=load_teacher, max_length=max_len, record=recorded(stride),
        cut=EncoderCut(), validation_seen=validation_seen)
