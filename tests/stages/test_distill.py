"""`deploykit distill` on tiny BERT / RoBERTa / DistilBERT: student building, outputs, bad inputs."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertTokenizerFast
from typer.testing import CliRunner

from deploykit.cli import app
from deploykit.config import DistillConfig, build_recipe
from deploykit.errors import UserError
from deploykit.kinds.classification import build_student
from deploykit.layers import layer_list
from deploykit.models import load_tokenizer
from deploykit.pipeline import run_stage
from tests.conftest import make_tiny_model

FAST = {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16, "eval_batch_size": 32, "warmup_ratio": 0.0,
        "early_stopping_patience": None, "logging_steps": 1000, "bf16": "off"}
LABELS = ["negative", "positive"]


def recipe(task, **distill):
    return build_recipe({"data": {"path": str(task), "max_length": 32, "label_names": LABELS},
                         "distill": {**FAST, **distill}})


@pytest.fixture(scope="module")
def teacher4(tmp_path_factory):
    """A 4-layer tiny BERT fine-tuned on the tiny task by `deploykit finetune` (once per module): a random
    teacher's soft labels are uniform and would teach the student nothing."""
    from tests.conftest import write_task

    root = tmp_path_factory.mktemp("distill")
    folder = make_tiny_model(root / "init", "bert", num_hidden_layers=4)
    finetune = build_recipe({"model": {"source": str(folder)},
                             "data": {"path": str(write_task(root / "task")), "max_length": 32, "label_names": LABELS},
                             "finetune": {**FAST, "epochs": 10}})
    return run_stage("finetune", finetune, None, root / "teacher").path


def layer_count_override(arch: str, n: int) -> dict:
    return {"n_layers": n} if arch == "distilbert" else {"num_hidden_layers": n}


def test_student_from_layers_0_and_2_holds_exactly_those_weights(tmp_path, arch):
    folder = make_tiny_model(tmp_path / "t", arch, **layer_count_override(arch, 4))
    teacher = AutoModelForSequenceClassification.from_pretrained(folder)
    student, kept, layer_map = build_student(DistillConfig(student_layers=[0, 2]), teacher,
                                             load_tokenizer(str(folder)), LABELS)
    assert kept == [0, 2] and layer_map == [0, 2]
    student.save_pretrained(tmp_path / "s")  # what the stage writes: it must reload as a 2-layer model
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert len(layer_list(reloaded)) == 2
    t_layers = layer_list(teacher)
    for s_idx, t_idx in enumerate([0, 2]):
        s_state, t_state = layer_list(reloaded)[s_idx].state_dict(), t_layers[t_idx].state_dict()
        assert s_state.keys() == t_state.keys()
        assert all(torch.equal(s_state[k], t_state[k]) for k in t_state)
    # everything outside the layers (embeddings, classifier) is the teacher's
    t_all = teacher.state_dict()
    outside = [k for k in reloaded.state_dict() if ".layer." not in k]
    assert outside and all(torch.equal(reloaded.state_dict()[k], t_all[k]) for k in outside)
    # the teacher itself is untouched
    assert len(layer_list(teacher)) == 4


