"""`deploykit bench` end to end on a tiny BERT (PyTorch + ONNX): reports, baseline, errors, CLI."""

import json
import shutil
from html.parser import HTMLParser

import pytest
import torch
from conftest import make_tiny_model, write_task
from tiny_onnx import export_tiny_onnx
from typer.testing import CliRunner

from deploykit.artifact import load_artifact, write_manifest
from deploykit.cli import app
from deploykit.config import build_recipe
from deploykit.data import load_task
from deploykit.errors import UserError
from deploykit.evaluate import evaluate_artifact
from deploykit.measure.text_bench import fine_tuned_teacher
from deploykit.pipeline import run_stage
from deploykit.quant.ov_peer import peer_missing
from deploykit.stages.bench import run_many

ROW_KEYS = {"name", "artifact", "stage", "format", "baseline", "runtime", "runtime_label", "target", "device",
            "threads", "status", "note", "bf16_native", "latency_ms", "e2e_latency_ms", "throughput", "throughput_blocks",
            "latency_block_p50_ms", "peak_rss_mb", "model_rss_mb",
            "memory_method", "size_mb", "parameters", "accuracy", "macro_f1", "eval_n", "eval_batch"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-stage")
    model = make_tiny_model(root / "bert", "bert", seed=5)
    return model, export_tiny_onnx(model, root / "onnx"), write_task(root / "task")


def recipe(task, **bench):
    return build_recipe({"name": "tiny", "data": {"path": str(task), "max_length": 32},
                         "bench": {"quick": True, "baseline": False, **bench}})


@pytest.fixture(scope="module")
def report_dir(tiny, tmp_path_factory):
    model, onnx, task = tiny
    out = tmp_path_factory.mktemp("reports") / "bench"
    assert run_many(recipe(task, targets=["cpu", "gpu"]), [model, onnx], out) == out
    return out


def test_reports_hold_one_row_per_artifact_runtime_target(report_dir, tiny):
    report = json.loads((report_dir / "report.json").read_text())
    assert {"title", "created", "machine", "method", "rows"} <= set(report)
    assert {"cpu", "cores", "bf16_native", "quant_preset", "versions"} <= set(report["machine"])
    assert all(set(r) == ROW_KEYS for r in report["rows"])
    got = sorted((r["format"], r["runtime"], r["target"]) for r in report["rows"])
    assert got == sorted([("pytorch", rt, t) for rt in ("torch", "torch-bf16") for t in ("cpu", "gpu")]
                         + [("onnx", "ort", "cpu"), ("onnx", "ort-cuda", "gpu")])
    assert report["method"]["quick"] is True and report["method"]["ort_spinning"] is True
    assert len(report["method"]["load_average"]) == 2
    md = (report_dir / "report.md").read_text()
    assert md.count("\n| bert |") + md.count("\n| onnx |") == len(report["rows"])
    rows = report["rows"]
    # text in, label out through deploykit.load, beside the model alone (torch and ORT rows, not the GPU)
    measured = [r for r in rows if r["status"] == "ok" and r["runtime"] in ("torch", "ort")]
    assert measured and all(r["e2e_latency_ms"]["n"] == r["latency_ms"]["n"] for r in measured)
    assert all(r["e2e_latency_ms"] is None for r in rows if r["runtime"] == "torch-bf16" or r["status"] != "ok")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip note on a machine without a GPU")
def test_gpu_runtime_is_a_skipped_row_with_its_note(report_dir):
    rows = json.loads((report_dir / "report.json").read_text())["rows"]
    gpu = [r for r in rows if r["target"] == "gpu"]
    assert len(gpu) == 3 and all(r["status"] == "skipped" and "no CUDA GPU" in r["note"] for r in gpu)
    assert all(r["status"] == "ok" for r in rows if r["target"] == "cpu")


def test_report_accuracy_matches_evaluate_artifact(report_dir, tiny):
    model, onnx, task = tiny
    rows = json.loads((report_dir / "report.json").read_text())["rows"]
    split = load_task(recipe(task).data).test.head(64)
    for folder, runtime in ((model, "torch"), (onnx, "ort")):
        expected = evaluate_artifact(load_artifact(folder), split, max_length=32)
        row = next(r for r in rows if r["runtime"] == runtime and r["target"] == "cpu")
        assert (row["accuracy"], row["macro_f1"], row["eval_n"]) == (
            expected["accuracy"], expected["macro_f1"], expected["n"])


def test_html_parses_and_references_its_plots(report_dir):
    srcs = []

    class Page(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                srcs.append(dict(attrs)["src"])

    Page().feed((report_dir / "report.html").read_text())
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all((report_dir / f"{n}.png").is_file() for n in ("pareto", "size", "throughput"))


def test_bad_inputs_are_one_line_user_errors(tiny, tmp_path):
    model, _, task = tiny
    with pytest.raises(UserError, match="artifact not found"):
        run_many(recipe(task), [tmp_path / "nope"], tmp_path / "out")
    with pytest.raises(UserError, match="bench.targets"):
        recipe(task, targets=["tpu"])
    with pytest.raises(UserError, match="needs data"):
        run_many(build_recipe({"bench": {"quick": True}}), [model], tmp_path / "out")
    no_test = write_task(tmp_path / "no-test", n_test=0)
    with pytest.raises(UserError, match="bench.eval_split=validation"):
        run_many(recipe(no_test), [model], tmp_path / "out")
    with pytest.raises(UserError, match="PyTorch model folder"):
        run_many(recipe(task), [model], tmp_path / "out", baseline_source=tiny[1])
    from tiny_llama import make_tiny_llama

    with pytest.raises(UserError, match=r"^--baseline \S+: a causal LM, and this bench scores a sequence classifier; "
                                        r"give the fine-tuned sequence classifier the artifacts came from$"):
        run_many(recipe(task), [model], tmp_path / "out", baseline_source=make_tiny_llama(tmp_path / "llama"))
    # models of single texts and of sentence pairs are never scored on the same rows (lineage.fit_columns)
    nli, single = shutil.copytree(model, tmp_path / "nli"), shutil.copytree(model, tmp_path / "single")
    for folder, pair in ((nli, "hypothesis"), (single, None)):
        (folder / "manifest.json").write_text(json.dumps({"stage": "finetune", "format": "pytorch", "config": {
            "data": {"text_column": "sentence", "text_pair_column": pair}}}))
    with pytest.raises(UserError, match="was trained on single texts"):
        run_many(recipe(task), [nli, single], tmp_path / "out")


def test_a_model_of_other_labels_is_refused_before_any_timing(tiny, tmp_path):
    # a 2-class sentiment model scored on 4-class data read 22% as a result, and became the teacher row
    model, onnx, task = tiny
    four = make_tiny_model(tmp_path / "four", "bert", labels=["World", "Sports", "Business", "Sci/Tech"])
    for given in ([four], [model, four]):
        with pytest.raises(UserError, match=r"^bench: \S+four: labels \['World', 'Sports', 'Business', 'Sci/Tech'\] "
                                            r"differ from the data's \['0', '1'\]; bench a model on the data"):  # ids: counts differ
            run_many(recipe(task), given, tmp_path / "out")
    named = build_recipe({"data": {"path": str(task), "max_length": 32, "label_names": ["positive", "negative"]},
                          "bench": {"quick": True, "baseline": False}})
    with pytest.raises(UserError, match=r"labels \['negative', 'positive'\] differ from the data's \['positive', "):
        run_many(named, [model], tmp_path / "out")  # the same names in another order would swap every answer
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["bench", str(four), "--data", str(task), "--out", str(tmp_path / "o2"), "-q"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_a_model_given_twice_is_one_line(tiny, tmp_path):
    # `bench q ./q/` measured the one model twice, under two names ("quantize" and "q"), as if two models
    model, onnx, task = tiny
    for given in ([model, model.parent / ".." / model.parent.name / model.name],
                  [onnx, onnx / "model.onnx"]):
        with pytest.raises(UserError, match=r"^bench: the model in \S+ is given twice; give each model once$"):
            run_many(recipe(task), given, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fine_tuned_teacher_follows_manifest_parents(tiny, tmp_path):
    model, onnx, _ = tiny
    teacher, student = tmp_path / "finetune", tmp_path / "distill"
    shutil.copytree(model, teacher)
    shutil.copytree(model, student)
    write_manifest(teacher, stage="finetune", format="pytorch", parent=None, config={})
    write_manifest(student, stage="distill", format="pytorch", parent=load_artifact(teacher), config={})
    found = fine_tuned_teacher([load_artifact(onnx), load_artifact(student)])
    assert found is not None and found.path == teacher
    assert fine_tuned_teacher([load_artifact(onnx)]) is None
    # an ONNX artifact alone (`deploykit bench runs/x/quantize`): its parents are walked too
    graph = shutil.copytree(onnx, tmp_path / "quantize")
    write_manifest(graph, stage="quantize", format="onnx", parent=load_artifact(student), config={})
    assert fine_tuned_teacher([load_artifact(graph)]).path == teacher


def test_pipeline_stage_returns_the_report_folder(tiny, tmp_path):
    model, _, task = tiny
    art = run_stage("bench", recipe(task, runtimes=["torch"]), model, tmp_path / "bench")
    assert art.format == "report" and art.stage == "bench" and (art.path / "report.html").is_file()
    rows = json.loads((art.path / "report.json").read_text())["rows"]
    assert [(r["runtime"], r["target"], r["status"]) for r in rows] == [("torch", "cpu", "ok")]
    # a glob over a run folder also matches its earlier report: skipped, not an error
    again = run_many(recipe(task, runtimes=["torch"], targets=["edge"]), [model, art.path], tmp_path / "again")
    assert len(json.loads((again / "report.json").read_text())["rows"]) == 1
    with pytest.raises(UserError, match="only bench reports"):
        run_many(recipe(task), [art.path], tmp_path / "none")


def test_cli_bench_quick(tiny, tmp_path):
    model, onnx, task = tiny
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["bench", str(onnx), "--data", str(task), "--quick", "--out", str(out),
                              "--set", "bench.baseline=false", "--set", "data.max_length=32", "-q"])
    assert res.exit_code == 0, res.output
    assert str(out) in res.output and (out / "report.md").is_file()
    res = runner.invoke(app, ["bench", str(onnx), "--data", str(task), "--target", "tpu", "-q"])
    # named as the flag the user typed, not as a --set they never wrote
    assert res.exit_code == 2 and "'--target'" in res.output and "'tpu' is not one of 'cpu', 'edge', 'gpu'" in res.output
    assert "--set" not in res.output


def test_the_target_flag_offers_what_the_recipe_takes():
    import typing

    from deploykit.cli import Target
    from deploykit.config.stages import BenchConfig

    offered = typing.get_args(typing.get_args(BenchConfig.model_fields["targets"].annotation)[0])
    assert [t.value for t in Target] == list(offered)
    import typer

    from deploykit.cli import app

    bench = typer.main.get_command(app).commands["bench"]
    assert bench.make_context("bench", ["x", "-t", "CPU", "-t", "edge"]).params["target"] == [Target.cpu, Target.edge]


def test_baseline_row_is_the_standard_recipe(tiny, tmp_path):
    model, _, task = tiny
    out = run_many(recipe(task, targets=["edge"], openvino_peer=False), [model], tmp_path / "bench",
                   baseline_source=model)
    report = json.loads((out / "report.json").read_text())
    base = [r for r in report["rows"] if r["baseline"]]
    assert [(b["name"], b["format"], b["runtime"], b["status"]) for b in base] == [("baseline", "onnx", "ort", "ok")]
    assert load_artifact(out / "baseline").stage == "baseline"
    assert report["method"]["baseline"].endswith(f"built from {model}")
    assert "(baseline)" in (out / "report.md").read_text()
    import onnx

    graph = onnx.load(str(out / "baseline" / "model.onnx"), load_external_data=False).graph
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) >= 8  # dynamic INT8 of every linear layer


def test_baseline_from_the_teacher_when_on(tiny, tmp_path):
    model, onnx, task = tiny
    out = run_many(recipe(task, targets=["edge"], baseline=True, runtimes=["ort"]), [onnx, model], tmp_path / "b")
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    # the OpenVINO + NNCF peer is built from the same teacher where openvino and nncf are installed (the dev extra)
    peer = [("openvino-nncf", True)] if peer_missing() is None else []
    assert [(r["name"], r["baseline"]) for r in rows] == [("onnx", False), ("bert", False), ("baseline", True), *peer]
    assert rows[1]["status"] == "skipped" and "reads a pytorch artifact" in rows[1]["note"]
    if peer:
        assert (rows[3]["format"], rows[3]["runtime"], rows[3]["status"]) == ("openvino", "openvino", "ok")
        assert rows[3]["size_mb"] > 0 and 0 <= rows[3]["accuracy"] <= 100
        assert "NNCF static INT8" in report["method"]["peer"] and "Peer: openvino-nncf" in (out / "report.md").read_text()
        assert (out / "openvino" / "model.xml").is_file()


def test_no_peer_row_without_openvino_and_nncf(tiny, tmp_path, monkeypatch):
    import deploykit.quant.ov_peer as ov_peer

    model, onnx, task = tiny
    monkeypatch.setattr(ov_peer, "peer_missing", lambda: "the nncf package is not installed")
    out = run_many(recipe(task, targets=["edge"], baseline=True, runtimes=["ort"]), [onnx, model], tmp_path / "b")
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["onnx", "bert", "baseline"] and report["method"]["peer"] is None


def test_an_interrupted_bench_leaves_no_half_written_folder(tiny, tmp_path, monkeypatch):
    import deploykit.measure.benchmark

    model, _, task = tiny
    real = deploykit.measure.benchmark.measure

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C mid-measurement, after the baseline was built

    monkeypatch.setattr(deploykit.measure.benchmark, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_many(recipe(task, targets=["edge"], runtimes=["torch"]), [model], tmp_path / "b1", baseline_source=model)
    assert list(tmp_path.iterdir()) == []  # neither b1/ nor a temporary folder

    monkeypatch.setattr(deploykit.measure.benchmark, "measure", real)
    out = run_many(recipe(task, targets=["edge"], runtimes=["torch"]), [model], tmp_path / "b1", baseline_source=model)
    assert all((out / f).is_file() for f in ("report.json", "report.md", "report.html", "baseline/manifest.json"))
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert next(r for r in rows if r["baseline"])["artifact"] == str(out / "baseline")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(deploykit.measure.benchmark, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_many(recipe(task, targets=["edge"], runtimes=["torch"]), [model], out, baseline_source=model)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the earlier report unchanged
    assert [p.name for p in tmp_path.iterdir()] == ["b1"]


def test_the_stage_writes_what_the_kind_reports_and_nothing_when_it_fails(tiny, tmp_path, monkeypatch):
    import dataclasses

    import deploykit.stages.bench as stage
    from deploykit.kinds import kind_of
    from deploykit.measure.text_bench import report

    model, onnx, task = tiny
    real, calls = kind_of("classification"), []

    def spy(recipe, cfg, subjects, tmp, out_dir, baseline_source):
        calls.append(([s.name for s in subjects], tmp, out_dir, baseline_source))
        return report(real, recipe, cfg, subjects, tmp, out_dir, baseline_source)

    monkeypatch.setattr(stage, "kind_of", lambda task: dataclasses.replace(real, bench_report=spy))
    out = tmp_path / "bench"
    twin = shutil.copytree(model, tmp_path / "elsewhere" / model.name)  # another model of the same name
    run_many(recipe(task), [model, onnx, twin], out)
    (names, tmp, out_dir, baseline), = calls
    assert names == ["bert", "onnx", "bert-3"] and out_dir == out and tmp != out and baseline is None
    assert len(json.loads((out / "report.json").read_text())["rows"]) > 0 and not tmp.exists()

    def broken(*args):
        raise UserError("the kind could not measure")

    monkeypatch.setattr(stage, "kind_of", lambda task: dataclasses.replace(real, bench_report=broken))
    with pytest.raises(UserError, match="could not measure"):
        run_many(recipe(task), [model], tmp_path / "other")
    assert not (tmp_path / "other").exists()
