"""The HF Trainer setup shared by every stage that trains (finetune, distill, prune recovery).

One place decides the TrainingArguments (per-epoch evaluation, best checkpoint, early stopping,
bf16 where the CPU/GPU does it natively, DDP on CPU with gloo), so `accelerate launch` and
`torchrun` work unchanged for all of them.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from pathlib import Path

import numpy as np

from deploykit.config import TrainConfig
from deploykit.console import log, quiet
from deploykit.hardware import bf16_supported

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def layer_index(param_name: str) -> int | None:
    """`bert.encoder.layer.3.attention...` -> 3 (BERT, RoBERTa, DistilBERT, Llama naming)."""
    m = _LAYER.search(param_name)
    return int(m.group(1)) if m else None


def num_layers(config) -> int:
    for key in ("num_hidden_layers", "n_layers", "num_layers"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ValueError(f"cannot tell the layer count of a {type(config).__name__}")


def world_info() -> tuple[int, int]:
    """(rank, world size) as torchrun / accelerate set them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def llrd_groups(model, lr: float, decay: float, weight_decay: float) -> list[dict]:
    """Layer-wise LR decay: layer i gets lr * decay**(L - i), embeddings decay**(L + 1), the head lr."""
    n = num_layers(model.config)
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        i = layer_index(name)
        if i is not None:
            scale = decay ** (n - i)
        elif "embed" in name:
            scale = decay ** (n + 1)
        else:
            scale = 1.0
        wd = 0.0 if p.ndim == 1 else weight_decay  # no decay on biases and LayerNorm weights
        groups.setdefault((lr * scale, wd), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


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
    return setting == "on" or (setting == "auto" and bf16_supported("cuda" if train_on_gpu() else "cpu"))


def training_args(cfg: TrainConfig, work: Path, has_eval: bool = True, **overrides):
    from transformers import TrainingArguments

    on_gpu = train_on_gpu()
    kwargs = dict(
        output_dir=str(work),
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.scheduler, warmup_steps=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch", bf16=use_bf16(cfg.bf16), seed=cfg.seed, data_seed=cfg.seed,
        eval_strategy="epoch" if has_eval else "no", save_strategy="epoch",
        load_best_model_at_end=has_eval, metric_for_best_model="accuracy", greater_is_better=True,
        save_total_limit=2, save_only_model=False, logging_steps=cfg.logging_steps,
        report_to=["tensorboard"] if cfg.tensorboard else [],
        disable_tqdm=quiet(), dataloader_num_workers=0,
        # without use_cpu every torchrun rank silently trains its own copy on a CPU machine
        use_cpu=not on_gpu,
        ddp_backend="gloo" if world_info()[1] > 1 and not on_gpu else None,
    )
    kwargs.update(overrides)
    if cfg.tensorboard:
        # transformers 5 reads the TensorBoard folder from the environment only; the stage copies it out
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(work / "tensorboard")
    return TrainingArguments(**kwargs)


@contextlib.contextmanager
def float32_forward(model):
    """Run `model` outside the mixed-precision wrapper accelerate puts on its forward while it trains.

    With `bf16=True` accelerate replaces `model.forward` by an autocast version and keeps the plain one as
    `model._original_forward`; every call through the model (evaluation included) then runs in bf16, while
    the saved safetensors run in float32. Inside this block the plain forward is back, so what is measured
    is what is saved; outside it training goes on in bf16. A model without the wrapper is left as it is.
    """
    original = model.__dict__.get("_original_forward")
    if original is None:
        yield model
        return
    wrapped = model.__dict__.get("forward")
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped


def release(model):
    """`model` without accelerate's mixed-precision wrapper, for good (in place; returns it).

    Without this a model trained with bf16 on a CPU with native bf16 stays in bf16 autocast after
    `trainer.train()`: importance scores, teacher logits, metrics and the reload check would all be
    computed in bf16 while the saved artifact runs in float32 (the prune reload check failed on such a
    CPU with logits 8e-3 apart). Source: accelerate's `Accelerator.prepare_model` / `unwrap_model(...,
    keep_fp32_wrapper=False)`.
    """
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_fp32_wrapper=False)


def is_autocast_wrapped(model) -> bool:
    """True while accelerate's autocast wrapper sits on `model.forward` (see `release`)."""
    return "_original_forward" in model.__dict__


