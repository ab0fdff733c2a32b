"""Structured pruning of token classifiers (deploykit/ner/prune.py through the shared prune stage): every unit on
BERT, RoBERTa and DistilBERT token heads, which have no pooler or dense head to shrink with the residual width."""

from __future__ import annotations

import json

import pytest
from test_ner_predict import token_classifier

from deploykit.config import build_recipe
from deploykit.pipeline import run_stage

WORDS = [(["mr", "peter", "smith", "went", "to", "brussels"], ["O", "B-PER", "I-PER", "O", "O", "B-LOC"]),
         (["the", "report", "said", "it", "went", "well"], ["O"] * 6),
         (["anna", "flew", "to", "paris", "on", "friday"], ["B-PER", "O", "O", "B-LOC", "O", "O"])]


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_width_ffn_and_depth_cut_a_token_classifier_that_reloads(arch, tmp_path):
    from transformers import AutoModelForTokenClassification

    folder = token_classifier(tmp_path / arch, arch)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        rows = [{"tokens": w, "ner_tags": t} for w, t in WORDS * 8]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = build_recipe({"model": {"source": str(folder)},
                           "data": {"task": "token_classification", "path": str(data), "max_length": 16},
                           "prune": {"width": 0.25, "ffn": 0.5, "drop_layers": [0], "importance": "taylor"}})
    art = run_stage("prune", recipe, folder, tmp_path / "p")
    shape = art.manifest["metrics"]["after"]["shape"]
    before = art.manifest["metrics"]["before"]["shape"]
    assert shape["hidden"] == before["hidden"] * 3 // 4 and shape["ffn"] == before["ffn"] // 2
    assert shape["layers"] == before["layers"] - 1 and art.manifest["metrics"]["reload_max_logit_diff"] <= 1e-4
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "p")
    assert model.classifier.in_features == shape["hidden"] and model.config.num_labels == 5


def test_recovery_distils_on_the_unlabelled_texts_too(tmp_path, monkeypatch):
    import deploykit.ner.transfer as transfer

    folder = token_classifier(tmp_path / "bert", "bert")
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"tokens": w, "ner_tags": t}) + "\n"
                                                     for w, t in WORDS * 4))
    (tmp_path / "news.txt").write_text("kofi flew to berlin\nthe meeting went well on friday\n", encoding="utf-8")
    built = []
    real = transfer.training_set
    monkeypatch.setattr(transfer, "training_set", lambda *a: built.append(real(*a)) or built[-1])
    recovery = {"epochs": 1, "batch_size": 4, "logging_steps": 1000, "early_stopping_patience": None, "bf16": "off"}
    recipe = build_recipe({"model": {"source": str(folder)},
                           "data": {"task": "token_classification", "path": str(data), "max_length": 16},
                           "prune": {"ffn": 0.5, "recovery": recovery,
                                     "unlabeled": {"path": str(tmp_path / "news.txt")}}})
    art = run_stage("prune", recipe, folder, tmp_path / "p")
    (dataset, said), = built
    # the 12 training sentences, then one KD-only window per unlabelled text
    assert len(dataset) == 14 and [max(r["labels"]) for r in dataset][-2:] == [-1, -1]
    assert "2 windows of unlabelled text" in said and art.manifest["config"]["prune"]["unlabeled"]["path"]


def test_the_job_says_how_much_of_validation_repeats_a_training_sentence(tmp_path):
    """recovery_teacher auto reads it (deploykit/stages/prune.py): sentences compared as their words joined."""
    from deploykit.ner.prune import prune_job

    folder = token_classifier(tmp_path / "bert", "bert")
    data = tmp_path / "data"
    data.mkdir()
    dev = WORDS[:1] + [(["kofi", "flew", "to", "berlin"], ["B-PER", "O", "O", "B-LOC"])]
    for split, rows in (("train", WORDS), ("dev", dev)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"tokens": w, "ner_tags": t}) + "\n"
                                                     for w, t in rows))
    recipe = build_recipe({"model": {"source": str(folder)},
                           "data": {"task": "token_classification", "path": str(data), "max_length": 16,
                                    "validation_overlap": "keep"},
                           "prune": {"ffn": 0.5}})
    assert prune_job(recipe, str(folder), None).validation_seen() == 0.5


def test_the_recovery_teacher_must_hold_the_data_tags_in_their_order(tmp_path):
    """A teacher whose tag ids mean other tags would teach the wrong entities; load_classifier alone renames them."""
    import shutil

    from deploykit.errors import UserError
    from deploykit.ner.prune import prune_job

    folder = token_classifier(tmp_path / "bert", "bert")
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"tokens": w, "ner_tags": t}) + "\n"
                                                     for w, t in WORDS))
    recipe = build_recipe({"model": {"source": str(folder)},
                           "data": {"task": "token_classification", "path": str(data), "max_length": 16},
                           "prune": {"ffn": 0.5}})
    job = prune_job(recipe, str(folder), None)
    assert job.load_teacher(str(folder)).config.num_labels == 5
    swapped = shutil.copytree(folder, tmp_path / "swapped")
    config = json.loads((swapped / "config.json").read_text())
    tags = [config["id2label"][str(i)] for i in range(5)]
    tags[1], tags[2] = tags[2], tags[1]
    config["id2label"] = {str(i): t for i, t in enumerate(tags)}
    config["label2id"] = {t: i for i, t in enumerate(tags)}
    (swapped / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=f"teacher {swapped}: the model's tags .* are not the data's"):
        job.load_teacher(str(swapped))
