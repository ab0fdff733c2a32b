"""deploykit/ov_runtime.py: OpenVINO compiled once per (batch, sequence bucket), the same logits as the dynamic model
and as ONNX Runtime, kept dynamic where padding could change the answer."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from deploykit.ov_runtime import BUCKET, bucketable

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="needs the openvino package (pip install 'deploykit[openvino]')")


def batch(lengths: list[int], width: int) -> dict[str, np.ndarray]:
    """Rows of `lengths` real tokens, right-padded to `width`."""
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = 5 + np.arange(n) * 7 % 100  # within the tiny vocabularies' 124 ids
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_each_bucket_compiles_once_and_answers_as_the_dynamic_model(tiny_chain):
    from deploykit.evaluate import ort_predictor, ort_session
    from deploykit.ov_runtime import openvino_predictor

    graph = tiny_chain["export"] / "model.onnx"  # float, padding-free
    predict = openvino_predictor(graph, threads=1)
    reference = ort_predictor(ort_session(graph))
    for lengths, width in (([5], 5), ([9], 9), ([17], 17), ([3, 12], 12), ([16], 16)):
        got = predict(batch(lengths, width))
        assert got.shape == (len(lengths), 2) and got.dtype == np.float32
        np.testing.assert_allclose(got, reference(batch(lengths, width)), atol=1e-4)
    # lengths 5, 9 and 16 share the first bucket of one row (compiled at load); 17 the second; the two-row batch
    # its own (the most recently used last)
    assert list(predict.shapes) == [(1, 2 * BUCKET), (2, BUCKET), (1, BUCKET)]


def test_padding_that_could_change_the_answer_keeps_the_dynamic_model(tiny_chain):
    from deploykit.onnx.ops import graph_inputs
    from deploykit.ov_runtime import openvino_predictor

    dynamic_int8 = tiny_chain["dynamic"] / "model.onnx"  # activation scales computed per call, padding included
    assert not bucketable(dynamic_int8, graph_inputs(dynamic_int8))
    assert bucketable(tiny_chain["quantize"] / "model.onnx", graph_inputs(tiny_chain["quantize"] / "model.onnx"))
    assert not bucketable(tiny_chain["export"] / "model.onnx", ["input_ids"])  # no mask to hide the padding
    assert not hasattr(openvino_predictor(dynamic_int8, threads=1), "shapes")


def test_per_token_logits_are_cut_back_to_the_input_length(tmp_path):
    import torch
    from conftest import MINILM, tiny_config
    from transformers import AutoModelForTokenClassification

    from deploykit.evaluate import ort_predictor, ort_session
    from deploykit.models import load_tokenizer
    from deploykit.onnx.export import export_onnx
    from deploykit.ov_runtime import openvino_predictor

    torch.manual_seed(0)
    AutoModelForTokenClassification.from_config(tiny_config("bert", 5)).save_pretrained(tmp_path / "m")
    load_tokenizer(MINILM).save_pretrained(tmp_path / "m")
    (tmp_path / "e").mkdir()
    export_onnx(tmp_path / "m", None, tmp_path / "e", optimize=False, remove_padding=True)
    graph = tmp_path / "e" / "model.onnx"
    predict, reference = openvino_predictor(graph, threads=1), ort_predictor(ort_session(graph))
    for lengths, width in (([7], 7), ([4, 20], 20)):
        got = predict(batch(lengths, width))
        assert got.shape == (len(lengths), width, 5)
        mask = batch(lengths, width)["attention_mask"].astype(bool)
        np.testing.assert_allclose(got[mask], reference(batch(lengths, width))[mask], atol=1e-4)
