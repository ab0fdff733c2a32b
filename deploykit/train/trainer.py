"""The HF Trainer setup shared by every stage that trains (finetune, distill, prune recovery).

One place decides the TrainingArguments (per-epoch evaluation, best checkpoint, early stopping,
bf16 where the CPU/GPU does it natively, DDP on CPU with gloo), so `accelerate launch` and
`torchrun` work unchanged for all of them.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from deploykit.architectures import layer_count_field, layer_paths
from deploykit.config import TrainConfig
from deploykit.console import quiet
from deploykit.hardware import bf16_training_pays
from deploykit.train.autocast import float32_forward, is_autocast_wrapped, release  # noqa: F401 (re-exported)
from deploykit.train.batches import length_grouping, shuffled_length_batches
from deploykit.train.callbacks import EpochLog, Stopping, early_stopping, no_mtime_warning
from deploykit.train.heap import kept_heap

# `.layer.3.` / `.layers.3.`: the last names of the architecture table's layer paths, then the index
_LAYER = re.compile(rf"\.(?:{'|'.join(sorted({p.rsplit('.', 1)[-1] for p in layer_paths()}))})\.(\d+)\.")


def layer_index(param_name: str) -> int | None:
    """`bert.encoder.layer.3.attention...` -> 3 (the naming of every entry of deploykit.architectures)."""
    m = _LAYER.search(param_name)
    return int(m.group(1)) if m else None


def num_layers(config) -> int:
    n = getattr(config, layer_count_field(config), None)
    if not n:
        raise ValueError(f"cannot tell the layer count of a {type(config).__name__}")
    return int(n)


def world_info() -> tuple[int, int]:
    """(rank, world size) as torchrun / accelerate set them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def in_modules(param_name: str, modules: frozenset[str] | set[str]) -> bool:
    """`classifier.weight`, `base_model.model.classifier.modules_to_save.default.weight` (LoRA) -> in {"classifier"}."""
    dotted = f".{param_name}."
    return any(f".{m}." in dotted for m in modules)


