"""Sequence classification (single texts and sentence pairs): the encoder chain every stage runs itself."""

from __future__ import annotations

from deploykit.kinds.base import Job, Kind


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
    tokenizer = load_tokenizer(source, recipe.model.trust_remote_code)
    model = load_classifier(source, labels=task.labels, trust_remote_code=recipe.model.trust_remote_code,
                            revision=recipe.model.revision)
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


def gate_value(recipe, artifact, task) -> float:
    from deploykit.evaluate import evaluate_artifact

    split = task.split(recipe.gate.split)
    return evaluate_artifact(artifact, split, recipe.data.max_length, task=task, data=recipe.data)[recipe.gate.metric]


KIND = Kind(name="classification", metric="accuracy", load_task=load_task, finetune_job=finetune_job,
            gate_value=gate_value)
