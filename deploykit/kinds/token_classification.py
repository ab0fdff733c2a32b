"""Token classification (named-entity recognition): one IOB2 tag per word, scored by entity-level F1 (seqeval).

    # recipe: data: {task: token_classification, path: ../shared/data/conll2003}   (tokens / ner_tags JSONL or CoNLL)
    deploykit finetune --recipe ner.yaml --out runs/ner/finetune
    deploykit run ner.yaml --out runs/ner            # finetune only, gated on data.gate.split's F1

finetune trains an AutoModelForTokenClassification on word-piece windows (deploykit/ner/align.py: a word's first
piece carries its tag, a sentence longer than max_length becomes overlapping windows, never truncated). Every
evaluation puts the windows back one tag per word and scores whole sentences (deploykit/ner/metric.py), so early
stopping, the checkpoint kept, the manifest and the gate all follow entity F1. The stages after finetune do not
take this kind yet: each refuses in one line, and `deploykit run` refuses such a chain before anything trains.
"""

from __future__ import annotations

from deploykit.errors import UserError
from deploykit.kinds.base import Job, Kind

NAME = "token_classification"
SUPPORTED = ("finetune",)  # the stages that run this kind today
UNSUPPORTED = ("distill", "prune", "quantize", "export", "bench")


def load_task(cfg):
    from deploykit.ner.data import load_tags

    return load_tags(cfg)


def _tokenizer(source: str, trust_remote_code: bool):
    """The model's fast tokenizer; a byte-level BPE one (RoBERTa) with a prefix space before every word, as it
    sees words inside a sentence (pre-split words would otherwise be encoded as if each started the text)."""
    from deploykit.models import load_tokenizer

    tokenizer = load_tokenizer(source, trust_remote_code)
    pre = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    if type(pre).__name__ == "ByteLevel" and not getattr(tokenizer, "add_prefix_space", True):
        tokenizer = load_tokenizer(source, trust_remote_code, add_prefix_space=True)
    tokenizer.padding_side = "right"  # words_from_windows reads piece positions from the left
    return tokenizer


def _windows(split, tokenizer, max_length: int, data, labels: list[str]):
    from deploykit.ner.align import encode_words

    return encode_words(split.tokens, tokenizer, max_length, data.window_stride, split.tags, labels,
                        data.label_all_tokens)


def _dataset(windows):
    import datasets

    return datasets.Dataset.from_list(windows.rows())


def sentence_metrics(windows, split, labels: list[str]):
    """A Trainer `compute_metrics` scoring the windows of `split` (in dataset order) as whole sentences: entity
    F1, precision and recall over words, and F1 per type as `f1_<TYPE>` (Trainer metrics are flat numbers)."""
    from deploykit.ner.metric import window_scores

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        scores = window_scores(logits, windows, split.tags, labels)
        flat = {f"f1_{name}": value for name, value in scores.pop("per_type").items()}
        scores["sentences"] = scores.pop("n")
        return {**scores, **flat}

    return compute


def _scored(trainer, dataset, windows, split, labels: list[str], prefix: str) -> dict:
    """{"f1", "precision", "recall", "per_type", "entities", "sentences", "loss", ...} of `split` through the
    Trainer (the same batching and float32 forward as its per-epoch evaluation)."""
    kept = trainer.compute_metrics
    trainer.compute_metrics = sentence_metrics(windows, split, labels)
    try:
        out = trainer.evaluate(dataset, metric_key_prefix=prefix)
    finally:
        trainer.compute_metrics = kept
    out = {k.removeprefix(f"{prefix}_"): v for k, v in out.items()}
    per_type = {k.removeprefix("f1_"): out.pop(k) for k in list(out) if k.startswith("f1_")}
    return {**out, "per_type": per_type, "windows": len(windows)}


