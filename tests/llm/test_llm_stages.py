"""distill and prune stages on a causal LM (data.task: generation), tiny GQA Llama built in the test."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from deploykit.config import build_recipe
from deploykit.errors import UserError
from deploykit.pipeline import run_stage
from tiny_llama import make_tiny_llama

TEMPLATE = "Is this review positive or negative?\n{sentence}"
FAST = {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16, "eval_batch_size": 32, "warmup_ratio": 0.0,
        "early_stopping_patience": None, "logging_steps": 1000}


def recipe(model, task, **sections):
    return build_recipe({"model": {"source": str(model)},
                         "data": {"path": str(task), "task": "generation", "prompt_template": TEMPLATE,
                                  "max_length": 64, "label_names": ["negative", "positive"]},
                         "gate": {"metric": "exact_match"}, **sections})


@pytest.fixture(scope="module")
def llama4(tmp_path_factory):
    """A 4-layer tiny Llama (the shared fixture has 2), so a student can keep every other layer."""
    return make_tiny_llama(tmp_path_factory.mktemp("llama4"), num_hidden_layers=4)


def test_distill_keeps_the_teachers_layers_and_trains_with_kd(llama4, tiny_task, tmp_path):
    out = tmp_path / "distill"
    art = run_stage("distill", recipe(llama4, tiny_task, distill={**FAST, "teacher": str(llama4),
                                                                   "temperature": 1.0, "topk": 16}), None, out)
    student = AutoModelForCausalLM.from_pretrained(out)
    teacher = AutoModelForCausalLM.from_pretrained(llama4)
    assert student.config.num_hidden_layers == 2
    m = json.loads((out / "manifest.json").read_text())
    assert m["student"]["layers_kept"] == [1, 3] and m["teacher"]["layers"] == 4
    assert student.model.embed_tokens.weight.shape == teacher.model.embed_tokens.weight.shape
    assert {"loss", "exact_match", "perplexity"} <= set(art.metrics["validation"])
    assert art.metrics["teacher"]["validation"]["n"] == 32
    assert art.metrics["optimizer_steps"] == 8


def test_distill_refuses_an_out_of_range_layer(llama4, tiny_task, tmp_path):
    with pytest.raises(UserError, match="out of range"):
        run_stage("distill", recipe(llama4, tiny_task, distill={**FAST, "teacher": str(llama4),
                                                               "student_layers": [0, 7]}), None, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_prune_removes_kv_groups_and_ffn_and_reloads(tiny_llama, tiny_task, tmp_path):
    out = tmp_path / "prune"
    art = run_stage("prune", recipe(tiny_llama, tiny_task, prune={"ffn": 0.5, "heads": 0.5, "importance": "taylor",
                                                                  "recovery": FAST}), tiny_llama, out)
    assert art.stage == "prune" and art.path == out.resolve()
    cfg = AutoConfig.from_pretrained(out)
    assert (cfg.intermediate_size, cfg.num_key_value_heads, cfg.num_attention_heads, cfg.head_dim) == (32, 1, 2, 8)
    m = json.loads((out / "manifest.json").read_text())
    assert m["metrics"]["reload_max_logit_diff"] == 0.0
    assert m["metrics"]["parameters_ratio"] < 1 and m["metrics"]["macs_ratio"] < 1
    assert len(m["kept"]["kv_groups"]) == 2 and all(len(g) == 1 for g in m["kept"]["kv_groups"])
    assert m["metrics"]["before_recovery"]["validation"]["n"] == 32
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == cfg.vocab_size


def test_a_cut_the_model_cannot_take_is_refused_before_any_answer_is_generated(tiny_llama, tiny_task, tmp_path,
                                                                                 monkeypatch):
    import deploykit.llm.quality

    # scoring generates answers (minutes on a real model): a bad request must fail first
    monkeypatch.setattr(deploykit.llm.quality, "evaluate_causal",
                        lambda *a, **k: pytest.fail("the model was scored before the request was checked"))
    with pytest.raises(UserError, match="^prune.kv_groups=0.9 leaves no KV group of 2"):
        run_stage("prune", recipe(tiny_llama, tiny_task, prune={"importance": "l2", "heads": 0.9}), tiny_llama,
                  tmp_path / "p")
    with pytest.raises(UserError, match="^prune: nothing to prune"):
        run_stage("prune", recipe(tiny_llama, tiny_task, prune={"importance": "l2"}), tiny_llama, tmp_path / "p")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("unit, message", [({"width": 0.5}, "prune.width is for encoders"),
                                           ({"vocab": True}, "prune.vocab is for encoder"),
                                           ({"ffn": 0.5, "hidden_kd": 1.0, "recovery": {"max_steps": 1}},
                                            "prune.hidden_kd is for encoders"),
                                           ({"ffn": 0.5, "recovery_min_words": 5}, "recovery_min_words is for"),
                                           ({"heads": 0.9}, "KV group")])
def test_prune_bad_requests_on_causal_lms(tiny_llama, tiny_task, tmp_path, unit, message):
    with pytest.raises(UserError, match=message):
        run_stage("prune", recipe(tiny_llama, tiny_task, prune={"importance": "l2", **unit}), tiny_llama,
                  tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_export_writes_the_decoder_with_its_kv_cache_through_the_shared_stage(tiny_llama, tiny_task, tmp_path,
                                                                              capsys):
    from deploykit.onnx.ops import graph_inputs

    out = tmp_path / "export"
    art = run_stage("export", recipe(tiny_llama, tiny_task, export={"parity_samples": 3}), tiny_llama, out)
    m = json.loads((out / "manifest.json").read_text())
    assert (m["stage"], m["format"], art.metrics["parity"]["prompts"]) == ("export", "onnx", 3)
    assert art.metrics["size_bytes"] == (out / "model.onnx").stat().st_size
    assert any(name.startswith("past_key_values") for name in graph_inputs(out / "model.onnx"))
    assert "the same greedy tokens as PyTorch on 3 prompts" in " ".join(capsys.readouterr().err.split())
    # without a data section there are no task prompts to check the answers on: one line, nothing written
    with pytest.raises(UserError, match="is a causal LM, checked on the greedy answers to task prompts"):
        run_stage("export", build_recipe({"export": {}}), tiny_llama, tmp_path / "x")
    assert not (tmp_path / "x").exists()
