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


def test_classification_runs_every_stage_through_the_shared_bodies():
    kind = kind_of("classification")
    assert all(kind.runner(s) is None for s in ("finetune", "distill", "prune", "quantize", "export", "bench"))
    assert kind.runners == {} and callable(kind.distill_job) and callable(kind.prune_job)
    assert callable(kind.quantize_job) and callable(kind.export_job)


def test_generation_trains_through_jobs_and_owns_the_later_stages():
    kind = kind_of("generation")
    # the Trainer loops of finetune and distill are shared; their jobs differ
    assert kind.runner("finetune") is None and kind.runner("distill") is None and callable(kind.distill_job)
    assert kind.prune_job is None  # KV groups: its own pruning runner
    assert all(callable(kind.runner(s)) for s in ("prune", "quantize", "export", "bench"))


def test_token_classification_runs_every_stage_through_the_shared_bodies():
    kind = kind_of("token_classification")
    assert kind.metric == "f1" and callable(kind.distill_job) and callable(kind.prune_job)
    # every stage runs its shared body: no whole-stage runner is left for this kind
    assert kind.runners == {} and callable(kind.quantize_job) and callable(kind.export_job)
    assert callable(kind.bench_texts) and kind.bench_metrics[0] == ("f1", "entity F1 %")


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
