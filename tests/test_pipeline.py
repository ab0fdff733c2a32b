"""`deploykit run`: the tiny-ci recipe end to end, resume, re-run from an edited section, gates."""

import json
from pathlib import Path

import pytest

import deploykit.pipeline as pipeline
from deploykit.config import build_recipe, load_recipe
from deploykit.errors import UserError

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "recipes" / "tiny-ci.yaml"
CHAIN = ["finetune", "distill", "prune", "quantize"]


@pytest.fixture
def run_tiny(shared_data, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe names its model as ./recipes/assets/tiny-bert
    monkeypatch.setenv("DEPLOYKIT_DATA_DIR", str(shared_data))

    def run(out, *overrides):
        return pipeline.run_recipe(load_recipe(TINY, list(overrides)), out)

    return run


def mtimes(out: Path) -> dict[str, float]:
    return {s: (out / s / "manifest.json").stat().st_mtime for s in CHAIN}


def test_tiny_chain_end_to_end_then_resume_then_edit(run_tiny, tmp_path, capsys):
    out = tmp_path / "run"
    state = run_tiny(out)
    for stage in CHAIN:
        manifest = json.loads((out / stage / "manifest.json").read_text())
        assert manifest["stage"] == stage
        assert state["stages"][stage]["hash"]
    assert json.loads((out / "quantize" / "manifest.json").read_text())["format"] == "onnx"
    for stage in CHAIN[1:]:
        gate = state["stages"][stage]["gate"]
        assert gate["reference"] == state["reference"] and 0 <= gate["value"] <= 100
    report = out / "bench" / "report.json"
    assert report.is_file() and (out / "bench" / "report.html").is_file()
    rows = json.loads(report.read_text())["rows"]
    assert {Path(r["artifact"]).name for r in rows} >= set(CHAIN)
    assert "deploykit final" in state["headline"] and (out / "bench" / "headline.md").is_file()

    first = mtimes(out)
    run_tiny(out)  # nothing changed: every stage is skipped
    assert mtimes(out) == first

    graph = out / "quantize" / "model.onnx"
    size = graph.stat().st_size
    graph.write_text('{"text": "a film", "label": "1"}\n')  # replaced since the run wrote it
    run_tiny(out)  # the damaged stage runs again instead of being reused
    assert {s: mtimes(out)[s] == first[s] for s in CHAIN} == {
        "finetune": True, "distill": True, "prune": True, "quantize": False}
    assert graph.stat().st_size == size
    first = mtimes(out)

    capsys.readouterr()
    run_tiny(out, "quantize.calibration_samples=16")  # only quantize (and bench) re-run, saying why
    assert ("quantize: the recipe changed since this run built it: quantize.calibration_samples (32 then, 16 now)"
            in " ".join(capsys.readouterr().err.split()))
    second = mtimes(out)
    assert {s: second[s] == first[s] for s in CHAIN} == {
        "finetune": True, "distill": True, "prune": True, "quantize": False}

    # quantize exports its PyTorch parent with the export section's settings: editing them re-runs it
    run_tiny(out, "quantize.calibration_samples=16", "export.remove_padding=false")
    third = mtimes(out)
    assert {s: third[s] == second[s] for s in CHAIN} == {
        "finetune": True, "distill": True, "prune": True, "quantize": False}
    quantized = json.loads((out / "quantize" / "manifest.json").read_text())
    assert quantized["export"]["rewrite"]["remove_padding"] is False

    # quantize re-runs without a bench: the earlier report describes the replaced artifact, so it is not this
    # run's (the CLI prints state["headline"] as the run's result)
    state = run_tiny(out, "quantize.calibration_samples=8", "bench=null")
    assert "headline" not in state and "report" not in state
    assert "headline" not in json.loads((out / "pipeline.json").read_text())

    # a copied run folder: every stage is skipped, and pipeline.json names the copy's folders, not the original's
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    state = run_tiny(copy, "quantize.calibration_samples=8", "bench=null")
    assert {s: Path(e["path"]).resolve() for s, e in state["stages"].items()} == {s: (copy / s).resolve() for s in CHAIN}


def test_a_data_file_edited_in_place_trains_again(run_tiny, shared_data, tmp_path, capsys, monkeypatch):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shared_data / "sst2", data / "sst2")
    out, sets = tmp_path / "run", [f"data.data_dir={data}", "bench=null", "quantize=null", "prune=null"]
    state = run_tiny(out, *sets)
    assert set(state["stages"]["finetune"]["inputs"]) == {"train.tsv", "dev.tsv", "test.tsv"}
    first = {s: (out / s / "manifest.json").stat().st_mtime for s in ("finetune", "distill")}
    train = data / "sst2" / "train.tsv"
    train.write_text(train.read_text().replace("\t0\n", "\t1\n", 50))  # 50 labels flipped, same path and config
    capsys.readouterr()
    run_tiny(out, *sets)
    assert "finetune: train.tsv changed since this run read it; running the stage again" in capsys.readouterr().err
    again = {s: (out / s / "manifest.json").stat().st_mtime for s in ("finetune", "distill")}
    assert all(again[s] != first[s] for s in first)
    # a run folder from before inputs were recorded: taken as read from today's files, recorded, not re-run
    state = json.loads((out / "pipeline.json").read_text())
    for entry in state["stages"].values():
        entry.pop("inputs")
    (out / "pipeline.json").write_text(json.dumps(state))
    run_tiny(out, *sets)
    assert {s: (out / s / "manifest.json").stat().st_mtime for s in first} == again
    assert "inputs" in json.loads((out / "pipeline.json").read_text())["stages"]["distill"]
    # a recipe without distill into the same folder: while the teacher is unchanged its student is still this
    # chain's; once the teacher is trained again, the old student is not, and the run says so (and keeps its folder)
    state = run_tiny(out, *sets, "distill=null")
    assert list(state["stages"]) == ["finetune", "distill"]
    capsys.readouterr()
    train.write_text(train.read_text().replace("\t1\n", "\t0\n", 20))
    state = run_tiny(out, *sets, "distill=null")
    assert list(state["stages"]) == ["finetune"] == list(json.loads((out / "pipeline.json").read_text())["stages"])
    said = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "distill is left from an earlier recipe and built on what this run replaced" in said
    assert (out / "distill" / "manifest.json").is_file()
    # loading it later says so too: it was served as the run's model, silently
    from deploykit.predictor import load

    load(out / "finetune")
    assert "left from an earlier recipe" not in capsys.readouterr().err
    load(out / "distill")
    said = " ".join(capsys.readouterr().err.split())
    assert f"warning: {(out / 'distill').resolve()} is left from an earlier recipe of the run in" in said
    # so does a stage given it with --from (its output would never warn again), and bench
    import deploykit.stages.bench as bench

    monkeypatch.setattr(pipeline, "stage_function", lambda stage: lambda recipe, parent, out_dir: parent)
    pipeline.run_stage("quantize", load_recipe(TINY), out / "distill", tmp_path / "q")
    monkeypatch.setattr(bench, "_checked", lambda artifact: (_ for _ in ()).throw(RuntimeError("benched")))
    with pytest.raises(RuntimeError, match="benched"):
        bench.run_many(load_recipe(TINY), [out / "distill"], tmp_path / "b")
    said = " ".join(capsys.readouterr().err.split())
    assert said.count(f"warning: {(out / 'distill').resolve()} is left from an earlier recipe") == 2