def _float32_results(base):
    """`base` Trainer whose evaluations run in float32 and whose `train()` hands back an unwrapped model.

    bf16 changes only the training steps: the per-epoch evaluation that picks the best checkpoint, the
    scores a stage writes into its manifest and everything done with the model afterwards see the same
    float32 computation as the saved artifact, on every CPU.
    """

    class Float32Results(base):
        def evaluate(self, *args, **kwargs):
            with float32_forward(self.model):
                return super().evaluate(*args, **kwargs)

        def predict(self, *args, **kwargs):
            with float32_forward(self.model):
                return super().predict(*args, **kwargs)

        def train(self, *args, **kwargs):
            try:
                return super().train(*args, **kwargs)
            finally:
                self.model = release(self.model)

    Float32Results.__name__ = Float32Results.__qualname__ = base.__name__
    return Float32Results


def _trainer_class(base, layer_decay: float):
    if layer_decay >= 1.0:
        return base

    class LLRDTrainer(base):
        def create_optimizer(self, model=None):
            if self.optimizer is None:
                import torch

                target = model if model is not None else self.model
                groups = llrd_groups(target, self.args.learning_rate, layer_decay, self.args.weight_decay)
                self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate)
            return self.optimizer

    return LLRDTrainer


class _EpochLog:
    """Prints one line per evaluation during training (epoch, accuracy, macro-F1) through deploykit's
    console. Evaluations after training (the kept checkpoint, the test split) are the stage's own summary
    line: logged here they would carry the last epoch's number and, for the test split, no `eval_` keys."""

    def __init__(self, stage: str):
        from transformers import TrainerCallback

        class CB(TrainerCallback):
            training = False

            def on_train_begin(self, args, state, control, **kw):
                self.training = True

            def on_train_end(self, args, state, control, **kw):
                self.training = False

            def on_evaluate(self, args, state, control, metrics=None, **kw):
                if not self.training:
                    return
                if state.is_world_process_zero and metrics and "eval_accuracy" not in metrics:
                    log(f"{stage}: epoch {state.epoch:.2f} loss {metrics.get('eval_loss', float('nan')):.4f}")
                elif state.is_world_process_zero and metrics:
                    log(f"{stage}: epoch {state.epoch:.2f} accuracy {metrics['eval_accuracy']:.2f} "
                        f"macro-F1 {metrics.get('eval_macro_f1', float('nan')):.2f} "
                        f"loss {metrics.get('eval_loss', float('nan')):.4f}")

        self.callback = CB()


def _early_stopping(base):
    """EarlyStoppingCallback that ignores evaluations without the validation metric (the stages' test-split
    evaluation after training, `metric_key_prefix="test"`), which it would otherwise warn about."""

    class EarlyStopping(base):
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            name = args.metric_for_best_model
            if metrics is None or (name if name.startswith("eval_") else f"eval_{name}") not in metrics:
                return
            super().on_evaluate(args, state, control, metrics=metrics, **kw)

    return EarlyStopping


def build_trainer(model, cfg: TrainConfig, work: Path, tokenizer, train_ds, eval_ds, *, layer_decay: float = 1.0,
                  stage: str = "finetune", trainer_cls=None, collator=None, best_metric: str = "accuracy",
                  **trainer_kwargs):
    """A Trainer with deploykit's defaults; `trainer_cls` lets distillation swap the loss.

    `best_metric="loss"` (causal LMs) keeps the checkpoint with the lowest validation loss; classifiers
    keep the most accurate one.
    """
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

    by_loss = best_metric == "loss"
    args = training_args(cfg, Path(work), has_eval=eval_ds is not None, metric_for_best_model=best_metric,
                         greater_is_better=not by_loss)
    callbacks = [_EpochLog(stage).callback]
    if cfg.early_stopping_patience and eval_ds is not None:
        callbacks.append(_early_stopping(EarlyStoppingCallback)(early_stopping_patience=cfg.early_stopping_patience))
    cls = _float32_results(_trainer_class(trainer_cls or Trainer, layer_decay))
    trainer = cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
               data_collator=collator or DataCollatorWithPadding(tokenizer),
               compute_metrics=None if by_loss else compute_metrics, callbacks=callbacks, **trainer_kwargs)
    if quiet():
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # with tqdm off, it prints every log dict instead
    return trainer


def training_record(trainer, result, seconds: float, planned_epochs: float) -> dict:
    """What a training stage's manifest says about its run: loss, time, epochs, steps, best checkpoint."""
    epochs_run = float(result.metrics.get("epoch", planned_epochs))
    best = trainer.state.best_model_checkpoint
    return {"train_loss": result.training_loss, "train_seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / max(epochs_run, 1e-9), 1), "epochs_run": epochs_run,
            "optimizer_steps": trainer.state.global_step, "best_checkpoint": best and Path(best).name}


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
