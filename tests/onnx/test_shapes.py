"""Constant Reshape/Expand targets: the rewritten tiny-Llama decoder gives the same outputs as the traced
one at batch, sequence and past lengths other than the traced ones, with fewer nodes; targets that
inference cannot prove stay computed."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploykit.onnx.shapes import expand_target, reshape_target, static_shapes


def test_reshape_target_copies_proven_dims_and_allows_one_free_dim():
    assert reshape_target(["b", "s", 576], ["b", "s", 9, 64]) == [0, 0, 9, 64]
    assert reshape_target(["b", 3, 3, "t", 64], ["b", 9, "t", 64]) == [0, 9, -1, 64]
    # two dims that match no input position: not expressible with one -1
    assert reshape_target(["n"], ["a", "b"]) is None
    assert reshape_target(["b", "s", 9, 64], ["b", "s", None]) == [0, 0, -1]


def test_expand_target_broadcasts_only_what_it_can_prove():
    assert expand_target(["b", 3, 1, "t", 64], ["b", 3, 3, "t", 64]) == [1, 1, 3, 1, 1]
    assert expand_target([1, "t"], ["b", "t"]) is None  # a 1 growing to an unknown size
    assert expand_target(["b", None], ["b", 4]) is None


@pytest.fixture(scope="module")
def traced_and_static(tiny_llama, tmp_path_factory):
    from deploykit.llm.onnx_export import _torchscript_export, eager_float32

    path = tmp_path_factory.mktemp("shapes") / "model.onnx"
    _torchscript_export(eager_float32(tiny_llama), path, 17)
    traced = onnx.load(str(path))
    static = copy.deepcopy(traced)
    counts = static_shapes(static)
    return traced, static, counts


def _run(model, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


@pytest.mark.parametrize("batch,seq,past", [(1, 1, 9), (3, 5, 7), (2, 6, 0)])
def test_static_graph_equals_traced_graph_off_the_traced_shapes(traced_and_static, batch, seq, past):
    traced, static, _ = traced_and_static
    rng = np.random.default_rng(batch * 100 + seq * 10 + past)
    inputs = {i.name: i for i in traced.graph.input}
    kv = [i for i in inputs if i.startswith("past_key_values")]
    heads, dim = (inputs[kv[0]].type.tensor_type.shape.dim[k].dim_value for k in (1, 3))
    feed = {"input_ids": rng.integers(0, 300, (batch, seq)).astype(np.int64),
            "attention_mask": np.ones((batch, past + seq), np.int64),
            "position_ids": np.tile(np.arange(past, past + seq), (batch, 1)).astype(np.int64),
            **{name: rng.standard_normal((batch, heads, past, dim)).astype(np.float32) for name in kv}}
    for want, got in zip(_run(traced, feed), _run(static, feed)):
        assert want.shape == got.shape
        np.testing.assert_array_equal(want, got)


def test_targets_became_constants_and_nodes_went(traced_and_static):
    traced, static, counts = traced_and_static
    layers = sum(1 for i in traced.graph.input if i.name.endswith(".key"))
    # per layer: q/k/v views, the two repeat_kv reshapes and the output merge; K and V repeat_kv expands
    assert counts["Reshape"] >= 6 * layers and counts["Expand"] >= 2 * layers
    assert counts["nodes_after"] < 0.7 * counts["nodes_before"] == 0.7 * len(traced.graph.node)
    inits = {i.name for i in static.graph.initializer}
    # every target inside the layers is constant; the causal mask's reshape of a flattened tensor is not
    # provable and stays computed
    assert all(n.input[1] in inits for n in static.graph.node
               if n.op_type in ("Reshape", "Expand") and "/layers." in n.name)


def test_a_target_inference_cannot_prove_stays_computed():
    # y = reshape(x[n], shape(z)) where z is [a, b]: the output dims match no input dim, two would be -1
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Shape", ["z"], ["zs"]), helper.make_node("Reshape", ["x", "zs"], ["y"])],
                              "g", [x, z], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    counts = static_shapes(model)
    assert counts.get("Reshape", 0) == 0 and counts["nodes_after"] == 2
    assert [n.op_type for n in model.graph.node] == ["Shape", "Reshape"]
