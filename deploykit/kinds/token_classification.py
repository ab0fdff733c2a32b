"""Token classification (named-entity recognition): one IOB2 tag per word, scored by entity-level F1 (seqeval).

    # recipe: data: {task: token_classification, path: ../shared/data/conll2003}   (tokens / ner_tags JSONL or CoNLL)
    deploykit finetune --recipe ner.yaml --out runs/ner/finetune
    deploykit distill --from runs/ner/finetune --recipe ner.yaml --out runs/ner/distill   # per-token KD
    deploykit prune --from runs/ner/distill --recipe ner.yaml --out runs/ner/prune        # FFN, width, depth
    deploykit export --from runs/ner/finetune --out runs/ner/export     # per-token logits, checked on every token
    deploykit quantize --from runs/ner/finetune --recipe ner.yaml --out runs/ner/quantize   # dynamic INT8
    deploykit run ner.yaml --out runs/ner            # every stage, each gated on F1, then bench
    deploykit.load("runs/ner/export")("Peter Blackburn flew to Brussels")   # entity groups (deploykit/ner/predict.py)

finetune trains an AutoModelForTokenClassification on word-piece windows (deploykit/ner/align.py: a word's first
piece carries its tag, a sentence longer than max_length becomes overlapping windows, never truncated). Every
evaluation puts the windows back one tag per word and scores whole sentences (deploykit/ner/metric.py), so early
stopping, the checkpoint kept, the manifest and the gate all follow entity F1; the gate scores ONNX folders the
same way. distill cuts a student from the teacher's layers and trains it on the same windows with KD per tagged
word piece (deploykit/ner/distill.py); prune cuts FFN neurons, width and depth and recovers the same way
(deploykit/ner/prune.py; vocabulary pruning is refused). export writes the plain graph (logits [batch, seq,
labels]; the classifier-only rewrites that keep position 0 alone are refused when asked for); quantize makes it
dynamic or static INT8 under the same F1 gate (deploykit/ner/quantize.py). bench times the
sentences as text and scores every row by entity F1 (`bench_texts`), beside the standard-recipe row.
"""

from __future__ import annotations

from deploykit.errors import UserError
from deploykit.jobs import ExportJob, Job
from deploykit.kinds.base import Kind
from deploykit.ner.scoring import (
    as_dataset,
    encode,
    parity_texts,
    score_folder,
    scored,
    sentence_metrics,
    tokenizer_for,
    trained_windows,
)

NAME = "token_classification"


def load_task(cfg):
    from deploykit.ner.data import load_tags

    return load_tags(cfg)


def finetune_job(recipe, source: str) -> Job:
    """A token classifier with a fresh head for the task's tags, trained on word-piece windows, scored per word."""
    from transformers import DataCollatorForTokenClassification

    from deploykit.data import fit_max_length
    from deploykit.models import load_classifier
    from deploykit.ner.align import window_stride

    data = recipe.data
    task = load_task(data)
    tokenizer = tokenizer_for(source, recipe.model.trust_remote_code)
    model = load_classifier(source, labels=task.labels, trust_remote_code=recipe.model.trust_remote_code,
                            revision=recipe.model.revision, task=NAME)
    # auto: the 99th percentile of the sentences' word pieces; longer ones become windows
    max_len = fit_max_length(data.max_length, model.config, tokenizer, task)
    stride = window_stride(data.window_stride, max_len, tokenizer)
    train_win = encode(task.train, tokenizer, max_len, data, task.labels)
    val_win = encode(task.validation, tokenizer, max_len, data, task.labels)
    validation = as_dataset(val_win)

    def finish(trainer, trained, merge: bool):
        # before a LoRA merge: the Trainer holds the peft model
        val = scored(trainer, validation, val_win, task.validation, task.labels, "eval")
        test = None
        if task.test is not None:
            test_win = encode(task.test, tokenizer, max_len, data, task.labels)
            test = scored(trainer, as_dataset(test_win), test_win, task.test, task.labels, "test")
        return (trained.merge_and_unload() if merge else trained), val, test

    summary = (f"{len(task.train)} train / {len(task.validation)} validation sentences ({len(train_win)} / "
               f"{len(val_win)} windows), {len(task.labels)} tags, max_length {max_len}, window stride {stride}")
    return Job(model, tokenizer, as_dataset(train_win), validation, DataCollatorForTokenClassification(tokenizer),
               "f1", task.labels, finish, summary, max_len, lora_task="TOKEN_CLS",
               record={"task": NAME, "window_stride": stride},
               compute_metrics=sentence_metrics(val_win, task.validation, task.labels))


def distill_job(recipe, teacher_src: str, parent):
    from deploykit.ner.distill import distill_job as job

    return job(recipe, teacher_src, parent)


