"""deploykit/training.py: bf16 changes training steps only; what a stage measures is what it saves.

bf16 "on" runs (emulated) on every CPU, so these tests take the bf16 branch on AVX2-only machines as
well as on AVX512-BF16/AMX ones; "off" and "auto" are forced through the detected flags.
"""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import deploykit.training as training
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
    monkeypatch.setattr(training, "bf16_supported", lambda device=None: native)
    assert training.use_bf16("auto") is native
    assert training.use_bf16("on") is True
    assert training.use_bf16("off") is False


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
    monkeypatch.setattr(training, "bf16_supported", lambda device=None: asked.append(device) or False)
    args = training.training_args(TrainConfig(**FAST), tmp_path)
    assert args.use_cpu is (not on_gpu) and args.bf16 is False
    assert asked == ["cuda" if on_gpu else "cpu"]  # bf16 "auto" asks the device that trains
