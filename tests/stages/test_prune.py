"""`deploykit prune` on tiny BERT / RoBERTa / DistilBERT: new sizes, plain reload, vocab, bad input."""

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model, write_task
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from deploykit.cli import app
from deploykit.config import build_recipe
from deploykit.errors import UserError
from deploykit.pipeline import run_stage

FIELDS = {"bert": ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers"),
          "roberta": ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers"),
          "distilbert": ("dim", "n_heads", "hidden_dim", "n_layers")}
RECOVERY = {"max_steps": 2, "batch_size": 8, "eval_batch_size": 16, "learning_rate": 1e-3, "warmup_ratio": 0.0,
            "early_stopping_patience": None, "logging_steps": 1000, "bf16": "off"}


def recipe(model, task, **prune):
    return build_recipe({"model": {"source": str(model)},
                         "data": {"path": str(task), "max_length": 32, "label_names": ["negative", "positive"]},
                         "prune": {"importance_batches": 2, "macs_seq_len": 32, **prune}})


@pytest.fixture
def three_layers(tmp_path, arch):
    layers = {"n_layers": 3} if arch == "distilbert" else {"num_hidden_layers": 3}
    return make_tiny_model(tmp_path / f"tiny3-{arch}", arch, **layers)


def test_width_ffn_depth_vocab_give_a_smaller_plain_model(three_layers, tiny_task, tmp_path, arch):
    out = tmp_path / "pruned"
    art = run_stage("prune", recipe(three_layers, tiny_task, width=0.5, ffn=0.5, drop_layers=[1], vocab=True),
                    three_layers, out)
    config = json.loads((out / "config.json").read_text())
    assert [config[f] for f in FIELDS[arch]] == [32, 2, 64, 2]
    # a 64-sentence task uses a few dozen word pieces; the single-character pieces (~2k) stay for unseen words
    assert config["vocab_size"] < 2500 < 30522
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == config["vocab_size"]
    with torch.inference_mode():
        logits = model(**tokenizer(["the movie was great"], return_tensors="pt")).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    metrics = art.manifest["metrics"]
    assert metrics["before"]["shape"]["hidden"] == 64 and metrics["after"]["shape"]["hidden"] == 32
    assert metrics["after"]["macs"] < metrics["before"]["macs"] / 4 and metrics["macs_ratio"] < 0.25
    assert metrics["reload_max_logit_diff"] <= 1e-5 and metrics["vocab_max_logit_diff"] <= 1e-4
    kept = art.manifest["kept"]
    assert kept["layers"] == [0, 2] and [len(h) for h in kept["heads"]] == [2, 2]
    assert len(kept["channels"]) == 32 and len(kept["tokens"]) == config["vocab_size"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_iterative_schedule_with_distilled_recovery(tiny_bert, tiny_task, tmp_path):
    out = tmp_path / "pruned"
    art = run_stage("prune", recipe(tiny_bert, tiny_task, ffn=0.5, width=0.5, steps=2, recovery=RECOVERY,
                                    distill_from_parent=True), tiny_bert, out)
    shape = art.manifest["metrics"]["after"]["shape"]
    assert (shape["hidden"], shape["heads"], shape["ffn"], shape["layers"]) == (32, 2, 64, 2)
    assert art.manifest["metrics"]["test"]["n"] == 32
    # what the last cut left before its recovery, scored on the same rows as before and after
    assert art.manifest["metrics"]["before_recovery"]["validation"]["n"] == 32
    assert not (tmp_path / ".pruned.work").exists()


def test_hidden_state_recovery_learns_through_a_selection_projection(tiny_bert, tiny_task, tmp_path, monkeypatch):
    """hidden_kd: width-pruned layers learn the parent's hidden states through a projection that starts
    as the channel selection, so the kept channels match the parent's exactly before any training."""
    from deploykit.train.kd import DistillTrainer

    seen = {}
    real_train = DistillTrainer.train

    def train(self, *a, **k):
        seen.update(alpha_hidden=self.alpha_hidden, layer_map=self.layer_map,
                    weight=self.projection.weight.detach().clone())
        return real_train(self, *a, **k)

    monkeypatch.setattr(DistillTrainer, "train", train)
    art = run_stage("prune", recipe(tiny_bert, tiny_task, width=0.5, drop_layers=[0], recovery=RECOVERY,
                                    hidden_kd=1.0), tiny_bert, tmp_path / "pruned")
    channels = art.manifest["kept"]["channels"]
    assert seen["alpha_hidden"] == 1.0 and seen["layer_map"] == [1]  # the one kept layer learns from parent layer 1
    expected = torch.zeros(64, 32)
    expected[channels, torch.arange(32)] = 1.0
    assert torch.equal(seen["weight"], expected)
    assert art.manifest["metrics"]["reload_max_logit_diff"] <= 1e-5


@pytest.mark.parametrize("extra", [{}, {"recovery": RECOVERY, "distill_from_parent": False}])
def test_hidden_kd_without_a_parent_to_learn_from_is_refused(tiny_bert, tiny_task, extra):
    with pytest.raises(UserError, match="prune.hidden_kd needs a recovery section and distill_from_parent") as err:
        recipe(tiny_bert, tiny_task, ffn=0.5, hidden_kd=1.0, **extra)
    assert "\n" not in str(err.value)


def test_recovery_rows_are_the_long_ones_of_the_whole_training_file(tiny_bert, tiny_task):
    from deploykit.data import load_task
    from deploykit.pruning.text_job import recovery_rows as _recovery_rows

    train = tiny_task / "train.tsv"
    lines = train.read_text().splitlines()
    # every third row a whole sentence, the rest short phrases (as in SST-2's training file)
    lines[1:] = [f"{t} and the rest of it was much the same\t{y}" if i % 3 == 0 else line
                 for i, (line, (t, y)) in enumerate((ln, ln.split("\t")) for ln in lines[1:])]
    train.write_text("\n".join(lines) + "\n")
    r = recipe(tiny_bert, tiny_task, ffn=0.5)
    task = load_task(r.data)
    full = task.train
    lengths = sorted(len(t.split()) for t in full.texts)
    n = lengths[-1]  # the longest rows only
    long_rows = [t for t in full.texts if len(t.split()) >= n]
    assert 4 <= len(long_rows) < len(full)
    cap = len(long_rows) // 2
    capped = r.model_copy(update={"data": r.data.model_copy(update={"max_train_samples": cap}),
                                  "prune": r.prune.model_copy(update={"recovery_min_words": n})})
    # drawn from the whole file, not from the rows max_train_samples keeps, then capped
    rows = _recovery_rows(capped, load_task(capped.data))
    assert len(rows) == cap and set(rows.texts) <= set(long_rows)
    uncapped = r.model_copy(update={"prune": r.prune.model_copy(update={"recovery_min_words": n})})
    assert sorted(_recovery_rows(uncapped, task).texts) == sorted(long_rows)
    every = r.model_copy(update={"prune": r.prune.model_copy(update={"recovery_rows": "all"})})
    assert _recovery_rows(every, task) is full  # the data section's rows, untouched
    with pytest.raises(UserError, match="no training row has 1000 words"):
        _recovery_rows(r.model_copy(update={"prune": r.prune.model_copy(update={"recovery_min_words": 1000})}), task)


def test_recovery_rows_count_both_texts_of_a_pair(tiny_bert, tmp_path):
    from deploykit.data import load_task
    from deploykit.pruning.text_job import recovery_rows as _recovery_rows

    folder = tmp_path / "pairs"
    folder.mkdir()
    rows = ["a\tb\ty"] + [f"a good film\t{'and it was fine ' * (i % 3)}\t{i % 2}" for i in range(12)]
    (folder / "train.tsv").write_text("\n".join(rows) + "\n")
    r = build_recipe({"model": {"source": str(tiny_bert)},
                      "data": {"path": str(folder), "text_column": "a", "text_pair_column": "b", "label_column": "y"},
                      "prune": {"ffn": 0.5, "recovery_min_words": 8}})
    task = load_task(r.data)
    train = task.train
    kept = _recovery_rows(r, task)
    # 3 words in the first text and 0, 4 or 8 in the pair: only the pairs of 8 reach 8 words together
    assert len(kept) == sum(p.count("and") == 2 for p in train.pairs) > 0
    assert all(p.count("and") == 2 for p in kept.pairs)


@pytest.mark.parametrize("prune, message", [
    ({"width": 1.0}, "prune.width=1.0 must be in [0, 1)"),
    ({"ffn": -0.1}, "prune.ffn=-0.1 must be in [0, 1)"),
    ({"width": 0.3}, "not whole heads of 16"),
    ({"width": 0.999}, "leaves no attention head"),
    ({"heads": 0.5}, "use prune.width"),
    ({"depth": 0.5, "drop_layers": [0]}, "not both"),
    ({"drop_layers": [0, 1]}, "prune.drop_layers [0, 1] removes every layer of its 2-layer input; keep at least one"),
    ({"depth": 0.9}, "prune.depth=0.9 leaves no layer of 2; use a ratio below 0.5000"),
    ({"depth": 0.2}, "prune.depth=0.2 removes less than one layer of 2; use at least 0.5000"),
    ({}, "nothing to prune"),
])
def test_bad_requests_are_one_line_and_write_nothing(tiny_bert, tiny_task, tmp_path, prune, message):
    before = sorted(tmp_path.iterdir())
    with pytest.raises(UserError, match=re.escape(message)) as err:
        run_stage("prune", recipe(tiny_bert, tiny_task, **prune), tiny_bert, tmp_path / "pruned")
    assert "\n" not in str(err.value)
    assert sorted(tmp_path.iterdir()) == before  # no output, no staging or work folder


def test_unknown_architecture_is_refused(tiny_task, tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    folder = tmp_path / "gpt2"
    GPT2ForSequenceClassification(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=30522,
                                             pad_token_id=0)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(make_tiny_model(tmp_path / "bert", "bert")).save_pretrained(folder)
    with pytest.raises(UserError, match="architecture 'gpt2' is not supported"):
        run_stage("prune", recipe(folder, tiny_task, ffn=0.5), folder, tmp_path / "pruned")
    assert not (tmp_path / "pruned").exists()


def test_cli_refuses_heads_on_bert_with_exit_code_2(tiny_bert, tiny_task, tmp_path):
    out = tmp_path / "pruned"
    result = CliRunner().invoke(app, ["prune", "--from", str(tiny_bert), "--data", str(tiny_task),
                                      "--set", "prune.heads=0.5", "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    assert "use prune.width" in result.output and not out.exists()


def test_output_the_config_cannot_express_fails_and_leaves_nothing(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit.pruning.units as units
    from deploykit.pruning.reload import ReloadError

    # a pruner that forgets to write the new sizes into config.json: the saved shapes disagree with it
    monkeypatch.setattr(units, "sync_config", lambda model: None)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ReloadError, match="plain from_pretrained|config does not express"):
        run_stage("prune", recipe(tiny_bert, tiny_task, ffn=0.5, vocab=True), tiny_bert, tmp_path / "pruned")
    assert sorted(tmp_path.iterdir()) == before


def test_vocabulary_check_failure_is_a_check_error_exit_3(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit.evaluate as evaluate

    real = evaluate.predict
    calls = []

    def drifting(predictor, rows, tokenizer, *args, **kwargs):  # the first call with the cut vocabulary: drift
        calls.append(len(tokenizer) < 30522)
        out = real(predictor, rows, tokenizer, *args, **kwargs)
        return out + (1e-2 if calls.count(True) == 1 and calls[-1] else 0.0)

    monkeypatch.setattr(evaluate, "predict", drifting)
    result = CliRunner().invoke(app, ["prune", "--from", str(tiny_bert), "--data", str(tiny_task), "-q",
                                      "--set", "prune.vocab=true", "--set", "prune.ffn=0.5",
                                      "--set", "data.max_length=32", "--out", str(tmp_path / "pruned")])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]  # stdout and stderr: one line in all
    assert result.exit_code == 3, result.output
    assert len(lines) == 1 and lines[0].startswith("error: vocabulary pruning check failed: ") and "1.00e-02" in lines[0]
    assert not (tmp_path / "pruned").exists()


def test_a_head_of_another_label_count_is_refused_not_reinitialised(tiny_bert, tmp_path):
    from conftest import write_task

    task = write_task(tmp_path / "three")
    rows = (task / "train.tsv").read_text().splitlines()
    (task / "train.tsv").write_text("\n".join(rows + ["an extra third class\t2"]) + "\n")
    cfg = build_recipe({"data": {"path": str(task), "max_length": 32}, "prune": {"ffn": 0.5}})
    with pytest.raises(UserError, match="has 2 labels but the data has 3"):
        run_stage("prune", cfg, tiny_bert, tmp_path / "pruned")


def test_a_parent_trained_on_windows_is_pruned_and_scored_on_windows(tiny_bert, tmp_path, monkeypatch):
    """The recipe says truncate (the default), the parent's manifest records window_stride: windows win, as
    the trained max_length does, and the pruned folder records them too."""
    from conftest import write_long_task

    from deploykit import windows

    said = []
    monkeypatch.setattr(windows, "log", said.append)
    monkeypatch.setattr(windows, "_SAID", set())  # lines other tests' splits of the same size already said
    (tiny_bert / "manifest.json").write_text(json.dumps(
        {"stage": "finetune", "format": "pytorch", "max_length": 16, "long_texts": "windows", "window_stride": 4}))
    r = build_recipe({"model": {"source": str(tiny_bert)},
                      "data": {"path": str(write_long_task(tmp_path / "long")), "max_length": "auto"},
                      "prune": {"importance_batches": 2, "macs_seq_len": 16, "ffn": 0.5}})
    art = run_stage("prune", r, tiny_bert, tmp_path / "pruned")
    assert (art.manifest["max_length"], art.manifest["window_stride"]) == (16, 4)
    # validation before and after, and test, scored as 3 windows a text
    assert said.count("data.long_texts windows: 16 of 16 texts split into 48 windows (stride 4); 48 rows in all") == 1
    assert art.metrics["before"]["validation"]["n"] == art.metrics["after"]["validation"]["n"] == 16


def test_recovery_distils_on_unlabelled_texts_too(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit.transfer as transfer
    from deploykit.transfer import KD_ONLY

    (tmp_path / "more.txt").write_text("a fine film\nthe plot drags\nwhat a cast\n", encoding="utf-8")
    built = []
    real = transfer.add_unlabeled
    monkeypatch.setattr(transfer, "add_unlabeled", lambda *a: built.append(real(*a)) or built[-1])
    r = recipe(tiny_bert, tiny_task, ffn=0.5, recovery=RECOVERY, unlabeled={"path": str(tmp_path / "more.txt")})
    art = run_stage("prune", r, tiny_bert, tmp_path / "p")
    (train,) = built
    assert train["labels"][-3:] == [KD_ONLY] * 3 and all(y >= 0 for y in train["labels"][:-3])
    assert art.manifest["config"]["prune"]["unlabeled"]["path"] == str(tmp_path / "more.txt")


@pytest.fixture
def distilled(tmp_path):
    """(4-layer tiny teacher folder, its 2-layer student distilled by the real distill stage for one step)."""
    teacher = make_tiny_model(tmp_path / "teacher4", "bert", num_hidden_layers=4, seed=1)
    task = write_task(tmp_path / "dtask")
    distill = build_recipe({"data": {"path": str(task), "max_length": 32, "label_names": ["negative", "positive"]},
                            "distill": {**RECOVERY, "student_layers": [0, 2]}})
    return teacher, run_stage("distill", distill, teacher, tmp_path / "student").path


def test_recovery_distils_from_the_teacher_the_parent_was_distilled_from(distilled, tiny_task, tmp_path, monkeypatch):
    from deploykit.train.kd import DistillTrainer

    teacher, student = distilled
    seen = {}
    real_train = DistillTrainer.train

    def train(self, *a, **k):
        seen.update(layers=self.teacher.config.num_hidden_layers,
                    weight=self.teacher.classifier.weight.detach().clone())
        return real_train(self, *a, **k)

    monkeypatch.setattr(DistillTrainer, "train", train)
    for who, layers, source in (("parent", 2, student), ("teacher", 4, teacher)):
        seen.clear()
        art = run_stage("prune", recipe(student, tiny_task, ffn=0.5, recovery=RECOVERY, recovery_teacher=who),
                        student, tmp_path / f"pruned-{who}")
        assert seen["layers"] == layers  # the unpruned 2-layer student, or the 4-layer model it was distilled from
        expected = AutoModelForSequenceClassification.from_pretrained(source).classifier.weight
        assert torch.equal(seen["weight"], expected)
        assert art.manifest["config"]["prune"]["recovery_teacher"] == who


def test_a_recovery_teacher_that_cannot_be_read_is_one_line_and_writes_nothing(distilled, tiny_bert, tiny_task,
                                                                                tmp_path):
    import shutil

    teacher, student = distilled
    other = make_tiny_model(tmp_path / "other-vocab", "bert", vocab_size=2000)
    shutil.rmtree(teacher)
    for parent, message in ((tiny_bert, f"prune.recovery_teacher: teacher: {tiny_bert} names no teacher folder (a "
                                        "`deploykit distill` output does); set prune.recovery_teacher: parent"),
                            (student, f"prune.recovery_teacher: teacher: {student}'s teacher: ")):
        before = sorted(tmp_path.iterdir())
        with pytest.raises(UserError, match=re.escape(message)) as err:
            run_stage("prune", recipe(parent, tiny_task, ffn=0.5, recovery=RECOVERY, recovery_teacher="teacher"),
                      parent, tmp_path / "pruned")
        assert "\n" not in str(err.value)
        assert sorted(tmp_path.iterdir()) == before
    shutil.copytree(other, teacher)  # a teacher whose word pieces are not the student's
    with pytest.raises(UserError, match="has 2000 word pieces"):
        run_stage("prune", recipe(student, tiny_task, ffn=0.5, recovery=RECOVERY, recovery_teacher="teacher"),
                  student, tmp_path / "pruned")


@pytest.mark.parametrize("extra, message", [
    ({}, "prune.recovery_teacher: teacher needs a recovery section and distill_from_parent: true"),
    ({"recovery": RECOVERY, "distill_from_parent": False},
     "prune.recovery_teacher: teacher needs a recovery section and distill_from_parent: true"),
    ({"recovery": RECOVERY, "hidden_kd": 1.0}, "set recovery_teacher: parent or hidden_kd: 0"),
])
def test_a_recovery_teacher_without_recovery_to_use_it_is_refused(tiny_bert, tiny_task, extra, message):
    with pytest.raises(UserError, match=re.escape(message)) as err:
        recipe(tiny_bert, tiny_task, ffn=0.5, recovery_teacher="teacher", **extra)
    assert "\n" not in str(err.value)


def test_a_run_that_prunes_the_fine_tuned_model_itself_has_no_teacher_to_recover_from(tiny_bert, tiny_task, tmp_path):
    from deploykit.pipeline import run_recipe
    from deploykit.validate import recipe_problems

    tree = {"model": {"source": str(tiny_bert)},
            "data": {"path": str(tiny_task), "max_length": 32, "label_names": ["negative", "positive"]},
            "finetune": RECOVERY, "prune": {"ffn": 0.5, "recovery": RECOVERY, "recovery_teacher": "teacher"}}
    message = "in this recipe prune's input is the fine-tuned model, which has no teacher; add a distill section"
    assert any(message in line for line in recipe_problems(build_recipe(tree)))
    with pytest.raises(UserError, match=re.escape(message)):
        run_recipe(build_recipe(tree), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before any training or folder
    tree["distill"] = {**RECOVERY, "student_layers": [0]}
    assert not any(message in line for line in recipe_problems(build_recipe(tree)))


def test_a_prune_only_run_checks_its_source_names_a_teacher_before_any_work(distilled, tiny_bert, tiny_task,
                                                                           tmp_path):
    import shutil

    from deploykit.pipeline import run_recipe
    from deploykit.validate import recipe_problems

    teacher, student = distilled

    def tree(source):
        return build_recipe({"model": {"source": str(source)},
                             "data": {"path": str(tiny_task), "max_length": 32, "label_names": ["negative", "positive"]},
                             "prune": {"ffn": 0.5, "recovery": RECOVERY, "recovery_teacher": "teacher"}})

    assert not any("recovery_teacher" in line for line in recipe_problems(tree(student)))
    undistilled = (f"prune.recovery_teacher: teacher: model.source {tiny_bert} names no teacher folder (a `deploykit "
                   "distill` output does); set prune.recovery_teacher: parent")
    assert undistilled in recipe_problems(tree(tiny_bert))
    with pytest.raises(UserError, match=re.escape(undistilled)):
        run_recipe(tree(tiny_bert), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder, as validate said
    shutil.rmtree(teacher)
    gone = f"prune.recovery_teacher: teacher: model.source {student} was distilled from {teacher}, which is gone"
    assert any(line.startswith(gone) for line in recipe_problems(tree(student)))


def seen_task(folder):
    """The tiny task with a dev file of training rows: every validation row occurs inside a training text."""
    task = write_task(folder)
    lines = (task / "train.tsv").read_text(encoding="utf-8").splitlines()
    (task / "dev.tsv").write_text("\n".join(lines[:33]) + "\n", encoding="utf-8")
    return task


def test_auto_recovers_from_the_teacher_only_where_validation_is_unseen_text(distilled, tiny_task, tmp_path,
                                                                             monkeypatch):
    import deploykit.stages.prune as stage
    from deploykit.train.kd import DistillTrainer

    teacher, student = distilled
    said, layers = [], []
    monkeypatch.setattr(stage, "log", said.append)
    real_train = DistillTrainer.train
    monkeypatch.setattr(DistillTrainer, "train",
                        lambda self, *a, **k: layers.append(self.teacher.config.num_hidden_layers)
                        or real_train(self, *a, **k))
    assert recipe(student, tiny_task).prune.recovery_teacher == "auto"  # the default
    art = run_stage("prune", recipe(student, tiny_task, ffn=0.5, recovery=RECOVERY), student, tmp_path / "unseen")
    assert layers == [4]  # the 4-layer teacher the 2-layer student was distilled from
    assert art.manifest["recovery_teacher"] == {
        "from": "teacher", "source": str(teacher),
        "why": "recovery_teacher auto: the input was distilled from it, and 0.0% of the validation rows occur "
               "inside training texts, at most half"}
    assert f"prune: recovery distils from the teacher {teacher} ({art.manifest['recovery_teacher']['why']})" in said
    art = run_stage("prune", recipe(student, seen_task(tmp_path / "seen"), ffn=0.5, recovery=RECOVERY), student,
                    tmp_path / "seen-out")
    assert layers == [4, 2]  # validation repeats training rows, which the teacher has fitted: the unpruned student
    assert art.manifest["recovery_teacher"]["from"] == "parent"
    assert art.manifest["recovery_teacher"]["why"].startswith("100.0% of the validation rows occur inside training "
                                                              "texts, more than half")
    assert any(line.startswith("prune: recovery distils from the unpruned model (recovery_teacher auto: 100.0% of")
               for line in said)
    # the teacher trained on the whole file: a data.max_train_samples cap that leaves the seen rows out changes nothing
    capped = recipe(student, tmp_path / "seen", ffn=0.5, recovery=RECOVERY)
    capped.data.max_train_samples = 8
    art = run_stage("prune", capped, student, tmp_path / "capped-out")
    assert layers[-1] == 2 and art.manifest["recovery_teacher"]["from"] == "parent"


def test_auto_recovers_from_the_parent_where_no_teacher_can_be(distilled, tiny_bert, tiny_task, tmp_path,
                                                               monkeypatch):
    import shutil

    import deploykit.stages.prune as stage

    warned = []
    monkeypatch.setattr(stage, "warn", warned.append)  # a warning: printed under --quiet too

    teacher, student = distilled
    cases = [(tiny_bert, {}, "the input's manifest names no teacher folder (it was not distilled)"),
             (student, {"hidden_kd": 1.0}, "hidden_kd maps each kept layer to the unpruned model's")]
    for i, (parent, extra, why) in enumerate(cases):
        art = run_stage("prune", recipe(parent, tiny_task, ffn=0.5, recovery=RECOVERY, **extra), parent,
                        tmp_path / f"p{i}")
        assert art.manifest["recovery_teacher"] == {"from": "parent", "why": why}
    shutil.rmtree(teacher)  # a teacher moved away after distillation: auto falls back, in a warning line
    art = run_stage("prune", recipe(student, tiny_task, ffn=0.5, recovery=RECOVERY), student, tmp_path / "gone")
    assert art.manifest["recovery_teacher"]["from"] == "parent"
    assert art.manifest["recovery_teacher"]["why"].startswith(f"{student}'s teacher: ")
    assert len(warned) == 1 and warned[0].startswith("prune: warning: recovery distils from the unpruned model")
    no_recovery = run_stage("prune", recipe(student, tiny_task, ffn=0.5), student, tmp_path / "none")
    assert no_recovery.manifest["recovery_teacher"] == {"from": None}


def test_vocabulary_pruning_scores_validation_on_both_sides_of_the_cut(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit.evaluate as evaluate
    import deploykit.stages.prune as stage

    said, scored = [], []
    monkeypatch.setattr(stage, "log", said.append)
    real = evaluate.predict
    monkeypatch.setattr(evaluate, "predict", lambda predictor, rows, tokenizer, *a, **k:
                        scored.append((len(rows), len(tokenizer))) or real(predictor, rows, tokenizer, *a, **k))
    # validation words no training text holds: they split into other (single-character) pieces after the cut
    (tiny_task / "dev.tsv").write_text("sentence\tlabel\nzygomorphic brilliance\t1\nquixotic dreadfulness\t0\n"
                                       "a fine film\t1\n", encoding="utf-8")
    whole = run_stage("prune", recipe(tiny_bert, tiny_task, ffn=0.5), tiny_bert, tmp_path / "whole")
    assert whole.metrics["before_vocab"] is None
    scored.clear()
    cut = run_stage("prune", recipe(tiny_bert, tiny_task, ffn=0.5, vocab=True), tiny_bert, tmp_path / "cut")
    pieces = len(cut.manifest["kept"]["tokens"])
    # the 3 validation rows: before pruning, before the cut (the whole vocabulary), after it
    assert [n for rows, n in scored if rows == 3] == [30522, 30522, pieces] and pieces < 30522
    # the same units cut: before the vocabulary goes, the model is the one pruned without it
    assert cut.metrics["before_vocab"]["validation"] == whole.metrics["after"]["validation"]
    before, after = cut.metrics["before_vocab"]["validation"]["accuracy"], cut.metrics["after"]["validation"]["accuracy"]
    assert f"prune: vocabulary 30,522 -> {pieces:,} word pieces, validation accuracy {before} -> {after} (words no " \
           "training text holds split into other pieces)" in said


def test_a_teacher_whose_labels_are_in_another_order_is_not_recovery_s(distilled, tiny_task, tmp_path):
    teacher, student = distilled
    config = json.loads((teacher / "config.json").read_text())
    config["id2label"] = {"0": "positive", "1": "negative"}
    config["label2id"] = {"positive": 0, "negative": 1}
    (teacher / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=re.escape(f"{student}'s teacher: teacher {teacher}: labels ['positive', "
                                                  "'negative'] differ from the data's")):
        run_stage("prune", recipe(student, tiny_task, ffn=0.5, recovery=RECOVERY, recovery_teacher="teacher"),
                  student, tmp_path / "explicit")
    art = run_stage("prune", recipe(student, tiny_task, ffn=0.5, recovery=RECOVERY), student, tmp_path / "auto")
    assert art.manifest["recovery_teacher"]["from"] == "parent" and "differ from the data's" in \
        art.manifest["recovery_teacher"]["why"]


def test_distillation_records_its_teacher_folder_as_an_absolute_path(tmp_path, monkeypatch):
    """prune's recovery_teacher reads it, from wherever `deploykit prune` is started."""
    make_tiny_model(tmp_path / "teacher4", "bert", num_hidden_layers=4, seed=1)
    task = write_task(tmp_path / "dtask")
    distill = build_recipe({"data": {"path": str(task), "max_length": 32, "label_names": ["negative", "positive"]},
                            "distill": {**RECOVERY, "student_layers": [0, 2]}})
    monkeypatch.chdir(tmp_path)
    art = run_stage("distill", distill, Path("teacher4"), tmp_path / "student")
    assert art.manifest["teacher"]["source"] == str(tmp_path / "teacher4")


def test_an_onnx_parent_is_refused_naming_what_prune_takes(tiny_bert, tiny_task, tmp_path):
    # `deploykit prune --from run/quantize` said "no file named model.safetensors", not what to give instead
    from deploykit.artifact import Artifact
    from deploykit.stages import prune

    onnx = Artifact(tmp_path / "quantize", {"stage": "quantize", "format": "onnx"})
    with pytest.raises(UserError, match=r"quantize: prune takes a PyTorch model folder, not onnx; prune before "
                                        r"export/quantize"):
        prune.run(recipe(tiny_bert, tiny_task), onnx, tmp_path / "pruned")
    assert not (tmp_path / "pruned").exists()
