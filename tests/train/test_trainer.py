"""deploykit/train/trainer.py: bf16 changes training steps only; what a stage measures is what it saves.

bf16 "on" runs (emulated) on every CPU, so these tests take the bf16 branch on AVX2-only machines as
well as on AVX512-BF16/AMX ones; "off" and "auto" are forced through the detected flags.
"""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import deploykit.train.trainer as training
from deploykit.config import DataConfig, TrainConfig
from deploykit.data import load_task, to_dataset

FAST = dict(epochs=1, learning_rate=3e-3, batch_size=16, eval_batch_size=32, warmup_ratio=0.0,
            early_stopping_patience=None, logging_steps=1000)


def _trainer(model_dir, task_dir, work, bf16: str, epochs: int = 1):
    task = load_task(DataConfig(path=str(task_dir), label_names=["negative", "positive"], max_length=32))
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    cfg = TrainConfig(**{**FAST, "epochs": epochs, "bf16": bf16})
    trainer = training.build_trainer(model, cfg, work, tok, to_dataset(task.train, tok, 32),
                                     to_dataset(task.validation, tok, 32))
    return trainer, tok, task


def _logits(model, tok, texts):
    model.eval()
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits.float()


@pytest.mark.parametrize("bf16", ["on", "off"])
def test_a_trained_model_computes_what_it_saves(bf16, tiny_bert, tiny_task, tmp_path):
    trainer, tok, task = _trainer(tiny_bert, tiny_task, tmp_path / "work", bf16)
    assert trainer.args.bf16 is (bf16 == "on")
    trainer.train()
    model = trainer.model
    assert not training.is_autocast_wrapped(model)
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    texts = task.validation.texts[:16]
    # bf16 autocast left on the in-memory model moves these logits by ~1e-3
    assert torch.allclose(_logits(model, tok, texts), _logits(reloaded, tok, texts), atol=1e-6, rtol=0)


def test_evaluation_during_bf16_training_runs_in_float32(tiny_bert, tiny_task, tmp_path):
    trainer, tok, task = _trainer(tiny_bert, tiny_task, tmp_path / "work", "on")
    seen = []

    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            seen.append(metrics["eval_loss"])

    trainer.add_callback(Record())
    trainer.train()
    during = seen[0]  # the epoch's evaluation, taken while the model trains under bf16 autocast
    trainer.model.save_pretrained(tmp_path / "saved")
    tok.save_pretrained(tmp_path / "saved")
    plain, _, _ = _trainer(tmp_path / "saved", tiny_task, tmp_path / "work2", "off")
    assert abs(during - plain.evaluate()["eval_loss"]) < 1e-6  # the saved weights in float32


def test_float32_forward_restores_the_wrapper(tiny_bert, tiny_task, tmp_path):
    trainer, tok, task = _trainer(tiny_bert, tiny_task, tmp_path / "work", "on")
    model = trainer.accelerator.prepare_model(trainer.model)  # what Trainer.train does first
    assert training.is_autocast_wrapped(model)
    wrapped = model.forward
    with training.float32_forward(model):
        plain = _logits(model, tok, task.validation.texts[:8])
    assert model.forward == wrapped
    mixed = _logits(model, tok, task.validation.texts[:8])
    assert (plain - mixed).abs().max() > 1e-5  # the wrapper really computes in bf16
    training.release(model)
    assert not training.is_autocast_wrapped(model)
    assert torch.allclose(_logits(model, tok, task.validation.texts[:8]), plain, atol=1e-6, rtol=0)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_setting_follows_the_hardware_only_on_auto(native, monkeypatch):
    monkeypatch.setattr(training, "train_on_gpu", lambda: False)
    monkeypatch.setattr(training, "bf16_training_pays", lambda device: native)
    assert training.use_bf16("auto") is native
    assert training.use_bf16("on") is True
    assert training.use_bf16("off") is False


