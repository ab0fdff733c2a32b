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
