"""`deploykit prune`: structured pruning into a smaller model that plain transformers reloads.

    deploykit prune --from runs/sst2/finetune --data sst2 --data-dir ../shared/data \
        --set prune.ffn=0.5 --set prune.width=0.3333 --set prune.vocab=true \
        --set prune.recovery.epochs=1 --out runs/sst2/prune

Units: `ffn` (FFN neurons, same count per layer), `width` (residual channels with whole heads,
hidden = heads x head size), `depth` / `drop_layers` (whole layers), `heads` (configs with an
explicit head_dim only), `vocab` (tokens the training texts use; the tokenizer is rewritten).
The schedule prunes in `steps` steps, each optionally followed by a short recovery fine-tune that
distils from the unpruned model. The output is reloaded with plain `from_pretrained` and must give
the in-memory model's logits, else the stage fails and writes nothing.
"""

from __future__ import annotations

import copy
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from deploykit.artifact import Artifact, scratch, staging, write_manifest
from deploykit.config import DistillConfig, Recipe
from deploykit.console import log
from deploykit.data import Split, batches
from deploykit.errors import CheckError, UserError
from deploykit.kinds import kind_of
from deploykit.window_metrics import pool_metrics_of
from deploykit.windows import recorded, stride_for

VOCAB_CHECK_TEXTS = 256  # training texts on which the vocabulary-pruned model must match the unpruned one
BATCH = 16  # rows per importance / reload-check batch: enough signal, little memory


def _tensor_batches(split: Split, tokenizer, n_batches: int, batch_size: int, max_length: int,
                    seed: int) -> list[dict[str, torch.Tensor]]:
    """`n_batches` seeded random batches of `split` as tensors with labels (importance, reload check)."""
    idx = list(range(len(split)))
    random.Random(seed).shuffle(idx)
    part = split.take(sorted(idx[: n_batches * batch_size]))
    out = []
    for enc, labels in batches(part, tokenizer, batch_size, max_length):
        out.append({**{k: torch.from_numpy(np.asarray(v)) for k, v in enc.items()},
                    "labels": torch.tensor(labels)})
    return out


def _evaluate(model, split: Split | None, tokenizer, max_length: int, stride: int | None = None) -> dict | None:
    from deploykit.evaluate import metrics, predict, torch_predictor

    if split is None:
        return None
    return metrics(predict(torch_predictor(model), split, tokenizer, max_length, stride=stride), split.labels)


def _init_projection(projection: torch.nn.Linear, channels: list[int]) -> None:
    """Start the student -> parent hidden-state projection as the channel selection width pruning made:
    the kept channels then match from the first step and only the removed ones must be learned."""
    with torch.no_grad():
        projection.weight.zero_()
        projection.bias.zero_()
        projection.weight[channels, torch.arange(len(channels))] = 1.0


def _recover(model, teacher, recipe: Recipe, datasets: tuple, tokenizer, work: Path, kept):
    """Short fine-tune of the pruned model; distils from the unpruned `teacher` when one is given."""
    from deploykit.training import build_trainer

    cfg = recipe.prune
    kd = {}
    if teacher is not None:
        from deploykit.kd import DistillTrainer

        # the distillation section's loss weights when the recipe has one, else its defaults
        d = recipe.distill or DistillConfig()
        # each pruned layer learns from the parent layer it was cut from
        kd = dict(trainer_cls=DistillTrainer, teacher=teacher, temperature=d.temperature,
                  alpha_kd=d.alpha_kd, alpha_ce=d.alpha_ce, alpha_hidden=cfg.hidden_kd,
                  layer_map=list(kept.layers) if cfg.hidden_kd else None, cache_teacher_logits=True)
    trainer = build_trainer(model, cfg.recovery, work, tokenizer, datasets[0], datasets[1], stage="prune", **kd)
    pool_metrics_of(trainer, datasets[1])  # windows: the recovery checkpoint kept is the best per text
    if getattr(trainer, "projection", None) is not None:
        _init_projection(trainer.projection, kept.channels)
    trainer.train()
    shutil.rmtree(work, ignore_errors=True)
    return trainer.model


def _prune_vocab(model, tokenizer, recipe: Recipe, scratch: Path, max_length: int):
    """Vocabulary pruning, checked: the pruned model with its new tokenizer must give the same logits.

    The vocabulary comes from the whole training file even when `data.max_train_samples` limits
    the recovery fine-tune: that limit saves training time, and fewer tokens would turn more
    test words into [UNK].
    """
    from deploykit.data import load_task
    from deploykit.evaluate import predict, torch_predictor
    from deploykit.pruning.vocab import prune_vocab

    train = load_task(recipe.data.model_copy(update={"max_train_samples": None})).train
    sample = train.head(VOCAB_CHECK_TEXTS)
    reference = predict(torch_predictor(model), sample, tokenizer, max_length)
    tokenizer, kept = prune_vocab(model, tokenizer, train.texts, train.pairs, scratch)
    diff = float(np.abs(predict(torch_predictor(model), sample, tokenizer, max_length) - reference).max())
    if diff > 1e-4:
        raise CheckError(f"vocabulary pruning changed logits on training texts by {diff:.2e} (> 1e-4); "
                         "set prune.vocab: false", check="vocabulary pruning")
    return tokenizer, kept, diff


