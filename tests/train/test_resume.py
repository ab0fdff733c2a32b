"""deploykit/train/resume.py and the callbacks' saved state: which checkpoints a stage resumes from, and a resumed
run that stops where the uninterrupted one stops (patience and the wall-clock budget count on)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

import deploykit.train.trainer as training
from deploykit.artifact import KEPT_FOR_RESUME, kept_for_resume
from deploykit.config import DataConfig, TrainConfig
from deploykit.data import load_task, to_dataset
from deploykit.train.resume import KEY_FILE, RESUME_FILES, forget, start_point


def fake_checkpoint(work: Path, step: int, whole: bool = True) -> Path:
    from safetensors.torch import save_file

    ckpt = work / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for name in RESUME_FILES:
        torch.save({"step": step}, ckpt / name)
    save_file({"w": torch.zeros(4)}, str(ckpt / "model.safetensors"))
    if whole:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


@pytest.fixture(autouse=True)
def no_kept_folders():
    KEPT_FOR_RESUME.clear()
    yield
    KEPT_FOR_RESUME.clear()


def test_run_resumes_only_checkpoints_written_under_the_same_key(tmp_path, capsys):
    out, work = tmp_path / "distill", tmp_path / ".distill.work"
    assert start_point(out, "distill", key="a") == (work, None)
    assert (work / KEY_FILE).read_text() == "a\n"
    fake_checkpoint(work, 4)
    fake_checkpoint(work, 8, whole=False)  # cut while being saved
    assert start_point(out, "distill", key="a") == (work, str(work / "checkpoint-4"))
    assert "checkpoint-8 cannot be resumed from (cut while being saved: no readable trainer_state.json); skipped" in \
        " ".join(capsys.readouterr().err.split())  # the console wraps lines at its width
    # the recipe changed (another hash): the old checkpoints are not this training's, and are removed
    assert start_point(out, "distill", key="b") == (work, None)
    assert "written for another config or input; starting afresh" in " ".join(capsys.readouterr().err.split())
    assert not list(work.glob("checkpoint-*")) and (work / KEY_FILE).read_text() == "b\n"
    assert KEPT_FOR_RESUME == {work: "kept: the same `deploykit run` command resumes from them"}
    assert kept_for_resume() == ""  # no checkpoint yet: none is claimed
    fake_checkpoint(work, 2)
    assert kept_for_resume() == (f"; the checkpoints in {work} are kept: the same `deploykit run` command resumes "
                                 "from them (remove the folder to free the space)")
    forget(work)
    assert not work.exists() and KEPT_FOR_RESUME == {} and kept_for_resume() == ""


@pytest.mark.parametrize("damage, why", [
    (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:-4]),
     "model.safetensors is unreadable"),
    (lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:-50]), "optimizer.pt is cut short"),
    (lambda c: (c / "rng_state.pth").write_bytes(b"PK\x03\x04"), "rng_state.pth is cut short"),
    (lambda c: (c / "config.json").write_text('{"model_type": "be'), "config.json is not readable JSON"),
    (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt is missing"),
    (lambda c: (c / "trainer_state.json").write_text("[]"), "trainer_state.json holds no training state"),
    (lambda c: (c / "model.safetensors").unlink(), "no weights file"),
])
def test_a_damaged_checkpoint_is_skipped_for_the_one_before(tmp_path, capsys, damage, why):
    # resuming from it failed every time, and the error said to run again
    out, work = tmp_path / "finetune", tmp_path / ".finetune.work"
    start_point(out, "finetune", key="k")
    fake_checkpoint(work, 4)
    damage(fake_checkpoint(work, 8))
    assert start_point(out, "finetune", key="k") == (work, str(work / "checkpoint-4"))
    assert f"checkpoint-8 cannot be resumed from ({why}" in " ".join(capsys.readouterr().err.split())


def test_junk_in_the_work_folder_is_not_taken_for_checkpoints(tmp_path):
    out, work = tmp_path / "finetune", tmp_path / ".finetune.work"
    start_point(out, "finetune", key="k")
    (work / "checkpoint-5").write_text("not a folder")
    assert start_point(out, "finetune", key="k") == (work, None)
    assert kept_for_resume() == ""  # nothing to resume from: the error line does not claim any
    fake_checkpoint(work, 4)
    (work / KEY_FILE).write_bytes(b"\xff\xfe\x00bad")  # not text: not this run's key
    assert start_point(out, "finetune", key="k") == (work, None)
    assert not (work / "checkpoint-4").exists()


def test_without_a_key_the_folder_starts_empty_unless_resume_is_asked(tmp_path):
    out, work = tmp_path / "ft", tmp_path / ".ft.work"
    fake_checkpoint(work, 4)
    # --resume: the user's call, whatever wrote the folder
    kept = start_point(out, "finetune", resume=True, resumed_by="kept for --resume")
    assert kept == (work, str(work / "checkpoint-4"))
    assert KEPT_FOR_RESUME == {work: "kept for --resume"}
    KEPT_FOR_RESUME.clear()
    # a plain `deploykit distill`: scratch, emptied, and nothing is announced as kept
    assert start_point(out, "distill") == (work, None)
    assert not work.exists() and KEPT_FOR_RESUME == {}


FAST = dict(learning_rate=1e-12, batch_size=16, eval_batch_size=32, warmup_ratio=0.0, logging_steps=1000,
            epochs="auto", max_epochs=50, eval_steps=1, stop_on="loss", min_epochs=0.0, early_stopping_patience=2)


def _trainer(tiny_bert, tiny_task, work, **cfg):
    task = load_task(DataConfig(path=str(tiny_task), label_names=["negative", "positive"], max_length=32))
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    return training.build_trainer(model, TrainConfig(**{**FAST, **cfg}), work, tok, to_dataset(task.train, tok, 32),
                                  to_dataset(task.validation, tok, 32))


class KilledAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _interrupted_at_step_2(tiny_bert, tiny_task, work, **cfg) -> Path:
    trainer = _trainer(tiny_bert, tiny_task, work, **cfg)
    trainer.add_callback(KilledAfterSave(2))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    return work / "checkpoint-2"


def test_a_resumed_run_counts_patience_on_from_the_checkpoint(tiny_bert, tiny_task, tmp_path):
    # a flat loss, evaluated every step: the uninterrupted run's patience of 2 is spent at step 3; a run
    # resumed from step 2 (one evaluation without improvement behind it) stops there too, not at step 4
    whole = _trainer(tiny_bert, tiny_task, tmp_path / "whole")
    done = whole.train()
    assert whole.state.global_step == 3
    checkpoint = _interrupted_at_step_2(tiny_bert, tiny_task, tmp_path / "w")
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["EarlyStopping"]["attributes"]["early_stopping_patience_counter"] == 1
    resumed = _trainer(tiny_bert, tiny_task, tmp_path / "w")
    result = resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 3
    assert resumed.stopping.reason == whole.stopping.reason
    # the mean training loss of the whole run, the steps before the checkpoint included
    assert training.training_record(resumed, result, 1.0, "auto")["train_loss"] == \
        pytest.approx(training.training_record(whole, done, 1.0, "auto")["train_loss"], rel=1e-6)


def test_a_resumed_run_counts_the_wall_clock_spent_before_it(tiny_bert, tiny_task, tmp_path):
    cfg = dict(max_minutes=60.0, early_stopping_patience=100)
    checkpoint = _interrupted_at_step_2(tiny_bert, tiny_task, tmp_path / "w", **cfg)
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    spent = state["stateful_callbacks"]["WallClockBudget"]["attributes"]["seconds"]
    assert 0 < spent < 600
    state["stateful_callbacks"]["WallClockBudget"]["attributes"]["seconds"] = 3599.99  # as if it ran an hour
    state_file.write_text(json.dumps(state))
    resumed = _trainer(tiny_bert, tiny_task, tmp_path / "w", **cfg)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 3 and "wall-clock budget of 60 min" in resumed.stopping.reason


def test_a_checkpoint_saved_without_the_budget_state_still_resumes(tiny_bert, tiny_task, tmp_path):
    # one written by an earlier deploykit: no WallClockBudget entry, which the next save would look up
    checkpoint = _interrupted_at_step_2(tiny_bert, tiny_task, tmp_path / "w", early_stopping_patience=100,
                                        max_epochs=1)
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["WallClockBudget"]
    state_file.write_text(json.dumps(state))
    resumed = _trainer(tiny_bert, tiny_task, tmp_path / "w", early_stopping_patience=100, max_epochs=1)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4 and "max_epochs 1" in resumed.stopping.reason


@pytest.mark.parametrize("cooldown, stop", [(False, 3), (True, 5)])
def test_a_run_resumed_from_the_checkpoint_where_training_stopped_trains_no_further(cooldown, stop, tiny_bert,
                                                                                    tiny_task, tmp_path):
    # patience is spent at step 3 (see above), and a cooldown ends at 5; killed after that checkpoint is written,
    # before the stage saved its output: the resumed run goes straight to the end, with the uninterrupted run's
    # steps and reason
    whole = _trainer(tiny_bert, tiny_task, tmp_path / "whole", cooldown=cooldown)
    done = whole.train()
    trainer = _trainer(tiny_bert, tiny_task, tmp_path / "w", cooldown=cooldown)
    trainer.add_callback(KilledAfterSave(stop))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    resumed = _trainer(tiny_bert, tiny_task, tmp_path / "w", cooldown=cooldown)
    result = resumed.train(resume_from_checkpoint=str(tmp_path / "w" / f"checkpoint-{stop}"))
    assert resumed.state.global_step == stop and resumed.stopping.reason == whole.stopping.reason
    record = training.training_record(resumed, result, 0.5, "auto")
    assert record["optimizer_steps"] == stop and record["train_seconds"] > 0.5  # the time before the kill counts
    assert record["train_loss"] == pytest.approx(done.training_loss, rel=1e-6)  # the whole run's, none logged
    weights = {k: v for k, v in resumed.model.state_dict().items()}
    assert all(torch.equal(weights[k], v) for k, v in whole.model.state_dict().items())


def test_a_run_killed_during_its_cooldown_resumes_with_the_same_falling_rate(tiny_bert, tiny_task, tmp_path):
    from transformers import TrainerCallback

    class Rates(TrainerCallback):
        def __init__(self):
            self.rates = {}

        def on_step_end(self, args, state, control, lr_scheduler=None, **kw):
            self.rates[state.global_step] = lr_scheduler.get_last_lr()[0]

    whole, seen = _trainer(tiny_bert, tiny_task, tmp_path / "whole", cooldown=True), Rates()
    whole.add_callback(seen)
    whole.train()
    trainer = _trainer(tiny_bert, tiny_task, tmp_path / "w", cooldown=True)
    trainer.add_callback(KilledAfterSave(4))  # one of the cooldown's 2 steps done
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    saved = json.loads((tmp_path / "w" / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["EarlyStopping"]["attributes"]["cooling"]["start"] == 3
    assert saved["EarlyStopping"]["attributes"]["cooling"]["end"] == 5
    resumed, again = _trainer(tiny_bert, tiny_task, tmp_path / "w", cooldown=True), Rates()
    resumed.add_callback(again)
    resumed.train(resume_from_checkpoint=str(tmp_path / "w" / "checkpoint-4"))
    assert resumed.state.global_step == 5 and resumed.stopping.reason == whole.stopping.reason
    assert again.rates == {5: 0.0} and seen.rates[5] == 0.0 and seen.rates[4] == pytest.approx(seen.rates[3] / 2,
                                                                                                rel=1e-9, abs=0)
