"""`deploykit quantize --int8` on tiny BERT: quantized op counts, static calibration, the accuracy gate
keeping nodes in float, and bad inputs (the standard baseline: tests/quant/test_baseline.py)."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny_onnx import ort_logits
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from deploykit.config import build_recipe
from deploykit.errors import UserError
from deploykit.evaluate import GateError
from deploykit.onnx.ops import op_counts
from deploykit.pipeline import run_stage
from deploykit.quant.baseline import standard_baseline

# tiny BERT (2 layers): per layer Attention + attention-output, FFN-in and FFN-out MatMuls; then pooler
# and classifier MatMuls. Dynamic INT8 makes the Attention nodes QAttention.
# the default export skips padding: no fused Attention, every linear layer a Gemm (2 layers x 6, pooler and
# classifier); dynamic INT8 rewrites them into MatMulInteger, static QDQ the same (the 2 x 2 attention products stay
# float: quantize.float_attention, the default; with it off static QDQ takes them too)
DYNAMIC_MATMULS = {"QAttention": 0, "MatMulInteger": 2 * 6 + 2}
STATIC_MATMULS = 2 * 6 + 2
# with the padding kept (export.remove_padding: false) attention fuses, and dynamic INT8 makes it QAttention,
# except in the trimmed last layer: its Q/K/V/output/FFN stay 6 MatMuls
FUSED_DYNAMIC_MATMULS = {"QAttention": 1, "MatMulInteger": 3 + 6 + 2}
KEEP_PADDING = {"remove_padding": False}


def recipe(task, export: dict | None = None, **quantize):
    sections = {"data": {"path": str(task), "max_length": 32}, "quantize": quantize}
    return build_recipe(sections | ({"export": export} if export else {}))


def test_dynamic_int8_holds_quantized_matmuls(tiny_bert, tiny_task, tmp_path):
    art = run_stage("quantize", recipe(tiny_task), tiny_bert, tmp_path / "q")
    graph = onnx.load(str(tmp_path / "q" / "model.onnx"))
    counts = op_counts(graph)
    assert {k: counts[k] for k in DYNAMIC_MATMULS} == DYNAMIC_MATMULS
    assert art.metrics["quantized_ops"]["quantized_matmuls"] == sum(DYNAMIC_MATMULS.values())
    # Optimum's ORTModel layout, plus what was decided and measured
    assert {"model.onnx", "config.json", "tokenizer.json", "manifest.json"} <= {p.name for p in art.path.iterdir()}
    m = json.loads((art.path / "manifest.json").read_text())
    assert m["format"] == "onnx" and m["stage"] == "quantize" and m["onnx_file"] == "model.onnx"
    assert m["int8"]["mode"] == "dynamic" and m["int8"]["preset"] == "avx2" and m["int8"]["reduce_range"]
    assert m["export"]["rewrite"] == {"remove_padding": True, "trim_last_layer": True}  # exported on the way
    assert m["metrics"]["size_bytes"]["int8"] < m["metrics"]["size_bytes"]["float"]
    assert m["metrics"]["validation"]["drop"] <= 0.5 and len(m["tries"]) == 1 and m["float_nodes"] == []
    assert set(m["metrics"]["test"]) == {"float", "int8"}
    assert ort_logits(art.onnx_path, ["a fine film", "bad"]).shape == (2, 2)


def test_the_default_preset_writes_a_graph_every_cpu_runs_alike(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit
    import deploykit.hardware as hw

    monkeypatch.setattr(hw, "quant_preset", lambda: "avx512_vnni")  # built on a CPU with VNNI...
    art = run_stage("quantize", recipe(tiny_task, mode="static", calibration_samples=16), tiny_bert, tmp_path / "q")
    assert art.manifest["int8"]["preset"] == "avx2" and art.manifest["int8"]["reduce_range"]
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")  # ...deployed on one without: 7-bit weights, no saturation
    assert deploykit.load(art.path).logits(["a fine film"]).shape == (1, 2)


def test_dynamic_int8_of_the_padded_graph_uses_qattention(tiny_bert, tiny_task, tmp_path):
    art = run_stage("quantize", recipe(tiny_task, export=KEEP_PADDING), tiny_bert, tmp_path / "q")
    counts = op_counts(onnx.load(str(art.onnx_path)))
    assert {k: counts[k] for k in FUSED_DYNAMIC_MATMULS} == FUSED_DYNAMIC_MATMULS
    assert art.manifest["export"]["rewrite"] == {"remove_padding": False, "trim_last_layer": True}


def test_static_op_types_that_miss_the_gemm_layers_say_so(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit.quant.encoder_job as stage

    lines = []
    monkeypatch.setattr(stage, "log", lines.append)  # the console may be quiet after other tests
    art = run_stage("quantize", recipe(tiny_task, mode="static", op_types=["MatMul"], calibration_samples=16),
                    tiny_bert, tmp_path / "q")
    assert any("weight layers left float because quantize.op_types ['MatMul']" in line for line in lines)
    # the last layer's 4 one-position linears (3-D input: MatMul, not Gemm); the attention products stay float
    assert art.metrics["quantized_ops"]["quantized_matmuls"] == 4


def test_static_with_float_attention_off_takes_the_attention_products_too(tiny_bert, tiny_task, tmp_path):
    art = run_stage("quantize", recipe(tiny_task, mode="static", calibration_samples=16, float_attention=False),
                    tiny_bert, tmp_path / "q")
    assert art.metrics["quantized_ops"]["quantized_matmuls"] == STATIC_MATMULS + 2 * 2
    assert art.manifest["int8"]["attention_matmuls"] == "int8"


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_qdq_calibrates_on_fixed_length_batches(tiny_bert, tiny_task, tmp_path, method):
    art = run_stage("quantize", recipe(tiny_task, mode="static", calibration=method, calibration_samples=32,
                                       calibration_seq_len=16), tiny_bert, tmp_path / "q")
    counts = op_counts(onnx.load(str(art.onnx_path)))
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > 0 and counts["MatMulInteger"] == 0
    assert art.metrics["quantized_ops"]["quantized_matmuls"] == STATIC_MATMULS
    assert art.manifest["int8"]["calibration"] == method


def test_static_from_an_onnx_artifact(tiny_bert, tiny_task, tmp_path):
    exported = run_stage("export", build_recipe({"export": {}}), tiny_bert, tmp_path / "onnx")
    art = run_stage("quantize", recipe(tiny_task, mode="static", calibration_samples=16), exported.path,
                    tmp_path / "q")
    assert art.manifest["export"] is None and art.manifest["parent"]["format"] == "onnx"
    assert art.metrics["quantized_ops"]["quantized_matmuls"] == STATIC_MATMULS


def near_tie_model_and_task(folder: Path, task: Path) -> tuple[Path, Path]:
    """A tiny BERT whose decision boundary runs through the middle of its inputs, and a dev split
    labelled with its own predictions: float accuracy is 100% and INT8 rounding flips some rows."""
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    rows = [ln.split("\t")[0] for ln in (task / "train.tsv").read_text().splitlines()[1:]]
    enc = tok(rows, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
        # random encoders give near-identical outputs for all rows: centring the margin on its median
        # leaves every row close to the boundary
        model.classifier.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
        pred = model(**enc).logits.argmax(-1).tolist()
    model.save_pretrained(folder)
    (task / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(rows, pred)))
    return folder, task


def test_gate_keeps_the_most_sensitive_nodes_float(tiny_bert, tiny_task, tmp_path):
    model, task = near_tie_model_and_task(tiny_bert, tiny_task)
    art = run_stage("quantize", recipe(task, max_drop=0.0, preset="avx2"), model, tmp_path / "q")
    m = art.manifest
    assert len(m["tries"]) > 1 and m["tries"][0]["drop"] > 0  # the first try failed the gate ...
    assert m["tries"][-1]["drop"] <= 0 and m["metrics"]["validation"]["drop"] <= 0  # ... the last holds
    assert m["float_nodes"] == m["tries"][-1]["float_nodes"] and m["float_nodes"]
    assert all("accuracy" in t for t in m["tries"])
    ranked = [name for name, _ in m["sensitivity"]]
    assert m["float_nodes"] == ranked[:len(m["float_nodes"])]  # the most sensitive first
    quantized = art.metrics["quantized_ops"]["quantized_matmuls"]
    assert quantized == sum(DYNAMIC_MATMULS.values()) - len(m["float_nodes"])


@pytest.mark.parametrize("mode,bits", [("dynamic", 8), ("static", 8), ("static", 16)])
def test_fallback_bits_gives_the_float_nodes_narrow_weights_and_float_arithmetic(tiny_bert, tiny_task, tmp_path, mode,
                                                                                 bits, monkeypatch):
    import onnxruntime as ort

    import deploykit.hardware as hw
    from deploykit.quant.fit import saturation_fault

    from deploykit.artifact import load_artifact
    from deploykit.kinds import kind_of
    from deploykit.quant.int8 import quantizable_nodes

    r = recipe(tiny_task, mode=mode, preset="avx2", calibration_samples=8, fallback_bits=bits)
    job = kind_of(r.data.task).quantize_job(r, load_artifact(tiny_bert))
    (tmp_path / "w").mkdir()
    pre = job.prepare(tmp_path / "w")
    nodes = quantizable_nodes(pre, job.settings)
    out = job.int8(nodes, 0)  # the gate's worst case: every node it may keep float
    # every weight layer (2 x 6, pooler, classifier); static's attention products have no weight and stay as they are
    assert set(job.fallback_nodes) <= set(nodes) and len(job.fallback_nodes) == 2 * 6 + 2
    plain = job.int8([], 1)
    floats = job.int8(nodes, 2)
    job.recipe.quantize.fallback_bits = None
    kept_float = job.int8(nodes, 3)
    assert out.stat().st_size < kept_float.stat().st_size  # 1 or 2 bytes per weight instead of 4
    feed = {i.name: np.ones((2, 7), np.int64) for i in ort.InferenceSession(str(pre)).get_inputs()}
    want = ort.InferenceSession(str(pre)).run(None, feed)[0]
    got = {p: ort.InferenceSession(str(p)).run(None, feed)[0] for p in (out, plain, floats)}
    assert np.abs(got[out] - want).max() < 0.05 * np.abs(want).max()
    assert np.abs(got[out] - want).max() < np.abs(got[plain] - want).max()  # closer to float than all-INT8
    assert np.array_equal(got[out], got[floats])  # the same graph for the same nodes
    # 8-bit fallback weights are dequantized for float MatMuls: nothing saturates on a CPU without VNNI
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    assert saturation_fault(out) is None


def test_gate_fails_with_the_figures(tiny_bert, tiny_task, tmp_path):
    model, task = near_tie_model_and_task(tiny_bert, tiny_task)
    with pytest.raises(GateError, match=r"0 float: .*max_float_nodes or quantize.max_drop, or try --mode static$") \
            as err:
        run_stage("quantize", recipe(task, max_drop=0.0, preset="avx2", max_float_nodes=0), model, tmp_path / "q")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "q").exists() and not list(tmp_path.glob(".q*"))


# ---------------------------------------------------------------- bad inputs: one line, nothing written

def test_not_onnx_is_one_line(tiny_bert, tiny_task, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "model.onnx").write_text("this is not a protobuf")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (fake / name).write_bytes((tiny_bert / name).read_bytes())
    with pytest.raises(UserError, match="not an ONNX model") as err:
        run_stage("quantize", recipe(tiny_task), fake, tmp_path / "q")
    assert "\n" not in str(err.value) and not (tmp_path / "q").exists()


def test_old_opset_is_refused(tiny_bert, tiny_task, tmp_path):
    exported = run_stage("export", build_recipe({"export": {"optimize": False}}), tiny_bert, tmp_path / "onnx")
    graph = onnx.load(str(exported.onnx_path))
    graph.opset_import[0].version = 11
    onnx.save(graph, str(exported.onnx_path))
    with pytest.raises(UserError, match="opset 11 is too old"):
        run_stage("quantize", recipe(tiny_task), exported.path, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_calibration_set_smaller_than_asked(tiny_bert, tiny_task, tmp_path):
    with pytest.raises(UserError, match="calibration_samples=5000 but the training split has only"):
        run_stage("quantize", recipe(tiny_task, mode="static", calibration_samples=5000), tiny_bert, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_quantize_needs_data(tiny_bert, tmp_path):
    with pytest.raises(UserError, match="needs a data section"):
        run_stage("quantize", build_recipe({"quantize": {}}), tiny_bert, tmp_path / "q")


def test_already_quantized_input_is_refused(tiny_bert, tiny_task, tmp_path):
    base = standard_baseline(tiny_bert, tmp_path / "baseline")
    with pytest.raises(UserError, match="already quantized"):
        run_stage("quantize", recipe(tiny_task), base.path, tmp_path / "q")


def test_tensorrt_preset_writes_symmetric_int8_qdq(tiny_bert, tiny_task, tmp_path, monkeypatch):
    import deploykit.hardware as hw
    from deploykit.quant.fit import saturation_fault

    art = run_stage("quantize", recipe(tiny_task, mode="static", preset="tensorrt", calibration_samples=16),
                    tiny_bert, tmp_path / "q")
    graph = onnx.load(str(art.onnx_path)).graph
    assert all(n.domain in ("", "ai.onnx") for n in graph.node)  # plain ONNX: TensorRT parses no contrib ops
    inits = {i.name: i for i in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits]
    assert zero_points and all(z.data_type == onnx.TensorProto.INT8 for z in zero_points)
    assert art.manifest["int8"]["activations"] == "int8 symmetric"
    # its float weights behind QuantizeLinear become 8-bit integer products in ONNX Runtime: they saturate without VNNI
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    assert "use all 8 bits" in saturation_fault(art.onnx_path)
    with pytest.raises(UserError, match="needs quantize.mode=static"):
        run_stage("quantize", recipe(tiny_task, preset="tensorrt"), tiny_bert, tmp_path / "q2")


def test_cli_quantize_and_its_one_line_errors(tiny_bert, tiny_task, tmp_path):
    from typer.testing import CliRunner

    from deploykit.cli import app

    common = ["quantize", "--from", str(tiny_bert), "--int8", "--data", str(tiny_task), "-q"]
    ok = CliRunner().invoke(app, common + ["--mode", "static", "--set", "quantize.calibration_samples=16",
                                           "--out", str(tmp_path / "q")])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "q" / "manifest.json").read_text())["int8"]["mode"] == "static"
    bad = CliRunner().invoke(app, common + ["--mode", "static", "--set", "quantize.calibration_samples=999",
                                            "--out", str(tmp_path / "bad")])
    lines = [ln for ln in bad.output.splitlines() if ln.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "calibration_samples=999" in lines[0]
    assert not (tmp_path / "bad").exists()


def _with_outlier_token(model_dir: Path, out: Path, word: str) -> Path:
    """A copy of `model_dir` (BERT) whose embedding of `word` is one large channel: after LayerNorm it is
    the batch's largest activation (~8 against ~3), so it sets any scale computed over the batch."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[tok.convert_tokens_to_ids(word)] = 0.0
        emb[tok.convert_tokens_to_ids(word), 0] = 1000.0
        model.classifier.weight *= 30.0  # a random tiny head's logits are ~0.1: make a scale change visible
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("preset", ["avx2", "avx512_vnni"])  # both ORT presets, forced, on any CPU
def test_dynamic_int8_is_scored_one_row_at_a_time(preset, tiny_bert, tiny_task, tmp_path):
    from deploykit.evaluate import EVAL_BATCH, eval_batch_size

    model = _with_outlier_token(tiny_bert, tmp_path / "outlier", "worst")
    dynamic = run_stage("quantize", recipe(tiny_task, preset=preset), model, tmp_path / "d")
    static = run_stage("quantize", recipe(tiny_task, mode="static", calibration_samples=16, preset=preset), model,
                       tmp_path / "s")
    assert dynamic.manifest["int8"]["preset"] == preset
    assert eval_batch_size(dynamic.onnx_path) == 1
    assert eval_batch_size(static.onnx_path) == EVAL_BATCH and eval_batch_size(None) == EVAL_BATCH
    # why: one activation scale spans the batch, so a row's dynamic-INT8 logits move with its neighbours;
    # static scales are fixed and the neighbour (masked padding aside) changes nothing. The neighbour holds
    # an outlier activation, so the property shows whatever rounding this CPU's kernels do.
    row, loud = "a fine film", "the worst film"
    for art, changes in ((dynamic, True), (static, False)):
        alone = ort_logits(art.onnx_path, [row])[0]
        beside = ort_logits(art.onnx_path, [row, loud])[0]
        assert (np.abs(alone - beside).max() > 1e-3) == changes, (art.path.name, np.abs(alone - beside).max())