def llrd_groups(model, lr: float, decay: float, weight_decay: float, head_lr: float | None = None,
                head: frozenset[str] = frozenset()) -> list[dict]:
    """Layer-wise LR decay: layer i gets lr * decay**(L - i), embeddings decay**(L + 1), the head lr.

    `head` names the modules of a freshly initialised task head (`models.new_head_modules`); with `head_lr`
    they train at that rate instead, as a randomly initialised linear layer needs a larger step than the
    pretrained body it sits on (ULMFiT's discriminative rates, Howard & Ruder 2018).
    """
    n = num_layers(model.config) if decay < 1.0 else 0
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        i = layer_index(name)
        if head_lr is not None and in_modules(name, head):
            g_lr = head_lr
        elif decay >= 1.0:
            g_lr = lr
        elif i is not None:
            g_lr = lr * decay ** (n - i)
        elif "embed" in name:
            g_lr = lr * decay ** (n + 1)
        else:
            g_lr = lr
        wd = 0.0 if p.ndim == 1 else weight_decay  # no decay on biases and LayerNorm weights
        groups.setdefault((g_lr, wd), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def head_rate(setting: float | str | None, lr: float) -> float | None:
    """`finetune.head_learning_rate` as a number: auto is 10x the body's rate, at most 1e-3."""
    if setting == "auto":
        return max(lr, min(10 * lr, 1e-3))
    return None if setting is None else float(setting)


def compute_metrics(pred) -> dict[str, float]:
    from deploykit.evaluate import metrics

    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    out = metrics(np.asarray(logits), pred.label_ids)
    out.pop("n")
    return out


def train_on_gpu() -> bool:
    """Train on CUDA when there is a GPU for every local rank; more ranks than GPUs train on CPU (gloo).

    NCCL refuses two ranks on one GPU, and a rank whose LOCAL_RANK has no device cannot start.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_info()[1]))
    return local_world <= torch.cuda.device_count()


def use_bf16(setting: str) -> bool:
    """bf16 autocast for training: "on" anywhere (emulated where not native), "auto" only where it is faster."""
    return setting == "on" or (setting == "auto" and bf16_training_pays("cuda" if train_on_gpu() else "cpu"))


# on large data evaluate at least this often (optimizer steps), so that patience costs a fraction of an
# epoch (SST-2's 67k rows are 2,100 steps of 32) rather than several epochs
EVAL_EVERY = 500


def steps_per_epoch(cfg: TrainConfig, n_rows: int) -> int:
    """Optimizer steps in one epoch of `n_rows` rows (the Trainer's count: per-rank batches // accumulation)."""
    batches = math.ceil(n_rows / (cfg.batch_size * world_info()[1]))
    return max(1, batches // cfg.gradient_accumulation_steps)


def eval_interval(cfg: TrainConfig, n_rows: int) -> int:
    """Optimizer steps between evaluations: `cfg.eval_steps`, else one epoch cut into equal parts of at
    most EVAL_EVERY steps."""
    if cfg.eval_steps:
        return cfg.eval_steps
    per_epoch = steps_per_epoch(cfg, n_rows)
    return math.ceil(per_epoch / math.ceil(per_epoch / EVAL_EVERY))


# transformers' LengthGroupedSampler sorts groups of 50 batches by length (deploykit/train/batches.py); on fewer rows than a few groups
# every epoch would see the same length-sorted batches in the same order, which a tiny task fails to learn
GROUP_BATCHES, MIN_GROUPS = 50, 4


def grouped(cfg: TrainConfig, n_rows: int | None) -> bool:
    """Whether training batches group rows of similar length (`group_by_length`, auto by data size)."""
    if cfg.group_by_length != "auto":
        return bool(cfg.group_by_length)
    return bool(n_rows) and n_rows >= MIN_GROUPS * GROUP_BATCHES * cfg.batch_size * world_info()[1]


# AdamW as one fused kernel per step (same update rule as the for-loop default, which transformers' "adamw_torch"
# picks on CPU): the loop spent ~30% of a CPU training step on the dense update of the 30,522 x 384 word-piece table
# (bench/optimizer_step.py). Every optimizer deploykit builds reads it from the TrainingArguments.
OPTIM = "adamw_torch_fused"


def training_args(cfg: TrainConfig, work: Path, has_eval: bool = True, n_rows: int | None = None, **overrides):
    """TrainingArguments for `cfg`; `n_rows` (training rows) sets the evaluation interval (else per epoch)."""
    from transformers import TrainingArguments

    on_gpu = train_on_gpu()
    interval = eval_interval(cfg, n_rows) if n_rows else None
    steps = dict(eval_strategy="steps" if has_eval else "no", eval_steps=interval, save_strategy="steps",
                 save_steps=interval) if interval else dict(eval_strategy="epoch" if has_eval else "no",
                                                            save_strategy="epoch")
    kwargs = dict(
        output_dir=str(work),
        num_train_epochs=cfg.max_epochs if cfg.epochs == "auto" else cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.scheduler, warmup_steps=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
        optim=OPTIM, bf16=use_bf16(cfg.bf16), seed=cfg.seed, data_seed=cfg.seed,
        **steps, load_best_model_at_end=has_eval, metric_for_best_model="accuracy", greater_is_better=True,
        save_total_limit=2, save_only_model=False, logging_steps=cfg.logging_steps,
        report_to=["tensorboard"] if cfg.tensorboard else [],
        disable_tqdm=quiet(), dataloader_num_workers=0,
        # without use_cpu every torchrun rank silently trains its own copy on a CPU machine
        use_cpu=not on_gpu,
        ddp_backend="gloo" if world_info()[1] > 1 and not on_gpu else None,
    )
    if grouped(cfg, n_rows):
        kwargs.update(length_grouping())
    kwargs.update(overrides)
    if cfg.tensorboard:
        # transformers 5 reads the TensorBoard folder from the environment only; the stage copies it out
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(work / "tensorboard")
    return TrainingArguments(**kwargs)


def _float32_results(base):
    """`base` Trainer whose evaluations run in float32, in dataset order, and whose `train()` hands back an
    unwrapped model.

    bf16 changes only the training steps: the per-epoch evaluation that picks the best checkpoint, the
    scores a stage writes into its manifest and everything done with the model afterwards see the same
    float32 computation as the saved artifact, on every CPU.
    """

    class Float32Results(base):
        def _get_eval_sampler(self, eval_dataset):
            # transformers 5 batches evaluation by length too when training does (train_sampling_strategy
            # group_by_length): predictions then come back permuted, and every score that maps them back to
            # rows by position (a text's windows pooled, a sentence's tagged words) would pair the wrong rows
            from torch.utils.data import SequentialSampler

            if eval_dataset is None or not hasattr(eval_dataset, "__len__"):
                return None
            return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

        def evaluate(self, *args, **kwargs):
            with float32_forward(self.model):
                return super().evaluate(*args, **kwargs)

        def predict(self, *args, **kwargs):
            with float32_forward(self.model):
                return super().predict(*args, **kwargs)

        def train(self, *args, **kwargs):
            try:
                with kept_heap():  # no page faults for the step's large tensors (deploykit/train/heap.py)
                    return super().train(*args, **kwargs)
            finally:
                self.model = release(self.model)

        def _run_epoch(self, *args, **kwargs):
            # resumed from the checkpoint saved as training stopped (callbacks.stopped_at_checkpoint): the
            # uninterrupted run trained no further step, the Trainer would run one before it looks
            if self.control.should_training_stop:
                return None
            return super()._run_epoch(*args, **kwargs)

    Float32Results.__name__ = Float32Results.__qualname__ = base.__name__
    return Float32Results


def _trainer_class(base, layer_decay: float, head_lr: float | None = None, head: frozenset[str] = frozenset()):
    """`base` with per-parameter-group learning rates (layer-wise decay, a new head's own rate) when asked."""
    if layer_decay >= 1.0 and (head_lr is None or not head):
        return base

    class GroupedLRTrainer(base):
        def create_optimizer(self, model=None):
            if self.optimizer is None:
                target = model if model is not None else self.model
                groups = llrd_groups(target, self.args.learning_rate, layer_decay, self.args.weight_decay,
                                     head_lr=head_lr, head=head)
                # the optimizer `optim` names (fused AdamW, its betas and eps), with our per-group rates
                optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, target)
                self.optimizer = optimizer_cls(groups, **kwargs)
            return self.optimizer

    return GroupedLRTrainer


def build_trainer(model, cfg: TrainConfig, work: Path, tokenizer, train_ds, eval_ds, *, layer_decay: float = 1.0,
                  stage: str = "finetune", trainer_cls=None, collator=None, best_metric: str = "accuracy",
                  head_lr: float | None = None, head: frozenset[str] = frozenset(), **trainer_kwargs):
    """A Trainer with deploykit's defaults; `trainer_cls` lets distillation swap the loss.

    `best_metric="loss"` (causal LMs) or `cfg.stop_on: loss` (distillation's default) keeps the checkpoint with
    the lowest validation loss and stops on it; otherwise the one best on `best_metric`. Evaluation runs every
    `eval_interval` steps; with `epochs: auto` training runs until early stopping, `max_epochs` or `max_minutes`, and the trainer's `stopping.reason` says which.
    `head`/`head_lr`: modules of a freshly initialised head and their learning rate.

    Raises:
        UserError: `epochs: auto` without validation rows to stop on.
    """
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

    from deploykit.errors import UserError

    has_eval = eval_ds is not None
    if cfg.epochs == "auto" and not has_eval:
        raise UserError(f"{stage}.epochs: auto stops on the validation metric, but there are no validation rows; "
                        f"give {stage}.epochs a number")
    # stop_on loss (distill's default) still scores every evaluation with the task's metric, for the log
    scored = best_metric != "loss"
    if cfg.stop_on == "loss":
        best_metric = "loss"
    by_loss = best_metric == "loss"
    try:
        n_rows = len(train_ds)
    except TypeError:  # an iterable dataset: evaluate once per epoch
        n_rows = None
    args = training_args(cfg, Path(work), has_eval=has_eval, n_rows=n_rows, metric_for_best_model=best_metric,
                         greater_is_better=not by_loss)
    callbacks = [EpochLog(stage).callback]
    early = None
    if cfg.early_stopping_patience and has_eval:
        early = early_stopping(EarlyStoppingCallback, cfg.min_epochs, cfg.cooldown, stage)(
            early_stopping_patience=cfg.early_stopping_patience)
        callbacks.append(early)
    stopping = Stopping(stage, cfg, early, best_metric, has_eval)
    callbacks.append(stopping.callback)
    cls = _trainer_class(trainer_cls or Trainer, layer_decay, head_lr, head)
    cls = _float32_results(shuffled_length_batches(cls) if cfg.batch_order == "random" else cls)
    trainer = cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
               data_collator=collator or DataCollatorWithPadding(tokenizer),
               compute_metrics=compute_metrics if scored else None, callbacks=callbacks, **trainer_kwargs)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # both print every raw log dict ({'loss': '0.2376', 'grad_norm': ...}) every logging_steps; EpochLog's one
    # line per evaluation is what a run shows, and the progress bar stays where tqdm is on
    trainer.remove_callback(PrinterCallback)
    if not quiet():
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_bar_only(ProgressCallback))
    trainer.stopping = stopping
    stopping.trainer = trainer
    if early is not None:
        early.trainer = trainer  # a cooldown starts from the best checkpoint, which the Trainer loads
    no_mtime_warning()
    return trainer


