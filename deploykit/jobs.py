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
    trainer_cls: Any                        # a deploykit.train.kd.DistillTrainer subclass: the kind's KD loss
    labels: list[str] | None
    summary: str                            # the data half of the stage's opening log line
    # trainer -> (student validation metrics, test metrics or None, {"validation": ..., "test": ...} of the teacher)
    finish: Callable[[Any], tuple[dict, dict | None, dict]]
    trainer_args: dict = field(default_factory=dict)  # collator, best_metric, ... for deploykit.train.trainer.build_trainer
    # the Trainer's compute_metrics (the kind's score picks the checkpoint kept), or None for build_trainer's
    compute_metrics: Callable[[Any], dict] | None = None
    cache_teacher_logits: bool = True       # False: per-token logits of every row are too large to cache
    max_length: int | None = None
    record: dict = field(default_factory=dict)  # extra manifest fields (window stride, task)


@dataclass
class PruneJob:
    """What the prune stage needs from a kind: the trained model, how its units are cut and ranked, how the
    model is scored, and what its recovery fine-tune trains on.

    The stage checks the request (`cut.check`) before any work, prunes in steps with recovery between them, checks
    the saved folder against the model, writes the manifest and logs; the kind loads, cuts and scores.
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
    trainer_cls: Any                        # the recovery's KD trainer (a deploykit.train.kd.DistillTrainer)
    # (model, tokenizer, scratch folder, max_length) -> (tokenizer, kept token ids, max logit change); None: refused
    prune_vocab: Callable[[Any, Any, Any, int], tuple[Any, Any, float]] | None = None
    trainer_args: dict = field(default_factory=dict)  # collator, best_metric, ... for build_trainer
    compute_metrics: Callable[[Any], dict] | None = None  # the recovery checkpoint kept follows this score
    # the recovery KD trainer's kind-specific arguments, from the distill section (or its defaults)
    kd_args: Callable[[Any], dict] = lambda distill: {"cache_teacher_logits": True}
    distill_defaults: dict = field(default_factory=dict)  # DistillConfig fields when the recipe has no distill
    # (model folder or hub id) -> a model of the kind with the job's labels, for prune.recovery_teacher: teacher;
    # None: the kind cannot load one
    load_teacher: Callable[[str], Any] | None = None
    # () -> the share of validation rows a training row holds (deploykit/overlap.py), for recovery_teacher: auto;
    # None: the kind does not say
    validation_seen: Callable[[], float] | None = None
    max_length: int | None = None
    record: dict = field(default_factory=dict)  # extra manifest fields (window stride, task)
    # how units are cut: check(model, cfg) (UserError before any work), step(model, cfg, step, importance),
    # shape(model) -> dict, summary() -> the manifest's kept units, recovery_kd(cfg) -> hidden-state KD arguments,
    # start_projection(projection); deploykit/pruning/units.py EncoderCut, deploykit/llm/prune_job.py CausalCut
    cut: Any = field(kw_only=True)


@dataclass
class ExportJob:
    """What the export stage asks a kind for: how its PyTorch parent becomes a checked `model.onnx` (with config and
    tokenizer) in a folder, what the manifest records of it, and the facts of the log line.

    Encoders: deploykit/onnx/export.py `encoder_export_job` (parity on logits, fusions, rewrites); causal LMs:
    deploykit/llm/export_job.py (the decoder with its KV cache, parity on greedy tokens; or, for `format: gguf`,
    one GGUF file read back by llama.cpp's reader and compared with PyTorch).
    """

    write: Callable[[Any], dict]            # (folder) -> the export report (parity, inputs, ...); writes the graph
    metrics: Callable[[dict], dict]         # report -> the manifest's parity metrics (size_bytes is added)
    describe: Callable[[dict], str]         # report -> what the log line says after the graph's path
    record: dict = field(default_factory=dict)  # extra manifest fields (trained length, windows, task)
    file: str = "model.onnx"                # what `write` puts in the folder, named in the log line
    format: str = "onnx"                    # the manifest's format: onnx, or gguf (one file for llama.cpp)


class QuantizeJob:
    """What the quantize stage runs for a kind: the float graph, its INT8 tries and their scores, the keep-float
    ranking, and what the artifact holds. The stage stages the folder, runs deploykit.quant.gate's loop over
    these methods, writes the manifest and logs.

    Encoders: deploykit/quant/encoder_job.py (ONNX Runtime dynamic / static QDQ INT8 of the exported graph);
    causal LMs: deploykit/llm/quantize_job.py (the KV-cache decoder, dynamic INT8 or 4/8-bit MatMulNBits weights).
    """

    metric: str                                # the key of `score`'s result the gate compares
    advice: str = ""                           # what else a failed gate suggests (", or try --mode static")

    def prepare(self, work) -> Any:
        """Export or take the float graph into the scratch folder `work`; returns what the gate scores as float."""
        raise NotImplementedError

    def int8(self, float_nodes: list[str], attempt: int) -> Any:
        """Try number `attempt`: the INT8 model with `float_nodes` kept float (or wider); returns its path."""
        raise NotImplementedError

    def rank(self) -> list[tuple[str, float]]:
        """Nodes most likely to hurt in INT8 first (computed only when the first try fails the gate)."""
        raise NotImplementedError

    def score(self, path) -> dict:
        """The kind's metrics of the model at `path` on the validation split."""
        raise NotImplementedError

    def finish(self, result, out) -> tuple[dict, dict]:
        """Copy the accepted model (`result`, a deploykit.quant.gate.GateResult) with its side files into `out`;
        returns (the manifest's metrics, its other fields)."""
        raise NotImplementedError

    def describe(self, result, metrics: dict) -> str:
        """The stage's closing log line."""
        raise NotImplementedError


@dataclass
class QuantizeScorer:
    """How an encoder's quantize job reads one float graph's folder (config + tokenizer beside the graph): scores,
    the batches that rank nodes by sensitivity and calibrate static INT8, and what the manifest records."""

    # (graph path, "validation" | "test") -> the kind's metrics of that graph on the split
    score: Callable[[Any, str], dict]
    sensitivity_feeds: Callable[[], list[dict]]  # graph-ready batches the keep-float ranking reads
    calibration_feeds: Callable[[], list[dict]] | None  # static INT8's calibration batches; None: static refused
    has_test: bool
    record: dict = field(default_factory=dict)  # extra manifest fields (window stride, task)


@dataclass
class EncoderQuantize:
    """What an encoder kind says about its INT8 (deploykit/quant/encoder_job.py runs it): how a PyTorch parent's
    float graph is exported and how the graphs are scored."""

    max_length: int
    export_args: dict  # export_onnx keyword arguments of a PyTorch parent's float graph (parity texts, rewrites)
    scorer: Callable[[Any, list[str]], QuantizeScorer]  # (folder beside the float graph, graph inputs) -> scorer
    metric: str = "accuracy"  # the kind's gate metric
