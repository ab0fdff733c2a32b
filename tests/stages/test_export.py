"""`deploykit export` on tiny BERT / RoBERTa / DistilBERT: parity, dynamic axes, fused operators,
Optimum's folder layout, loud failures, and TensorRT (built only where CUDA and tensorrt exist)."""

import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from deploykit.cli import app
from deploykit.config import build_recipe
from deploykit.errors import ParityError, UserError
from deploykit.onnx.export import export_onnx
from deploykit.onnx.ops import op_counts, opset_of
from deploykit.pipeline import run_stage

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
TEXTS = ["a fine film", "bad", "the plot was quite boring and the acting was really dreadful , sadly",
         "wonderful story"]


def export_recipe(**export):
    return build_recipe({"export": export})


def onnx_vs_torch(folder, source, texts) -> float:
    """Max |Δlogits| between the exported graph and PyTorch on a batch shape the export never saw."""
    import onnxruntime as ort

    tok = AutoTokenizer.from_pretrained(folder)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    enc = tok(texts, padding=True, return_tensors="np")
    got = sess.run(None, {n: enc[n].astype(np.int64) for n in names})[0]
    model = AutoModelForSequenceClassification.from_pretrained(source)
    with torch.no_grad():
        want = model(**{n: torch.from_numpy(enc[n]) for n in names}).logits.numpy()
    return float(np.abs(got - want).max())


def test_onnx_matches_pytorch_on_every_architecture(tmp_path, arch, tiny_model):
    art = run_stage("export", export_recipe(), tiny_model, tmp_path / "onnx")
    # Optimum's ORTModel layout plus deploykit's manifest
    assert {"model.onnx", "config.json", "tokenizer.json", "manifest.json"} <= {p.name for p in art.path.iterdir()}
    m = json.loads((art.path / "manifest.json").read_text())
    assert m["format"] == "onnx" and m["opset"] == 17 and m["onnx_file"] == "model.onnx"
    assert max(m["parity"].values()) <= 1e-4 and m["metrics"]["parity_max_abs_diff"] <= 1e-4
    assert set(m["parity"]) == {"export", "shapes", "optimize"}  # checked after each transform
    # the default graph skips padding and computes position 0 only in the last layer (test_packing.py)
    assert m["rewrite"] == {"remove_padding": True, "trim_last_layer": True} and m["static_shapes"]["applied"]
    assert m["fused_ops"]["SkipLayerNormalization"] >= 1
    graph = onnx.load(str(art.onnx_path))
    assert opset_of(graph) == 17
    # dynamic batch and sequence axes: a new batch size and length still agree with PyTorch
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch_size", "sequence_length"]
    assert onnx_vs_torch(art.path, tiny_model, TEXTS[:3]) <= 1e-4


def test_every_architecture_fuses_fully_without_the_rewrites(tmp_path, arch, tiny_model):
    art = run_stage("export", export_recipe(remove_padding=False, trim_last_layer=False), tiny_model, tmp_path / "o")
    assert art.manifest["rewrite"] == {"remove_padding": False, "trim_last_layer": False}
    assert art.manifest["fused_ops"]["Attention"] == 2 and art.manifest["fused_ops"]["SkipLayerNormalization"] == 4
    assert onnx_vs_torch(art.path, tiny_model, TEXTS[:3]) <= 1e-4


def test_trimmed_graph_fuses_all_but_the_last_attention(tiny_bert, tmp_path):
    # the last layer's one-query attention is not the pattern ORT's Attention fusion knows
    art = run_stage("export", export_recipe(remove_padding=False), tiny_bert, tmp_path / "onnx")
    assert art.manifest["rewrite"] == {"remove_padding": False, "trim_last_layer": True}
    assert art.manifest["fused_ops"]["Attention"] == 1 and art.manifest["fused_ops"]["SkipLayerNormalization"] == 4
    assert onnx_vs_torch(art.path, tiny_bert, TEXTS) <= 1e-4


def test_bert_graph_carries_fused_operators(tiny_bert, tmp_path):
    art = run_stage("export", export_recipe(remove_padding=False, trim_last_layer=False), tiny_bert, tmp_path / "onnx")
    counts = op_counts(onnx.load(str(art.onnx_path)))
    layers = 2
    assert counts["Attention"] == layers
    assert counts["SkipLayerNormalization"] == 2 * layers
    assert counts["BiasGelu"] + counts["FastGelu"] == layers
    assert counts["EmbedLayerNormalization"] == 1
    assert art.manifest["fused_ops"]["Attention"] == layers


