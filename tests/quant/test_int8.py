"""Which nodes quantization touches, as `nodes_to_exclude` must name them (a graph with a weight Gemm, a
weight MatMul and an activation-by-activation MatMul: attention scores), and static calibration on batches whose
activations differ in shape."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploykit.quant.int8 import Int8Settings, gemm_becomes_matmul, quantizable_nodes, quantize


def _graph(path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="dense"),
             helper.make_node("MatMul", ["g", "w"], ["m"], name="proj"),
             helper.make_node("MatMul", ["m", "g"], ["y"], name="scores")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [w, b])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_dynamic_names_gemm_as_its_matmul_rewrite_and_skips_activation_matmuls(tmp_path):
    settings = Int8Settings(mode="dynamic", op_types=["MatMul"])
    assert gemm_becomes_matmul(settings)
    assert quantizable_nodes(_graph(tmp_path / "m.onnx"), settings) == ["dense_MatMul", "proj"]


def test_static_names_only_the_listed_types_activation_matmuls_included(tmp_path):
    path = _graph(tmp_path / "m.onnx")
    only_matmul = Int8Settings(mode="static", op_types=["MatMul"])
    assert not gemm_becomes_matmul(only_matmul)
    assert quantizable_nodes(path, only_matmul) == ["proj", "scores"]
    assert quantizable_nodes(path, Int8Settings(mode="static", op_types=["MatMul", "Gemm"])) == ["dense", "proj", "scores"]


def _packed_graph(path):
    """x [tokens, 8] -> MatMul -> Relu -> MatMul -> y [tokens, 4]: the row count follows the batch, as the
    padding-free graph's packed activations do."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="down")]
    graph = helper.make_graph(nodes, "packed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", 4])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_calibration_takes_batches_of_different_shapes(tmp_path, method):
    import onnxruntime as ort

    # onnxruntime's histogram calibrators stack all batches into one array: ValueError (inhomogeneous shape)
    src = _packed_graph(tmp_path / "f.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(size=(n, 8)).astype(np.float32)} for n in (3, 7, 5, 11)]
    settings = Int8Settings.for_preset("avx512_vnni", mode="static", op_types=["MatMul"], calibration=method)
    cache = tmp_path / "ranges.json"
    quantize(src, tmp_path / "q.onnx", settings, calibration=feeds, calibration_cache=cache)
    assert json.loads(cache.read_text())["calibration_method"]["value"].lower().endswith(method)  # ranges of that method
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4
    run = {p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, tmp_path / "q.onnx")}
    x = feeds[1]
    want, got = (run[p].run(None, x)[0] for p in (src, tmp_path / "q.onnx"))
    assert np.abs(got - want).max() < 0.15 * np.abs(want).max()  # INT8 error, not a broken range
