"""Sequence classification (single texts and sentence pairs): the encoder chain every stage runs itself."""

from __future__ import annotations

from deploykit.jobs import DistillJob, ExportJob, Job
from deploykit.kinds.base import Kind
from deploykit.labels import check_labels


def load_task(cfg):
    from deploykit.data import load_task as load

    return load(cfg)


def finetune_job(recipe, source: str) -> Job:
    """A classifier with a fresh head for the task's labels, tokenized rows (windows where asked), scored per text."""
    from deploykit.data import fit_max_length, to_dataset
    from deploykit.models import load_classifier, load_tokenizer
    from deploykit.window_metrics import evaluate_pooled, pooled_metrics
    from deploykit.windows import TEXT_OF, recorded, stride_for, windowed

    task = load_task(recipe.data)
    # the model first: a folder of another kind is named as such before its missing tokenizer files are
    model = load_classifier(source, labels=task.labels, trust_remote_code=recipe.model.trust_remote_code,
                            revision=recipe.model.revision)
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
    max_len = fit_max_length(recipe.data.max_length, model.config, tokenizer, task)
    stride = stride_for(recipe.data, max_len, tokenizer)  # data.long_texts: windows (deploykit/windows.py)
    validation = to_dataset(task.validation, tokenizer, max_len, stride, "validation")

    def finish(trainer, trained, merge: bool):
        # through the Trainer: the same batching and metrics as its per-epoch evaluation (per text with windows),
        # before a LoRA merge (the Trainer holds the peft model)
        val = evaluate_pooled(trainer, validation, "eval")
        test = None if task.test is None else evaluate_pooled(
            trainer, to_dataset(task.test, tokenizer, max_len, stride, "test"), "test")
        return (trained.merge_and_unload() if merge else trained), val, test

    windows = f", windows overlapping by {stride} tokens" if stride is not None else ""
    return Job(model, tokenizer, to_dataset(task.train, tokenizer, max_len, stride, "train"), validation, None,
               "accuracy", task.labels, finish, f"{len(task.train)} train / {len(task.validation)} validation rows, "
               f"max_length {max_len}{windows}", max_len, record=recorded(stride),
               # windows: the checkpoint kept is the best per text, not per window
               compute_metrics=pooled_metrics(validation[TEXT_OF]) if windowed(validation) else None)


def build_student(cfg, teacher, tokenizer, labels: list[str], trust_remote_code: bool = False):
    """(student, kept teacher layers or None, layer map or None): cut from the teacher's layers, else the
    classifier `distill.student` with the task's labels (a trained head with other labels is refused)."""
    from transformers import AutoConfig

    from deploykit.models import load_classifier, resolve_source
    from deploykit.train.distillation import build_student as build

    def load(source: str):
        config = AutoConfig.from_pretrained(resolve_source(source), trust_remote_code=trust_remote_code)
        if any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
            check_labels(config, labels, f"distill.student {source!r}")
        return load_classifier(source, labels=labels, trust_remote_code=trust_remote_code)

    return build(cfg, teacher, tokenizer, load, trust_remote_code)


def _teacher_scores(ds, split) -> dict[str, float]:
    """The teacher's metrics on a split from its cached logits (pooled per text when `ds` holds windows)."""
    import numpy as np

    from deploykit.evaluate import metrics
    from deploykit.train.kd import TEACHER_LOGITS
    from deploykit.windows import TEXT_OF, pool, windowed

    logits = np.asarray(ds[TEACHER_LOGITS])
    if windowed(ds):
        return metrics(pool(logits, np.asarray(ds[TEXT_OF]), len(split)), split.labels)
    return metrics(logits, ds["labels"])