def _recovery_rows(recipe: Recipe, task) -> Split:
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


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path) -> Artifact:
    """Prune `parent` (or `recipe.model.source`) as `recipe.prune` says; write a plain HF folder to `out_dir`."""
    from transformers import set_seed

    from deploykit.data import fit_max_length, load_task, to_dataset
    from deploykit.models import load_classifier, load_tokenizer
    from deploykit.pruning.arch import arch_of, measure, shape_of
    from deploykit.pruning.reload import check_reload
    from deploykit.pruning.units import Kept, plan, prune_step

    cfg = recipe.prune
    if recipe.data is None:
        raise UserError("prune needs a data section (or --data NAME_OR_PATH) for importance and evaluation")
    if (own := kind_of(recipe.data.task).runner("prune")) is not None:
        return own(recipe, parent, out_dir)
    source = str(parent.path) if parent is not None else recipe.model.source
    seed = recipe.data.seed
    set_seed(seed)
    task = load_task(recipe.data)
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
    # pruning keeps a trained model's behaviour: a head of another label count is refused, not re-initialised
    model = load_classifier(source, labels=task.labels, trust_remote_code=recipe.model.trust_remote_code,
                            revision=recipe.model.revision, new_head=False)
    shape = shape_of(model)
    target = plan(cfg, shape, arch_of(model))  # every bad request fails here, before any work
    max_len = fit_max_length(recipe.data.max_length, model.config, tokenizer, task,
                             recorded=parent.manifest.get("max_length") if parent is not None else None)
    stride = stride_for(recipe.data, max_len, tokenizer, parent.manifest if parent is not None else None)
    train = _recovery_rows(recipe, task)
    importance = _tensor_batches(train, tokenizer, cfg.importance_batches, BATCH, max_len, seed)

    start = time.time()
    before = {**measure(model, cfg.macs_seq_len), "shape": shape.as_dict(),
              "validation": _evaluate(model, task.validation, tokenizer, max_len, stride)}
    teacher = copy.deepcopy(model).eval() if cfg.recovery and cfg.distill_from_parent else None
    datasets = (to_dataset(train, tokenizer, max_len, stride, "train"),
                to_dataset(task.validation, tokenizer, max_len, stride, "validation")) if cfg.recovery else None
    out_dir = Path(out_dir).resolve()
    work = out_dir.with_name(f".{out_dir.name}.work")
    with scratch(work):
        kept = Kept.start(shape)
        for step in range(1, cfg.steps + 1):
            prune_step(model, cfg, target, step, importance, kept)
            log(f"prune: step {step}/{cfg.steps}: {shape_of(model).as_dict()}")
            if cfg.recovery:
                model = _recover(model, teacher, recipe, datasets, tokenizer, work / f"step{step}", kept)
        kept_tokens, vocab_diff = None, None
        if cfg.vocab:
            tokenizer, kept_tokens, vocab_diff = _prune_vocab(model, tokenizer, recipe, work / "tokenizer", max_len)
        model.eval()
        after = {**measure(model, cfg.macs_seq_len), "shape": shape_of(model).as_dict(),
                 "validation": _evaluate(model, task.validation, tokenizer, max_len, stride)}
        metrics = {"before": before, "after": after,
                   "test": _evaluate(model, task.test, tokenizer, max_len, stride),
                   "parameters_ratio": round(after["parameters"] / before["parameters"], 4),
                   "macs_ratio": round(after["macs"] / before["macs"], 4),
                   "vocab_max_logit_diff": vocab_diff, "seconds": round(time.time() - start, 1)}
        check = _tensor_batches(task.validation, tokenizer, 2, BATCH, max_len, seed)
        with staging(out_dir) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            metrics["reload_max_logit_diff"] = check_reload(model, tmp, check)
            manifest = write_manifest(tmp, stage="prune", format="pytorch", parent=parent,
                                      config=recipe.model_dump(include={"model", "data", "prune"}), metrics=metrics,
                                      source=source, labels=task.labels, max_length=max_len, **recorded(stride),
                                      kept={**kept.summary(), "tokens": kept_tokens})
    log(f"prune: parameters {before['parameters'] / 1e6:.2f}M -> {after['parameters'] / 1e6:.2f}M, "
        f"MACs x{metrics['macs_ratio']:.2f}, validation accuracy {before['validation']['accuracy']} -> "
        f"{after['validation']['accuracy']}")
    return Artifact(out_dir, manifest)