def prune_job(recipe, source: str, parent):
    from deploykit.ner.prune import prune_job as job

    return job(recipe, source, parent)


def gate_value(recipe, artifact, task) -> float:
    """Entity F1 of a PyTorch or ONNX artifact folder on `recipe.gate.split`, with the length and window stride it
    was trained with (its manifests'), else the recipe's."""
    if artifact.format not in ("pytorch", "onnx"):
        raise UserError(f"{artifact.path}: a {artifact.format} artifact of data.task {NAME} cannot be scored yet; "
                        "only PyTorch and ONNX folders are")
    max_len, stride = trained_windows(recipe, artifact)
    onnx = artifact.onnx_path if artifact.format == "onnx" else None
    return score_folder(artifact.path, task.split(recipe.gate.split), task.labels, max_len, stride,
                        onnx_path=onnx)[recipe.gate.metric]


def _check_export(recipe) -> None:
    """Refuse the classifier-only last-layer trim when a recipe asks for it: it keeps position 0 alone."""
    cfg = recipe.export
    if "trim_last_layer" in cfg.model_fields_set and cfg.trim_last_layer:
        raise UserError(f"export.trim_last_layer: data.task {NAME} tags every position (the trim keeps only "
                        "position 0, a text classifier's); remove export.trim_last_layer or set it false")
    if cfg.format != "onnx":
        raise UserError(f"export.format {cfg.format}: data.task {NAME} exports to ONNX only here; set export.format onnx")


def export_job(recipe, parent) -> ExportJob:
    """The plain graph (every position; padding-free when asked), logits [batch, seq, labels] checked against
    PyTorch on every real token; the trained length and windows travel with the graph (deploykit.load reads
    them without the parent)."""
    from deploykit.ner.quantize import padding_free
    from deploykit.onnx.export import encoder_export_job

    _check_export(recipe)
    cfg = recipe.export
    max_len, stride = trained_windows(recipe, parent)
    args = {"texts": parity_texts(recipe, cfg.parity_samples), "max_length": max_len, "trim_last_layer": False,
            "remove_padding": padding_free(cfg)}
    return encoder_export_job(parent.path, cfg, args,
                              {"task": NAME, "max_length": max_len,
                               **({"window_stride": stride} if stride is not None else {})},
                              " (per-token logits, parity over every real token)")


def quantize_job(recipe, parent):
    from deploykit.ner.quantize import quantize_job as job

    return job(recipe, parent)


def bench_texts(recipe, task, split_name: str):
    """The split's sentences (words joined by spaces, as a user's text arrives) for timing, and a score of entity F1
    over words on the first n sentences in windows of the artifact's trained length and stride."""
    from deploykit.data import Split
    from deploykit.lineage import trained_stride
    from deploykit.ner.align import window_stride
    from deploykit.ner.scoring import score_with

    tags = task.split(split_name)
    texts = Split([" ".join(words) for words in tags.tokens], None, [0] * len(tags.tokens))

    def score(predict, tokenizer, artifact, max_length: int, batch_size: int, n: int) -> dict:
        stride = trained_stride(artifact, max_length, tokenizer)
        if stride is None:  # a plain folder (the standard-recipe row): the recipe's windows
            stride = window_stride(recipe.data.window_stride, max_length, tokenizer)
        rows = tags.take(list(range(min(n, len(tags.tokens)))))
        m = score_with(predict, tokenizer, rows, task.labels, max_length, stride, batch_size)
        return {"f1": m["f1"], "precision": m["precision"], "recall": m["recall"], "eval_n": m["n"]}

    return texts, score


def _find_file(folder, split: str, explicit: str | None):
    from deploykit.ner.data import _find

    return _find(folder, split, explicit)


def _predictor(artifact, **options):
    from deploykit.ner.predict import EntityPredictor

    return EntityPredictor(artifact, **options)


def check_run(recipe, stages: list[str]) -> None:
    """Refuse a chain asking what this kind's stages do not take, before the first stage trains."""
    if "export" in stages:
        _check_export(recipe)
    if "quantize" in stages:
        from deploykit.quant.encoder_job import check_mode

        check_mode(recipe.quantize)
    if "prune" in stages:
        from deploykit.ner.prune import check_units

        check_units(recipe.prune)


KIND = Kind(name=NAME, metric="f1", load_task=load_task, finetune_job=finetune_job, gate_value=gate_value,
            distill_job=distill_job, prune_job=prune_job, check_run=check_run, predictor=_predictor,
            bench_metrics=(("f1", "entity F1 %"), ("precision", "precision %"), ("recall", "recall %")),
            bench_texts=bench_texts,
            quantize_job=quantize_job, export_job=export_job, find_file=_find_file)