def distill_job(recipe, teacher_src: str, parent) -> DistillJob:
    """KD on per-text logits: the teacher's logits on validation/test computed once (its own metrics, and the
    student's evaluation loss reuses them), windows where the teacher was trained on them."""
    from transformers import DataCollatorWithPadding

    from deploykit.data import fit_max_length, to_dataset
    from deploykit.models import load_classifier, load_tokenizer
    from deploykit.train.kd import DistillTrainer, add_teacher_logits
    from deploykit.transfer import add_unlabeled
    from deploykit.window_metrics import evaluate_pooled, pooled_metrics
    from deploykit.windows import TEXT_OF, recorded, stride_for, windowed

    cfg, trust = recipe.distill, recipe.model.trust_remote_code
    task = load_task(recipe.data)
    teacher = load_classifier(teacher_src, trust_remote_code=trust, new_head=False)
    tokenizer = load_tokenizer(teacher_src, trust)
    check_labels(teacher.config, task.labels, f"teacher {teacher_src}")
    student, kept, layer_map = build_student(cfg, teacher, tokenizer, task.labels, trust)
    manifest = parent.manifest if parent is not None else None
    max_len = fit_max_length(recipe.data.max_length, teacher.config, tokenizer, task,
                             recorded=manifest.get("max_length") if manifest else None)
    stride = stride_for(recipe.data, max_len, tokenizer, manifest)
    collator = DataCollatorWithPadding(tokenizer)
    evals = {name: add_teacher_logits(to_dataset(split, tokenizer, max_len, stride, name), teacher, collator,
                                      cfg.eval_batch_size)
             for name, split in (("validation", task.validation), ("test", task.test)) if split is not None}
    teacher_metrics = {name: _teacher_scores(ds, task.split(name)) for name, ds in evals.items()}

    def finish(trainer):
        test = evaluate_pooled(trainer, evals["test"], "test") if "test" in evals else None
        return evaluate_pooled(trainer, evals["validation"], "eval"), test, teacher_metrics

    validation = evals["validation"]
    train = add_unlabeled(to_dataset(task.train, tokenizer, max_len, stride, "train"), cfg.unlabeled, recipe.data,
                          tokenizer, max_len, stride)
    extra = f" + {len(train) - len(task.train)} unlabelled (KD only)" if cfg.unlabeled is not None else ""
    return DistillJob(teacher, student, tokenizer, kept, layer_map, train, validation, DistillTrainer,
                      task.labels, f"{len(task.train)} train{extra} / {len(task.validation)} validation rows", finish,
                      # windows: keep the checkpoint best per text, not per window
                      compute_metrics=pooled_metrics(validation[TEXT_OF]) if windowed(validation) else None,
                      max_length=max_len, record=recorded(stride))


def gate_value(recipe, artifact, task) -> float:
    from deploykit.evaluate import evaluate_artifact

    split = task.split(recipe.gate.split)
    return evaluate_artifact(artifact, split, recipe.data.max_length, task=task, data=recipe.data)[recipe.gate.metric]


def prune_job(recipe, source: str, parent):
    from deploykit.pruning.text_job import prune_job as job

    return job(recipe, source, parent)


def export_job(recipe, parent) -> ExportJob:
    """Parity on up to `export.parity_samples` validation texts (built-in ones without a data section), at the
    trained length; the recipe's rewrites (padding removal, last-layer trim)."""
    from deploykit.onnx.export import encoder_export_job

    cfg = recipe.export
    rewrites = {"trim_last_layer": cfg.trim_last_layer, "remove_padding": cfg.remove_padding}
    if recipe.data is None:
        return encoder_export_job(parent.path, cfg, {"texts": None, "pairs": None, "max_length": 128, **rewrites})
    split = load_task(recipe.data).validation.head(cfg.parity_samples)
    max_length = recipe.data.max_length
    if max_length == "auto":
        max_length = parent.manifest.get("max_length") or "auto"
    return encoder_export_job(parent.path, cfg, {"texts": split.texts, "pairs": split.pairs, "max_length": max_length,
                                                 **rewrites})


def quantize_job(recipe, parent):
    from deploykit.quant.text_job import quantize_job as job

    return job(recipe, parent)


def check_run(recipe, stages: list[str]) -> None:
    """Refuse a quantize mode encoders do not take before the first stage trains."""
    if "quantize" in stages:
        from deploykit.quant.encoder_job import check_mode

        check_mode(recipe.quantize)


KIND = Kind(name="classification", metric="accuracy", load_task=load_task, finetune_job=finetune_job,
            gate_value=gate_value, distill_job=distill_job, prune_job=prune_job, quantize_job=quantize_job,
            export_job=export_job, check_run=check_run)