def finetune_job(recipe, source: str) -> Job:
    """A token classifier with a fresh head for the task's tags, trained on word-piece windows, scored per word."""
    from transformers import DataCollatorForTokenClassification

    from deploykit.data import fit_max_length
    from deploykit.models import load_classifier
    from deploykit.ner.align import window_stride

    data = recipe.data
    task = load_task(data)
    tokenizer = _tokenizer(source, recipe.model.trust_remote_code)
    model = load_classifier(source, labels=task.labels, trust_remote_code=recipe.model.trust_remote_code,
                            revision=recipe.model.revision, task=NAME)
    # auto: the 99th percentile of the sentences' word pieces; longer ones become windows
    max_len = fit_max_length(data.max_length, model.config, tokenizer, task)
    stride = window_stride(data.window_stride, max_len, tokenizer)
    train_win = _windows(task.train, tokenizer, max_len, data, task.labels)
    val_win = _windows(task.validation, tokenizer, max_len, data, task.labels)
    validation = _dataset(val_win)

    def finish(trainer, trained, merge: bool):
        # before a LoRA merge: the Trainer holds the peft model
        val = _scored(trainer, validation, val_win, task.validation, task.labels, "eval")
        test = None
        if task.test is not None:
            test_win = _windows(task.test, tokenizer, max_len, data, task.labels)
            test = _scored(trainer, _dataset(test_win), test_win, task.test, task.labels, "test")
        return (trained.merge_and_unload() if merge else trained), val, test

    summary = (f"{len(task.train)} train / {len(task.validation)} validation sentences ({len(train_win)} / "
               f"{len(val_win)} windows), {len(task.labels)} tags, max_length {max_len}, window stride {stride}")
    return Job(model, tokenizer, _dataset(train_win), validation, DataCollatorForTokenClassification(tokenizer),
               "f1", task.labels, finish, summary, max_len, lora_task="TOKEN_CLS",
               record={"task": NAME, "window_stride": stride},
               compute_metrics=sentence_metrics(val_win, task.validation, task.labels))


def score_folder(folder, split, labels: list[str], max_length: int, stride: int, batch_size: int = 32) -> dict:
    """`entity_scores` of the PyTorch token classifier in `folder` on `split`'s sentences, in windows."""
    import numpy as np
    import torch
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

    from deploykit.models import load_tokenizer
    from deploykit.ner.align import encode_words
    from deploykit.ner.metric import window_scores

    tokenizer = load_tokenizer(str(folder))
    tokenizer.padding_side = "right"  # words_from_windows reads piece positions from the left
    model = AutoModelForTokenClassification.from_pretrained(folder, use_safetensors=True).eval()
    tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if tags != list(labels):
        raise UserError(f"{folder}: the model's tags ({', '.join(tags)}) are not the data's ({', '.join(labels)}); "
                        "give data.label_names in the model's order")
    windows = encode_words(split.tokens, tokenizer, max_length, stride)
    rows, collate = windows.rows(), DataCollatorForTokenClassification(tokenizer)
    logits = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            batch = collate(rows[i:i + batch_size])
            logits += list(model(**batch).logits.float().numpy())  # one [seq, tags] array per window
    return window_scores([np.asarray(x) for x in logits], windows, split.tags, labels)


def gate_value(recipe, artifact, task) -> float:
    """Entity F1 of a PyTorch artifact folder on `recipe.gate.split`, with the length and window stride it was
    trained with (its manifest's), else the recipe's."""
    from transformers import AutoConfig

    from deploykit.lineage import trained_length, trained_stride
    from deploykit.models import load_tokenizer
    from deploykit.ner.align import window_stride

    if artifact.format != "pytorch":
        raise UserError(f"{artifact.path}: a {artifact.format} artifact of data.task {NAME} cannot be scored yet; "
                        "only PyTorch folders (finetune's output) are")
    tokenizer = load_tokenizer(str(artifact.path))
    max_len = trained_length(artifact, AutoConfig.from_pretrained(artifact.path), tokenizer, None)
    stride = trained_stride(artifact, max_len, tokenizer)
    if stride is None:
        stride = window_stride(recipe.data.window_stride, max_len, tokenizer)
    return score_folder(artifact.path, task.split(recipe.gate.split), task.labels, max_len, stride)[recipe.gate.metric]


def _refusal(stage: str):
    def refuse(*args, **kwargs):
        raise UserError(f"{stage}: data.task {NAME} is not supported by this stage yet; {', '.join(SUPPORTED)} is "
                        "(gated on entity F1; its folder loads with AutoModelForTokenClassification.from_pretrained)")

    return refuse


def check_run(recipe, stages: list[str]) -> None:
    """Refuse a chain with a stage this kind does not run yet, before the first stage trains."""
    for stage in stages:
        if stage not in SUPPORTED:
            _refusal(stage)()


KIND = Kind(name=NAME, metric="f1", load_task=load_task, finetune_job=finetune_job, gate_value=gate_value,
            check_run=check_run, runners={stage: _refusal(stage) for stage in UNSUPPORTED})