def test_failing_gate_stops_the_run_naming_stage_and_knob(run_tiny, tmp_path, monkeypatch):
    real = pipeline._gate_value

    def distill_loses_five_points(recipe, artifact, task):
        value = real(recipe, artifact, task)
        return value - 5.0 if artifact.stage == "distill" else value

    monkeypatch.setattr(pipeline, "_gate_value", distill_loses_five_points)
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"gate failed after distill: .*-5\.00 pt > gate\.max_drop 1\.0.*student_layers"):
        run_tiny(out, "gate.max_drop=1.0", "quantize=null", "bench=null", "prune=null")
    assert (out / "distill" / "manifest.json").is_file() and not (out / "prune").exists()


def test_a_step_is_gated_against_its_input_whatever_the_teacher_scored(run_tiny, tmp_path, monkeypatch):
    """Issue 19's run: an under-trained teacher (57.6) let a -20.8 pt prune step through, since the pruned
    model (65.8) still beat the teacher. Each stage is now also held to its own input."""
    scores = {"finetune": 57.6, "distill": 86.6, "prune": 65.8}
    monkeypatch.setattr(pipeline, "_gate_value", lambda recipe, artifact, task: scores[artifact.stage])
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"gate failed after prune: accuracy 65\.80 vs its input \(distill\) 86\.60 "
                                        r"\(-20\.80 pt > gate\.max_drop 2\.5\)"):
        run_tiny(out, "gate.max_drop=2.5", "quantize=null", "bench=null")
    state = json.loads((out / "pipeline.json").read_text())
    assert state["stages"]["prune"]["gate"]["input"] == 86.6
    assert "teacher is under-trained: it scores accuracy 57.60" in state["warnings"][0]
    # a separate budget per step; the scores are kept in pipeline.json, the stages are not re-run
    state = pipeline.run_recipe(load_recipe(TINY, ["gate.max_drop=2.5", "gate.max_step_drop=21", "quantize=null",
                                                   "bench=null"]), out)
    assert state["stages"]["prune"]["gate"]["value"] == 65.8


