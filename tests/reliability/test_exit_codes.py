"""Exit codes that mean something: 2 bad input, 3 a check refused an artifact, 4 a gate stopped the run,
1 anything else; always one line on stderr, a traceback only with --debug."""

import json
import signal

import pytest
from typer.testing import CliRunner

from deploykit.cli import app
from deploykit.errors import CheckError, GateError, ParityError, ReloadError, UserError


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_exception_classes_carry_their_exit_codes():
    from deploykit.evaluate import GateError as EvaluateGateError
    from deploykit.llm.onnx_export import ParityError as LlmParityError
    from deploykit.onnx.parity import ParityError as ExportParityError
    from deploykit.pruning.reload import ReloadError as PruningReloadError

    assert (UserError.exit_code, CheckError.exit_code, GateError.exit_code) == (2, 3, 4)
    assert ExportParityError is LlmParityError is ParityError and PruningReloadError is ReloadError
    assert EvaluateGateError is GateError
    assert issubclass(ParityError, CheckError) and issubclass(ReloadError, CheckError)
    assert not issubclass(CheckError, UserError)


def test_corrupt_safetensors_exits_2_in_one_line(tiny_bert, tiny_task, tmp_path):
    weights = tiny_bert / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    result = invoke("finetune", "--model", tiny_bert, "--data", tiny_task, "--out", tmp_path / "ft", "-q")
    assert result.exit_code == 2, result.output
    assert len(error_lines(result)) == 1 and "model.safetensors is not a readable safetensors file" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "ft").exists()


def test_t5_folder_for_a_classifier_exits_2_in_one_line(tiny_task, tmp_path):
    from transformers import T5Config

    T5Config(d_model=32, num_layers=1, num_heads=2, d_ff=64, d_kv=16, vocab_size=100).save_pretrained(tmp_path / "t5")
    result = invoke("finetune", "--model", f"{tmp_path}/t5", "--data", tiny_task, "--out", tmp_path / "ft", "-q")
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [f"error: model source '{tmp_path}/t5': model_type 't5' is an encoder-decoder model; "
                                   "deploykit takes encoder or decoder-only models (bert, roberta, distilbert, llama, "
                                   "qwen2, mistral, ...)"]


def test_forced_reload_failure_exits_3_naming_the_check(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit.pruning.reload as reload

    def fails(model, folder, inputs, atol=1e-5):
        raise ReloadError(f"{folder}: reloaded logits differ by 3.10e-02 (> {atol:g})")

    monkeypatch.setattr(reload, "check_reload", fails)
    out = tmp_path / "pruned"
    result = invoke("prune", "--from", tiny_bert, "--data", tiny_task, "--set", "prune.ffn=0.5", "--out", out, "-q")
    assert result.exit_code == 3, result.output
    (line,) = error_lines(result)
    assert line.startswith("error: reload check failed: ") and "differ by 3.10e-02" in line
    assert not out.exists() and not list(tmp_path.glob(".pruned.tmp-*"))


def test_export_parity_failure_exits_3(tiny_bert, tmp_path):
    result = invoke("export", "--from", tiny_bert, "--set", "export.atol=1e-30", "--out", tmp_path / "onnx", "-q")
    assert result.exit_code == 3, result.output
    (line,) = error_lines(result)
    assert line.startswith("error: ONNX parity check failed: export: ONNX logits after") and "> export.atol" in line


def test_gate_failure_exits_4_naming_stage_drop_and_knob(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit.pipeline as pipeline

    real = pipeline._gate_value
    monkeypatch.setattr(pipeline, "_gate_value", lambda recipe, artifact, task: real(recipe, artifact, task)
                        - (5.0 if artifact.stage == "distill" else 0.0))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "model": {"source": str(tiny_bert)}, "data": {"path": str(tiny_task), "max_length": 16},
        "gate": {"max_drop": 1.0},
        "finetune": {"epochs": 1, "batch_size": 16, "early_stopping_patience": None},
        "distill": {"epochs": 1, "batch_size": 16, "student_layers": [0], "early_stopping_patience": None}}))
    result = invoke("run", recipe, "--out", tmp_path / "run", "-q")
    assert result.exit_code == 4, result.output
    (line,) = error_lines(result)
    assert line.startswith("error: gate failed after distill:") and "-5.00 pt > gate.max_drop 1.0" in line
    assert "distill.student_layers" in line


