"""`deploykit validate`: what can be checked without training, every problem on its own line, exit 2."""

import json
import time

import pytest
from typer.testing import CliRunner

from deploykit.cli import app


def validate(recipe, *args):
    return CliRunner().invoke(app, ["validate", str(recipe), *map(str, args)])


def errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


@pytest.fixture
def recipe(tmp_path, tiny_bert, tiny_task):
    """Write a recipe (JSON is YAML) for the tiny model and task, with `changes` merged per section."""

    def write(**changes):
        tree = {"model": {"source": str(tiny_bert)}, "data": {"path": str(tiny_task)}, "finetune": {}, "quantize": {}}
        for section, value in changes.items():
            tree[section] = value if value is None or not isinstance(tree.get(section), dict) else {
                **tree[section], **value}
        path = tmp_path / "r.yaml"
        path.write_text(json.dumps({k: v for k, v in tree.items() if v is not None}))
        return path

    return write


def test_a_good_recipe_is_ok_and_fast(recipe, tmp_path):
    start = time.perf_counter()
    result = validate(recipe(), "--out", tmp_path / "runs" / "x")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("r.yaml: ok (finetune -> quantize)")
    assert time.perf_counter() - start < 20  # config.json and the data files only, no weights, no training
    assert not (tmp_path / "runs").exists()


def test_every_problem_is_one_line(recipe, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    r = recipe(model={"source": str(tmp_path / "no-such-model")}, data={"path": str(tmp_path / "no-such-data")},
               export={"format": "tensorrt"}, bench={"targets": ["gpu"]})
    result = validate(r, "--out", mine)
    assert result.exit_code == 2, result.output
    lines = errors(result)
    assert len(lines) == 5, result.output
    assert "no-such-model': local folder not found" in lines[0]
    assert "no-such-data: data path not found" in lines[1]
    assert "export --format tensorrt needs an NVIDIA GPU with CUDA" in lines[2]
    assert lines[3].startswith("error: bench.targets gpu: no CUDA GPU")
    assert "mine: the folder holds files deploykit did not write (notes.txt)" in lines[4]
    assert (mine / "notes.txt").read_text() == "keep"


def test_missing_column_and_missing_data_file(recipe, tiny_task):
    result = validate(recipe(data={"text_column": "review"}))
    assert result.exit_code == 2 and len(errors(result)) == 1
    assert "no column 'review' (columns: sentence, label)" in errors(result)[0]
    result = validate(recipe(data={"train_file": "nope.tsv"}))
    assert result.exit_code == 2 and "nope.tsv: data file not found (data.train_file)" in errors(result)[0]


def test_a_single_label_task_is_refused(recipe, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"a fine film {i}\tpos\n" for i in range(20)))
    result = validate(recipe(data={"path": str(one)}))
    assert result.exit_code == 2, result.output
    assert "every training row has the label 'pos'; a classifier needs rows of at least two labels" in result.output


def test_a_model_of_the_wrong_kind(recipe, tmp_path):
    from transformers import T5Config, ViTConfig

    T5Config(d_model=32, num_layers=1, num_heads=2, d_ff=64, d_kv=16, vocab_size=100).save_pretrained(tmp_path / "t5")
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "vit")
    result = validate(recipe(model={"source": str(tmp_path / "t5")}))
    assert result.exit_code == 2 and "model_type 't5' is an encoder-decoder model" in result.output
    result = validate(recipe(model={"source": str(tmp_path / "vit")}))
    assert result.exit_code == 2 and "model_type 'vit' is not a sequence classifier" in result.output


def test_tensorrt_and_cuda_runtimes_without_cuda(recipe, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = validate(recipe(export={"format": "tensorrt"}, bench={"runtimes": ["ort", "ort-cuda", "tensorrt"]}))
    assert result.exit_code == 2, result.output
    lines = errors(result)
    assert any("export --format tensorrt needs an NVIDIA GPU with CUDA" in line for line in lines)
    assert any(line.startswith("error: bench.runtimes ort-cuda: no CUDA GPU") for line in lines)
    assert any(line.startswith("error: bench.runtimes tensorrt: no CUDA GPU") for line in lines)


def test_max_length_beyond_the_positions_is_reported(recipe, monkeypatch):
    import deploykit.data as data

    lines = []
    monkeypatch.setattr(data, "log", lines.append)
    monkeypatch.setattr(data, "_CUTS_LOGGED", set())  # said once per process: another test may have said it
    result = validate(recipe(data={"max_length": 512}))  # the tiny BERT has 128 positions
    assert result.exit_code == 0, result.output
    assert any("512" in line and "128" in line for line in lines), lines


def test_unsafe_out_folders(recipe, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    result = validate(recipe(), "--out", tmp_path / "file")
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    run = tmp_path / "run"
    (run / "finetune").mkdir(parents=True)
    (run / "pipeline.json").write_text('{"stages": {}}')
    (run / "finetune" / "mine.txt").write_text("x")
    result = validate(recipe(), "--out", run)
    assert result.exit_code == 2 and "run/finetune: the folder holds files deploykit did not write" in result.output
    monkeypatch.chdir(tmp_path)
    result = validate(recipe(), "--out", ".")
    assert result.exit_code == 2 and "is the working directory" in result.output


# --- the model folder's weights and config.json -----------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_broken_or_missing_weights_are_one_line_naming_the_file(recipe, tiny_bert, damage):
    weights = tiny_bert / "model.safetensors"
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:-100] if damage == "truncated" else b"\xff" * 64)
    result = validate(recipe())
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    if damage == "missing":
        assert f"{tiny_bert} holds no model.safetensors" in line
    else:
        assert f"{weights} is not a readable safetensors file" in line


