"""Token classification (named-entity recognition): one IOB2 tag per word, scored by entity-level F1 (seqeval).

    # recipe: data: {task: token_classification, path: ../shared/data/conll2003}   (tokens / ner_tags JSONL or CoNLL)
    deploykit finetune --recipe ner.yaml --out runs/ner/finetune
    deploykit export --from runs/ner/finetune --out runs/ner/export     # per-token logits, checked on every token
    deploykit quantize --from runs/ner/finetune --recipe ner.yaml --out runs/ner/quantize   # dynamic INT8
    deploykit run ner.yaml --out runs/ner            # finetune (+ quantize, export), each gated on data.gate.split's F1
    deploykit.load("runs/ner/export")("Peter Blackburn flew to Brussels")   # entity groups (deploykit/ner/predict.py)

finetune trains an AutoModelForTokenClassification on word-piece windows (deploykit/ner/align.py: a word's first
piece carries its tag, a sentence longer than max_length becomes overlapping windows, never truncated). Every
evaluation puts the windows back one tag per word and scores whole sentences (deploykit/ner/metric.py), so early
stopping, the checkpoint kept, the manifest and the gate all follow entity F1; the gate scores ONNX folders the
same way. export writes the plain graph (logits [batch, seq, labels]; the classifier-only rewrites that keep
position 0 alone are refused when asked for); quantize makes it dynamic INT8 under the same F1 gate
(deploykit/ner/quantize.py; static INT8 is refused). distill, prune and bench do not take this kind yet: each
refuses in one line, and `deploykit run` refuses such a chain before anything trains.
"""

from __future__ import annotations

from deploykit.errors import UserError
from deploykit.kinds.base import Job, Kind

NAME = "token_classification"
SUPPORTED = ("finetune", "quantize", "export")  # the stages that run this kind today
UNSUPPORTED = ("distill", "prune", "bench")


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


def score_folder(folder, split, labels: list[str], max_length: int, stride: int, batch_size: int = 32,
                 onnx_path=None) -> dict:
    """`entity_scores` of the token classifier in `folder` (PyTorch, or the ONNX graph `onnx_path` beside its
    config and tokenizer) on `split`'s sentences, in windows."""
    import numpy as np
    from transformers import AutoConfig, DataCollatorForTokenClassification

    from deploykit.evaluate import eval_batch_size, ort_predictor, ort_session, torch_predictor
    from deploykit.models import load_tokenizer
    from deploykit.ner.align import encode_words
    from deploykit.ner.metric import window_scores

    tokenizer = load_tokenizer(str(folder))
    tokenizer.padding_side = "right"  # words_from_windows reads piece positions from the left
    config = AutoConfig.from_pretrained(folder)
    tags = [config.id2label[i] for i in range(config.num_labels)]
    if tags != list(labels):
        raise UserError(f"{folder}: the model's tags ({', '.join(tags)}) are not the data's ({', '.join(labels)}); "
                        "give data.label_names in the model's order")
    if onnx_path is not None:
        predict = ort_predictor(ort_session(onnx_path))
        batch_size = min(batch_size, eval_batch_size(onnx_path))  # dynamic INT8: one window at a time
    else:
        from transformers import AutoModelForTokenClassification

        predict = torch_predictor(AutoModelForTokenClassification.from_pretrained(folder, use_safetensors=True))
    windows = encode_words(split.tokens, tokenizer, max_length, stride)
    rows, collate = windows.rows(), DataCollatorForTokenClassification(tokenizer, return_tensors="np")
    logits = []
    for i in range(0, len(rows), batch_size):
        logits += list(predict(dict(collate(rows[i:i + batch_size]))))  # one [seq, tags] array per window
    return window_scores([np.asarray(x) for x in logits], windows, split.tags, labels)


