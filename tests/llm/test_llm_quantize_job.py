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
    # its activation scales span the batch: it is scored prompt by prompt; the float export is batched
    from deploykit.llm.quality import batch_dependent

    assert batch_dependent(out) and not batch_dependent(tiny_llama)


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
    # no "--mode static" in the advice: causal LMs are not calibrated
    with pytest.raises(GateError, match="exact_match .*quantize.max_float_nodes or quantize.max_drop$"):
        run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"max_float_nodes": 2}), tiny_llama,
                  tmp_path / "fail")
    assert not (tmp_path / "fail").exists()


def test_gate_falls_back_to_8_bit_instead_of_float(tiny_llama, tiny_task, tmp_path, monkeypatch):
    import deploykit.llm.quality as quality

    def lm_head_bits(folder) -> int:
        graph = onnx.load(str(folder / "model.onnx")).graph
        node = next(n for n in graph.node if n.op_type == "MatMulNBits" and "lm_head" in n.name)
        return next(a.i for a in node.attribute if a.name == "bits")

    def fake(folder, split, cfg, **kw):  # loses 10 points while the lm_head is 4-bit
        if "int8" not in str(folder):
            return {"exact_match": 50.0, "n": len(split)}
        return {"exact_match": 50.0 if lm_head_bits(folder) == 8 else 40.0, "n": len(split)}

    monkeypatch.setattr(quality, "evaluate_causal", fake)
    settings = {"mode": "weight_only", "bits": 4, "block_size": 16, "symmetric": False, "fallback_bits": 8,
                "max_drop": 1.0}
    run_stage("quantize", recipe(tiny_llama, tiny_task, quantize=settings), tiny_llama, tmp_path / "g")
    m = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert len(m["tries"]) == 2 and m["sensitivity"][0][1] == "lm_head"
    assert m["fallback_nodes"] == [m["sensitivity"][0][0]] and m["float_nodes"] == []
    assert m["fallback_bits"] == 8 and m["int8"]["embedding_shared_with_lm_head"]
    assert ops(tmp_path / "g")["MatMulNBits"] == 15 and ops(tmp_path / "g")["MatMul"] == 2 * 2  # attention only


def test_block_error_follows_width_and_zero_points():
    import numpy as np

    from deploykit.llm.quantize_job import block_error

    w = np.random.default_rng(0).normal(0.5, 1.0, (64, 8)).astype(np.float32)  # off-centre: zero points help
    assert block_error(w, 8, 32, True) < block_error(w, 4, 32, True)
    assert block_error(w, 4, 32, False) < block_error(w, 4, 32, True)
    assert block_error(w[:40], 4, 32, True) > 0  # a partial last block is padded, not dropped
    assert block_error(np.zeros((32, 4), np.float32), 4, 32, False) == 0.0


def test_fallback_ranking_is_error_per_weight_after_the_lm_head(tiny_llama, tmp_path):
    import numpy as np
    from onnx import numpy_helper

    from deploykit.llm.int8 import lm_head_node
    from deploykit.llm.onnx_export import export_causal_lm
    from deploykit.llm.quantize_job import block_error, rank_nodes

    export_causal_lm(tiny_llama, None, tmp_path / "f32")
    path = tmp_path / "f32" / "model.onnx"
    ranking = rank_nodes(path, "weight_only", (4, 16, False))
    assert ranking[0] == (lm_head_node(path), float("inf")) and len(ranking) == 15
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = {n.name: inits[n.input[1]] for n in model.graph.node if n.name in dict(ranking)}
    for name, score in ranking[1:]:
        assert score == pytest.approx(block_error(weights[name], 4, 16, False) / weights[name].size)
    assert [s for _, s in ranking[1:]] == sorted((s for _, s in ranking[1:]), reverse=True)
    assert np.isfinite([s for _, s in ranking[1:]]).all()


@pytest.mark.parametrize("settings", [{"mode": "dynamic", "fallback_bits": 4},
                                      {"mode": "weight_only", "bits": 8, "fallback_bits": 4},
                                      {"mode": "weight_only", "bits": 4, "fallback_bits": 16}])
def test_fallback_bits_must_be_wider_weight_only(tiny_llama, tiny_task, settings):
    with pytest.raises(UserError, match="fallback_bits"):
        recipe(tiny_llama, tiny_task, quantize=settings)


def test_fallback_bits_with_dynamic_is_for_encoders(tiny_llama, tiny_task, tmp_path):
    # encoders keep 8-bit weights on their float nodes; a causal LM's dynamic graph has no such fallback
    with pytest.raises(UserError, match="fallback_bits with mode dynamic"):
        run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"mode": "dynamic", "fallback_bits": 8}),
                  tiny_llama, tmp_path / "s")


def test_static_is_refused_for_causal_lms(tiny_llama, tiny_task, tmp_path):
    with pytest.raises(UserError, match="static"):
        run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"mode": "static"}), tiny_llama, tmp_path / "s")


def test_dynamic_int8_takes_its_weight_width_from_quantize_preset(tiny_llama, tiny_task, tmp_path, monkeypatch,
                                                                   capsys):
    import deploykit
    import deploykit.hardware as hw

    # a CPU without VNNI, told to build for one: 8-bit weights, a warning, and a graph deploykit.load refuses here
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    out = tmp_path / "vnni"
    run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"mode": "dynamic", "preset": "avx512_vnni",
                                                                  "max_drop": 100.0}), tiny_llama, out)
    assert json.loads((out / "manifest.json").read_text())["int8"]["reduce_range"] is False
    assert "quantize.preset=avx512_vnni writes 8-bit weights" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(UserError, match="saturate here"):
        deploykit.load(out)
    from typer.testing import CliRunner

    from deploykit.cli import app

    said = CliRunner().invoke(app, ["generate", str(out), "the movie was", "--raw", "-n", "2"])
    assert said.exit_code == 2 and "saturate here" in said.output
    # and a CPU with VNNI told to build for one without: 7-bit weights
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx512_vnni")
    run_stage("quantize", recipe(tiny_llama, tiny_task, quantize={"mode": "dynamic", "preset": "avx2"}), tiny_llama,
              tmp_path / "avx2")
    assert json.loads((tmp_path / "avx2" / "manifest.json").read_text())["int8"]["reduce_range"] is True
    assert deploykit.load(out).generate(["the movie was"], 2) is not None
