"""`--out` is safe: deploykit replaces only what it wrote, refuses everything else before any work, and
removes its temporary folders when it is interrupted."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploykit.artifact import write_manifest
from deploykit.cli import app

REPO = Path(__file__).resolve().parents[2]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def scratch(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "data").mkdir()
    (path / "data" / "results.csv").write_text("a,b\n1,2\n")
    return path


def fake_artifact(path: Path, stage: str) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"old")
    write_manifest(path, stage=stage, format="pytorch", parent=None, config={})
    return path


def test_finetune_into_a_folder_of_user_files_exits_2_and_touches_nothing(tiny_bert, tiny_task, tmp_path):
    mine = user_folder(tmp_path / "mine")
    before = tree(mine)
    for extra in ([], ["--force"]):
        result = invoke("finetune", "--model", tiny_bert, "--data", tiny_task, "--out", mine, "-q", *extra)
        assert result.exit_code == 2, result.output
        assert "holds files deploykit did not write" in result.output and "Traceback" not in result.output
        assert tree(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "task", "tiny-bert"]


def test_export_into_the_working_directory_exits_2_and_leaves_it_alone(tiny_bert, tmp_path, monkeypatch):
    work = user_folder(tmp_path / "work")
    monkeypatch.chdir(work)
    before = tree(work)
    for out in (".", "..", str(work)):
        result = invoke("export", "--from", tiny_bert, "--out", out, "--force")
        assert result.exit_code == 2, result.output
        assert "working directory" in result.output and len(result.output.strip().splitlines()) == 1
    assert tree(work) == before and sorted(p.name for p in tmp_path.iterdir()) == ["tiny-bert", "work"]


@pytest.mark.parametrize("out, message", [
    ("f", "is a file, not a folder"),
    ("f/out", "is a file, so nothing can be created under it"),
    ("f/deeper/out", "is a file, so nothing can be created under it"),
])
def test_files_and_paths_under_files_exit_2(tiny_bert, tiny_task, tmp_path, out, message):
    (tmp_path / "f").write_text("x")
    result = invoke("finetune", "--model", tiny_bert, "--data", tiny_task, "--out", tmp_path / out, "-q", "--force")
    assert result.exit_code == 2 and message in result.output, result.output
    assert (tmp_path / "f").read_text() == "x"


def test_out_may_not_replace_the_input_artifact(tiny_bert, tmp_path):
    ft = fake_artifact(tmp_path / "ft", "finetune")
    (ft / "config.json").write_text((tiny_bert / "config.json").read_text())
    result = invoke("export", "--from", ft, "--out", ft, "--force")
    assert result.exit_code == 2 and "would replace the input artifact" in result.output, result.output
    assert (ft / "model.safetensors").read_bytes() == b"old"


def test_out_may_not_be_inside_the_input_artifact(tiny_bert, tmp_path):
    ft = fake_artifact(tmp_path / "ft", "finetune")
    (ft / "config.json").write_text((tiny_bert / "config.json").read_text())
    before = tree(ft)
    for out in (ft / "sub", ft / "a" / "b"):
        result = invoke("export", "--from", ft, "--out", out, "--force")
        assert result.exit_code == 2 and "is inside the deploykit finetune output" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert tree(ft) == before and sorted(p.name for p in ft.iterdir()) == ["config.json", "manifest.json",
                                                                         "model.safetensors"]


def test_a_users_file_in_a_copied_output_is_kept(tiny_bert, tiny_task, tmp_path):
    import shutil

    args = ["finetune", "--model", tiny_bert, "--data", tiny_task, "-q", "--set", "finetune.epochs=1"]
    assert invoke(*args, "--out", tmp_path / "ft").exit_code == 0
    shutil.copytree(tmp_path / "ft", tmp_path / "ftA")
    (tmp_path / "ftA" / "NOTES.md").write_text("notes")
    before = tree(tmp_path / "ftA")
    for extra in ([], ["--force"]):
        result = invoke(*args, "--out", tmp_path / "ftA", *extra)
        assert result.exit_code == 2, result.output
        assert "holds files deploykit did not write (NOTES.md); move them out" in result.output
    assert tree(tmp_path / "ftA") == before


def test_rerun_into_the_same_stage_works_and_another_stage_needs_force(tiny_bert, tiny_task, tmp_path):
    out = tmp_path / "ft"
    args = ["finetune", "--model", tiny_bert, "--data", tiny_task, "--out", out, "-q", "--set", "finetune.epochs=1"]
    assert invoke(*args).exit_code == 0
    first = (out / "manifest.json").read_text()
    result = invoke(*args)  # the same stage's earlier output is replaced
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").read_text() != first and not scratch(tmp_path)

    pruned = fake_artifact(tmp_path / "pruned", "prune")
    refused = invoke(*args[:5], "--out", pruned, "-q")
    assert refused.exit_code == 2 and "holds a deploykit prune output, not a finetune one; add --force" in refused.output
    assert (pruned / "model.safetensors").read_bytes() == b"old"
    forced = invoke(*args[:5], "--out", pruned, "-q", "--force", "--set", "finetune.epochs=1")
    assert forced.exit_code == 0, forced.output
    assert json.loads((pruned / "manifest.json").read_text())["stage"] == "finetune"


def test_an_empty_existing_folder_is_fine(tiny_bert, tiny_task, tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("finetune", "--model", tiny_bert, "--data", tiny_task, "--out", tmp_path / "empty", "-q",
                    "--set", "finetune.epochs=1")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_run_refuses_a_non_run_folder_and_a_foreign_stage_folder_before_training(tiny_bert, tiny_task, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model": {"source": str(tiny_bert)}, "data": {"path": str(tiny_task)},
                                  "finetune": {"epochs": 1}}))
    mine = user_folder(tmp_path / "mine")
    result = invoke("run", recipe, "--out", mine, "-q")
    assert result.exit_code == 2 and "holds files deploykit did not write" in result.output, result.output
    run = tmp_path / "run"
    user_folder(run / "finetune")
    (run / "pipeline.json").write_text('{"stages": {}}')
    result = invoke("run", recipe, "--out", run, "-q")
    assert result.exit_code == 2 and "run/finetune: the folder holds files deploykit did not write" in result.output
    assert (run / "finetune" / "thesis.tex").is_file() and sorted(p.name for p in run.iterdir()) == [
        "finetune", "pipeline.json"]


def test_bench_refuses_a_folder_that_is_not_a_report(tiny_bert, tiny_task, tmp_path):
    mine = user_folder(tmp_path / "mine")
    result = invoke("bench", tiny_bert, "--data", tiny_task, "--out", mine, "--quick", "-q")
    assert result.exit_code == 2 and "holds files deploykit did not write" in result.output, result.output
    ft = fake_artifact(tmp_path / "ft", "finetune")
    result = invoke("bench", tiny_bert, "--data", tiny_task, "--out", ft, "--quick", "-q")
    assert result.exit_code == 2 and "holds a deploykit finetune output, not a bench one" in result.output


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_training_exits_with_its_code_and_leaves_no_temporary_folder(tiny_bert, tiny_task, tmp_path,
                                                                                    sig, code):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("DEPLOYKIT_QUIET", None)
    cmd = [sys.executable, "-m", "deploykit.cli", "finetune", "--model", str(tiny_bert), "--data", str(tiny_task),
           "--out", str(tmp_path / "ft"), "--set", "finetune.epochs=500", "--set", "finetune.batch_size=4",
           "--set", "finetune.early_stopping_patience=null", "--set", "data.max_length=16"]
    # a shell's background job inherits SIGINT ignored, and Python keeps it so: give the child the default
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    started = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("finetune:"):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(120), "".join(lines)
        time.sleep(2)  # in the middle of the training loop (8000 steps, no early stopping)
        assert proc.poll() is None and not any("finetune: validation" in line for line in lines), "".join(lines)
        proc.send_signal(sig)
        assert proc.wait(60) == code, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    assert any("error: " in line and ("SIGTERM" if code == 143 else "SIGINT") in line for line in lines), "".join(lines)
    assert "Traceback" not in "".join(lines)
    assert not scratch(tmp_path) and not (tmp_path / "ft").exists()