@pytest.mark.parametrize("flags, auto", [
    ({"avx2", "fma"}, False),                                   # AVX2 only: no native bf16
    ({"avx2", "avx512_bf16", "avx512_vnni"}, False),            # Zen 4 / Xeon without AMX: native, but slower
    ({"avx2", "avx512_bf16", "amx_bf16", "amx_tile"}, True)])   # AMX: faster
def test_bf16_auto_on_a_cpu_only_with_amx(flags, auto, monkeypatch):
    # the real flag reading decides, whatever this machine has
    import deploykit.hardware as hw

    monkeypatch.setattr(training, "train_on_gpu", lambda: False)
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset(flags))
    assert training.use_bf16("auto") is auto
    assert training.use_bf16("on") is True and training.use_bf16("off") is False


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_on_a_gpu_asks_the_gpu(native, monkeypatch):
    import deploykit.hardware as hw

    monkeypatch.setattr(training, "train_on_gpu", lambda: True)
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))  # the CPU's flags do not count
    monkeypatch.setattr(hw, "cuda_bf16_native", lambda: native)
    assert training.use_bf16("auto") is native


@pytest.mark.parametrize("cuda, devices, local_world, on_gpu", [
    (False, 0, 1, False), (True, 1, 1, True), (True, 1, 2, False), (True, 2, 2, True)])
def test_training_device_follows_cuda_and_ranks(cuda, devices, local_world, on_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    assert training.train_on_gpu() is on_gpu


@pytest.mark.parametrize("on_gpu", [True, False])
def test_training_args_use_the_cpu_flag_only_without_a_gpu(on_gpu, monkeypatch, tmp_path):
    # without use_cpu every torchrun rank on a CPU machine silently trains its own copy (STACK.md)
    asked = []
    monkeypatch.setattr(training, "train_on_gpu", lambda: on_gpu)
    # TrainingArguments itself refuses bf16 with use_cpu off on a machine without a bf16 GPU
    monkeypatch.setattr(training, "bf16_training_pays", lambda device: asked.append(device) or False)
    args = training.training_args(TrainConfig(**FAST), tmp_path)
    assert args.use_cpu is (not on_gpu) and args.bf16 is False
    assert asked == ["cuda" if on_gpu else "cpu"]  # bf16 "auto" asks the device that trains


# ---- how long training runs: epochs auto, evaluation interval, wall-clock budget, why it stopped

@pytest.mark.parametrize("rows, batch, expected", [
    (100, 16, 7),          # small data: once per epoch
    (20000, 32, 313),      # 625 steps an epoch: evaluated twice
    (67349, 32, 421),      # all of SST-2: 2,105 steps an epoch, five evaluations of <= 500 steps
])
def test_evaluation_interval_is_an_epoch_cut_into_parts_of_at_most_500_steps(rows, batch, expected):
    cfg = TrainConfig(batch_size=batch)
    assert training.eval_interval(cfg, rows) == expected
    assert training.eval_interval(TrainConfig(batch_size=batch, eval_steps=50), rows) == 50


def _auto_trainer(tiny_bert, tiny_task, work, **cfg):
    task = load_task(DataConfig(path=str(tiny_task), label_names=["negative", "positive"], max_length=32))
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    settings = {**FAST, "epochs": "auto", "early_stopping_patience": 2, "eval_steps": 2, **cfg}
    return training.build_trainer(model, TrainConfig(**settings), work, tok, to_dataset(task.train, tok, 32),
                                  to_dataset(task.validation, tok, 32))


@pytest.mark.parametrize("cooldown, steps", [(False, 3 * 2), (True, 3 * 2 + 2 * 2)])  # off: the default
def test_epochs_auto_stops_after_patience_evaluations_without_improvement(cooldown, steps, tiny_bert, tiny_task,
                                                                          tmp_path):
    # a learning rate of ~0 leaves the validation accuracy where it starts: the first evaluation is the
    # best, and two more without improvement end training long before the cap of 50 epochs; with the cooldown
    # two evaluations' steps more, as many as patience waited
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", learning_rate=1e-12, max_epochs=50,
                            cooldown=cooldown)
    result = trainer.train()
    assert trainer.state.global_step == steps
    assert "did not improve for 2 evaluations" in trainer.stopping.reason
    assert ("then 4 steps of cooldown from checkpoint-2 took the learning rate to 0" in trainer.stopping.reason) == \
        cooldown
    record = training.training_record(trainer, result, 1.0, "auto")
    assert record["epochs"] == "auto" and record["epochs_run"] < 50 and record["stopped"] == trainer.stopping.reason
    assert record["best_checkpoint"] == "checkpoint-2"