def test_quantizing_gather_keeps_the_embeddings_unfused_and_int8(tiny_bert, tiny_task, tmp_path):
    plain = run_stage("quantize", recipe(tiny_task, export=KEEP_PADDING), tiny_bert, tmp_path / "plain")
    art = run_stage("quantize", recipe(tiny_task, export=KEEP_PADDING, op_types=["MatMul", "Attention", "Gather"]),
                    tiny_bert, tmp_path / "gather")
    counts = op_counts(onnx.load(str(art.onnx_path)))
    # attention still fused (QAttention), the embeddings not: EmbedLayerNormalization would hold the
    # word table in float; here the lookup reads an 8-bit table through DequantizeLinear
    assert counts["QAttention"] == 1 and counts["EmbedLayerNormalization"] == 0  # trimmed last layer: no fusion
    assert op_counts(onnx.load(str(plain.onnx_path)))["EmbedLayerNormalization"] == 1
    assert art.manifest["export"]["fused_ops"]["Attention"] == 1
    graph = onnx.load(str(art.onnx_path)).graph
    eight_bit = {i.name for i in graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    lookups = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in eight_bit]
    assert any("word_embeddings" in n.name for n in lookups)
    assert art.metrics["size_bytes"]["int8"] < plain.metrics["size_bytes"]["int8"]


@pytest.mark.parametrize("arch", ["roberta", "distilbert"])
def test_int8_embeddings_beside_fused_attention_on_other_encoders(arch, tiny_task, tmp_path):
    from conftest import make_tiny_model

    model = make_tiny_model(tmp_path / arch, arch)
    art = run_stage("quantize", recipe(tiny_task, export=KEEP_PADDING, op_types=["MatMul", "Attention", "Gather"]),
                    model, tmp_path / "q")
    counts = op_counts(onnx.load(str(art.onnx_path)))
    assert counts["QAttention"] == 1 and counts["EmbedLayerNormalization"] == 0
    assert art.metrics["validation"]["drop"] <= 0.5
