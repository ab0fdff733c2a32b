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


@dataclass(frozen=True)
class Kind:
    """One `data.task`: its data, fine-tuning job, gate score and the stages it runs its own way.

    Attributes:
        name: the `data.task` value.
        metric: the quality figure logs and reports lead with ("accuracy", "exact_match").
        load_task: DataConfig -> the task's splits (deploykit.data.TaskData or a chat task).
        finetune_job: (recipe, model source) -> Job.
        gate_value: (recipe, artifact, task data) -> the gate metric of `artifact` on `recipe.gate.split`.
        runners: stage name -> a function that runs that whole stage for this kind, with the stage's own
            arguments (`bench` takes (recipe, artifacts, names, out_dir)); a stage not here runs its shared body.
            `gguf` is export's `format: gguf`, which only a kind with a GGUF writer has (causal LMs).
        check_run: (recipe, stage names) -> None; raises UserError for a chain this kind cannot gate.
        predictor: (artifact, runtime=, threads=, device=, max_length=) -> what `deploykit.load` gives for a
            folder of this kind; None: the text classifier's `deploykit.predictor.ClassifierPredictor`.
    """

    name: str
    metric: str
    load_task: Callable[[Any], Any]
    finetune_job: Callable[[Any, str], Job]
    gate_value: Callable[[Any, Any, Any], float]
    runners: dict[str, Callable[..., Any]] = field(default_factory=dict)
    check_run: Callable[[Any, list[str]], None] = lambda recipe, stages: None
    predictor: Callable[..., Any] | None = None

    def runner(self, stage: str) -> Callable[..., Any] | None:
        """This kind's own runner for `stage`, or None where the stage's shared body serves it."""
        return self.runners.get(stage)
