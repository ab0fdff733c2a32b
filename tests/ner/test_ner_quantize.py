"""deploykit/ner/quantize.py: the keep-float search of the token classifier's dynamic INT8 gate (the whole stage
runs in tests/kinds/test_token_classification.py, where the first try passes)."""

from __future__ import annotations

import pytest
from test_ner_predict import token_classifier

from deploykit.config import build_recipe
from deploykit.errors import GateError
from deploykit.ner.data import TagData, TagSplit


def test_a_failing_try_ranks_nodes_on_windows_and_keeps_the_worst_float(tmp_path, monkeypatch):
    import deploykit.ner.data
    import deploykit.ner.scoring
    from deploykit.pipeline import run_stage

    folder = token_classifier(tmp_path / "tiny", "bert")
    split = TagSplit([["mr", "peter", "smith", "went", "to", "brussels"] * 4, ["wow"]], [[0] * 24, [0]])
    task = TagData(split, split, None, ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"], "test", {})
    recipe = build_recipe({"data": {"task": "token_classification", "path": "x"},
                           "quantize": {"max_float_nodes": 1, "optimize": False}})
    scored = []

    def score(side, split, labels, max_length, stride, onnx_path=None):
        # every INT8 try loses everything: the gate must rank and keep one float
        assert (max_length, stride) == (16, 4)  # windows of 16 pieces
        scored.append(onnx_path.name)
        return {"f1": 100.0 if onnx_path.name == "pre.onnx" else 0.0}

    monkeypatch.setattr(deploykit.ner.data, "load_tags", lambda cfg: task)
    monkeypatch.setattr(deploykit.ner.scoring, "score_folder", score)
    monkeypatch.setattr(deploykit.ner.scoring, "trained_windows", lambda recipe, artifact: (16, 4))
    with pytest.raises(GateError, match=r"INT8 validation f1 \(0 float: 0.00, 1 float: 0.00\) vs float 100.00"):
        run_stage("quantize", recipe, folder, tmp_path / "q")
    assert scored == ["pre.onnx", "int8-0.onnx", "int8-1.onnx"] and not (tmp_path / "q").exists()
