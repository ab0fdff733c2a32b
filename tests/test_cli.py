"""The CLI edge: user mistakes are one line on stderr with exit code 2, never a traceback."""

import json

import pytest
from typer.testing import CliRunner

from deploykit.cli import app


@pytest.mark.parametrize("args, message", [
    (["finetune", "--data", "./no/such/folder"], "data path not found"),
    (["finetune", "--model", "package:not_installed_pkg/model", "--data", "x", "--data-dir", "."], "is not installed"),
    (["finetune", "--set", "finetune.epochs=-1", "--data", "x"], "finetune.epochs"),
    (["finetune", "--set", "finetune.nonsense=1", "--data", "x"], "unknown key 'finetune.nonsense'"),
    (["run", "no-such-recipe.yaml"], "recipe file not found"),
    (["quantize", "--from", "./missing-artifact"], "artifact not found"),
])
def test_bad_input_is_one_line_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not any(p.name.startswith("runs") for p in tmp_path.iterdir())


def test_finetune_from_the_command_line(tiny_bert, tiny_task, tmp_path):
    out = tmp_path / "ft"
    result = CliRunner().invoke(app, ["finetune", "--model", str(tiny_bert), "--data", str(tiny_task),
                                      "--out", str(out), "--quiet", "--set", "finetune.epochs=1"])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file()


def test_data_replaces_the_recipes_dataset_whichever_way_it_was_named(tmp_path):
    from pathlib import Path

    from deploykit.cli import build

    tiny = Path(__file__).resolve().parent.parent / "recipes" / "tiny-ci.yaml"  # names data.name: sst2
    rows = tmp_path / "mine.tsv"
    rows.write_text("sentence\tlabel\na good film\t1\na bad film\t0\n")
    cfg = build("finetune", tiny, None, data=str(rows))
    assert (cfg.data.name, cfg.data.path, cfg.data.max_length) == (None, str(rows), 32)  # the rest stays the recipe's
    from_path = tmp_path / "path.yaml"
    from_path.write_text(f"data:\n  path: {rows}\n")
    cfg = build("finetune", from_path, None, data="agnews")
    assert (cfg.data.name, cfg.data.path) == ("agnews", None)