def test_distill_writes_a_plain_hf_folder_with_a_manifest(teacher4, tiny_task, tmp_path):
    out = tmp_path / "distill"
    art = run_stage("distill", recipe(tiny_task, epochs=6), teacher4, out)
    assert {"config.json", "model.safetensors", "tokenizer.json", "manifest.json"} <= {p.name for p in out.iterdir()}
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and model.config.id2label == {0: "negative", 1: "positive"}
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage"] == "distill" and m["format"] == "pytorch" and m["parent"]["path"] == str(teacher4)
    assert m["teacher"] == {"source": str(teacher4), "layers": 4, "parameters": m["metrics"]["teacher_parameters"],
                            "hash": json.loads((teacher4 / "manifest.json").read_text())["hash"]}
    assert m["student"]["layers_kept"] == [1, 3] and m["student"]["layers"] == 2  # every other, ending on the top
    assert m["metrics"]["parameters"] < m["metrics"]["teacher_parameters"]
    for split in ("validation", "test"):
        assert {"accuracy", "macro_f1"} <= set(m["metrics"][split])
        assert m["metrics"]["teacher"][split]["n"] == 32
    assert art.metrics["validation"]["accuracy"] > 60  # the tiny task is learnable in 6 epochs
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_unlabeled_texts_join_the_training_rows_taught_by_the_teacher_alone(teacher4, tiny_task, tmp_path):
    from deploykit.kinds import kind_of
    from deploykit.train.kd import TEACHER_LOGITS
    from deploykit.transfer import KD_ONLY

    texts = [line.split("\t")[0] for line in (tiny_task / "test.tsv").read_text().splitlines()[1:]]
    (tmp_path / "more.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    r = recipe(tiny_task, epochs=6, unlabeled={"path": str(tmp_path / "more.txt")})
    job = kind_of("classification").distill_job(r, str(teacher4), None)
    assert len(job.train_ds) == 64 + 32 and job.train_ds["labels"][64:] == [KD_ONLY] * 32
    assert "64 train + 32 unlabelled (KD only)" in job.summary
    art = run_stage("distill", r, teacher4, tmp_path / "d")
    assert art.manifest["config"]["distill"]["unlabeled"]["path"] == str(tmp_path / "more.txt")
    assert art.metrics["validation"]["accuracy"] > 60
    assert TEACHER_LOGITS not in job.train_ds.column_names  # cached by the trainer, on every row it trains on


def test_separate_distilbert_student_with_hidden_state_loss(teacher4, tiny_task, tmp_path):
    student = make_tiny_model(tmp_path / "student", "distilbert", dim=32, hidden_dim=64, labels=["LABEL_0", "LABEL_1"])
    out = tmp_path / "distill"
    run_stage("distill", recipe(tiny_task, teacher=str(teacher4), student=str(student), alpha_hidden=1.0,
                                epochs=1), None, out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.model_type == "distilbert" and model.config.id2label == {0: "negative", 1: "positive"}
    saved = AutoModelForSequenceClassification.from_pretrained(student)
    assert set(model.state_dict()) == set(saved.state_dict())  # the projection stayed out of the student
    m = json.loads((out / "manifest.json").read_text())
    assert m["parent"] is None and m["teacher"]["source"] == str(teacher4)
    assert m["student"] == {"source": str(student), "layers_kept": None, "layer_map": [1, 3], "layers": 2}


def test_a_hidden_state_projection_is_not_resumed_but_started_afresh(teacher4, tiny_task, tmp_path, monkeypatch,
                                                                    capsys):
    # the projection lives in the trainer, not in any checkpoint: going on from one would train it from random and
    # load an optimizer state with a parameter group the new optimizer lacks
    from transformers import Trainer

    student = make_tiny_model(tmp_path / "student", "distilbert", dim=32, hidden_dim=64, labels=["LABEL_0", "LABEL_1"])
    r = recipe(tiny_task, teacher=str(teacher4), student=str(student), alpha_hidden=1.0, epochs=2)
    save = Trainer._save_checkpoint

    def killed_after_epoch_1(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save_checkpoint", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run_stage("distill", r, None, tmp_path / "d", resume_key="k")
    monkeypatch.undo()
    assert list((tmp_path / ".d.work").glob("checkpoint-*"))  # kept for `deploykit run`
    art = run_stage("distill", r, None, tmp_path / "d", resume_key="k")
    assert art.metrics["resumed_from"] is None and art.metrics["optimizer_steps"] == 8
    said = " ".join(capsys.readouterr().err.split())
    assert "cannot be resumed; starting afresh" in said and "resuming from" not in said  # one story, not two


def test_ddp_two_processes_share_the_work_with_cached_teacher_logits(teacher4, tiny_task, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "deploykit.cli", "distill", "--from", str(teacher4), "--data", str(tiny_task), "--out", str(out),
           "--quiet", "--set", "data.label_names=[negative,positive]", "--set", "distill.epochs=2",
           "--set", "distill.batch_size=16", "--set", "distill.early_stopping_patience=null"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["ddp"]["world_size"] == 2 and len(set(m["ddp"]["weight_checksums"])) == 1
    # 64 rows, 16 per rank and step, 2 ranks: 2 steps per epoch instead of 4 -> the data was sharded
    assert m["optimizer_steps"] == 4
    AutoModelForSequenceClassification.from_pretrained(out)


# ---------------------------------------------------------------- bad input: one line each

def test_layer_index_out_of_range(teacher4, tiny_task, tmp_path):
    with pytest.raises(UserError, match=r"distill.student_layers: layer index 7 out of range \(the model has layers 0..3\)"):
        run_stage("distill", recipe(tiny_task, student_layers=[0, 7]), teacher4, tmp_path / "out")


def test_cli_says_it_in_one_line_with_exit_code_2(teacher4, tiny_task, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["distill", "--from", str(teacher4), "--data", str(tiny_task),
                                      "--set", "data.label_names=[negative,positive]",
                                      "--set", "distill.student_layers=[0,9]", "--out", str(out), "--quiet"])
    assert result.exit_code == 2 and not out.exists()
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == ["error: distill.student_layers: layer index 9 out of range (the model has layers 0..3)"]
    assert "Traceback" not in result.output


def test_an_interrupted_distillation_leaves_no_checkpoints(teacher4, tiny_task, tmp_path, monkeypatch):
    from transformers import Trainer

    def interrupted(self, *args, **kwargs):
        self.save_model(str(self.args.output_dir) + "/checkpoint-1")  # what training had written by then
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_stage("distill", recipe(tiny_task), teacher4, tmp_path / "out")
    # distillation has no --resume: nothing of it stays beside the output (finetune's checkpoints do, for --resume)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "task") == []


def test_teacher_with_another_label_set(tmp_path, tiny_task):
    teacher = make_tiny_model(tmp_path / "t3", "bert", labels=["bad", "neutral", "good"])
    with pytest.raises(UserError, match=r"labels \['bad', 'neutral', 'good'\] differ from the data's"):
        run_stage("distill", recipe(tiny_task), teacher, tmp_path / "out")


def test_student_classifier_with_another_label_set(teacher4, tiny_task, tmp_path):
    student = make_tiny_model(tmp_path / "s", "bert", labels=["no", "yes"])
    with pytest.raises(UserError, match=r"distill.student .*labels \['no', 'yes'\] differ"):
        run_stage("distill", recipe(tiny_task, student=str(student)), teacher4, tmp_path / "out")


def test_student_with_another_tokenizer(teacher4, tiny_task, tmp_path):
    student = make_tiny_model(tmp_path / "s", "bert", vocab_size=8)  # its own tokenizer's size, not the teacher's
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(student)  # replaces MiniLM's
    with pytest.raises(UserError, match="its tokenizer differs from the teacher's \\(8 vs 30522 tokens"):
        run_stage("distill", recipe(tiny_task, student=str(student)), teacher4, tmp_path / "out")


def test_student_layers_need_a_student_built_from_the_teacher(teacher4, tiny_task, tmp_path):
    with pytest.raises(UserError, match="use distill.layer_map"):
        run_stage("distill", recipe(tiny_task, student=str(teacher4), student_layers=[0]), teacher4, tmp_path / "o")


def test_no_teacher(tiny_task, tmp_path):
    with pytest.raises(UserError, match="distill needs a teacher|needs an input artifact"):
        run_stage("distill", recipe(tiny_task), None, tmp_path / "out")


def test_student_larger_than_the_teacher_warns(tmp_path, tiny_task, capsys):
    teacher = make_tiny_model(tmp_path / "t", "bert")
    bigger = make_tiny_model(tmp_path / "s", "bert", num_hidden_layers=3)
    run_stage("distill", recipe(tiny_task, student=str(bigger), max_steps=1, epochs=1), teacher, tmp_path / "out")
    assert "is larger than the teacher" in capsys.readouterr().err


def test_windows_pool_the_teachers_and_the_students_scores(tmp_path):
    from conftest import write_long_task

    from deploykit.artifact import load_artifact
    from deploykit.data import load_task
    from deploykit.evaluate import evaluate_artifact

    teacher = make_tiny_model(tmp_path / "teacher", "bert", num_hidden_layers=4)
    r = build_recipe({"data": {"path": str(write_long_task(tmp_path / "long")), "max_length": 16,
                               "label_names": LABELS, "long_texts": "windows", "window_stride": 4},
                      "distill": {**FAST, "epochs": 1, "teacher": str(teacher)}})
    art = run_stage("distill", r, None, tmp_path / "student")
    m = art.manifest
    assert (m["long_texts"], m["window_stride"]) == ("windows", 4)
    # per text, not per window (3 windows a text): 16 validation texts
    assert m["metrics"]["teacher"]["validation"]["n"] == 16
    want = evaluate_artifact(load_artifact(teacher), load_task(r.data).validation, 16, data=r.data)
    assert m["metrics"]["teacher"]["validation"]["accuracy"] == want["accuracy"]
    again = evaluate_artifact(load_artifact(tmp_path / "student"), load_task(r.data).validation, 16)
    assert m["metrics"]["validation"]["accuracy"] == again["accuracy"]
    assert m["metrics"]["validation"]["texts"] == m["metrics"]["test"]["texts"] == 16  # the student's: per text too
