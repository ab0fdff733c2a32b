"""What a task kind hands each stage (deploykit/kinds/): the models, data, trainer and scores of one stage's work.

    job = kind_of(recipe.data.task).distill_job(recipe, teacher_source, parent)   # a DistillJob
    trainer = build_trainer(job.student, cfg, work, job.tokenizer, job.train_ds, job.eval_ds, ...)

Plain dataclasses, imported by the stages that read them and by the kinds' engines that build them (deploykit/ner/,
deploykit/llm/, deploykit/pruning/text_job.py, deploykit/quant/text_job.py), so both sides import downwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Job:
    """What the finetune stage trains and how it scores the result, for one kind."""

    model: Any
    tokenizer: Any
    train_ds: Any
    eval_ds: Any
    collator: Any
    best_metric: str                       # Trainer's metric_for_best_model (without eval_)
    labels: list[str] | None
    # (trainer, trained model, LoRA merged?) -> (model to save, validation metrics, test metrics or None)
    finish: Callable[[Any, Any, bool], tuple[Any, dict, dict | None]]
    summary: str
    max_length: int | None = None            # the resolved data.max_length the model was trained with
    lora_task: str = "SEQ_CLS"               # peft TaskType: SEQ_CLS also trains and saves a fresh head
    record: dict = field(default_factory=dict)  # extra manifest fields (the windows a classifier scores)
    # the Trainer's compute_metrics for eval_ds (EvalPrediction -> {best_metric: ...}), or None for the
    # Trainer's default; early stopping and the checkpoint kept follow what it scores (per text, per sentence)
    compute_metrics: Callable[[Any], dict] | None = None


@dataclass
class DistillJob:
    """What the distill stage trains for one kind: a frozen teacher, a student, their data and KD trainer.

    The stage seeds, builds the Trainer (`trainer_cls` with the recipe's KD weights and `trainer_args`), trains,
    saves the student folder with its manifest and logs; the kind loads the models and data and scores them.
    """

    teacher: Any
    student: Any
    tokenizer: Any
    kept: list[int] | None                 # teacher layers the student was cut from (None: a separate student)
    layer_map: Any                          # student layer i learns from teacher layer layer_map[i]; None: uniform
    train_ds: Any
    eval_ds: Any
    trainer_cls: Any                        # a deploykit.kd.DistillTrainer subclass: the kind's KD loss
    labels: list[str] | None
    summary: str                            # the data half of the stage's opening log line
    # trainer -> (student validation metrics, test metrics or None, {"validation": ..., "test": ...} of the teacher)
    finish: Callable[[Any], tuple[dict, dict | None, dict]]
    trainer_args: dict = field(default_factory=dict)  # collator, best_metric, ... for deploykit.training.build_trainer
    # the Trainer's compute_metrics (the kind's score picks the checkpoint kept), or None for build_trainer's
    compute_metrics: Callable[[Any], dict] | None = None
    cache_teacher_logits: bool = True       # False: per-token logits of every row are too large to cache
    max_length: int | None = None
    record: dict = field(default_factory=dict)  # extra manifest fields (window stride, task)


@dataclass
class PruneJob:
    """What the prune stage needs from an encoder kind: the trained model, batches that rank its units, how the
    model is scored, and what its recovery fine-tune trains on.

    The stage plans the cut (deploykit/pruning/units.py), prunes in steps with recovery between them, checks
    the saved folder against the model, writes the manifest and logs; the kind loads and scores.
    """

    model: Any
    tokenizer: Any
    labels: list[str] | None
    importance: list[dict]                  # tensor batches with labels: their loss gradients rank the units
    # (model, tokenizer) -> tensor batches on which the reloaded folder must give the model's logits
    check_batches: Callable[[Any, Any], list[dict]]
    # (model, tokenizer, "validation" | "test") -> the kind's metrics on that split, None where there is none
    evaluate: Callable[[Any, Any, str], dict | None]
    recovery_data: Callable[[], tuple[Any, Any]]  # (train, validation) datasets of the recovery fine-tune
    trainer_cls: Any                        # the recovery's KD trainer (a deploykit.kd.DistillTrainer)
    # (model, tokenizer, scratch folder, max_length) -> (tokenizer, kept token ids, max logit change); None: refused
    prune_vocab: Callable[[Any, Any, Any, int], tuple[Any, Any, float]] | None = None
    trainer_args: dict = field(default_factory=dict)  # collator, best_metric, ... for build_trainer
    compute_metrics: Callable[[Any], dict] | None = None  # the recovery checkpoint kept follows this score
    cache_teacher_logits: bool = True
    max_length: int | None = None
    record: dict = field(default_factory=dict)  # extra manifest fields (window stride, task)


@dataclass
class ExportJob:
    """What the export stage asks a kind for: export_onnx's keyword arguments (parity texts, max_length,
    rewrites), the manifest fields the graph carries (trained length, windows, task) and a log note."""

    args: dict
    record: dict = field(default_factory=dict)
    note: str = ""                          # what the log line says of the graph ("per-token logits")


@dataclass
class QuantizeScorer:
    """How the quantize stage reads one float graph's folder (config + tokenizer beside the graph): scores, the
    batches that rank nodes by sensitivity and calibrate static INT8, and what the manifest records."""

    # (graph path, "validation" | "test") -> the kind's metrics of that graph on the split
    score: Callable[[Any, str], dict]
    sensitivity_feeds: Callable[[], list[dict]]  # graph-ready batches the keep-float ranking reads
    calibration_feeds: Callable[[], list[dict]] | None  # static INT8's calibration batches; None: static refused
    has_test: bool
    record: dict = field(default_factory=dict)  # extra manifest fields (window stride, task)


@dataclass
class QuantizeJob:
    """What the quantize stage needs from a kind: how a PyTorch parent's float graph is exported and how the
    graphs are scored. The stage exports (or takes the ONNX parent), quantizes, gates, writes and logs."""

    max_length: int
    export_args: dict  # export_onnx keyword arguments of a PyTorch parent's float graph (parity texts, rewrites)
    scorer: Callable[[Any, list[str]], QuantizeScorer]  # (folder beside the float graph, graph inputs) -> scorer