def test_set_bf16_off_is_accepted_and_a_bad_set_names_itself(tiny_bert, tiny_task, tmp_path):
    out = tmp_path / "ft"
    result = CliRunner().invoke(app, ["finetune", "--model", str(tiny_bert), "--data", str(tiny_task), "--out", str(out),
                                      "--quiet", "--set", "finetune.epochs=1", "--set", "finetune.bf16=off"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["config"]["finetune"]["bf16"] == "off"
    bad = CliRunner().invoke(app, ["finetune", "--data", str(tiny_task), "--set", "finetune.epochs=abc"])
    assert bad.exit_code == 2 and bad.output.startswith("error: --set finetune.epochs=abc: finetune.epochs: ")


def test_recipe_with_unquoted_bf16_off_validates(tiny_bert, tiny_task, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{source: {tiny_bert}}}\ndata: {{path: {tiny_task}}}\nfinetune:\n  bf16: off\n")
    result = CliRunner().invoke(app, ["validate", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output  # the string "off", not False ("got False" before)


@pytest.mark.parametrize("args, message", [
    (["predict"], "error: Missing argument 'model' (see `deploykit predict --help`)"),
    (["run", "--bogus", "r.yaml"], "error: No such option: --bogus"),
    # the closest option, not click's list of every close one ("Possible options: --quiet, --set")
    (["run", "r.yaml", "--qiet"], "error: No such option: --qiet. Did you mean --quiet? (see `deploykit run --help`)"),
    (["nosuch"], "error: No such command 'nosuch' (see `deploykit --help`)"),
    (["predict", "m", "--top-k", "0"], "error: Invalid value for '--top-k'"),
    # raised while the group still parses: the help named is still the subcommand's
    (["run", "r.yaml", "--out"], "error: Option '--out' requires an argument (see `deploykit run --help`)"),
    (["finetune", "--resume=maybe"], "error: Option '--resume' does not take a value (see `deploykit finetune --help`)"),
    # the group's own faults name the group's help, whatever follows on the line
    (["bogus", "run"], "error: No such command 'bogus' (see `deploykit --help`)"),
    (["--bogus", "predict"], "error: No such option: --bogus (see `deploykit --help`)"),
    (["--debug=1", "predict"], "error: Option '--debug' does not take a value (see `deploykit --help`)"),
    # "" is Path("."): the current folder, refused later (if at all) as "." with no word of the empty argument
    (["run", "r.yaml", "--out", ""], "error: Invalid value for '--out' / '-o': an empty path: name a file or folder"),
    (["distill", "--from", " "], "error: Invalid value for '--from' / '-f': an empty path"),
    (["predict", "", "hello"], "error: Invalid value for 'model': an empty path"),
    (["bench", "a", ""], "error: Invalid value for 'artifacts': an empty path"),
    # an empty text or prompt (an unset shell variable) was answered as a text: `deploykit generate ft ""` exited 0
    (["predict", "m", "a film", " "], "error: Invalid value for 'texts': an empty text"),
    (["generate", "m", ""], "error: Invalid value for 'prompts': an empty text"),
    (["predict", "m", "\u200b"], "error: Invalid value for 'texts': an empty text (or invisible characters only)"),
])
def test_a_usage_error_is_one_line_exit_2(args, message):
    result = CliRunner().invoke(app, args, prog_name="deploykit")
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith(message), result.output  # no box, no usage


def test_a_path_the_system_refuses_is_one_line_exit_2(tmp_path):
    # a file name over the system's limit raised OSError (exit 1) and echoed all 5,000 characters of it
    result = CliRunner().invoke(app, ["validate", str(tmp_path / ("é" * 5000 + ".yaml"))])
    assert result.exit_code == 2, result.output
    assert len(result.output) < 300 and result.output.startswith("error: ") and "Traceback" not in result.output


def test_help_and_no_arguments_still_print_the_help():
    assert CliRunner().invoke(app, ["run", "--help"]).exit_code == 0
    assert "Usage: deploykit predict" in CliRunner().invoke(app, ["predict", "-h"], prog_name="deploykit").output
    bare = CliRunner().invoke(app, [], prog_name="deploykit")
    assert "Usage: deploykit" in bare.output and "predict" in bare.output


def test_global_debug_option_is_in_the_help():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "--debug" in result.output


def test_forked_children_do_not_inherit_the_sigterm_handler():
    import subprocess
    import sys

    # a child blocked in C never runs a Python handler: with ours it ignored multiprocessing's SIGTERM and the
    # parent waited for it forever at exit
    probe = ("import os, signal\n"
             "from deploykit import signals\n"
             "signals.install_signal_handlers()\n"
             "assert signal.getsignal(signal.SIGTERM) is signals.terminate\n"
             "pid = os.fork()\n"
             "if pid == 0:\n"
             "    os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 3)\n"
             "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stderr[-2000:]


@pytest.mark.parametrize("overrides, message", [
    (["distill.student_layers=[0,5]"], "distill.student_layers: layer index 5 out of range (the model has layers 0..1)"),
    (["distill.layer_map=[0,1]"], "distill.layer_map has 2 entries but the student keeps 1 layers ([1])"),
    (["distill.student_layers=[0,1]", "distill.layer_map=[0,4]"], "distill.layer_map: teacher layer 4 out of range"),
    (["prune.drop_layers=[0]"], "prune.drop_layers [0] removes every layer of its 1-layer input; keep at least one"),
    (["distill.student_layers=[0,1]", "prune.drop_layers=[2]"],
     "prune.drop_layers (its input: the 2-layer student): layer index 2 out of range"),
])
def test_layer_choices_are_refused_before_any_training(tiny_bert, tiny_task, tmp_path, overrides, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{source: {tiny_bert}}}\ndata: {{path: {tiny_task}}}\nfinetune: {{epochs: 1}}\n"
                      "distill: {epochs: 1}\nprune: {ffn: 0.5}\n")
    sets = [arg for item in overrides for arg in ("--set", item)]
    checked = CliRunner().invoke(app, ["validate", str(recipe), "--out", str(tmp_path / "run"), *sets])
    assert checked.exit_code == 2 and message in checked.output, checked.output
    # the runner refuses it too, before the teacher's fine-tuning (the 2-layer tiny model: every other layer is [1])
    ran = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "--quiet", *sets])
    assert ran.exit_code == 2 and message in ran.output, ran.output
    assert ran.output.strip().count("\n") == 0
    assert not (tmp_path / "run" / "finetune").exists()