def test_sharded_weights_are_checked_shard_by_shard(recipe, tiny_bert, tmp_path):
    import json as js

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    model.save_pretrained(tiny_bert, max_shard_size="500KB")
    (tiny_bert / "model.safetensors").unlink(missing_ok=True)
    index = js.loads((tiny_bert / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    assert validate(recipe()).exit_code == 0
    (tiny_bert / shards[-1]).unlink()
    result = validate(recipe())
    assert result.exit_code == 2 and f"{shards[-1]} not found (listed in model.safetensors.index.json)" in result.output


def test_a_config_json_that_builds_no_config_is_one_line(recipe, tiny_bert):
    config = json.loads((tiny_bert / "config.json").read_text())
    (tiny_bert / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    result = validate(recipe())
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert f"{tiny_bert}/config.json is not a valid model config" in line and "classifier_dropout" in line


def test_a_recipe_without_stages_is_what_run_refuses(recipe, tmp_path):
    result = validate(recipe(finetune=None, quantize=None), "--out", tmp_path / "runs" / "x")
    assert result.exit_code == 2
    assert errors(result) == ["error: recipe has no stages (add finetune, distill, prune, quantize, export or bench)"]


def test_a_preset_that_saturates_on_this_cpu_is_a_warning_not_an_error(recipe, monkeypatch):
    import deploykit.hardware as hw

    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    result = validate(recipe(quantize={"preset": "avx512_vnni"}))
    assert result.exit_code == 0, result.output
    assert "quantize.preset=avx512_vnni writes 8-bit weights" in " ".join(result.output.split())


def test_a_model_folder_without_tokenizer_files_is_refused_before_training(recipe, tiny_bert, tmp_path):
    # transformers 5 builds a 5-token tokenizer for such a folder: finetune trained on [UNK] alone and exited 0
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (tiny_bert / name).unlink(missing_ok=True)
    result = validate(recipe())
    assert result.exit_code == 2, result.output
    (line,) = errors(result)
    assert f"{tiny_bert}: no tokenizer files" in line
    run = CliRunner().invoke(app, ["finetune", "--recipe", str(recipe()), "--out", str(tmp_path / "ft")])
    assert run.exit_code == 2 and "no tokenizer files" in run.stderr and "Traceback" not in run.output
    assert not (tmp_path / "ft").exists()


def test_tokenizer_files_that_are_not_the_models_are_refused(recipe, tiny_bert):
    # a stray sentencepiece file passed the file-name check, and finetune trained on a 5-token vocabulary
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (tiny_bert / name).unlink(missing_ok=True)
    (tiny_bert / "junk.model").write_bytes(b"")
    result = validate(recipe())
    assert result.exit_code == 2, result.output
    assert len(errors(result)) == 1 and f"{tiny_bert}" in errors(result)[0]



@pytest.mark.parametrize("max_length, message", [
    (512, "data.max_length=512 is longer than model {model}'s context (256 tokens); lower data.max_length"),
    (16, "data.max_length=16: every prompt fills it; raise data.max_length")])
def test_a_causal_lm_max_length_finetune_refuses_is_refused(tmp_path, tiny_llama, tiny_task, max_length, message):
    # validate said "ok" with "inputs are truncated to 256 tokens" (the classifier's rule), then finetune refused
    path = tmp_path / "gen.yaml"
    path.write_text(json.dumps({"model": {"source": str(tiny_llama)}, "finetune": {"max_steps": 1},
                                "data": {"path": str(tiny_task), "task": "generation", "max_length": max_length,
                                         "label_names": ["negative", "positive"],
                                         "prompt_template": "Is this review positive or negative?\n{sentence}"}}))
    result = validate(path)
    assert result.exit_code == 2 and errors(result) == [f"error: {message.format(model=tiny_llama)}"], result.output
    assert "truncated" not in result.output
    ok = validate(path, "--set", "data.max_length=128")
    assert ok.exit_code == 0, ok.output
