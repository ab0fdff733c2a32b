"""`deploykit run` on a causal LM: finetune -> distill -> prune -> quantize -> bench, gates on exact match,
a generation report and the generation headline; `deploykit bench` on generation artifacts."""

from __future__ import annotations

import json
import re

import pytest

from deploykit import pipeline
from deploykit.config import build_recipe
from deploykit.errors import UserError
from tiny_llama import make_tiny_llama

TRAIN = {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16, "eval_batch_size": 32, "warmup_ratio": 0.0,
         "early_stopping_patience": None, "logging_steps": 1000}


def chain(model, task, **over):
    tree = {"name": "tiny-llama", "model": {"source": str(model)},
            "data": {"path": str(task), "task": "generation", "prompt_template": "Review: {sentence}",
                     "max_length": 64, "label_names": ["negative", "positive"], "max_eval_samples": 16},
            "gate": {"metric": "exact_match", "max_drop": 100.0},
            "finetune": TRAIN, "distill": {**TRAIN, "temperature": 1.0, "topk": 8},
            "prune": {"ffn": 0.5, "importance": "l2"}, "quantize": {"mode": "dynamic"},
            "bench": {"quick": True, "batch_sizes": [1, 2], "new_tokens": 4, "eval_samples": 8,
                      "targets": ["cpu"]}}
    tree.update(over)
    return build_recipe(tree)


def test_causal_chain_end_to_end(tmp_path, tiny_task):
    model = make_tiny_llama(tmp_path / "llama4", num_hidden_layers=4)
    out = tmp_path / "run"
    state = pipeline.run_recipe(chain(model, tiny_task), out)
    assert list(state["stages"]) == ["finetune", "distill", "prune", "quantize"]
    assert all(s["gate"]["metric"] == "exact_match" for k, s in state["stages"].items() if k != "finetune")
    report = json.loads((out / "bench" / "report.json").read_text())
    assert report["kind"] == "generation"
    names = {(r["name"], r["runtime"]) for r in report["rows"]}
    assert {("finetune", "torch"), ("distill", "torch"), ("prune", "torch"), ("quantize", "ort")} <= names
    assert all(r["exact_match"] is not None and r["decode_tok_s"] > 0 for r in report["rows"])
    assert (out / "bench" / "report.html").is_file()
    head = json.loads((out / "bench" / "headline.json").read_text())
    assert head["kind"] == "generation" and head["final"]["runtime"] == "ort" and head["decode_speedup"] > 0
    assert "decode tokens/s vs teacher" in (out / "bench" / "headline.md").read_text()
    # a second run skips every stage
    again = pipeline.run_recipe(chain(model, tiny_task), out)
    assert again["stages"] == state["stages"]


def test_free_text_responses_cannot_be_chained(tmp_path, tiny_llama):
    rows = [{"instruction": f"Say {i}", "output": f"answer {i}"} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = build_recipe({"model": {"source": str(tiny_llama)},
                           "data": {"path": str(tmp_path), "task": "generation", "prompt_template": "{instruction}",
                                    "response_column": "output"},
                           "gate": {"metric": "exact_match"}, "finetune": TRAIN, "quantize": {}})
    with pytest.raises(UserError, match="free-text"):
        pipeline.run_recipe(recipe, tmp_path / "run")


def test_a_causal_lm_recovery_teacher_is_refused_before_any_training(tmp_path, tiny_task, tiny_llama):
    from deploykit.validate import recipe_problems

    data = {"path": str(tiny_task), "task": "generation", "label_names": ["negative", "positive"]}
    recipe = build_recipe({"model": {"source": str(tiny_llama)}, "data": data, "finetune": TRAIN, "distill": TRAIN,
                           "prune": {"ffn": 0.5, "recovery": TRAIN, "recovery_teacher": "teacher"}})
    message = "prune.recovery_teacher: teacher is not supported for causal LMs yet; set prune.recovery_teacher: parent"
    assert message in recipe_problems(recipe)
    with pytest.raises(UserError, match=re.escape(message)):
        pipeline.run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_gate_metric_must_fit_the_task(tiny_task, tiny_llama):
    data = {"path": str(tiny_task), "task": "generation", "label_names": ["negative", "positive"]}
    assert build_recipe({"model": {"source": str(tiny_llama)}, "data": data}).gate.metric == "exact_match"
    with pytest.raises(UserError, match="set gate.metric: exact_match"):
        build_recipe({"model": {"source": str(tiny_llama)}, "data": data, "gate": {"metric": "accuracy"}})
    with pytest.raises(UserError, match="exact_match needs data.task: generation"):
        build_recipe({"data": {"path": str(tiny_task)}, "gate": {"metric": "exact_match"}})
