"""export and quantize stages on a causal LM (data.task: generation): KV-cache ONNX, INT8 behind the gate."""

from __future__ import annotations

import json

import onnx
import pytest

from deploykit.config import build_recipe
from deploykit.errors import UserError
from deploykit.evaluate import GateError
from deploykit.pipeline import run_stage

TEMPLATE = "Is this review positive or negative?\n{sentence}"


def recipe(model, task, **sections):
    return build_recipe({"model": {"source": str(model)},
                         "data": {"path": str(task), "task": "generation", "prompt_template": TEMPLATE,
                                  "max_length": 64, "label_names": ["negative", "positive"], "max_eval_samples": 8},
                         "gate": {"metric": "exact_match"}, **sections})


def ops(folder) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_export_writes_a_kv_cache_decoder_with_token_parity(tiny_llama, tiny_task, tmp_path):
    out = tmp_path / "export"
    run_stage("export", recipe(tiny_llama, tiny_task, export={}), tiny_llama, out)
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "onnx" and m["layers"] == 2 and m["kv_heads"] == 2
    assert m["metrics"]["parity"]["prompts"] == 8   # every validation prompt (max_eval_samples)
    names = [i.name for i in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.input]
    assert "past_key_values.1.value" in names and "position_ids" in names


def test_dynamic_int8_quantizes_every_weight_matmul(tiny_llama, tiny_task, tmp_path):
    out = tmp_path / "q"
    art = run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"mode": "dynamic"}), tiny_llama, out)
    m = json.loads((out / "manifest.json").read_text())
    assert ops(out).get("MatMulInteger", 0) == m["int8"]["quantized_nodes"] == 2 * 7 + 1   # q,k,v,o,gate,up,down + head
    assert m["float_nodes"] == [] and m["tries"][0]["drop"] <= 0.5
    assert art.metrics["size_bytes"]["int8"] < art.metrics["size_bytes"]["float"]
    assert "test" not in art.metrics   # bench scores the test split once, at the end
    # the tied embedding table is stored in 8-bit blocks too
    assert ops(out).get("GatherBlockQuantized", 0) == 1 and m["int8"]["int8_embedding_tables"] == 1
    assert m["export"]["parity"]["prompts"] == 8


def test_weight_only_4_bit(tiny_llama, tiny_task, tmp_path):
    out = tmp_path / "w4"
    run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"mode": "weight_only", "bits": 4,
                                                                  "block_size": 16}), tiny_llama, out)
    assert ops(out).get("MatMulNBits", 0) >= 14


def test_gate_keeps_the_lm_head_float_first(tiny_llama, tiny_task, tmp_path, monkeypatch):
    import deploykit.llm.quality as quality

    def fake(folder, split, cfg, **kw):  # INT8 "loses" 10 points while every MatMul is INT8
        every = ops(folder).get("MatMulInteger", 0) == 15
        return {"exact_match": 40.0 if every else 50.0, "perplexity": 2.0, "n": len(split)}

    monkeypatch.setattr(quality, "evaluate_causal", fake)
    art = run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"mode": "dynamic", "max_drop": 1.0}),
                    tiny_llama, tmp_path / "g")
    m = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert len(m["tries"]) == 2 and m["sensitivity"][0][1] == "lm_head"
    assert m["float_nodes"] == [m["sensitivity"][0][0]]
    assert art.metrics["validation"]["drop"] == 0.0

    monkeypatch.setattr(quality, "evaluate_causal",
                        lambda folder, split, cfg, **kw: {"exact_match": 0.0 if "int8" in str(folder) else 50.0,
                                                          "perplexity": 2.0, "n": 8})
    with pytest.raises(GateError, match="exact_match"):
        run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"max_float_nodes": 2}), tiny_llama,
                  tmp_path / "fail")
    assert not (tmp_path / "fail").exists()


def test_static_is_refused_for_causal_lms(tiny_llama, tiny_task, tmp_path):
    with pytest.raises(UserError, match="static"):
        run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"mode": "static"}), tiny_llama, tmp_path / "s")