def _bar_only(base):
    """ProgressCallback that keeps the bars and drops its tqdm.write of every log dict."""

    class BarOnly(base):
        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    return BarOnly()


def training_record(trainer, result, seconds: float, planned_epochs: float | str) -> dict:
    """What a training stage's manifest says about its run: loss, time, epochs, steps, best checkpoint,
    and why it stopped."""
    epochs_run = float(result.metrics.get("epoch", trainer.state.epoch or 0.0))
    best = trainer.state.best_model_checkpoint
    stopping = getattr(trainer, "stopping", None)
    loss = result.training_loss
    if stopping is not None:  # a resumed run: the time and the losses before the checkpoint count
        seconds += stopping.resumed_seconds
        if stopping.resumed_loss_sum is not None and trainer.state.global_step:
            # the Trainer's mean covers the steps this process ran; the checkpoint carried the sum before them
            since = trainer.state.global_step - stopping.resumed_step
            loss = (stopping.resumed_loss_sum + result.training_loss * since) / trainer.state.global_step
    return {"train_loss": loss, "train_seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / max(epochs_run, 1e-9), 1), "epochs_run": epochs_run,
            "epochs": planned_epochs, "optimizer_steps": trainer.state.global_step,
            "eval_steps": trainer.args.eval_steps, "best_checkpoint": best and Path(best).name,
            "stopped": stopping.reason if stopping else None}


def check_replicas(model) -> dict | None:
    """Under DDP, prove every rank holds the same weights; a silent per-rank copy is a bug, not a run."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in model.parameters())],
                            dtype=torch.float64)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    values = [float(t) for t in gathered]
    if not all(math.isclose(v, values[0], rel_tol=1e-9, abs_tol=1e-6) for v in values):
        raise RuntimeError(f"DDP ranks hold different weights after training ({values}); "
                           "data parallelism did not synchronise")
    return {"world_size": dist.get_world_size(), "weight_checksums": values}
