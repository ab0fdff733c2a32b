"""The Trainer callbacks every training stage gets (deploykit/train/trainer.py's build_trainer adds them): one log
line per evaluation, early stopping that ignores the test-split evaluation, and the wall-clock budget with the
one line that says why training stopped.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.config import TrainConfig
from deploykit.console import log, warn

# the scores an evaluation line shows, where the kind computes them: text classifiers, token classifiers
SCORES = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("f1", "entity F1"), ("precision", "precision"),
          ("recall", "recall"))


class EpochLog:
    """Prints one line per evaluation during training (epoch, the kind's scores, loss) through deploykit's
    console. Evaluations after training (the kept checkpoint, the test split) are the stage's own summary
    line: logged here they would carry the last epoch's number and, for the test split, no `eval_` keys."""

    def __init__(self, stage: str):
        from transformers import TrainerCallback

        class CB(TrainerCallback):
            training = False

            def on_train_begin(self, args, state, control, **kw):
                self.training = True
                if state.is_world_process_zero and getattr(args, "world_size", 1) <= 1:  # DDP ranks are each other's load
                    warn_if_cores_shared(stage)

            def on_train_end(self, args, state, control, model=None, **kw):
                self.training = False
                if model is not None:  # after the Trainer loaded the checkpoint it keeps
                    refuse_diverged(stage, model, state.global_step)

            def on_evaluate(self, args, state, control, metrics=None, **kw):
                if not self.training:
                    return
                if state.is_world_process_zero and metrics:
                    scores = "".join(f" {label} {metrics[f'eval_{key}']:.2f}" for key, label in SCORES
                                     if isinstance(metrics.get(f"eval_{key}"), (int, float)))
                    log(f"{stage}: epoch {state.epoch:.2f}{scores} loss {metrics.get('eval_loss', float('nan')):.4f}")

        self.callback = CB()


def refuse_diverged(stage: str, model, step: int) -> None:
    """UserError where the model training ends with holds NaN or inf: a diverged training, which would otherwise
    be saved, gated on NaN scores and answer NaN for every text."""
    from deploykit.errors import UserError
    from deploykit.models import nonfinite_weights

    bad, total = nonfinite_weights(model)
    if bad:
        section = "prune.recovery" if stage == "prune" else stage
        head = ", and finetune.head_learning_rate for a new head" if stage == "finetune" else ""
        raise UserError(f"{stage}: training diverged: {len(bad)} of {total} weight tensors of the checkpoint it "
                        f"keeps hold NaN or inf after step {step} (e.g. {bad[0]}); nothing was written: lower "
                        f"{section}.learning_rate{head}")


def warn_if_cores_shared(stage: str) -> None:
    """One warning line where other processes hold cores this training's torch threads need (half a second of
    sampling at the start of training; deploykit/hardware.py shared_cores_warning says why it matters)."""
    import torch

    from deploykit.hardware import cores, cores_busy_elsewhere, shared_cores_warning

    line = shared_cores_warning(stage, cores_busy_elsewhere(), torch.get_num_threads(), cores())
    if line:
        warn(line)


def restored(state, name: str, part: str = "attributes") -> dict:
    """The attributes (or "args") a callback named `name` saved in the checkpoint a run resumed from ({} when it
    started afresh: the state then holds the fresh callbacks' own values, or nothing)."""
    if not state.global_step:
        return {}
    saved = (state.stateful_callbacks or {}).get(name)
    saved = saved[0] if isinstance(saved, list) and saved else saved
    return (saved or {}).get(part, {}) if isinstance(saved, dict) else {}


def stopped_at_checkpoint(state) -> bool:
    """The checkpoint a run resumed from was saved as training stopped (patience spent, the wall clock): the
    uninterrupted run trained no further step."""
    return bool(restored(state, "TrainerControl", "args").get("should_training_stop"))


def early_stopping(base, min_epochs: float = 0.0, cooldown: bool = False, stage: str = "train"):
    """EarlyStoppingCallback that ignores evaluations without the validation metric (the stages' test-split
    evaluation after training, `metric_key_prefix="test"`), which it would otherwise warn about, and that does not
    end training before `min_epochs` (patience still counts; the first evaluation after it that finds patience
    spent stops). A stop asked for by anything else (max_steps, the wall clock) stands.

    `cooldown`: where patience is spent, the weights of the best evaluation come back (`.trainer`, set by
    build_trainer, loads them) and training goes on from them for as many steps as patience waited (its
    evaluations times the steps between two), with the learning rate falling linearly from its value to 0; it stops
    at the evaluation that ends them, and the best evaluation of the whole run is kept as before. The schedule spans
    the step or epoch budget, so a run stopped by patience long before it would otherwise end at nearly its peak
    rate: AG News distillation stopped at step 762 of 5,700 at validation loss 0.347; the same steps with the rate
    decayed to 0 reached 0.268 and +0.7 pt on test (bench/README.md, run 56). Cooling the last weights instead of
    the best cooled what patience had watched overfit (AG News teacher: validation loss 0.48 -> 0.80, its student
    -2.6 pt). Going back to the best model and lowering the rate when validation stops improving is the "newbob"
    schedule of speech recognition (Kaldi nnet1's train_scheduler.sh); the linear fall to 0 is the cooldown of
    warmup-stable-decay schedules (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
    Training Durations"). Off by default (`TrainConfig.cooldown`): the chain's finals did not gain on test (run 56).
    """

    class EarlyStopping(base):
        spent = False  # patience ran out where it may stop training (read by Stopping for its reason)
        cooling: dict | None = None  # {"start", "end" (steps), "factor", "from"}: the cooldown under way, or None
        trainer = None  # the Trainer whose best checkpoint a cooldown starts from

        def state(self) -> dict:
            saved = super().state()
            saved.setdefault("attributes", {})["cooling"] = self.cooling
            return saved

        def on_train_begin(self, args, state, control, lr_scheduler=None, **kw):
            super().on_train_begin(args, state, control, lr_scheduler=lr_scheduler, **kw)
            # a resumed run counts patience on from the checkpoint's count, as the uninterrupted run did (the
            # Trainer's own restore replaces callback objects, which Stopping holds); a cooldown under way goes on
            # with the same falling rate (the scheduler's saved state does not hold the function that gives it)
            saved = restored(state, type(self).__name__)
            self.early_stopping_patience_counter = saved.get("early_stopping_patience_counter", 0)
            self.cooling = saved.get("cooling")
            if self.cooling is not None:
                _cool(lr_scheduler, self.cooling)
            done = self.cooling is not None and state.global_step >= self.cooling["end"] if cooldown else \
                self.early_stopping_patience_counter >= self.early_stopping_patience
            self.spent = stopped_at_checkpoint(state) and done

        def on_evaluate(self, args, state, control, metrics=None, lr_scheduler=None, **kw):
            name = args.metric_for_best_model
            if metrics is None or (name if name.startswith("eval_") else f"eval_{name}") not in metrics:
                return
            asked_before = control.should_training_stop
            super().on_evaluate(args, state, control, metrics=metrics, **kw)
            early = (state.epoch or 0) < min_epochs - 1e-6
            patience = not asked_before and control.should_training_stop
            if patience and early:
                control.should_training_stop = False
            if not cooldown:
                self.spent = self.early_stopping_patience_counter >= self.early_stopping_patience and not early
                return
            if self.cooling is None and patience and not early:
                self._start_cooldown(args, state, lr_scheduler)
            if self.cooling is not None and state.global_step < self.cooling["end"] and patience:
                control.should_training_stop = False  # patience is spent; the cooldown decides when to stop
            self.spent = self.cooling is not None and state.global_step >= self.cooling["end"]
            if self.spent:
                control.should_training_stop = True

        def on_step_end(self, args, state, control, **kw):
            if self.cooling is not None and state.global_step >= self.cooling["end"]:
                control.should_evaluate = control.should_save = True  # the cooled model is scored and kept

        def _start_cooldown(self, args, state, scheduler):
            interval = args.eval_steps if args.eval_strategy == "steps" and args.eval_steps else \
                round(state.global_step / max(state.epoch or 1.0, 1e-9))  # per-epoch evaluation
            steps = max(1, round(interval)) * self.early_stopping_patience
            end = min(state.global_step + steps, state.max_steps) if state.max_steps > 0 else state.global_step + steps
            scheduler = _lambda_scheduler(scheduler)
            factor = scheduler.lr_lambdas[0](state.global_step)
            best = state.best_model_checkpoint
            if best is not None and self.trainer is not None:
                self.trainer._load_best_model()  # transformers' own loader: any weights format, adapters, DDP
            self.cooling = {"start": state.global_step, "end": end, "factor": factor,
                            "from": Path(best).name if best else None}
            _cool(scheduler, self.cooling)
            back = f"back to the best evaluation ({self.cooling['from']}), then " if best else ""
            log(f"{stage}: patience spent at epoch {state.epoch or 0:.2f}: {back}{end - state.global_step} more "
                f"steps with the learning rate falling from {scheduler.base_lrs[0] * factor:.3g} to 0 (cooldown)")

    return EarlyStopping


def _lambda_scheduler(scheduler):
    """The LambdaLR behind the Trainer's scheduler (accelerate may wrap it); every schedule deploykit asks for
    (linear, cosine, constant, with warmup) is one."""
    inner = getattr(scheduler, "scheduler", scheduler)
    if not hasattr(inner, "lr_lambdas"):
        raise TypeError(f"cooldown needs a LambdaLR schedule, not {type(inner).__name__}")
    return inner


def _cool(scheduler, cooling: dict) -> None:
    """From step `start` the rate multiplier falls linearly from `factor` to 0 at step `end` (every group)."""
    scheduler = _lambda_scheduler(scheduler)
    start, end, factor = cooling["start"], cooling["end"], cooling["factor"]

    def falling(step: int) -> float:
        return factor * max(0.0, (end - step) / max(1, end - start))

    scheduler.lr_lambdas = [falling for _ in scheduler.lr_lambdas]


def patience_spent(early, metric: str) -> str:
    said = f"validation {metric} did not improve for {early.early_stopping_patience} evaluations (early_stopping_patience)"
    cooling = getattr(early, "cooling", None)
    if cooling is not None:
        said += (f", then {cooling['end'] - cooling['start']} steps of cooldown from "
                 f"{cooling.get('from') or 'the last weights'} took the learning rate to 0")
    return said


class Stopping:
    """Stops training at the wall-clock budget and says why training stopped (one log line, `.reason`).

    The budget is checked after every optimizer step; the step that passes it is evaluated and saved, so
    the best checkpoint so far (that one included) is what the Trainer loads at the end.
    """

    def __init__(self, stage: str, cfg: TrainConfig, early, metric: str, has_eval: bool):
        import time

        from transformers import TrainerCallback
        from transformers.trainer_callback import ExportableState

        outer = self
        self.reason: str | None = None
        self.resumed_seconds = 0.0  # training time before the checkpoint a run resumed from
        self.trainer = None  # set by build_trainer: the Trainer whose loss sum a checkpoint carries
        self.resumed_loss_sum: float | None = None  # the training losses summed up to that checkpoint's step
        self.resumed_step = 0

        class WallClockBudget(TrainerCallback, ExportableState):
            start = 0.0

            def state(self) -> dict:
                # saved in each checkpoint: a resumed run's budget counts the time before, and its mean training
                # loss the losses before (the Trainer keeps their sum in attributes it does not checkpoint)
                trainer, loss_sum = outer.trainer, None
                if trainer is not None and hasattr(trainer, "_total_loss_scalar") and hasattr(trainer, "_tr_loss"):
                    loss_sum = trainer._total_loss_scalar + float(trainer._tr_loss)
                return {"args": {}, "attributes": {"seconds": time.monotonic() - self.start, "loss_sum": loss_sum}}

            def on_train_begin(self, args, state, control, **kw):
                saved = restored(state, type(self).__name__)
                outer.resumed_seconds = saved.get("seconds", 0.0)
                self.start = time.monotonic() - outer.resumed_seconds
                outer.resumed_loss_sum, outer.resumed_step = saved.get("loss_sum"), state.global_step
                # a checkpoint written before this callback existed has no entry: the Trainer's next save
                # updates entries by name and would fail on the missing one
                state.stateful_callbacks.setdefault(type(self).__name__, self.state())
                outer.reason = None
                if stopped_at_checkpoint(state):  # the Trainer's _run_epoch is skipped (trainer.py); say why
                    control.should_training_stop = True
                    if early is not None and early.spent:
                        outer.reason = patience_spent(early, metric)
                    elif cfg.max_minutes and time.monotonic() - self.start > cfg.max_minutes * 60:
                        outer.reason = f"the wall-clock budget of {cfg.max_minutes:g} min (max_minutes) ran out"

            def on_step_end(self, args, state, control, **kw):
                if cfg.max_minutes and time.monotonic() - self.start > cfg.max_minutes * 60:
                    outer.reason = f"the wall-clock budget of {cfg.max_minutes:g} min (max_minutes) ran out"
                    control.should_training_stop = True
                    control.should_save = True
                    control.should_evaluate = has_eval

            def on_evaluate(self, args, state, control, metrics=None, **kw):
                # runs after early stopping's callback: patience spent before min_epochs has not stopped training
                if early is not None and early.spent and outer.reason is None:
                    outer.reason = patience_spent(early, metric)

            def on_train_end(self, args, state, control, **kw):
                if outer.reason is None:
                    waited = early.early_stopping_patience_counter if early is not None else 0
                    # "still improving" only when the last evaluation was the best so far
                    trend = ("" if cfg.epochs != "auto" else ", still improving" if not waited else
                             f", the last {waited} evaluation(s) did not improve (early_stopping_patience "
                             f"{early.early_stopping_patience})")
                    if args.max_steps > 0 and state.global_step >= args.max_steps:
                        outer.reason = f"the step budget max_steps {args.max_steps} reached{trend}"
                    elif cfg.epochs == "auto":
                        outer.reason = f"the cap of max_epochs {cfg.max_epochs:g} reached{trend}"
                    else:
                        outer.reason = f"the {cfg.epochs:g} epochs asked for are done"
                if state.is_world_process_zero:
                    best = ""
                    if state.best_metric is not None and state.best_model_checkpoint:
                        best = (f"; keeps the best evaluation ({Path(state.best_model_checkpoint).name}, "
                                f"{metric} {state.best_metric:.4g})")
                    log(f"{stage}: stopped at epoch {state.epoch or 0:.2f}: {outer.reason}{best}")

        self.callback = WallClockBudget()


# transformers sorts checkpoints by mtime before rotating them, and when the oldest and newest kept were saved within a
# second (a tiny run's quick steps) it warns that "mtime may not be reliable on this filesystem" and sorts by step,
# which is the right order for deploykit's one-run work folders: the line blames a filesystem that did nothing wrong
MTIME_LINE = "mtime may not be reliable on this filesystem"


def _not_the_mtime_line(record) -> bool:
    return MTIME_LINE not in record.getMessage()


def no_mtime_warning() -> None:
    """Drop transformers' mtime warning (above) from its checkpoint-sorting logger; other lines pass. Idempotent."""
    import logging

    logging.getLogger("transformers.trainer_utils").addFilter(_not_the_mtime_line)
