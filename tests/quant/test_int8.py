"""Which nodes quantization touches, as `nodes_to_exclude` must name them (a graph with a weight Gemm, a
weight MatMul and an activation-by-activation MatMul: attention scores), and static calibration on batches whose
activations differ in shape."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploykit.hardware import quant_preset
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


def _embedding_graph(path, tied: bool):
    # ids -> Gather(table) -> MatMul(w) -> y; tied: the same table is also an output layer (y @ table^T)
    rng = np.random.default_rng(2)
    table = numpy_helper.from_array(rng.normal(size=(50, 8)).astype(np.float32), "table")
    w = numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("MatMul", ["e", "w"], ["h"], name="dense")]
    inits, out = [table, w], "h"
    if tied:
        nodes += [helper.make_node("Transpose", ["table"], ["table_t"], name="tie"),
                  helper.make_node("MatMul", ["h", "table_t"], ["logits"], name="lm_head")]
        out = "logits"
    graph = helper.make_graph(nodes, "embed", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["tokens"])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _int_span(path, name_start):
    # the widest integer span among the quantized initializers whose name starts with name_start
    spans = [int(a.max()) - int(a.min()) for i in onnx.load(str(path)).graph.initializer
             if i.name.startswith(name_start) and (a := numpy_helper.to_array(i)).dtype in (np.int8, np.uint8)
             and a.size > 1]
    return max(spans)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_avx2_keeps_8_bit_tables_read_only_by_gather(tmp_path, mode):
    # 7-bit weights keep AVX2's pair sums from saturating in a MatMul; a Gather-only table multiplies nothing
    src = _embedding_graph(tmp_path / "f.onnx", tied=False)
    feeds = [{"ids": np.arange(n, dtype=np.int64)} for n in (5, 9)]
    settings = Int8Settings.for_preset("avx2", mode=mode, op_types=["MatMul", "Gather"])
    quantize(src, tmp_path / "q.onnx", settings, calibration=feeds if mode == "static" else None)
    assert _int_span(tmp_path / "q.onnx", "table") > 200      # all 8 bits
    assert _int_span(tmp_path / "q.onnx", "w") <= 128          # 7 bits, as the preset says
    vnni = Int8Settings.for_preset("avx512_vnni", mode=mode, op_types=["MatMul", "Gather"])
    quantize(src, tmp_path / "v.onnx", vnni, calibration=feeds if mode == "static" else None)
    assert _int_span(tmp_path / "v.onnx", "w") > 200


def test_avx2_keeps_a_tied_table_at_7_bits(tmp_path):
    # the table is also the weight of a MatMul (a tied output layer): full-range values would saturate there
    src = _embedding_graph(tmp_path / "f.onnx", tied=True)
    feeds = [{"ids": np.arange(n, dtype=np.int64)} for n in (5, 9)]
    settings = Int8Settings.for_preset("avx2", mode="static", op_types=["MatMul", "Gather"])
    quantize(src, tmp_path / "q.onnx", settings, calibration=feeds)
    assert _int_span(tmp_path / "q.onnx", "table") <= 128


def _two_layer_graph(path, shared: bool = False):
    # x -> Gemm(w1, transB) -> Relu -> MatMul(w2) -> y; shared: a third node reads w2 too
    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32), "w1")   # [N, K]: transB
    w2 = numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32) * np.linspace(0.01, 3, 4, dtype=np.float32),
                                 "w2")  # output channels of very different ranges: one scale each
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="up", transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="down")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", 4])]
    if shared:
        nodes.append(helper.make_node("MatMul", ["r", "w2"], ["y2"], name="again"))
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["tokens", 4]))
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", 8])],
                              outputs, [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("bits", [8, 16])
def test_fallback_nodes_get_narrow_weights_and_compute_in_float(tmp_path, bits):
    import onnxruntime as ort

    from deploykit.quant.int8 import fallback_weights

    src = _two_layer_graph(tmp_path / "f.onnx")
    rng = np.random.default_rng(4)
    feeds = [{"x": rng.normal(size=(n, 8)).astype(np.float32)} for n in (4, 6)]
    settings = Int8Settings.for_preset("avx2", mode="static", op_types=["MatMul", "Gemm"])
    quantize(src, tmp_path / "q.onnx", settings, exclude=["up", "down"], calibration=feeds)
    before = (tmp_path / "q.onnx").stat().st_size
    assert fallback_weights(tmp_path / "q.onnx", ["up", "down"], bits) == ["up", "down"]
    model = onnx.load(str(tmp_path / "q.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert "w1" not in inits and "w2" not in inits
    if bits == 8:
        assert inits["w1_wq"].dtype == np.int8 and inits["w1_wq_scale"].shape == (16,)  # per output channel, axis 0
        assert inits["w2_wq_scale"].shape == (4,)
        assert np.abs(inits["w2_wq"]).max(axis=0).min() >= 126  # every channel uses its whole range: one scale each
    else:
        assert inits["w1_w16"].dtype == np.float16 and inits["w1_w16"].shape == (16, 8)
    assert (tmp_path / "q.onnx").stat().st_size < before  # fewer bytes per weight than float's 4
    # no QuantizeLinear: the activations stay float, so only the weights' rounding separates it from the float graph
    assert "QuantizeLinear" not in [n.op_type for n in model.graph.node]
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    run = {p: ort.InferenceSession(str(p), opts if p != src else None, providers=["CPUExecutionProvider"])
           for p in (src, tmp_path / "q.onnx")}
    want, got = (run[p].run(None, feeds[1])[0] for p in (src, tmp_path / "q.onnx"))
    assert np.abs(got - want).max() < (0.02 if bits == 8 else 1e-3) * np.abs(want).max()
    # float16 costs nothing per call: ONNX Runtime folds the Cast into a float32 weight when the session loads
    loaded = [n.op_type for n in onnx.load(str(tmp_path / "loaded.onnx")).graph.node]
    assert ("Cast" in loaded) is False and (("DequantizeLinear" in loaded) is (bits == 8))


def test_fallback_leaves_shared_weights_and_other_nodes_alone(tmp_path):
    from deploykit.quant.int8 import fallback_weights

    src = _two_layer_graph(tmp_path / "f.onnx", shared=True)
    feeds = [{"x": np.ones((3, 8), np.float32)}]
    settings = Int8Settings.for_preset("avx512_vnni", mode="static", op_types=["MatMul", "Gemm"])
    quantize(src, tmp_path / "q.onnx", settings, exclude=["down", "again"], calibration=feeds)
    # w2 is read by two nodes: rewriting it for one would change the other; "up" was quantized, not a float node
    assert fallback_weights(tmp_path / "q.onnx", ["down", "again", "up"], 16) == []


def test_float16_fallback_refuses_weights_out_of_its_range(tmp_path):
    from deploykit.quant.int8 import fallback_weights

    src = _two_layer_graph(tmp_path / "f.onnx")
    model = onnx.load(str(src))
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.full((16, 4), 1e6, np.float32), "w2"))
    onnx.save(model, str(src))
    from deploykit.errors import CheckError

    with pytest.raises(CheckError, match="down: float16 fallback weights out of range.*fallback_bits 8"):
        fallback_weights(src, ["down"], 16)


@pytest.mark.parametrize("preset", ["avx512_vnni", "avx2"])  # forced: whatever this machine's CPU
@pytest.mark.parametrize("float_outputs", [True, False])
def test_static_float_outputs_drop_the_requantize_after_each_matmul(tmp_path, float_outputs, preset):
    import onnxruntime as ort

    src = _two_layer_graph(tmp_path / "f.onnx")
    rng = np.random.default_rng(5)
    feeds = [{"x": rng.normal(size=(n, 8)).astype(np.float32)} for n in (4, 6)]
    settings = Int8Settings.for_preset(preset, mode="static", op_types=["MatMul", "Gemm"],
                                       float_outputs=float_outputs)
    assert settings.describe()["matmul_outputs"] == ("float" if float_outputs else "int8")
    quantize(src, tmp_path / "q.onnx", settings, calibration=feeds)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    requantized = sorted(producer[n.input[0]] for n in graph.node
                         if n.op_type == "QuantizeLinear" and producer.get(n.input[0]) in ("MatMul", "Gemm"))
    # the Gemm's output feeds Relu and the MatMul's is the graph output: each gets a Q/DQ pair unless float
    assert requantized == ([] if float_outputs else ["Gemm", "MatMul"])
    # still INT8 inside: the activations entering both nodes are quantized
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 2
    run = {p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, tmp_path / "q.onnx")}
    want, got = (run[p].run(None, feeds[1])[0] for p in (src, tmp_path / "q.onnx"))
    # close to float only on a CPU the preset is for: the vnni preset's full 8-bit weights saturate AVX2's
    # VPMADDUBSW (the reason the avx2 preset exists), which put an AVX2-only CI machine 10.6% off
    if preset == "avx2" or quant_preset() == preset:
        assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_float_attention_needs_static_float_outputs():
    # a re-quantized projection output hands the attention products Q/DQ inputs that ORT fuses into INT8 anyway
    assert not Int8Settings.for_preset("avx512_vnni", "static", float_outputs=False, float_attention=True).float_attention
    assert not Int8Settings.for_preset("avx512_vnni", "dynamic", float_outputs=True, float_attention=True).float_attention


def test_dynamic_mode_ignores_float_outputs():
    settings = Int8Settings.for_preset("avx512_vnni", mode="dynamic", float_outputs=True)
    assert settings.float_outputs is False and settings.describe()["matmul_outputs"] == "float"


def _attention_like_graph(path):
    # x -> MatMul(w) -> h; scores = MatMul(h, Transpose(h)): one weight product, one product of two activations
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("Transpose", ["h"], ["ht"], perm=[1, 0]),
             helper.make_node("MatMul", ["h", "ht"], ["scores"], name="qk")]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", 8])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["tokens", "tokens"])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("preset", ["avx512_vnni", "avx2"])  # forced: whatever this machine's CPU
@pytest.mark.parametrize(("mode", "float_attention", "kept_float"), [
    ("static", True, True), ("static", False, False),
    ("dynamic", False, True)])  # ORT's dynamic mode never quantizes a product of two activations
def test_float_attention_keeps_products_of_two_activations_float(tmp_path, mode, float_attention, kept_float, preset):
    import onnxruntime as ort

    from deploykit.quant.int8 import activation_matmuls

    src = _attention_like_graph(tmp_path / "f.onnx")
    assert activation_matmuls(src) == ["qk"]
    rng = np.random.default_rng(6)
    feeds = [{"x": rng.normal(size=(n, 8)).astype(np.float32)} for n in (5, 7)]
    settings = Int8Settings.for_preset(preset, mode=mode, op_types=["MatMul"], float_outputs=True,
                                       float_attention=float_attention)
    assert settings.describe()["attention_matmuls"] == ("float" if kept_float else "int8")
    quantize(src, tmp_path / "q.onnx", settings, calibration=feeds if mode == "static" else None)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "ran.onnx")  # the graph ONNX Runtime runs, Q/DQ fused
    ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "ran.onnx")).graph.node]
    int8 = [op for op in ops if op in ("MatMulInteger", "MatMulIntegerToFloat", "QLinearMatMul", "DynamicQuantizeMatMul")]
    # the weight product is INT8 either way; the activation product stays a float (Fused)MatMul only when asked
    assert len(int8) == (1 if kept_float else 2)
    assert any(op in ("MatMul", "FusedMatMul") for op in ops) is kept_float
    run = {p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, tmp_path / "q.onnx")}
    want, got = (run[p].run(None, feeds[1])[0] for p in (src, tmp_path / "q.onnx"))
    # close to float only on a CPU the preset is for: the vnni preset's full 8-bit weights saturate AVX2's
    # VPMADDUBSW (the reason the avx2 preset exists), which put an AVX2-only CI machine 10.6% off
    if preset == "avx2" or quant_preset() == preset:
        assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
