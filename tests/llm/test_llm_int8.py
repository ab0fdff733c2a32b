"""INT8 of the exported tiny Llama: MatMulInteger (dynamic) / MatMulNBits (weight-only) counts, smaller
weights, excluded nodes stay float, side files copied, one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.errors import UserError
from deploykit.llm.generate import OrtGenerator
from deploykit.llm.int8 import lm_head_node, quantizable_nodes, quantize_causal
from deploykit.llm.onnx_export import export_causal_lm

# 2 layers x (q, k, v, o, gate, up, down) + lm_head
WEIGHT_MATMULS = 2 * 7 + 1


@pytest.fixture(scope="module")
def exported(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("llm-int8") / "export"
    export_causal_lm(tiny_llama, None, out, parity_prompts=["the movie was"], parity_new_tokens=4)
    return out


def _weight_bytes(folder) -> int:
    """Bytes of the weight initializers (the tiny graph's protobuf overhead would hide the shrink)."""
    import onnx

    return sum(len(t.raw_data) + 4 * len(t.float_data) for t in onnx.load(str(folder / "model.onnx")).graph.initializer)


def test_quantizable_nodes_are_the_weight_matmuls(exported):
    names = quantizable_nodes(exported / "model.onnx", "dynamic")
    assert len(names) == WEIGHT_MATMULS
    assert lm_head_node(exported / "model.onnx") == "/model/lm_head/MatMul" in names
    assert names == quantizable_nodes(exported / "model.onnx", "weight_only")


def test_dynamic_int8(exported, tmp_path):
    report = quantize_causal(exported, tmp_path / "int8", mode="dynamic")
    assert report["ops"]["MatMulInteger"] == WEIGHT_MATMULS
    assert report["ops"]["MatMul"] == 2 * 2  # attention scores and context stay float
    assert report["quantized_nodes"] == WEIGHT_MATMULS
    assert report["size_bytes_after"] < report["size_bytes_before"]
    assert _weight_bytes(tmp_path / "int8") < 0.6 * _weight_bytes(exported)
    for name in ("config.json", "generation_config.json", "tokenizer.json"):
        assert (tmp_path / "int8" / name).is_file()
    out = OrtGenerator(tmp_path / "int8").generate(["the movie was"], 6, stop_ids=[])
    assert out.tokens.shape == (1, 6)


@pytest.mark.parametrize("preset, reduce_range", [("avx2", True), ("avx512_vnni", False)])
def test_dynamic_weight_width_follows_the_cpu_preset(preset, reduce_range, exported, tmp_path, monkeypatch):
    import deploykit.hardware as hw

    monkeypatch.setattr(hw, "quant_preset", lambda: preset)
    report = quantize_causal(exported, tmp_path / "int8", mode="dynamic")
    assert report["reduce_range"] is reduce_range


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only(exported, tmp_path, bits):
    report = quantize_causal(exported, tmp_path / f"w{bits}", mode="weight_only", bits=bits, block_size=16)
    assert report["ops"]["MatMulNBits"] == WEIGHT_MATMULS
    assert "MatMulInteger" not in report["ops"]
    assert report["size_bytes_after"] < report["size_bytes_before"]
    ids = np.array([[5, 6, 7, 8]])
    logits = OrtGenerator(tmp_path / f"w{bits}").logits(ids, np.ones_like(ids))
    assert np.isfinite(logits).all()


def test_exclude_keeps_nodes_float(exported, tmp_path):
    import onnx

    keep = [lm_head_node(exported / "model.onnx"), quantizable_nodes(exported / "model.onnx")[0]]
    report = quantize_causal(exported, tmp_path / "int8", mode="dynamic", exclude=keep)
    assert report["ops"]["MatMulInteger"] == WEIGHT_MATMULS - 2
    graph = onnx.load(str(tmp_path / "int8" / "model.onnx")).graph
    kept = {n.name: n.op_type for n in graph.node if n.name in keep}
    assert kept == {name: "MatMul" for name in keep}


def test_bad_inputs_are_one_line_user_errors(exported, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "model.onnx").write_text("not a model")
    with pytest.raises(UserError, match="not an ONNX model"):
        quantize_causal(fake, tmp_path / "out", mode="dynamic")
    with pytest.raises(UserError, match="mode"):
        quantize_causal(exported, tmp_path / "out", mode="static")
    with pytest.raises(UserError, match="bits"):
        quantize_causal(exported, tmp_path / "out", mode="weight_only", bits=3)
    with pytest.raises(UserError, match="exclude"):
        quantize_causal(exported, tmp_path / "out", mode="dynamic", exclude=["/no/such/MatMul"])
    assert not (tmp_path / "out").exists()


def test_embedding_table_in_8_bit_blocks_keeps_the_logits(tiny_llama, tmp_path):
    """GatherBlockQuantized replaces the float embedding lookup; logits stay close to the MatMul-only model."""
    import numpy as np

    from deploykit.llm.generate import OrtGenerator
    from deploykit.llm.int8 import quantize_causal
    from deploykit.llm.onnx_export import export_causal_lm

    export_causal_lm(tiny_llama, None, tmp_path / "f32")
    a = quantize_causal(tmp_path / "f32", tmp_path / "plain", mode="dynamic", embeddings=False)
    b = quantize_causal(tmp_path / "f32", tmp_path / "emb", mode="dynamic")
    assert b["ops"].get("GatherBlockQuantized", 0) == 1 and "GatherBlockQuantized" not in a["ops"]
    assert b["size_bytes_after"] < a["size_bytes_after"]
    ids = np.array([[5, 9, 30, 2, 77]], dtype=np.int64)
    mask = np.ones_like(ids)
    plain = OrtGenerator(tmp_path / "plain").logits(ids, mask)
    emb = OrtGenerator(tmp_path / "emb").logits(ids, mask)
    assert np.abs(plain - emb).max() < 0.05 * np.abs(plain).max()


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_mixed_4_and_8_bit_shares_the_tied_embedding_with_the_lm_head(exported, tmp_path):
    """4-bit asymmetric MatMuls, the lm_head 8-bit; the embedding lookup reads the lm_head's 8-bit weight
    (no second table) and gives the same logits as a float lookup up to 8-bit rounding."""
    import onnx

    head = lm_head_node(exported / "model.onnx")
    shared = quantize_causal(exported, tmp_path / "mixed", mode="weight_only", bits=4, block_size=16,
                             symmetric=False, wide=[head], wide_bits=8)
    plain = quantize_causal(exported, tmp_path / "plain", mode="weight_only", bits=4, block_size=16,
                            symmetric=False, wide=[head], wide_bits=8, embeddings=False)
    assert shared["embedding_shared_with_lm_head"] and shared["wide_nodes"] == [head]
    assert shared["ops"]["MatMulNBits"] == WEIGHT_MATMULS and shared["ops"]["GatherBlockQuantized"] == 1
    graph = onnx.load(str(tmp_path / "mixed" / "model.onnx")).graph
    nbits = {n.name: n for n in graph.node if n.op_type == "MatMulNBits"}
    assert _attrs(nbits[f"{head}_Q8"])["bits"] == 8 and len(nbits[f"{head}_Q8"].input) == 3  # symmetric
    rest = [n for name, n in nbits.items() if name != f"{head}_Q8"]
    assert {_attrs(n)["bits"] for n in rest} == {4} and all(len(n.input) == 4 for n in rest)  # zero points
    gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    producer = next(n for n in graph.node if gather.input[0] in n.output)
    assert producer.op_type == "Reshape" and producer.input[0] == nbits[f"{head}_Q8"].input[1]
    table = [_attrs(nbits[f"{head}_Q8"])[k] for k in ("N", "K")]  # [vocab, hidden]
    assert not any(list(i.dims) == table for i in graph.initializer)  # the float table is gone, no 8-bit copy
    assert shared["size_bytes_after"] < plain["size_bytes_after"]
    ids = np.array([[5, 9, 30, 2, 77]], dtype=np.int64)
    a = OrtGenerator(tmp_path / "plain").logits(ids, np.ones_like(ids))
    b = OrtGenerator(tmp_path / "mixed").logits(ids, np.ones_like(ids))
    # a zero-point mismatch (0 vs 128) between the two ops would scramble every looked-up row
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_untied_or_4_bit_lm_head_keeps_its_own_embedding_table(exported, tmp_path):
    report = quantize_causal(exported, tmp_path / "w4", mode="weight_only", bits=4, block_size=16)
    assert not report["embedding_shared_with_lm_head"] and report["int8_embedding_tables"] == 1


def test_bad_fallback_widths_are_one_line_user_errors(exported, tmp_path):
    head = lm_head_node(exported / "model.onnx")
    with pytest.raises(UserError, match="weight_only"):
        quantize_causal(exported, tmp_path / "out", mode="dynamic", wide=[head])
    with pytest.raises(UserError, match="wider"):
        quantize_causal(exported, tmp_path / "out", mode="weight_only", bits=8, wide=[head], wide_bits=4)
    with pytest.raises(UserError, match="fallback"):
        quantize_causal(exported, tmp_path / "out", mode="weight_only", bits=4, wide=["/no/such/MatMul"])
    with pytest.raises(UserError, match="both float"):
        quantize_causal(exported, tmp_path / "out", mode="weight_only", bits=4, wide=[head], exclude=[head])
    assert not (tmp_path / "out").exists()
