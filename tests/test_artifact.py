"""Artifacts: what a folder is, manifests, and staging that never leaves a half-written output."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from deploykit.artifact import check_out_dir, load_artifact, output_kind, staging, work_dir, write_manifest
from deploykit.errors import Terminated, UserError


def test_staging_replaces_the_output_only_on_success(tmp_path):
    out = tmp_path / "out"
    with staging(out) as tmp:
        (tmp / "a.txt").write_text("first")
        write_manifest(tmp, stage="prune", format="pytorch", parent=None, config={})
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with staging(out) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("crash mid-write")
    assert (out / "a.txt").read_text() == "first"  # the old complete output survives
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_manifest_round_trip(tmp_path):
    write_manifest(tmp_path, stage="prune", format="pytorch", parent=None, config={"ffn": 0.5}, metrics={"a": 1})
    art = load_artifact(tmp_path)
    assert (art.stage, art.format, art.metrics) == ("prune", "pytorch", {"a": 1})
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["hash"] and "torch" in m["versions"] and m["parent"] is None


def test_plain_folders_and_onnx_files(tmp_path, tiny_bert):
    assert load_artifact(tiny_bert).format == "pytorch"
    f = tmp_path / "m.onnx"
    f.write_bytes(b"")
    art = load_artifact(f)
    assert art.format == "onnx" and art.onnx_path == f


def test_an_onnx_file_in_a_deploykit_folder_takes_its_manifest(tmp_path):
    write_manifest(tmp_path, stage="quantize", format="onnx", parent=None, config={}, max_length=64)
    (tmp_path / "model_int8.onnx").write_bytes(b"")
    art = load_artifact(tmp_path / "model_int8.onnx")
    assert (art.stage, art.format, art.manifest["max_length"]) == ("quantize", "onnx", 64)
    assert art.onnx_path == tmp_path / "model_int8.onnx"  # the file asked for, not the manifest's onnx_file
    assert load_artifact(tmp_path).manifest["max_length"] == 64


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "artifact not found"),
    (lambda p: p.mkdir(), "not a model folder"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text("{oops")), "manifest is not valid JSON"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text("[]")), "manifest is not a JSON object"),
])
def test_bad_artifacts(tmp_path, make, message):
    p = tmp_path / "a"
    make(p)
    with pytest.raises(UserError, match=message):
        load_artifact(p)


# --- output folders: deploykit replaces only what it wrote -------------------------------------------

def artifact_folder(path, stage="finetune"):
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    write_manifest(path, stage=stage, format="pytorch", parent=None, config={})
    return path


def test_new_empty_and_same_stage_folders_are_accepted(tmp_path):
    assert check_out_dir(tmp_path / "new" / "deeper", "finetune") == (tmp_path / "new" / "deeper").resolve()
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty", "finetune")
    check_out_dir(artifact_folder(tmp_path / "ft"), "finetune")
    leftovers = tmp_path / "killed"
    (leftovers / ".finetune.tmp-123").mkdir(parents=True)  # a killed run's scratch counts as empty
    (leftovers / ".finetune.work").mkdir()
    check_out_dir(leftovers, "run")
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_another_stage_needs_force(tmp_path):
    ft = artifact_folder(tmp_path / "ft")
    with pytest.raises(UserError, match="holds a deploykit finetune output, not a export one; add --force"):
        check_out_dir(ft, "export")
    assert check_out_dir(ft, "export", force=True) == ft.resolve()


@pytest.mark.parametrize("force", [False, True])
def test_user_folders_are_refused_even_with_force(tmp_path, force):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match=r"holds files deploykit did not write \(thesis.tex\)"):
        check_out_dir(mine, "finetune", force)
    (mine / "manifest.json").write_text(json.dumps({"name": "my own manifest"}))  # not a deploykit one
    with pytest.raises(UserError, match="did not write"):
        check_out_dir(mine, "finetune", force)
    assert sorted(p.name for p in mine.iterdir()) == ["manifest.json", "thesis.tex"]


def test_files_working_directory_and_unwritable_places_are_refused(tmp_path, monkeypatch):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_out_dir(tmp_path / "f.txt", "finetune", force=True)
    with pytest.raises(UserError, match="is a file, so nothing can be created under it"):
        check_out_dir(tmp_path / "f.txt" / "out", "finetune")
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(UserError, match="is the working directory"):
        check_out_dir(".", "export", force=True)
    with pytest.raises(UserError, match="an ancestor of the working directory"):
        check_out_dir(tmp_path, "export", force=True)
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(work))
    with pytest.raises(UserError, match=r"project is not writable"):
        check_out_dir(work / "out", "finetune")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_place_where_nothing_can_be_made_is_refused_before_any_work(tmp_path):
    # as root os.access says /proc is writable; only making something there tells
    with pytest.raises(UserError, match=r"--out /proc/out: /proc is not writable"):
        check_out_dir("/proc/out", "finetune")
    check_out_dir(tmp_path / "out", "finetune")
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind


def test_run_and_report_folders_are_recognised(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "pipeline.json").write_text("{}")
    assert output_kind(run) == "run"
    check_out_dir(run, "run")
    with pytest.raises(UserError, match="holds a deploykit run folder, not a finetune output"):
        check_out_dir(run, "finetune", force=True)
    with pytest.raises(UserError, match="holds a deploykit finetune output, not a run folder"):
        check_out_dir(artifact_folder(tmp_path / "ft"), "run")
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text(json.dumps({"rows": [], "machine": {}}))
    assert output_kind(report) == "bench"
    check_out_dir(report, "bench")


def test_staging_refuses_a_folder_deploykit_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="did not write"):
        with staging(mine):
            pytest.fail("staging must refuse before yielding")
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_sigterm_inside_staging_removes_the_temporary_folder(tmp_path):
    from deploykit.signals import terminate

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with pytest.raises(Terminated) as err:
            with staging(tmp_path / "out") as tmp:
                (tmp / "half.bin").write_bytes(b"x" * 10)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises in the main thread, at once
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert err.value.code == 143
    assert list(tmp_path.iterdir()) == []


def test_work_dir_is_the_stage_scratch_folder(tmp_path):
    work = work_dir(tmp_path / "ft")
    assert work == (tmp_path / ".ft.work").resolve() and not work.exists()
    work.mkdir()
    (work / "checkpoint-1").mkdir()
    assert work_dir(tmp_path / "ft", fresh=False).joinpath("checkpoint-1").is_dir()  # --resume keeps it
    work_dir(tmp_path / "ft")
    assert not work.exists()


def test_scratch_in_keeps_work_files_and_library_temporaries_inside_the_staging_folder(tmp_path):
    import tempfile

    from deploykit.artifact import scratch_in

    before = tempfile.gettempdir()
    out = tmp_path / "quantize"
    with staging(out) as tmp, scratch_in(tmp) as work:
        assert work.parent == tmp and work.is_dir()
        with tempfile.TemporaryDirectory() as library_temp:  # what onnxruntime.quantization makes
            assert Path(library_temp).parent == work
        (work / "float.onnx").write_text("float")
        write_manifest(tmp, stage="quantize", format="onnx", parent=None, config={})
    assert tempfile.gettempdir() == before
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # the scratch never reaches the output
    assert json.loads((out / "manifest.json").read_text())["files"] == ["manifest.json"]
    with pytest.raises(RuntimeError), staging(out) as tmp, scratch_in(tmp) as work:
        raise RuntimeError("crash mid-calibration")
    assert tempfile.gettempdir() == before and sorted(p.name for p in tmp_path.iterdir()) == ["quantize"]


def test_staging_clears_what_a_killed_run_left(tmp_path):
    import subprocess

    from deploykit.artifact import clear_stale, staging

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    out = tmp_path / "prune"
    (tmp_path / f".prune.tmp-{dead.pid}").mkdir()
    (tmp_path / f".prune.tmp-{dead.pid}" / "model.safetensors").write_text("half")
    (tmp_path / f".prune.old-{dead.pid}").mkdir()  # killed between the two renames: the previous output
    (tmp_path / f".prune.old-{dead.pid}" / "manifest.json").write_text('{"stage": "prune", "format": "pytorch"}')
    alive = tmp_path / f".prune.tmp-{os.getppid()}"  # another live process writing the same output
    alive.mkdir()
    assert clear_stale(out) == [f".prune.old-{dead.pid}", f".prune.tmp-{dead.pid}"]
    assert (out / "manifest.json").is_file()  # the previous output is back, not deleted
    assert alive.is_dir() and not (tmp_path / f".prune.tmp-{dead.pid}").exists()
    (tmp_path / f".prune.tmp-{dead.pid}").mkdir()
    with staging(out) as tmp:
        (tmp / "manifest.json").write_text('{"stage": "prune", "format": "pytorch"}')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["prune", alive.name])


@pytest.mark.parametrize("force", [False, True])
def test_a_users_file_added_to_an_output_is_refused_even_with_force(tmp_path, force):
    out = tmp_path / "ft"
    with staging(out) as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
        write_manifest(tmp, stage="finetune", format="pytorch", parent=None, config={})
    assert json.loads((out / "manifest.json").read_text())["files"] == ["manifest.json", "model.safetensors"]
    check_out_dir(out, "finetune")  # as written: replaced freely
    (out / "NOTES.md").write_text("mine")
    with pytest.raises(UserError, match=r"holds files deploykit did not write \(NOTES.md\); move them out"):
        check_out_dir(out, "finetune", force)
    with pytest.raises(UserError, match="did not write"):
        with staging(out):
            pytest.fail("staging must refuse before yielding")
    assert (out / "NOTES.md").read_text() == "mine"
    artifact_folder(tmp_path / "old")  # written before the list existed: today's behaviour
    (tmp_path / "old" / "NOTES.md").write_text("mine")
    check_out_dir(tmp_path / "old", "finetune")


def test_only_deploykits_own_scratch_names_count_as_empty(tmp_path):
    mine = tmp_path / "mine"
    (mine / ".my.work").mkdir(parents=True)
    (mine / ".my.work" / "file.txt").write_text("mine")
    with pytest.raises(UserError, match=r"did not write \(.my.work\)"):
        check_out_dir(mine, "finetune", force=True)
    (tmp_path / "notes.tmp-12").mkdir()
    (tmp_path / "notes.tmp-12" / ".notes.tmp-12").mkdir()
    with pytest.raises(UserError, match="did not write"):
        check_out_dir(tmp_path / "notes.tmp-12", "bench")
    ours = tmp_path / "ours"
    for name in (".bench.tmp-1", ".quantize.old-2", ".distill.work", ".baseline.tmp-3", ".pipeline.json.tmp"):
        (ours / name).mkdir(parents=True)
    check_out_dir(ours, "run")


def test_bench_and_run_refusals_never_suggest_force(tmp_path):
    ft = artifact_folder(tmp_path / "ft")
    for stage in ("bench", "run"):
        with pytest.raises(UserError) as err:
            check_out_dir(ft, stage)
        assert "--force" not in str(err.value) and "give a new or empty folder" in str(err.value)


def test_an_output_inside_a_model_output_is_refused_inside_a_run_folder_it_is_not(tmp_path):
    # `finetune --out ft/new` put a model inside another; replacing `ft` later would delete it, and `ft` could no
    # longer be replaced at all ("holds files deploykit did not write")
    out = tmp_path / "ft"
    with staging(out) as tmp:
        write_manifest(tmp, stage="finetune", format="pytorch", parent=None, config={})
    for inner in (out / "new", out / "a" / "b"):
        with pytest.raises(UserError, match=r"is inside the deploykit finetune output .*ft; give a folder outside it"):
            check_out_dir(inner, "finetune", force=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "pipeline.json").write_text("{}")
    assert check_out_dir(run / "quantize2", "quantize") == (run / "quantize2").resolve()