def trained_windows(recipe, artifact) -> tuple[int, int | None]:
    """(max_length, window stride) the artifact was trained with (its manifests'); the stride falls back to the
    recipe's data.window_stride, or None without a data section (the predictor's "auto")."""
    from transformers import AutoConfig

    from deploykit.lineage import trained_length, trained_stride
    from deploykit.models import load_tokenizer
    from deploykit.ner.align import window_stride

    tokenizer = load_tokenizer(str(artifact.path))
    max_len = trained_length(artifact, AutoConfig.from_pretrained(artifact.path), tokenizer, None)
    stride = trained_stride(artifact, max_len, tokenizer)
    if stride is None and recipe.data is not None:
        stride = window_stride(recipe.data.window_stride, max_len, tokenizer)
    return max_len, stride


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
    """Refuse the classifier-only export rewrites when a recipe asks for them: both read position 0 alone."""
    cfg = recipe.export
    asked = [k for k in ("trim_last_layer", "remove_padding") if k in cfg.model_fields_set and getattr(cfg, k)]
    if asked:
        raise UserError(f"export.{asked[0]}: data.task {NAME} exports every position with its padding (the "
                        f"rewrite keeps only position 0, a text classifier's); remove export.{asked[0]} or set it false")
    if cfg.format != "onnx":
        raise UserError(f"export.format {cfg.format}: data.task {NAME} exports to ONNX only here; set export.format onnx")


def _parity_texts(recipe, n: int) -> list[str] | None:
    """Up to `n` validation sentences, words joined by spaces (None without a data section: built-in texts)."""
    if recipe.data is None:
        return None
    return [" ".join(words) for words in load_task(recipe.data).validation.tokens[:n]]


def export(recipe, parent, out_dir):
    """`deploykit export` of a PyTorch token classifier: the plain graph (every position, padding kept), logits
    [batch, seq, labels] checked against PyTorch on every real token, fused where the architecture allows."""
    from pathlib import Path

    from deploykit.artifact import Artifact, staging, write_manifest
    from deploykit.console import log
    from deploykit.onnx.export import export_onnx
    from deploykit.onnx.ops import file_size

    _check_export(recipe)
    cfg = recipe.export
    max_len, stride = trained_windows(recipe, parent)
    with staging(out_dir) as tmp:
        report = export_onnx(parent.path, None, tmp, opset=cfg.opset, optimize=cfg.optimize, atol=cfg.atol,
                             texts=_parity_texts(recipe, cfg.parity_samples), max_length=max_len)
        metrics = {"parity_max_abs_diff": max(report["parity"].values()), "size_bytes": file_size(tmp / "model.onnx")}
        # the trained length and windows travel with the graph: deploykit.load reads them without the parent
        manifest = write_manifest(tmp, stage="export", format="onnx", parent=parent, task=NAME, max_length=max_len,
                                  config=recipe.model_dump(include={"export"}), metrics=metrics,
                                  **({"window_stride": stride} if stride is not None else {}), **report)
    log(f"export: {out_dir}/model.onnx (per-token logits), parity {metrics['parity_max_abs_diff']:.1e} over every "
        f"token, fused {report['fused_ops'] or 'nothing'}")
    return Artifact(Path(out_dir).resolve(), manifest)


def quantize(recipe, parent, out_dir):
    """`deploykit quantize` (dynamic INT8) of a token classifier, gated on entity F1 (deploykit/ner/quantize.py)."""
    from deploykit.ner.quantize import run

    task = load_task(recipe.data)
    max_len, stride = trained_windows(recipe, parent)

    def score(folder, onnx_path, split) -> dict:
        return score_folder(folder, split, task.labels, max_len, stride, onnx_path=onnx_path)

    n = recipe.export.parity_samples if recipe.export else 64
    return run(recipe, parent, out_dir, score, task, max_len, stride, _parity_texts(recipe, n))


def _predictor(artifact, **options):
    from deploykit.ner.predict import EntityPredictor

    return EntityPredictor(artifact, **options)


def _refusal(stage: str):
    def refuse(*args, **kwargs):
        raise UserError(f"{stage}: data.task {NAME} is not supported by this stage yet; {', '.join(SUPPORTED)} "
                        "are (gated on entity F1; deploykit.load serves their folders)")

    return refuse


def check_run(recipe, stages: list[str]) -> None:
    """Refuse a chain with a stage this kind does not run yet, before the first stage trains."""
    for stage in stages:
        if stage not in SUPPORTED:
            _refusal(stage)()
    if "export" in stages:
        _check_export(recipe)
    if "quantize" in stages:
        from deploykit.ner.quantize import check_mode

        check_mode(recipe.quantize)


KIND = Kind(name=NAME, metric="f1", load_task=load_task, finetune_job=finetune_job, gate_value=gate_value,
            check_run=check_run, predictor=_predictor,
            runners={"export": export, "quantize": quantize, **{stage: _refusal(stage) for stage in UNSUPPORTED}})
