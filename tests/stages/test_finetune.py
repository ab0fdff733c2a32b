"""`deploykit finetune` on tiny BERT / RoBERTa / DistilBERT: strategies, outputs, resume, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from deploykit.config import build_recipe
from deploykit.errors import UserError
from deploykit.pipeline import run_stage
from deploykit.train.resume import RESUME_FILES
from deploykit.train.trainer import llrd_groups

FAST = {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16, "eval_batch_size": 32, "warmup_ratio": 0.0,
        "early_stopping_patience": None, "logging_steps": 1000}


def recipe(model, task, **finetune):
    return build_recipe({"model": {"source": str(model)}, "data": {"path": str(task), "max_length": 32,
                                                                    "label_names": ["negative", "positive"]},
                         "finetune": {**FAST, **finetune}})


def test_full_finetune_writes_a_plain_hf_folder(tiny_model, tiny_task, tmp_path):
    out = tmp_path / "ft"
    run_stage("finetune", recipe(tiny_model, tiny_task), None, out)
    assert {"config.json", "model.safetensors", "tokenizer.json", "manifest.json"} <= {p.name for p in out.iterdir()}
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage"] == "finetune" and m["format"] == "pytorch"
    assert m["config"]["finetune"]["epochs"] == 2 and "transformers" in m["versions"]
    assert {"accuracy", "macro_f1"} <= set(m["metrics"]["validation"]) and m["metrics"]["test"]["accuracy"] >= 0
    assert m["metrics"]["best_checkpoint"].startswith("checkpoint-")
    # nothing but the output folder is left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_full_finetune_learns_the_tiny_task(tiny_bert, tiny_task, tmp_path):
    art = run_stage("finetune", recipe(tiny_bert, tiny_task, epochs=4, batch_size=8), None, tmp_path / "ft")
    assert art.metrics["validation"]["accuracy"] > 60


def test_partial_freezes_embeddings_and_first_layers(tiny_bert, tiny_task, tmp_path):
    before = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    run_stage("finetune", recipe(tiny_bert, tiny_task, strategy="partial", freeze_embeddings=True,
                                 freeze_layers=1), None, tmp_path / "ft")
    after = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft")
    b, a = before.state_dict(), after.state_dict()
    assert torch.equal(b["bert.embeddings.word_embeddings.weight"], a["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(b["bert.encoder.layer.0.output.dense.weight"], a["bert.encoder.layer.0.output.dense.weight"])
    assert not torch.equal(b["bert.encoder.layer.1.output.dense.weight"], a["bert.encoder.layer.1.output.dense.weight"])


def test_layerwise_lr_decay_groups(tiny_bert):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)  # 2 layers
    groups = llrd_groups(model, lr=1.0, decay=0.5, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == 1.0
    assert lr_of[id(named["bert.encoder.layer.1.attention.self.query.weight"])] == 0.5
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 0.25
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == 0.125
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert wd_of[id(named["bert.encoder.layer.0.output.LayerNorm.weight"])] == 0.0


def test_layerwise_lr_decay_trains(tiny_bert, tiny_task, tmp_path):
    art = run_stage("finetune", recipe(tiny_bert, tiny_task, layer_lr_decay=0.8), None, tmp_path / "ft")
    assert art.metrics["optimizer_steps"] == 8  # 64 rows / 16 per step * 2 epochs


def test_lora_is_merged_into_a_plain_model(tiny_model, tiny_task, tmp_path):
    art = run_stage("finetune", recipe(tiny_model, tiny_task, strategy="lora", learning_rate=1e-2), None,
                    tmp_path / "ft")
    model, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not any("lora" in k for k in model.state_dict())
    init = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    head = [k for k in model.state_dict() if k.startswith("classifier") and k.endswith("weight")][-1]
    assert not torch.equal(model.state_dict()[head], init.state_dict()[head])  # the head was trained and saved
    assert art.metrics["validation"]["accuracy"] >= 0


def test_interrupted_run_leaves_no_output_and_resumes(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit.stages.finetune as ft

    out = tmp_path / "ft"

    def crash(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(ft, "staging", crash)
    with pytest.raises(KeyboardInterrupt):
        run_stage("finetune", recipe(tiny_bert, tiny_task), None, out)
    assert not out.exists()
    assert list((tmp_path / ".ft.work").glob("checkpoint-*"))
    monkeypatch.undo()
    art = run_stage("finetune", recipe(tiny_bert, tiny_task), None, out, resume=True)
    assert art.manifest["metrics"]["resumed_from"] == "checkpoint-8"
    assert (out / "model.safetensors").is_file() and not (tmp_path / ".ft.work").exists()


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("bf16", ["off", "on"])
def test_resume_skips_a_checkpoint_cut_mid_save_and_matches_the_uninterrupted_run(bf16, tiny_bert, tiny_task,
                                                                                   tmp_path, monkeypatch, capsys):
    """Case 11 (transformers#11323, #40347): a kill during a checkpoint's save leaves it without trainer state;
    --resume takes the last complete checkpoint and ends with the uninterrupted run's weights."""
    from transformers import Trainer

    cfg = recipe(tiny_bert, tiny_task, epochs=3, bf16=bf16)
    full = run_stage("finetune", cfg, None, tmp_path / "full")
    out = tmp_path / "ft"
    save = Trainer._save_checkpoint

    def killed_after_epoch_2(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if self.state.global_step == 8:  # 64 rows / 16 = 4 steps an epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_checkpoint", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_stage("finetune", cfg, None, out)
    monkeypatch.undo()
    cut = tmp_path / ".ft.work" / "checkpoint-8"
    for name in ("trainer_state.json", *RESUME_FILES, "rng_state.pth"):
        (cut / name).unlink(missing_ok=True)  # what a kill during its save leaves (seen in a live run)
    capsys.readouterr()
    art = run_stage("finetune", cfg, None, out, resume=True)
    assert art.manifest["metrics"]["resumed_from"] == "checkpoint-4"
    assert "finetune: resuming from checkpoint-4, as --resume asked" in " ".join(capsys.readouterr().err.split())
    a, b = _weights(tmp_path / "full"), _weights(out)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    for key in ("accuracy", "macro_f1", "loss"):
        assert art.metrics["validation"][key] == full.metrics["validation"][key]


def test_bad_inputs(tiny_bert, tiny_task, tmp_path):
    with pytest.raises(UserError, match="needs a data section"):
        run_stage("finetune", build_recipe({"model": {"source": str(tiny_bert)}, "finetune": {}}), None, tmp_path / "x")
    with pytest.raises(UserError, match="freeze_layers=5 but the model has 2 layers"):
        run_stage("finetune", recipe(tiny_bert, tiny_task, strategy="partial", freeze_layers=5), None, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_ddp_two_processes_share_the_work(tiny_bert, tiny_task, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "deploykit.cli", "finetune", "--model", str(tiny_bert), "--data", str(tiny_task),
           "--out", str(out), "--quiet", "--set", "finetune.epochs=2", "--set", "finetune.batch_size=16",
           "--set", "finetune.learning_rate=3e-3", "--set", "finetune.early_stopping_patience=null"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["ddp"]["world_size"] == 2
    assert len(set(m["ddp"]["weight_checksums"])) == 1  # every rank holds the same weights
    # 64 rows, 16 per rank and step, 2 ranks: 2 steps per epoch instead of 4 -> the data was sharded
    assert m["optimizer_steps"] == 4
    AutoModelForSequenceClassification.from_pretrained(out)


@pytest.mark.slow
def test_packaged_minilm_learns_sst2(shared_data, tmp_path):
    # the real model does use every core (the tiny-model tests pin torch to one thread)
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    r = build_recipe({"data": {"name": "sst2", "data_dir": str(shared_data), "max_train_samples": 2000,
                               "max_eval_samples": 500, "max_length": 64},
                      "finetune": {"epochs": 3, "learning_rate": 1e-4, "batch_size": 32}})
    try:
        art = run_stage("finetune", r, None, tmp_path / "ft")
    finally:
        torch.set_num_threads(threads)
    assert art.metrics["test"]["accuracy"] >= 80.0, art.metrics["test"]


def test_one_log_line_per_epoch_and_early_stopping_on_a_flat_metric(tiny_bert, tiny_task, tmp_path, monkeypatch,
                                                                     caplog):
    # a learning rate too small to move the accuracy: with patience 1 training stops after epoch 2 of 4
    import deploykit.train.callbacks as callbacks

    lines = []
    monkeypatch.setattr(callbacks, "log", lines.append)
    out = tmp_path / "ft"
    run_stage("finetune", recipe(tiny_bert, tiny_task, epochs=4, learning_rate=1e-9, early_stopping_patience=1),
              None, out)
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["epochs_run"] == 2.0
    # the evaluations after training (kept checkpoint, test split) are not epoch lines and log no "nan"
    epoch_lines = [line for line in lines if line.startswith("finetune: epoch")]
    assert [line.split()[2] for line in epoch_lines] == ["1.00", "2.00"] and not any("nan" in x for x in lines)
    assert "did not find eval_accuracy" not in caplog.text


def test_windows_train_on_every_window_and_report_pooled_metrics(tiny_bert, tmp_path, monkeypatch):
    from conftest import write_long_task

    from deploykit import windows
    from deploykit.artifact import load_artifact
    from deploykit.data import load_task
    from deploykit.evaluate import evaluate_artifact

    said = []
    monkeypatch.setattr(windows, "log", said.append)
    monkeypatch.setattr(windows, "_SAID", set())  # lines other tests' splits of the same size already said
    r = build_recipe({"model": {"source": str(tiny_bert)},
                      "data": {"path": str(write_long_task(tmp_path / "long")), "max_length": 16, "long_texts": "windows",
                               "window_stride": 4},
                      "finetune": {**FAST, "epochs": 1}})
    art = run_stage("finetune", r, None, tmp_path / "ft")
    m = art.manifest
    assert (m["max_length"], m["long_texts"], m["window_stride"]) == (16, "windows", 4)
    # 33 tokens of text in windows of 14 that advance by 10: 3 windows a text, each a training row
    lines = [f"data.long_texts windows ({split}): {n} of {n} texts split into {3 * n} windows (stride 4); "
             f"{3 * n} rows in all" for split, n in (("validation", 16), ("train", 48), ("test", 16))]
    assert said[:3] == lines, said
    task = load_task(r.data)
    for split in ("validation", "test"):  # the stage's scores are per text: what pooled evaluation gives
        again = evaluate_artifact(load_artifact(tmp_path / "ft"), task.split(split), 16)  # stride from the manifest
        assert again["n"] == m["metrics"][split]["texts"] == 16 and m["metrics"][split]["accuracy"] == again["accuracy"]


def _killed_after_epoch_2(cfg, out, monkeypatch):
    """`cfg`, after a fine-tune into `out` was killed right after saving checkpoint-8 (checkpoint-4 kept too)."""
    from transformers import Trainer

    save = Trainer._save_checkpoint

    def killed(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if self.state.global_step == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        run_stage("finetune", cfg, None, out)
    monkeypatch.undo()
    return cfg


def test_a_checkpoint_that_fails_to_load_is_set_aside_and_named_once(tiny_bert, tiny_task, tmp_path, monkeypatch):
    # a scheduler.pt of other contents passes the file checks, then fails inside the Trainer: set aside, so that
    # the next start goes on from the checkpoint before it instead of failing the same way every time, and
    # nothing is deleted
    cfg = _killed_after_epoch_2(recipe(tiny_bert, tiny_task, epochs=3), tmp_path / "ft", monkeypatch)
    torch.save({"x": 1}, tmp_path / ".ft.work" / "checkpoint-8" / "scheduler.pt")
    with pytest.raises(UserError, match="checkpoint-8 could not be resumed from .*it was set aside as .*unusable"):
        run_stage("finetune", cfg, None, tmp_path / "ft", resume=True)
    assert not (tmp_path / ".ft.work" / "checkpoint-8").exists()
    assert (tmp_path / ".ft.work" / "checkpoint-8.unusable" / "scheduler.pt").is_file()
    art = run_stage("finetune", cfg, None, tmp_path / "ft", resume=True)
    assert art.manifest["metrics"]["resumed_from"] == "checkpoint-4"


def test_resume_under_other_settings_is_refused_and_keeps_the_checkpoints(tiny_bert, tiny_task, tmp_path,
                                                                           monkeypatch):
    # a recipe with another learning rate (or 3 classes instead of 2) would go on from steps it did not train, or
    # fail to load the checkpoint and lose it: one line names what changed, and every checkpoint stays
    cfg = _killed_after_epoch_2(recipe(tiny_bert, tiny_task, epochs=3), tmp_path / "ft", monkeypatch)
    work = tmp_path / ".ft.work"
    before = sorted(p.name for p in work.iterdir())
    other = recipe(tiny_bert, tiny_task, epochs=3, learning_rate=0.5)
    with pytest.raises(UserError, match=r"finetune --resume: the checkpoints in .* were trained with other settings: "
                                        r"finetune.learning_rate \(.* then, 0.5 now\); resume with the recipe"):
        run_stage("finetune", other, None, tmp_path / "ft", resume=True)
    assert sorted(p.name for p in work.iterdir()) == before and "checkpoint-8" in before
    art = run_stage("finetune", cfg, None, tmp_path / "ft", resume=True)  # the settings that wrote them
    assert art.manifest["metrics"]["resumed_from"] == "checkpoint-8"


def test_a_diverged_training_is_refused_and_writes_nothing(tiny_bert, tiny_task, tmp_path):
    # a learning rate of 1e12 turns every weight into NaN: saved, it would be gated on NaN scores and answer NaN
    cfg = recipe(tiny_bert, tiny_task, learning_rate=1e12, head_learning_rate=1e12)
    with pytest.raises(UserError, match=r"finetune: training diverged: \d+ of \d+ weight tensors of the checkpoint it "
                                        r"keeps hold NaN or inf after step \d+ .*nothing was written: lower "
                                        r"finetune.learning_rate, and finetune.head_learning_rate"):
        run_stage("finetune", cfg, None, tmp_path / "ft")
    assert not (tmp_path / "ft").exists()