def test_stop_on_loss_follows_the_validation_loss_and_still_scores_the_metric(tiny_bert, tiny_task, tmp_path):
    # distillation's default: the flat loss of a learning rate of ~0 ends training after 2 evaluations, and
    # every evaluation still reports accuracy for the log
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", learning_rate=1e-12, max_epochs=50,
                            stop_on="loss", cooldown=False)
    trainer.train()
    assert trainer.args.metric_for_best_model == "loss" and trainer.args.greater_is_better is False
    assert trainer.state.global_step == 3 * 2
    assert "validation loss did not improve for 2 evaluations" in trainer.stopping.reason
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 3 and all("eval_accuracy" in h for h in evals)


@pytest.mark.parametrize("cooldown", [False, True])
@pytest.mark.parametrize("min_epochs, stop_step", [(0.0, 3), (1.0, 4), (2.0, 8)])
def test_patience_cannot_end_training_before_min_epochs(min_epochs, stop_step, cooldown, tiny_bert, tiny_task,
                                                        tmp_path):
    # 4 steps an epoch, evaluated every step, a flat loss: patience 2 is spent at step 3 (epoch 0.75); the stop,
    # and so a cooldown's 2 steps before it, waits for the first evaluation at or after min_epochs
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", learning_rate=1e-12, max_epochs=50, eval_steps=1,
                            stop_on="loss", min_epochs=min_epochs, cooldown=cooldown)
    trainer.train()
    assert trainer.state.global_step == stop_step + 2 * cooldown
    assert "validation loss did not improve for 2 evaluations" in trainer.stopping.reason


class _Rates:
    """The learning rate each optimizer step leaves for the next one (the scheduler's last rate)."""

    def __init__(self):
        from transformers import TrainerCallback

        rates = self.rates = []

        class Record(TrainerCallback):
            def on_step_end(self, args, state, control, lr_scheduler=None, **kw):
                rates.append(lr_scheduler.get_last_lr()[0])

        self.callback = Record()


def test_the_cooldown_takes_the_learning_rate_linearly_to_zero_and_scores_the_cooled_model(tiny_bert, tiny_task,
                                                                                          tmp_path):
    # a flat loss evaluated every step: patience 2 is spent at step 3; the rate then falls over 2 steps as the
    # linear schedule falls over its last 2 (step 4 at half the rate step 3 left, step 5's rate 0 is never used)
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", learning_rate=1e-12, max_epochs=50, eval_steps=1,
                            stop_on="loss", min_epochs=0.0, warmup_ratio=0.0, cooldown=True)
    recorded = _Rates()
    trainer.add_callback(recorded.callback)
    trainer.train()
    rates = [r / 1e-12 for r in recorded.rates]  # multiples of the peak rate (50 epochs of 4 steps: 200 steps)
    assert trainer.state.global_step == 5 and len(rates) == 5
    assert rates[:3] == pytest.approx([(200 - s) / 200 for s in (1, 2, 3)], rel=1e-9, abs=0)
    assert rates[3] == pytest.approx(rates[2] / 2, rel=1e-9, abs=0) and rates[4] == 0.0
    evaluated = [h["step"] for h in trainer.state.log_history if "eval_loss" in h]
    assert evaluated == [1, 2, 3, 4, 5]  # the cooled model is scored, and may be the one kept


