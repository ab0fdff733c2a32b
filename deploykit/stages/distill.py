"""`deploykit distill`: distil a fine-tuned teacher into a student with fewer layers.

    deploykit distill --from runs/sst2/finetune --data sst2 --out runs/sst2/distill \
        --set distill.epochs=3 --set "distill.student_layers=[1,3,5]"
    deploykit distill --data sst2 --set distill.teacher=runs/teacher-sst2 --set distill.student=./small-bert

The student is either built from the teacher's own layers (default: every other layer, 6 -> 3;
embeddings and classifier copied, as DistilBERT was initialised) or any HF model that shares the
teacher's tokenizer (`distill.student`). The loss (deploykit/kd.py) mixes KL on softened logits,
cross-entropy on the gold labels and, optionally, hidden-state MSE and attention KL over a layer
mapping. The output folder loads with plain `from_pretrained`; its manifest records the teacher,
the layers kept and both models' metrics on validation and test.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np

from deploykit.artifact import Artifact
from deploykit.config import DistillConfig, Recipe
from deploykit.console import log
from deploykit.distillation import (
    check_tokenizer,
    describe,
    save_student,
    student_from_teacher,
    teacher_source,
    warn_if_larger,
)
from deploykit.errors import UserError
from deploykit.kinds import kind_of
from deploykit.training import build_trainer, check_replicas, num_layers, training_record

_DEFAULT_LABEL = re.compile(r"LABEL_\d+")  # what HF writes when a model was saved without label names


def _label_names(config) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def _check_labels(config, labels: list[str], what: str) -> None:
    """Refuse a model whose label set differs from the data's (HF default LABEL_i names match any names)."""
    names = _label_names(config)
    if len(names) != len(labels) or (names != labels and not all(_DEFAULT_LABEL.fullmatch(n) for n in names)):
        raise UserError(f"{what}: labels {names} differ from the data's {labels}; distil on the task the "
                        "teacher was fine-tuned on (data.label_names sets the data's names)")


def build_student(cfg: DistillConfig, teacher, teacher_tok, labels: list[str], trust_remote_code: bool = False):
    """The student model, the teacher layers it kept (None for a separate student) and its layer map.

    Args:
        cfg: the recipe's distill section.
        teacher: the loaded teacher classifier.
        teacher_tok: the teacher's tokenizer (a separate student must share its vocabulary).
        labels: the task's label names (the student's head gets them).
        trust_remote_code: passed to `from_pretrained` for a separate student.

    Returns:
        (student, kept teacher layers or None, layer map or None for the uniform default).
    """
    from transformers import AutoConfig

    from deploykit.models import load_classifier, resolve_source

    built = student_from_teacher(cfg, teacher)
    if built is not None:
        return built
    check_tokenizer(cfg.student, teacher_tok, trust_remote_code)
    s_config = AutoConfig.from_pretrained(resolve_source(cfg.student), trust_remote_code=trust_remote_code)
    if any(a.endswith("ForSequenceClassification") for a in s_config.architectures or []):
        _check_labels(s_config, labels, f"distill.student {cfg.student!r}")
    student = load_classifier(cfg.student, labels=labels, trust_remote_code=trust_remote_code)
    return student, None, cfg.layer_map


