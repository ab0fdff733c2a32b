"""What a task kind supplies (`Kind`) and what fine-tuning trains for it (`Job`)."""

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


@dataclass(frozen=True)
class Kind:
    """One `data.task`: its data, fine-tuning job, gate score and the stages it runs its own way.

    Attributes:
        name: the `data.task` value.
        metric: the quality figure logs and reports lead with ("accuracy", "exact_match").
        load_task: DataConfig -> the task's splits (deploykit.data.TaskData or a chat task).
        finetune_job: (recipe, model source) -> Job.
        distill_job: (recipe, teacher source, parent artifact or None) -> DistillJob; None: distill refuses the kind.
        prune_job: (recipe, model source, parent artifact or None) -> PruneJob for the encoder pruning engine;
            None: a kind with its own prune runner, or one prune refuses.
        quantize_job: (recipe, parent artifact) -> QuantizeJob for ONNX Runtime INT8 of an encoder; None: a kind
            with its own quantize runner.
        export_job: (recipe, PyTorch parent artifact) -> ExportJob for its ONNX export; None: a kind with its own
            export runner.
        gate_value: (recipe, artifact, task data) -> the gate metric of `artifact` on `recipe.gate.split`.
        runners: stage name -> a function that runs that whole stage for this kind, with the stage's own
            arguments (`bench` takes (recipe, artifacts, names, out_dir)); a stage not here runs its shared body.
            `gguf` is export's `format: gguf`, which only a kind with a GGUF writer has (causal LMs).
        check_run: (recipe, stage names) -> None; raises UserError for a chain this kind cannot gate.
        predictor: (artifact, runtime=, threads=, device=, max_length=) -> what `deploykit.load` gives for a
            folder of this kind; None: the text classifier's `deploykit.predictor.ClassifierPredictor`.
        bench_metrics: the quality columns of a bench report, (row key, column label); the first one leads
            (plots, headline).
        bench_texts: (recipe, task data, split name) -> (the texts bench times, as a deploykit.data.Split, and
            score(predict, tokenizer, artifact, max_length, batch_size, n) -> {metric: value, "eval_n": rows} of the
            first n rows);
            None: the split itself, scored by accuracy (text classification).
    """

    name: str
    metric: str
    load_task: Callable[[Any], Any]
    finetune_job: Callable[[Any, str], Job]
    gate_value: Callable[[Any, Any, Any], float]
    distill_job: Callable[[Any, str, Any], DistillJob] | None = None
    prune_job: Callable[[Any, str, Any], PruneJob] | None = None
    quantize_job: Callable[[Any, Any], QuantizeJob] | None = None
    export_job: Callable[[Any, Any], ExportJob] | None = None
    runners: dict[str, Callable[..., Any]] = field(default_factory=dict)
    check_run: Callable[[Any, list[str]], None] = lambda recipe, stages: None
    predictor: Callable[..., Any] | None = None
    bench_metrics: tuple[tuple[str, str], ...] = (("accuracy", "accuracy %"), ("macro_f1", "macro-F1 %"))
    bench_texts: Callable[[Any, Any, str], tuple[Any, Callable[..., dict]]] | None = None

    def runner(self, stage: str) -> Callable[..., Any] | None:
        """This kind's own runner for `stage`, or None where the stage's shared body serves it."""
        return self.runners.get(stage)