def test_the_cooldown_starts_from_the_weights_of_the_best_evaluation(tiny_bert, tiny_task, tmp_path, monkeypatch):
    # a metric that never improves (the first evaluation stays the best) while a real learning rate moves the
    # weights: at patience's end (step 3) the weights of checkpoint-1 come back, and the cooldown trains from them
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    monkeypatch.setattr(training, "compute_metrics", lambda pred: {"accuracy": 50.0})
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", learning_rate=1e-3, max_epochs=50, eval_steps=1,
                            min_epochs=0.0, warmup_ratio=0.0, cooldown=True)
    seen = {}

    class Weights(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            seen[f"before {state.global_step + 1}"] = {k: v.clone() for k, v in model.state_dict().items()}

        def on_step_end(self, args, state, control, model=None, **kw):
            seen[f"after {state.global_step}"] = {k: v.clone() for k, v in model.state_dict().items()}

    trainer.add_callback(Weights())
    trainer.train()
    assert trainer.state.global_step == 5
    best = load_file(str(tmp_path / "w" / "checkpoint-1" / "model.safetensors"))

    def same(weights):
        return all(torch.equal(weights[k], v) for k, v in best.items())

    assert same(seen["after 1"]) and not same(seen["after 3"])  # training moved the weights past the best...
    assert same(seen["before 4"])  # ...and the cooldown's first step starts from the best again
    assert "cooldown from checkpoint-1" in trainer.stopping.reason


def test_the_cooldown_never_outlasts_the_step_budget(tiny_bert, tiny_task, tmp_path):
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", learning_rate=1e-12, max_epochs=50, eval_steps=1,
                            stop_on="loss", min_epochs=0.0, max_steps=4, cooldown=True)
    trainer.train()
    assert trainer.state.global_step == 4


def test_min_epochs_never_cancels_the_step_budget(tiny_bert, tiny_task, tmp_path):
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", learning_rate=1e-12, max_epochs=50, eval_steps=1,
                            stop_on="loss", min_epochs=5.0, max_steps=3)
    trainer.train()
    assert trainer.state.global_step == 3 and "max_steps 3" in trainer.stopping.reason


def test_distillation_stops_on_its_loss_and_other_training_on_the_metric():
    from deploykit.config import DistillConfig, FinetuneConfig

    assert DistillConfig().stop_on == "loss"
    assert FinetuneConfig().stop_on == "metric" and TrainConfig().stop_on == "metric"


def test_epochs_auto_stops_at_the_cap_and_says_so(tiny_bert, tiny_task, tmp_path):
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", max_epochs=1, early_stopping_patience=100)
    trainer.train()
    assert trainer.state.epoch == pytest.approx(1.0)
    assert "max_epochs 1" in trainer.stopping.reason


def test_at_the_cap_a_run_whose_last_evaluations_did_not_improve_is_not_called_improving(tiny_bert, tiny_task,
                                                                                         tmp_path):
    # a learning rate of ~0: the first evaluation stays the best, the later ones only tie it
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", learning_rate=1e-12, max_epochs=1,
                            early_stopping_patience=100)
    trainer.train()
    assert trainer.state.global_step >= 4  # at least two evaluations
    assert "max_epochs 1 reached, the last" in trainer.stopping.reason
    assert "did not improve" in trainer.stopping.reason and "still improving" not in trainer.stopping.reason


def test_a_step_budget_caps_epochs_auto_and_says_so(tiny_bert, tiny_task, tmp_path):
    # the default recipe caps training in steps (the same compute on any data), not epochs
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", max_steps=3, early_stopping_patience=100)
    trainer.train()
    assert trainer.state.global_step == 3
    assert trainer.stopping.reason.startswith("the step budget max_steps 3 reached, ")


def test_the_wall_clock_budget_stops_training_and_keeps_an_evaluated_checkpoint(tiny_bert, tiny_task, tmp_path):
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", max_minutes=1e-6, eval_steps=1000, max_epochs=50)
    trainer.train()
    assert trainer.state.global_step == 1  # stopped after the first step...
    assert "wall-clock budget" in trainer.stopping.reason
    assert trainer.state.best_model_checkpoint is not None  # ...which was evaluated and saved first