def test_a_changed_gate_metric_is_measured_again_on_a_rerun(run_tiny, tmp_path, monkeypatch):
    seen = []
    real = pipeline._gate_value

    def record(recipe, artifact, task):
        seen.append((recipe.gate.metric, artifact.stage))
        return real(recipe, artifact, task)

    monkeypatch.setattr(pipeline, "_gate_value", record)
    out = tmp_path / "run"
    run_tiny(out, "quantize=null", "bench=null", "prune=null")
    state = run_tiny(out, "quantize=null", "bench=null", "prune=null", "gate.metric=macro_f1")
    # the stages are skipped, their scores are not: the teacher and distill are scored again in macro-F1
    assert seen[-2:] == [("macro_f1", "finetune"), ("macro_f1", "distill")]
    assert state["reference_for"] == ["macro_f1", "validation"]
    assert state["stages"]["distill"]["gate"]["metric"] == "macro_f1"


def test_the_under_trained_margin_grows_on_few_rows():
    assert pipeline.under_trained_margin(90.0, None) == 0.5
    assert pipeline.under_trained_margin(90.0, 100000) == 0.5
    assert 6.9 < pipeline.under_trained_margin(50.0, 200) < 7.1  # 2 rows of 200 are 1 pt: noise, not a signal


def test_the_headline_leads_with_the_warnings(tmp_path):
    from deploykit.measure.headline import write

    rows = [{"artifact": str(tmp_path / a), "runtime": r, "target": "cpu", "status": "ok", "accuracy": acc,
             "latency_ms": {"p50": ms}, "throughput": {"32": tput}, "size_mb": mb, "runtime_label": r}
            for a, r, acc, ms, tput, mb in (("t", "torch", 57.6, 10.0, 100.0, 90.0), ("f", "ort", 57.0, 0.5, 2000.0, 6.0))]
    (tmp_path / "report.json").write_text(json.dumps({"rows": rows}))
    text = write(tmp_path / "report.json", str(tmp_path / "t"), str(tmp_path / "f"), ["the teacher is under-trained"])
    assert text.startswith("**warning:** the teacher is under-trained\n")
    assert json.loads((tmp_path / "headline.json").read_text())["warnings"] == ["the teacher is under-trained"]


def test_recipe_without_stages_is_refused(tmp_path):
    from deploykit.config import build_recipe

    with pytest.raises(UserError, match="no stages"):
        pipeline.run_recipe(build_recipe({"data": {"name": "sst2"}}), tmp_path)


def test_a_wrong_model_source_fails_before_the_run_folder_exists(tiny_task, tmp_path):
    from deploykit.pipeline import run_recipe

    cfg = build_recipe({"model": {"source": "./no/such/model"}, "data": {"path": str(tiny_task)},
                       "finetune": {"epochs": 1}})
    with pytest.raises(UserError, match="local folder not found"):
        run_recipe(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="local folder not found"):
        run_recipe(cfg, tmp_path / "new" / "deeper" / "run")
    assert not (tmp_path / "new").exists()  # the folders the lock made for it are gone again


def test_a_second_run_on_a_folder_in_use_is_refused(run_tiny, tmp_path):
    from deploykit.run_lock import run_lock

    out = tmp_path / "run"
    # two runs on one folder interleaved: one run's teacher beside the other's student, the state file of either
    with run_lock(out):
        with pytest.raises(UserError, match=r"^\S+/run: another deploykit run is writing to this folder now; "
                                             r"wait for it to end, or give another --out$"):
            run_tiny(out, "distill=null", "prune=null", "quantize=null", "bench=null")
        assert list(out.iterdir()) == []  # nothing cleared or written while the other run holds it
    state = run_tiny(out, "distill=null", "prune=null", "quantize=null", "bench=null")  # released: it runs
    assert "finetune" in state["stages"]


def test_a_run_refused_once_its_folder_exists_leaves_nothing(run_tiny, tmp_path):
    import shutil

    model = shutil.copytree(REPO / "recipes" / "assets" / "tiny-bert", tmp_path / "bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    out = tmp_path / "new" / "deep" / "run"
    with pytest.raises(UserError, match="no tokenizer files"):  # found as the first stage loads, after pipeline.json
        run_tiny(out, f"model.source={model}", "distill=null", "prune=null", "quantize=null", "bench=null")
    assert not (tmp_path / "new").exists()
