"""Which nodes quantization touches, as `nodes_to_exclude` must name them: a graph with a weight Gemm, a
weight MatMul and an activation-by-activation MatMul (attention scores)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploykit.quant.int8 import Int8Settings, gemm_becomes_matmul, quantizable_nodes


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
