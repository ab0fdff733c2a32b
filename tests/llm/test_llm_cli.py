"""`deploykit generate`: answers prompts from a PyTorch or ONNX causal-LM folder; bad input in one line."""

from __future__ import annotations

from typer.testing import CliRunner

from deploykit.cli import app

runner = CliRunner()


def test_generate_prints_one_answer_per_prompt(tiny_llama):
    import json

    result = runner.invoke(app, ["generate", str(tiny_llama), "the movie was good", "awful plot", "-n", "4",
                                 "--runtime", "torch", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["prompt"] for r in rows] == ["the movie was good", "awful plot"]
    assert all(1 <= r["new_tokens"] <= 4 for r in rows)


def test_sampling_is_reproducible_with_a_seed(tiny_llama):
    args = ["generate", str(tiny_llama), "a film", "-n", "8", "--sample", "--top-k", "50", "--raw"]
    first = runner.invoke(app, args + ["--seed", "1"]).stdout
    assert runner.invoke(app, args + ["--seed", "1"]).stdout == first
    assert any(runner.invoke(app, args + ["--seed", str(s)]).stdout != first for s in (2, 3, 4))


def test_bad_inputs_exit_2_in_one_line(tiny_llama, tiny_bert, tmp_path):
    result = runner.invoke(app, ["generate", str(tmp_path), "hi", "--runtime", "torch"])
    assert result.exit_code == 2 and "no manifest.json, config.json or model.onnx inside" in result.output
    result = runner.invoke(app, ["generate", str(tmp_path / "missing"), "hi"])  # was "no config.json" too
    assert result.exit_code == 2 and "missing: not found; give a causal LM folder (PyTorch or ONNX) or a .gguf file" \
        in result.output  # not load_artifact's advice, which names a bare .onnx file generate cannot take
    result = runner.invoke(app, ["generate", str(tiny_llama), "hi", "--runtime", "tensorflow"])
    assert result.exit_code == 2 and "runs on runtime auto, ort or torch, not 'tensorflow'" in result.output
    result = runner.invoke(app, ["generate", str(tiny_bert), "hi"])
    assert result.exit_code == 2 and "holds a classifier, not a causal LM; use `deploykit predict`" in result.output


def test_system_with_raw_is_refused_in_one_line(tiny_llama, tmp_path):
    # --raw skips the chat template, and --system with it: a blank or invalid system prompt passed, exit 0
    for system in ["be brief", "", " "]:
        result = runner.invoke(app, ["generate", str(tiny_llama), "hi", "--raw", "--system", system, "-n", "2"])
        assert result.exit_code == 2, result.output
        assert "--system with --raw: a system turn is a part of the chat template, which --raw skips" in result.output
    # refused before any model loads: a missing folder is not what it names
    result = runner.invoke(app, ["generate", str(tmp_path / "missing"), "hi", "--raw", "--system", "x"])
    assert result.exit_code == 2 and "--system with --raw" in result.output


def test_torch_on_an_onnx_folder_says_which_runtime_reads_it(tiny_llama, tmp_path):
    # was "model source ...: could not be loaded (OSError: Error no file named model.safetensors ...)"
    import json
    import shutil

    folder = tmp_path / "export"
    shutil.copytree(tiny_llama, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "model.onnx").write_bytes(b"")
    (folder / "manifest.json").write_text(json.dumps({"stage": "export", "format": "onnx",
                                                      "config": {"data": {"task": "generation"}}}))
    result = runner.invoke(app, ["generate", str(folder), "hi", "--runtime", "torch"])
    assert result.exit_code == 2 and "holds an ONNX graph, not PyTorch weights; use runtime ort" in result.output
