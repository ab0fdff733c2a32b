"""`deploykit finetune` on a causal LM (data.task: generation): instruction SFT through the same Trainer path."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from deploykit.config import build_recipe
from deploykit.errors import UserError
from deploykit.pipeline import run_stage

TEMPLATE = "Is this review positive or negative?\n{sentence}"
FAST = {"epochs": 20, "learning_rate": 3e-3, "batch_size": 16, "eval_batch_size": 32, "warmup_ratio": 0.0,
        "early_stopping_patience": None, "logging_steps": 1000}


def gen_recipe(model, task, data=None, **finetune):
    return build_recipe({
        "model": {"source": str(model)},
        "data": {"path": str(task), "task": "generation", "prompt_template": TEMPLATE, "max_length": 64,
                 "label_names": ["negative", "positive"], **(data or {})},
        "finetune": {**FAST, **finetune}})


def test_sft_writes_a_plain_causal_lm_that_answers_with_labels(tiny_llama, tiny_task, tmp_path):
    out = tmp_path / "ft"
    art = run_stage("finetune", gen_recipe(tiny_llama, tiny_task), None, out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage"] == "finetune" and m["labels"] == ["negative", "positive"]
    val = art.metrics["validation"]
    assert {"loss", "exact_match", "perplexity", "n"} <= set(val) and val["n"] == 32
    # the random model never says a label; training teaches it at least the answer format
    from deploykit.llm.data import load_chat_task
    from deploykit.llm.quality import evaluate_causal

    recipe = gen_recipe(tiny_llama, tiny_task)
    before = evaluate_causal(tiny_llama, load_chat_task(recipe.data).validation, recipe.data, runtime="torch")
    assert before["exact_match"] == 0
    assert val["exact_match"] >= 50 and art.metrics["test"]["exact_match"] >= 50
    assert val["perplexity"] < before["perplexity"] / 10
    assert m["metrics"]["best_checkpoint"].startswith("checkpoint-")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_sft_lora_merges_into_a_plain_model(tiny_llama, tiny_task, tmp_path):
    out = tmp_path / "lora"
    run_stage("finetune", gen_recipe(tiny_llama, tiny_task, strategy="lora", epochs=2,
                                     lora={"r": 4, "alpha": 8}), None, out)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tuned = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in k for k in tuned.state_dict())
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.state_dict()[q], tuned.state_dict()[q])     # adapted and merged
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(base.state_dict()[k], tuned.state_dict()[k])         # not a LoRA target


def test_sft_with_packing_trains(tiny_llama, tiny_task, tmp_path):
    art = run_stage("finetune", gen_recipe(tiny_llama, tiny_task, epochs=1, packing=True), None, tmp_path / "p")
    assert art.metrics["optimizer_steps"] >= 1 and art.metrics["validation"]["loss"] > 0


def test_bad_generation_inputs(tiny_llama, tiny_task, tmp_path):
    with pytest.raises(UserError, match="longer than model"):
        run_stage("finetune", gen_recipe(tiny_llama, tiny_task, data={"max_length": 4096}), None, tmp_path / "a")
    with pytest.raises(UserError, match="names column 'text'"):
        run_stage("finetune", gen_recipe(tiny_llama, tiny_task, data={"prompt_template": "{text}"}), None,
                  tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
