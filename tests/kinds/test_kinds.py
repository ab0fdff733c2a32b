"""deploykit.kinds: the one task-kind table and what each kind answers for."""

import pytest

from deploykit.errors import UserError
from deploykit.kinds import KINDS, kind_of


def test_every_kind_loads_and_names_itself():
    for name in KINDS:
        kind = kind_of(name)
        assert kind.name == name and kind.metric in ("accuracy", "exact_match", "f1")
        assert callable(kind.load_task) and callable(kind.finetune_job) and callable(kind.gate_value)


def test_an_unknown_kind_is_one_line_naming_the_kinds():
    with pytest.raises(UserError, match="data.task 'ner': use one of classification, generation, token_classification"):
        kind_of("ner")


def test_every_kind_gives_the_stages_jobs_and_no_whole_stage_runner():
    for name in KINDS:
        kind = kind_of(name)
        assert not hasattr(kind, "runners") and not hasattr(kind, "runner")
        assert all(callable(j) for j in (kind.distill_job, kind.prune_job, kind.quantize_job, kind.export_job))


def test_only_causal_lms_write_gguf_and_bench_their_own_rows():
    gen = kind_of("generation")
    assert callable(gen.gguf_job) and callable(gen.bench_report)  # decode timing beside llama.cpp
    for name in ("classification", "token_classification"):  # deploykit/measure/text_bench.py's rows
        assert kind_of(name).gguf_job is None and kind_of(name).bench_report is None
    ner = kind_of("token_classification")
    assert callable(ner.bench_texts) and ner.bench_metrics[0] == ("f1", "entity F1 %")


def test_an_artifact_names_its_kind(tmp_path, tiny_llama, tiny_bert):
    import json

    from deploykit.artifact import load_artifact
    from deploykit.kinds import task_of

    assert task_of(load_artifact(tiny_llama)) == "generation"  # a plain folder: its architecture says
    assert task_of(load_artifact(tiny_bert)) == "classification"
    folder = tmp_path / "ner"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (folder / "manifest.json").write_text(json.dumps({"stage": "finetune", "format": "pytorch",
                                                      "config": {"data": {"task": "token_classification"}}}))
    assert task_of(load_artifact(folder)) == "token_classification"  # the manifest first


def test_a_causal_lm_export_without_data_is_one_line(tiny_llama, tmp_path):
    from deploykit.config import build_recipe
    from deploykit.pipeline import run_stage

    with pytest.raises(UserError, match="is a causal LM, checked on the greedy answers to task prompts"):
        run_stage("export", build_recipe({"export": {}}), tiny_llama, tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("task", ["classification", "token_classification"])
def test_an_encoder_chain_asking_for_weight_only_int8_is_refused_before_anything_trains(task, tmp_path):
    from deploykit.config import build_recipe
    from deploykit.pipeline import run_recipe
    from deploykit.validate import recipe_problems

    recipe = build_recipe({"model": {"source": str(tmp_path / "no-model-needed")},
                           "data": {"task": task, "path": str(tmp_path / "no-data-needed")},
                           "finetune": {"epochs": 1}, "quantize": {"mode": "weight_only", "bits": 4}})
    with pytest.raises(UserError, match="^quantize.mode weight_only is for causal LMs; use dynamic or static"):
        run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert any(p.startswith("quantize.mode weight_only is for causal LMs") for p in recipe_problems(recipe))