@pytest.mark.parametrize("raised, code, expected", [
    (RuntimeError("The size of tensor a (103) must match\nmore detail"), 1,
     "error: RuntimeError: The size of tensor a (103) must match (run with --debug for the traceback)"),
    (KeyboardInterrupt(), 130, "error: interrupted (SIGINT); temporary output folders were removed"),
])
def test_anything_else_is_one_line(tiny_bert, tmp_path, monkeypatch, raised, code, expected):
    import deploykit.pipeline as pipeline

    def stage(*args, **kwargs):
        raise raised

    monkeypatch.setattr(pipeline, "run_stage", stage)
    monkeypatch.delenv("DEPLOYKIT_DEBUG", raising=False)
    result = invoke("export", "--from", tiny_bert, "--out", tmp_path / "onnx")
    assert result.exit_code == code, result.output
    assert result.output.strip().splitlines() == [expected]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_adds_the_traceback(tiny_bert, tmp_path, monkeypatch, how):
    import deploykit.pipeline as pipeline

    def stage(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "run_stage", stage)
    args = ["export", "--from", tiny_bert, "--out", tmp_path / "onnx"]
    result = invoke(*(["--debug"] + args if how == "flag" else args),
                    env={"DEPLOYKIT_DEBUG": "1"} if how == "env" else None)
    assert result.exit_code == 1
    assert "Traceback" in result.output and "error: RuntimeError: boom" in result.output


def test_a_check_names_itself(tmp_path, monkeypatch):
    import deploykit.pipeline as pipeline

    def stage(*args, **kwargs):
        raise CheckError("vocabulary pruning changed logits on training texts by 3.00e-03", check="vocabulary pruning")

    monkeypatch.setattr(pipeline, "run_stage", stage)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    result = invoke("prune", "--from", tmp_path / "m", "--data", tmp_path, "--out", tmp_path / "p")
    assert result.exit_code == 3
    assert result.output.strip() == ("error: vocabulary pruning check failed: vocabulary pruning changed logits on "
                                     "training texts by 3.00e-03")


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_rewrapped_by_a_library_still_exits_with_its_code(signum, code, monkeypatch):
    import deploykit.cli as cli
    from deploykit.signals import received

    def swallowed(*args, **kwargs):  # e.g. a data-loading library catching the interrupt, raising its own error
        received["signal"] = signum
        raise RuntimeError("worker stopped")

    monkeypatch.setattr(cli, "build", swallowed)
    monkeypatch.setitem(received, "signal", None)
    result = CliRunner().invoke(cli.app, ["finetune", "-q"])
    assert result.exit_code == code
    assert result.stderr.strip().startswith(f"error: {signal.Signals(signum).name} while running (RuntimeError)")


def test_an_interrupt_mid_progress_bar_starts_its_error_on_a_line_of_its_own(monkeypatch):
    import deploykit.cli as cli
    from tqdm import tqdm

    def training(*args, **kwargs):
        bar = tqdm(total=10)
        bar.update(3)  # the Trainer's bar, cut mid-line by Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build", training)
    result = CliRunner().invoke(cli.app, ["finetune"])
    assert result.exit_code == 130
    assert "\nerror: interrupted (SIGINT)" in result.stderr
    assert not tqdm._instances  # closed, so nothing redraws it after the error


def test_weights_of_another_model_exit_2_instead_of_training_from_scratch(tiny_bert, tiny_task, tmp_path):
    import shutil

    from transformers import GPT2Config

    mixed = tmp_path / "mixed"
    GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000).save_pretrained(mixed)
    shutil.copy(tiny_bert / "model.safetensors", mixed / "model.safetensors")
    result = invoke("finetune", "--data", tiny_task, "--set", f"model.source={mixed}", "--out", tmp_path / "ft", "-q")
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result)
    assert f"{mixed}/model.safetensors holds 0 of the" in line and "the weights do not belong to this config.json" in line
    assert not (tmp_path / "ft").exists()


def test_a_config_json_that_builds_no_config_exits_2(tiny_bert, tiny_task, tmp_path):
    config = json.loads((tiny_bert / "config.json").read_text())
    (tiny_bert / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    result = invoke("finetune", "--model", tiny_bert, "--data", tiny_task, "--out", tmp_path / "ft", "-q")
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result)
    assert f"{tiny_bert}/config.json is not a valid model config (StrictDataclassFieldValidationError" in line


def test_a_duplicated_recipe_key_and_an_infinite_rate_exit_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {name: sst2}\nfinetune:\n  learning_rate: 1.0e-3\nfinetune:\n  epochs: 1\n")
    result = invoke("validate", recipe)
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: {recipe} line 4: key 'finetune' appears twice (line 2 first); merge the two"]
    recipe.write_text("data: {name: sst2}\nfinetune: {}\n")
    result = invoke("validate", recipe, "--set", "finetune.learning_rate=.inf")
    assert result.exit_code == 2
    (line,) = error_lines(result)
    assert line.startswith("error: --set finetune.learning_rate=.inf: finetune.learning_rate:") and "finite" in line