def test_epochs_auto_without_validation_rows_is_refused(tiny_bert, tiny_task, tmp_path):
    from deploykit.errors import UserError

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    task = load_task(DataConfig(path=str(tiny_task), label_names=["negative", "positive"], max_length=32))
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    with pytest.raises(UserError, match="epochs: auto .* no validation rows"):
        training.build_trainer(model, TrainConfig(), tmp_path, tok, to_dataset(task.train, tok, 32), None,
                               stage="distill")


def test_a_fresh_head_trains_at_its_own_learning_rate(tiny_bert):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    groups = training.llrd_groups(model, lr=1e-4, decay=1.0, weight_decay=0.01, head_lr=1e-3,
                                  head=frozenset({"classifier"}))
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert rate[id(p)] == (1e-3 if name.startswith("classifier.") else 1e-4), name
    # LoRA keeps a trainable copy of the head under modules_to_save
    assert training.in_modules("base_model.model.classifier.modules_to_save.default.weight", {"classifier"})
    assert not training.in_modules("distilbert.pre_classifier.weight", {"classifier"})
    assert training.head_rate("auto", 1e-4) == 1e-3 and training.head_rate("auto", 2e-3) == 2e-3
    assert training.head_rate("auto", 2e-5) == 2e-4 and training.head_rate(None, 1e-4) is None


def test_the_optimizer_uses_the_head_rate(tiny_bert, tiny_task, tmp_path):
    task = load_task(DataConfig(path=str(tiny_task), label_names=["negative", "positive"], max_length=32))
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    trainer = training.build_trainer(model, TrainConfig(**FAST), tmp_path, tok, to_dataset(task.train, tok, 32),
                                     to_dataset(task.validation, tok, 32), head_lr=0.5, head=frozenset({"classifier"}))
    rates = sorted({g["lr"] for g in trainer.create_optimizer().param_groups})
    assert rates == [FAST["learning_rate"], 0.5]