def _split_metrics(ds, split) -> dict[str, float]:
    """The teacher's metrics on a split from its cached logits (pooled per text when `ds` holds windows)."""
    from deploykit.evaluate import metrics
    from deploykit.kd import TEACHER_LOGITS
    from deploykit.windows import TEXT_OF, pool, windowed

    logits = np.asarray(ds[TEACHER_LOGITS])
    if windowed(ds):
        return metrics(pool(logits, np.asarray(ds[TEXT_OF]), len(split)), split.labels)
    return metrics(logits, ds["labels"])


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path) -> Artifact:
    """Distil the teacher (`distill.teacher`, else `parent`) into a smaller student; write it to `out_dir`."""
    from transformers import DataCollatorWithPadding, set_seed

    from deploykit.data import fit_max_length, load_task, to_dataset
    from deploykit.kd import DistillTrainer, add_teacher_logits
    from deploykit.models import load_classifier, load_tokenizer
    from deploykit.window_metrics import evaluate_pooled, pool_metrics_of
    from deploykit.windows import stride_for

    cfg = recipe.distill
    if recipe.data is None:
        raise UserError("distill needs a data section (or --data NAME_OR_PATH)")
    if (own := kind_of(recipe.data.task).runner("distill")) is not None:
        return own(recipe, parent, out_dir)
    trust = recipe.model.trust_remote_code
    teacher_src = teacher_source(cfg, parent)
    set_seed(cfg.seed)
    task = load_task(recipe.data)
    tokenizer = load_tokenizer(teacher_src, trust)
    teacher = load_classifier(teacher_src, trust_remote_code=trust)
    _check_labels(teacher.config, task.labels, f"teacher {teacher_src}")
    student, kept, layer_map = build_student(cfg, teacher, tokenizer, task.labels, trust)
    n_student, n_teacher = warn_if_larger(student, teacher)

    max_len = fit_max_length(recipe.data.max_length, teacher.config, tokenizer, task,
                             recorded=parent.manifest.get("max_length") if parent is not None else None)
    stride = stride_for(recipe.data, max_len, tokenizer, parent.manifest if parent is not None else None)
    collator = DataCollatorWithPadding(tokenizer)
    # teacher logits on validation/test are computed once here: they give the teacher's own metrics,
    # and the student's evaluation loss reuses them instead of running the teacher every epoch
    evals = {name: add_teacher_logits(to_dataset(split, tokenizer, max_len, stride, name), teacher, collator,
                                      cfg.eval_batch_size)
             for name, split in (("validation", task.validation), ("test", task.test)) if split is not None}
    teacher_metrics = {name: _split_metrics(ds, task.split(name)) for name, ds in evals.items()}

    out_dir = Path(out_dir).resolve()
    work = out_dir.with_name(f".{out_dir.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    trainer = build_trainer(student, cfg, work, tokenizer, to_dataset(task.train, tokenizer, max_len, stride, "train"),
                            evals["validation"], stage="distill", trainer_cls=DistillTrainer, teacher=teacher,
                            temperature=cfg.temperature, alpha_kd=cfg.alpha_kd, alpha_ce=cfg.alpha_ce,
                            alpha_hidden=cfg.alpha_hidden, alpha_attention=cfg.alpha_attention,
                            layer_map=layer_map, cache_teacher_logits=cfg.cache_teacher_logits)
    pool_metrics_of(trainer, evals["validation"])  # windows: keep the checkpoint best per text
    log(describe(teacher, student, n_teacher, n_student, kept, cfg,
                 f"{len(task.train)} train / {len(task.validation)} validation rows, bf16 {trainer.args.bf16}"))
    start = time.time()
    result = trainer.train()
    seconds = time.time() - start

    val = evaluate_pooled(trainer, evals["validation"], "eval")
    test = evaluate_pooled(trainer, evals["test"], "test") if "test" in evals else None
    ddp = check_replicas(trainer.model)
    metrics = {"validation": val, "test": test, "teacher": teacher_metrics,
               **training_record(trainer, result, seconds, cfg.epochs),
               "parameters": n_student, "teacher_parameters": n_teacher, "ddp": ddp}
    if not trainer.is_world_process_zero():
        return Artifact(out_dir, {"stage": "distill", "format": "pytorch", "metrics": metrics})
    manifest = save_student(trainer.model, tokenizer, recipe, parent, out_dir, metrics, task.labels,
                            teacher={"source": teacher_src, "layers": num_layers(teacher.config), "parameters": n_teacher},
                            kept=kept, layer_map=trainer.layer_map, max_length=max_len, stride=stride)
    shutil.rmtree(work, ignore_errors=True)
    log(f"distill: validation accuracy {val.get('accuracy')} (teacher {teacher_metrics['validation']['accuracy']})"
        + (f", test accuracy {test.get('accuracy')} (teacher {teacher_metrics['test']['accuracy']})" if test else "")
        + f" in {seconds:.0f}s")
    return Artifact(out_dir, manifest)