def test_unfused_export_keeps_plain_operators(tiny_bert, tmp_path):
    art = run_stage("export", export_recipe(optimize=False), tiny_bert, tmp_path / "onnx")
    counts = op_counts(onnx.load(str(art.onnx_path)))
    # packed tokens are 2-D, so the linear layers are Gemm there
    assert counts["Attention"] == 0 and counts["MatMul"] + counts["Gemm"] >= 2 * 6
    assert art.manifest["optimized"] is False and set(art.manifest["parity"]) == {"export", "shapes"}


def test_parity_runs_on_task_texts(tiny_bert, tiny_task, tmp_path):
    cfg = build_recipe({"data": {"path": str(tiny_task), "max_length": 32}, "export": {"parity_samples": 20}})
    art = run_stage("export", cfg, tiny_bert, tmp_path / "onnx")
    assert art.manifest["parity_rows"] == 20 + 1  # and the first row alone


def test_drift_beyond_atol_fails_loudly_and_writes_nothing(tiny_bert, tmp_path):
    with pytest.raises(ParityError, match=r"after export differ from PyTorch by .* > export.atol") as err:
        run_stage("export", export_recipe(atol=1e-12), tiny_bert, tmp_path / "onnx")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "onnx").exists() and not list(tmp_path.glob(".onnx*"))


def test_bad_inputs(tiny_bert, tmp_path):
    with pytest.raises(UserError, match="opset"):
        export_recipe(opset=13)
    with pytest.raises(UserError, match="too old"):
        export_onnx(tiny_bert, None, tmp_path, opset=13)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "model.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="not an ONNX model"):
        run_stage("export", export_recipe(), fake, tmp_path / "again")
    assert not (tmp_path / "again").exists()
    with pytest.raises(UserError, match="needs an input artifact"):
        run_stage("export", export_recipe(), None, tmp_path / "none")


def test_an_onnx_parent_is_refused_not_copied(tiny_bert, tiny_task, tmp_path):
    cfg = build_recipe({"data": {"path": str(tiny_task), "max_length": 32}, "quantize": {}, "export": {}})
    int8 = run_stage("quantize", cfg, tiny_bert, tmp_path / "quantize")
    with pytest.raises(UserError, match="is ONNX already .*--format tensorrt"):
        run_stage("export", cfg, int8.path, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_with_quantize_the_onnx_export_section_configures_quantize_not_a_stage(tiny_task):
    data = {"path": str(tiny_task)}
    assert build_recipe({"data": data, "prune": {}, "quantize": {}, "export": {}, "bench": {}}).stages() == [
        "prune", "quantize", "bench"]
    # alone, export is the stage; to TensorRT, it builds its engine from quantize's graph
    assert build_recipe({"data": data, "export": {}}).stages() == ["export"]
    trt = build_recipe({"data": data, "quantize": {}, "export": {"format": "tensorrt"}})
    assert trt.stages() == ["quantize", "export"]


@pytest.mark.skipif(HAS_TENSORRT, reason="this machine can build engines")
def test_tensorrt_without_cuda_says_so_in_one_line(tiny_bert, tmp_path):
    result = CliRunner().invoke(app, ["export", "--from", str(tiny_bert), "--format", "tensorrt",
                                      "--out", str(tmp_path / "trt")])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: export --format tensorrt needs")
    assert not (tmp_path / "trt").exists()


@pytest.mark.skipif(not HAS_TENSORRT, reason="needs the tensorrt package and a CUDA device")
def test_tensorrt_engine_matches_onnx(tiny_bert, tmp_path):
    from deploykit.runtimes import load_runtime

    cfg = export_recipe(format="tensorrt", tensorrt={"max_batch": 4, "opt_batch": 2, "max_seq": 32, "opt_seq": 16})
    art = run_stage("export", cfg, tiny_bert, tmp_path / "trt")
    assert art.format == "tensorrt" and (art.path / "model.engine").stat().st_size > 0
    tok = AutoTokenizer.from_pretrained(art.path)
    enc = {k: v.astype(np.int64) for k, v in tok(TEXTS[:2], padding=True, return_tensors="np").items()}
    got = load_runtime(art, "tensorrt", None).predict(enc)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    assert np.abs(got - want).max() < 1e-2  # FP16


@pytest.mark.parametrize("cuda, tensorrt, says", [(False, True, "needs an NVIDIA GPU"),
                                                  (True, False, "needs the tensorrt package"), (True, True, None)])
def test_tensorrt_requirements_on_each_kind_of_machine(cuda, tensorrt, says, monkeypatch):
    import importlib.util

    from deploykit.tensorrt import require_tensorrt

    real = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if tensorrt else None) if name == "tensorrt" else real(name, *a))
    if says is None:
        require_tensorrt()
    else:
        with pytest.raises(UserError, match=says):
            require_tensorrt()