@pytest.mark.parametrize("head_lr", [None, 0.5])
def test_the_optimizer_is_fused_adamw_with_the_for_loop_update(head_lr, tiny_bert, tiny_task, tmp_path):
    # fused on the plain path (transformers' optim) and on the grouped-rate path (our own AdamW) alike
    task = load_task(DataConfig(path=str(tiny_task), label_names=["negative", "positive"], max_length=32))
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    trainer = training.build_trainer(model, TrainConfig(**FAST), tmp_path, tok, to_dataset(task.train, tok, 32),
                                     to_dataset(task.validation, tok, 32), head_lr=head_lr,
                                     head=frozenset({"classifier"}) if head_lr else frozenset())
    opt = trainer.create_optimizer()
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    # the same update as the unfused loop, step for step, on the model's own parameters
    ref = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    fused = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    opts = [torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, **kw) for ps, kw in ((ref, {}), (fused, {"fused": True}))]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in ref]
        for ps, o in zip((ref, fused), opts):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            o.step()
    for a, b in zip(ref, fused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_batches_group_rows_of_similar_length(tiny_bert, tiny_task, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", group_by_length=True)
    sampler = trainer._get_train_sampler()
    assert type(sampler) is LengthGroupedSampler  # batch_order longest_first: transformers' own order
    shuffled = _auto_trainer(tiny_bert, tiny_task, tmp_path / "r", group_by_length=True, batch_order="random")
    sampler = shuffled._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) and type(sampler) is not LengthGroupedSampler
    assert sorted(sampler) == list(range(len(shuffled.train_dataset)))  # every row once an epoch
    # auto: 64 rows are less than one group of 50 batches; sorted by length, every epoch would repeat them
    plain = _auto_trainer(tiny_bert, tiny_task, tmp_path / "p")
    assert not isinstance(plain._get_train_sampler(), LengthGroupedSampler)
    assert training.grouped(TrainConfig(batch_size=32), 60614) and not training.grouped(TrainConfig(batch_size=32), 6000)


def test_an_evaluation_line_shows_the_scores_the_kind_computes(monkeypatch):
    from types import SimpleNamespace

    import deploykit.train.callbacks as callbacks

    lines = []
    monkeypatch.setattr(callbacks, "log", lines.append)
    monkeypatch.setattr(callbacks, "warn_if_cores_shared", lambda stage: None)
    cb = callbacks.EpochLog("distill").callback
    state = SimpleNamespace(epoch=1.0, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)
    cb.on_evaluate(None, state, None, metrics={"eval_f1": 88.123, "eval_precision": 87.5, "eval_recall": 88.75,
                                               "eval_f1_PER": 95.0, "eval_loss": 0.2023})
    cb.on_evaluate(None, state, None, metrics={"eval_accuracy": 90.5, "eval_macro_f1": 90.25, "eval_loss": 0.3})
    cb.on_evaluate(None, state, None, metrics={"eval_loss": 1.5})  # a causal LM: the loss alone
    assert lines == ["distill: epoch 1.00 entity F1 88.12 precision 87.50 recall 88.75 loss 0.2023",
                     "distill: epoch 1.00 accuracy 90.50 macro-F1 90.25 loss 0.3000",
                     "distill: epoch 1.00 loss 1.5000"]


@pytest.mark.parametrize("world_size, busy, warned", [(1, 1.5, True), (1, 0.1, False), (2, 1.5, False)])
def test_training_warns_at_its_start_where_other_work_holds_its_cores(world_size, busy, warned, monkeypatch):
    # two trainings on the same two cores each run many times slower (bench/shared_cores.py): the user hears it
    # once, when training begins; DDP's ranks are each other's load, so a multi-process run does not sample
    from types import SimpleNamespace

    import torch

    import deploykit.hardware as hw
    import deploykit.train.callbacks as callbacks

    lines = []
    monkeypatch.setattr(callbacks, "warn", lines.append)
    monkeypatch.setattr(hw, "cores_busy_elsewhere", lambda interval=0.5: busy)
    monkeypatch.setattr(hw, "cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    cb = callbacks.EpochLog("distill").callback
    cb.on_train_begin(SimpleNamespace(world_size=world_size), SimpleNamespace(is_world_process_zero=True), None)
    assert len(lines) == warned
    if warned:
        assert lines[0].startswith("distill: warning: other processes keep 1.5 of this machine's 2 cores busy")


@pytest.mark.parametrize("is_quiet", [False, True])
def test_training_prints_no_raw_log_dicts(is_quiet, tiny_bert, tiny_task, tmp_path, capsys, monkeypatch):
    # the Trainer's own callbacks print {'loss': ..., 'grad_norm': ...} every logging step; a run shows one
    # line per evaluation instead (and the progress bar, unless quiet)
    from deploykit import console

    monkeypatch.setitem(console._quiet, "on", is_quiet)
    trainer = _auto_trainer(tiny_bert, tiny_task, tmp_path / "w", max_epochs=1, logging_steps=1)
    names = {type(c).__name__ for c in trainer.callback_handler.callbacks}
    assert "PrinterCallback" not in names and "ProgressCallback" not in names
    assert ("BarOnly" in names) is not is_quiet
    trainer.train()
    out = capsys.readouterr()
    assert "'loss'" not in out.out + out.err and "grad_norm" not in out.out + out.err
    assert any("loss" in h for h in trainer.state.log_history)  # still logged, for the manifest


def test_the_trainer_drops_transformers_mtime_warning_and_nothing_else(tiny_bert, tiny_task, tmp_path):
    # two checkpoints saved within a second (any tiny run) made transformers blame the filesystem's mtime
    import logging

    _trainer(tiny_bert, tiny_task, tmp_path / "w", "off")
    sorting = logging.getLogger("transformers.trainer_utils")  # the logger transformers' sort_checkpoints warns on
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    sorting.addHandler(handler)
    level = sorting.level
    sorting.setLevel(logging.WARNING)  # an earlier test's --quiet set transformers' loggers to errors only
    try:
        sorting.warning("mtime may not be reliable on this filesystem, falling back to numerical ordering")
        sorting.warning("checkpoint sorting: another line")
    finally:
        sorting.removeHandler(handler)
        sorting.setLevel(level)
    assert seen == ["checkpoint sorting: another line"]
