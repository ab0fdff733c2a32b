"""`deploykit distill`: distil a fine-tuned teacher into a student with fewer layers.

    deploykit distill --from runs/sst2/finetune --data sst2 --out runs/sst2/distill \
        --set distill.epochs=3 --set "distill.student_layers=[1,3,5]"
    deploykit distill --data sst2 --set distill.teacher=runs/teacher-sst2 --set distill.student=./small-bert

The student is either built from the teacher's own layers (default: every other layer, 6 -> 3;
embeddings and classifier copied, as DistilBERT was initialised) or any HF model that shares the
teacher's tokenizer (`distill.student`). The loss (deploykit/train/kd.py) mixes KL on softened logits,
cross-entropy on the gold labels and, optionally, hidden-state MSE and attention KL over a layer
mapping. The output folder loads with plain `from_pretrained`; its manifest records the teacher,
the layers kept and both models' metrics on validation and test.

What is trained and scored comes from the task's kind (`Kind.distill_job`, deploykit/kinds/): text
classifiers KD on logits per text, token classifiers per word-piece (deploykit/ner/distill.py), causal LMs on
the teacher's top-k next tokens (deploykit/llm/distill.py). This module seeds, trains, saves and logs once.
"""

from __future__ import annotations

import time
from pathlib import Path

from deploykit.artifact import Artifact
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.kinds import kind_of
from deploykit.lineage import manifest_of
from deploykit.train.resume import forget, going_on_from, start_point
from deploykit.train.distillation import describe, save_student, teacher_source, warn_if_larger
from deploykit.train.trainer import build_trainer, check_replicas, num_layers, training_record


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path, resume_key: str | None = None) -> Artifact:
    """Distil the teacher (`distill.teacher`, else `parent`) into a smaller student; write it to `out_dir`.

    `resume_key`: `deploykit run`'s hash of this config and input; an interrupted run's checkpoints of the same
    key are kept and resumed from (deploykit/train/resume.py). Without it the checkpoints are scratch.

    Raises:
        UserError: no data section, no usable teacher, a kind that cannot be distilled, a student that does not
            fit the teacher (labels, vocabulary, layer indices).
    """
    from transformers import set_seed

    cfg = recipe.distill
    if recipe.data is None:
        raise UserError("distill needs a data section (or --data NAME_OR_PATH)")
    kind = kind_of(recipe.data.task)
    if kind.distill_job is None:
        raise UserError(f"distill: data.task {kind.name} cannot be distilled yet")
    teacher_src = teacher_source(cfg, parent)
    set_seed(cfg.seed)
    job = kind.distill_job(recipe, teacher_src, parent)
    teacher, student = job.teacher, job.student
    n_student, n_teacher = warn_if_larger(student, teacher)

    out_dir = Path(out_dir).resolve()
    work, checkpoint = start_point(out_dir, "distill", key=resume_key)
    try:
        return _train(recipe, parent, out_dir, work, job, teacher_src, n_student, n_teacher, checkpoint)
    except BaseException:
        # `deploykit distill` has no --resume: its checkpoints are scratch, gone however the stage ends (SIGKILL
        # aside, which the next start clears); under `deploykit run` they are kept for its next start
        if resume_key is None:
            forget(work)
        raise


def _train(recipe: Recipe, parent: Artifact | None, out_dir: Path, work: Path, job, teacher_src: str,
           n_student: int, n_teacher: int, checkpoint: str | None) -> Artifact:
    cfg, kind = recipe.distill, kind_of(recipe.data.task)
    teacher, student = job.teacher, job.student
    trainer = build_trainer(student, cfg, work, job.tokenizer, job.train_ds, job.eval_ds, stage="distill",
                            trainer_cls=job.trainer_cls, teacher=teacher, temperature=cfg.temperature,
                            alpha_kd=cfg.alpha_kd, alpha_ce=cfg.alpha_ce, alpha_hidden=cfg.alpha_hidden,
                            alpha_attention=cfg.alpha_attention, layer_map=job.layer_map,
                            cache_teacher_logits=cfg.cache_teacher_logits and job.cache_teacher_logits,
                            **job.trainer_args)
    if job.compute_metrics is not None:  # the kind's score picks the checkpoint kept (per text, per sentence)
        trainer.compute_metrics = job.compute_metrics
    log(describe(teacher, student, n_teacher, n_student, job.kept, cfg, f"{job.summary}, bf16 {trainer.args.bf16}"))
    start = time.time()
    with going_on_from(trainer, checkpoint, "distill") as checkpoint:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.time() - start

    val, test, teacher_metrics = job.finish(trainer)
    ddp = check_replicas(trainer.model)
    metrics = {"validation": val, "test": test, "teacher": teacher_metrics,
               **training_record(trainer, result, seconds, cfg.epochs),
               "parameters": n_student, "teacher_parameters": n_teacher, "ddp": ddp,
               "resumed_from": checkpoint and Path(checkpoint).name}
    if not trainer.is_world_process_zero():
        return Artifact(out_dir, {"stage": "distill", "format": "pytorch", "metrics": metrics})
    # a folder as an absolute path: prune's recovery_teacher reads it from wherever `deploykit prune` is started
    local = Path(teacher_src)
    source = str(local.resolve()) if local.is_dir() else teacher_src
    teacher_record = {"source": source, "layers": num_layers(teacher.config), "parameters": n_teacher}
    if local.is_dir() and (teacher_hash := (manifest_of(local) or {}).get("hash")):
        teacher_record["hash"] = teacher_hash  # found again beside this folder in a copied run (lineage.recorded_folder)
    manifest = save_student(trainer.model, job.tokenizer, recipe, parent, out_dir, metrics, job.labels,
                            teacher=teacher_record, kept=job.kept, layer_map=trainer.layer_map,
                            max_length=job.max_length, **job.record)
    forget(work)
    key = kind.metric
    log(f"distill: validation {key} {val.get(key)} (teacher {(teacher_metrics.get('validation') or {}).get(key)})"
        + (f", test {key} {test.get(key)} (teacher {(teacher_metrics.get('test') or {}).get(key)})" if test else "")
        + f" in {seconds:.0f}s")
    return Artifact(out_dir, manifest)
