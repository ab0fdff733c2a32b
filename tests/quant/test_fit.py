"""deploykit.quant.fit: which INT8 graphs ONNX Runtime computes other answers for on a CPU without VNNI, and who
refuses them (deploykit.load) or only says so (a bench row). Every branch runs on any CPU: the preset this CPU
would take is forced."""

import json
import shutil

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save
from tiny_onnx import export_tiny_onnx

import deploykit
import deploykit.hardware as hw
from deploykit.artifact import load_artifact
from deploykit.errors import UserError
from deploykit.quant.fit import (openvino_wide_weights, optimized_graph, reduce_range_for, saturation_fault, warn_unfit,
                                 wide_weights)
from deploykit.runtimes import load_runtime


def _graph(weight: np.ndarray, quantized_activation: bool = True, op: str = "qdq"):
    """x [1, 4] float -> y [1, 3]: through DQ(Q(x)) @ DQ(w) (what ONNX Runtime fuses into an integer MatMul), x @ DQ(w)
    (a float MatMul), DQ(Q(x)) @ DQ(Q(w float)) (the tensorrt preset's float weight behind a QuantizeLinear), or
    MatMulInteger(Q(x), w)."""
    stored = (weight.astype(np.float32) * 0.01) if op == "float-weight" else weight
    inits = [numpy_helper.from_array(stored, "w"), numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros((), np.int8 if op == "float-weight" else weight.dtype), "wz"),
             numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
             numpy_helper.from_array(np.array(128, np.uint8), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"])]
    if op == "integer":
        nodes += [helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["yi"]),
                  helper.make_node("Cast", ["yi"], ["y"], to=TensorProto.FLOAT)]
    else:
        if op == "float-weight":
            nodes.append(helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"]))
        nodes += [helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                  helper.make_node("DequantizeLinear", ["wq" if op == "float-weight" else "w", "ws", "wz"], ["wd"]),
                  helper.make_node("MatMul", ["xd" if quantized_activation else "x", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


FULL = np.array([[127, -3, 5], [2, 1, -127], [0, 9, 8], [-6, 4, 3]], np.int8)
SEVEN = np.clip(FULL, -64, 64).astype(np.int8)


def _as_run(model, tmp_path):
    """The graph as ONNX Runtime runs it on this CPU."""
    save(model, str(tmp_path / "g.onnx"))
    return optimized_graph(tmp_path / "g.onnx")


@pytest.mark.parametrize("op", ["qdq", "integer", "float-weight"])
def test_weights_that_use_all_8_bits_in_an_integer_product_are_wide(op, tmp_path):
    assert wide_weights(_as_run(_graph(FULL, op=op), tmp_path))[0] != []
    assert wide_weights(_as_run(_graph(SEVEN, op=op), tmp_path)) == ([], 1)  # reduce_range's [-64, 64]: no saturation


def test_a_weight_multiplied_in_float_or_stored_unsigned_is_not_an_integer_product(tmp_path):
    # quantize.fallback_bits 8: dequantized for a float MatMul, which ONNX Runtime leaves float
    assert wide_weights(_as_run(_graph(FULL, quantized_activation=False), tmp_path)) == ([], 0)
    assert wide_weights(_graph(FULL.astype(np.uint8), op="integer")) == ([], 0)  # u8 x u8 has no int16 pair sums


def test_a_graph_onnx_runtime_cannot_load_claims_no_fault(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    assert optimized_graph(tmp_path / "bad.onnx") is None


def _ir(onnx_path, folder):
    """The ONNX graph at `onnx_path` as an OpenVINO IR (model.xml + model.bin) in `folder`, as users convert one."""
    ov = pytest.importorskip("openvino")
    ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "model.xml"))
    return folder / "model.xml"


def test_an_openvino_ir_names_the_wide_weights_of_its_integer_products(monkeypatch, tmp_path):
    for name, model in (("full", _graph(FULL)), ("seven", _graph(SEVEN)),
                        ("float", _graph(FULL, quantized_activation=False))):
        save(model, str(tmp_path / f"{name}.onnx"))
        (tmp_path / name).mkdir()
    full, seven, weight_only = (_ir(tmp_path / f"{n}.onnx", tmp_path / n) for n in ("full", "seven", "float"))
    assert len(openvino_wide_weights(full)[0]) == 1 and openvino_wide_weights(full)[1] == 1
    assert openvino_wide_weights(seven) == ([], 1)
    assert openvino_wide_weights(weight_only) == ([], 0)  # a float activation: OpenVINO multiplies in float
    save(_graph(FULL, op="integer"), str(tmp_path / "integer.onnx"))  # MatMulInteger: a float MatMul in OpenVINO
    assert openvino_wide_weights(tmp_path / "integer.onnx") == ([], 0)
    assert openvino_wide_weights(tmp_path / "full.onnx")[1] == 1  # ONNX read by OpenVINO as it runs it
    # the tensorrt preset's float weight behind a QuantizeLinear: a FakeQuantize of a constant, whose zero point (int8
    # too) is not the weight
    for weights, wide in ((FULL, 1), (SEVEN, 0)):
        save(_graph(weights, op="float-weight"), str(tmp_path / "fw.onnx"))
        assert len(openvino_wide_weights(tmp_path / "fw.onnx")[0]) == wide
        assert openvino_wide_weights(tmp_path / "fw.onnx")[1] == 1
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    assert "1 of its 1 INT8 weight matrices use all 8 bits" in saturation_fault(full)
    assert saturation_fault(seven) is None
    (tmp_path / "bad.xml").write_text("not an IR")
    assert saturation_fault(tmp_path / "bad.xml") is None  # the loader names what is wrong with it


@pytest.mark.parametrize("levels, counted", [(256, True), (65536, False)])
def test_openvino_multiplies_in_integers_only_behind_8_bit_activations(levels, counted, tmp_path):
    ov = pytest.importorskip("openvino")
    from openvino import opset13 as ops

    x = ops.parameter([1, 4], np.float32, name="x")
    lo, hi = (ops.constant(np.array(v, np.float32)) for v in (-2.56, 2.54))
    act = ops.fake_quantize(x, lo, hi, lo, hi, levels)
    weight = ops.multiply(ops.convert(ops.constant(FULL), np.float32), ops.constant(np.array(0.01, np.float32)))
    ov.save_model(ov.Model([ops.matmul(act, weight, False, False)], [x]), str(tmp_path / "m.xml"))
    wide, total = openvino_wide_weights(tmp_path / "m.xml")
    assert (len(wide), total) == ((1, 1) if counted else (0, 0))


@pytest.mark.parametrize("preset", ["avx512_vnni", "arm64"])
def test_a_cpu_with_exact_products_reads_no_graph(preset, monkeypatch, tmp_path):
    monkeypatch.setattr(hw, "quant_preset", lambda: preset)
    assert saturation_fault(tmp_path / "absent.onnx") is None


def test_a_cpu_without_vnni_names_the_wide_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    save(_graph(FULL), str(tmp_path / "full.onnx"))
    save(_graph(SEVEN), str(tmp_path / "seven.onnx"))
    assert "1 of its 1 INT8 weight matrices use all 8 bits" in saturation_fault(tmp_path / "full.onnx")
    assert saturation_fault(tmp_path / "seven.onnx") is None


def test_a_graph_is_read_once_until_its_folder_changes(monkeypatch, tmp_path):
    import deploykit.quant.fit as fit

    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    reads = []
    monkeypatch.setattr(fit, "optimized_graph", lambda path: reads.append(path) or optimized_graph(path))
    save(_graph(FULL), str(tmp_path / "g.onnx"))
    first = saturation_fault(tmp_path / "g.onnx")
    assert saturation_fault(tmp_path / "g.onnx") == first and len(reads) == 1  # deploykit.load's check, then its loader
    save(_graph(SEVEN), str(tmp_path / "g.onnx"))  # the same path quantized again
    assert saturation_fault(tmp_path / "g.onnx") is None and len(reads) == 2
    (tmp_path / "g.onnx.data").write_bytes(b"weights")  # a file beside it (external weights) changed
    saturation_fault(tmp_path / "g.onnx")
    assert len(reads) == 3


@pytest.fixture
def int8_folders(tiny_bert, tmp_path):
    """The tiny classifier quantized dynamic INT8 with full 8-bit weights (the avx512_vnni preset) and 7-bit ones."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_dir = export_tiny_onnx(tiny_bert, tmp_path / "float")
    folders = {}
    for name, reduce_range in (("full", False), ("seven", True)):
        out = tmp_path / name
        shutil.copytree(float_dir, out)
        quantize_dynamic(str(float_dir / "model.onnx"), str(out / "model.onnx"), per_channel=True,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8)
        (out / "manifest.json").write_text(json.dumps({"format": "onnx", "stage": "quantize", "onnx_file": "model.onnx",
                                                       "parent": {"path": str(tiny_bert)}}))
        folders[name] = out
    return folders


def test_load_refuses_a_graph_this_cpu_would_saturate_and_names_the_fix(int8_folders, tiny_bert, monkeypatch):
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    fix = r"`deploykit quantize --from \S+ -r <the recipe it was built with> --set quantize.preset=avx2`"
    with pytest.raises(UserError, match="saturate here.*" + fix):
        deploykit.load(int8_folders["full"])
    with pytest.raises(UserError, match="saturate"):  # a bare graph, and runtime ort named
        deploykit.load(int8_folders["full"] / "model.onnx", runtime="ort")
    assert deploykit.load(int8_folders["seven"]).logits(["a fine film"]).shape == (1, 2)
    pytest.importorskip("openvino")  # OpenVINO runs a dynamic graph's MatMulInteger as a float MatMul: exact
    assert deploykit.load(int8_folders["full"], runtime="openvino").logits(["a fine film"]).shape == (1, 2)


def _static_int8(float_dir, out, reduce_range: bool):
    """Static QDQ INT8 of the tiny classifier (what `deploykit quantize` writes; OpenVINO reads its activation Q/DQ
    pairs as FakeQuantize, where a dynamic graph's MatMulInteger becomes a float MatMul)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    names = [i.name for i in ort.InferenceSession(str(float_dir / "model.onnx")).get_inputs()]
    rng = np.random.default_rng(0)
    feeds = [{n: (rng.integers(1, 90, (2, 8)) if n == "input_ids" else np.ones((2, 8))).astype(np.int64)
              for n in names} for _ in range(4)]

    class Reader(CalibrationDataReader):
        def get_next(self):
            return feeds.pop() if feeds else None

    quantize_static(str(float_dir / "model.onnx"), str(out / "model.onnx"), Reader(), per_channel=True,
                    reduce_range=reduce_range, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


@pytest.fixture
def static_folders(int8_folders, tiny_bert, tmp_path):
    """`int8_folders` with static QDQ graphs instead of dynamic ones (8-bit and 7-bit weights)."""
    float_dir = export_tiny_onnx(tiny_bert, tmp_path / "float-static")
    folders = {}
    for name, folder in int8_folders.items():
        folders[name] = shutil.copytree(folder, tmp_path / f"{name}-static")
        _static_int8(float_dir, folders[name], reduce_range=name == "seven")
    return folders


def test_openvino_saturates_a_static_graph_alike_and_a_bench_row_says_so(static_folders, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    with pytest.raises(UserError, match="saturate here"):  # bench/README.md: 16 of 872 SST-2 answers changed
        deploykit.load(static_folders["full"], runtime="openvino")
    assert any("saturate" in note for note in load_runtime(load_artifact(static_folders["full"]), "openvino", 1).notes)
    assert deploykit.load(static_folders["seven"], runtime="openvino").logits(["a fine film"]).shape == (1, 2)


def _ir_folder(folder, name: str):
    """`folder`'s model as an OpenVINO IR folder (format openvino, as bench's NNCF peer writes one) named `name`."""
    ir = shutil.copytree(folder, folder.parent / name)
    (ir / "model.onnx").unlink()
    _ir(folder / "model.onnx", ir)
    manifest = json.loads((ir / "manifest.json").read_text())
    (ir / "manifest.json").write_text(json.dumps({**manifest, "format": "openvino", "stage": "peer"}))
    return ir


def test_load_refuses_an_openvino_ir_folder_this_cpu_would_saturate(static_folders, monkeypatch):
    irs = {name: _ir_folder(folder, f"{name}-ir") for name, folder in static_folders.items()}
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    for runtime in ("auto", "openvino"):
        with pytest.raises(UserError, match="saturate here"):
            deploykit.load(irs["full"], runtime=runtime)
    assert any("saturate" in n for n in load_runtime(load_artifact(irs["full"]), "openvino", 1).notes)
    assert deploykit.load(irs["seven"]).logits(["a fine film"]).shape == (1, 2)
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx512_vnni")
    assert deploykit.load(irs["full"]).logits(["a fine film"]).shape == (1, 2)


def test_a_broken_ir_folder_is_one_line_that_names_what_to_fix(static_folders, monkeypatch):
    pytest.importorskip("openvino")
    ir = _ir_folder(static_folders["seven"], "broken-ir")
    manifest = json.loads((ir / "manifest.json").read_text())
    (ir / "manifest.json").write_text(json.dumps({**manifest, "ir_file": None}))
    with pytest.raises(UserError, match=r"manifest.json: ir_file must name the IR's .xml file .*not None"):
        deploykit.load(ir)
    (ir / "manifest.json").write_text(json.dumps(manifest))
    (ir / "model.bin").unlink()
    with pytest.raises(UserError, match="model.xml: OpenVINO cannot read it: .*bin file cannot be found"):
        deploykit.load(ir)
    (ir / "model.xml").write_bytes(b"\x8b\x1f" + bytes(range(256)))  # not XML: OpenVINO's other parsers would try it
    with pytest.raises(UserError, match=r"model.xml: not an OpenVINO IR: its .xml file is not XML \(it starts with b'\\x8b"):
        deploykit.load(ir)


def test_a_runtime_that_cannot_read_the_folder_is_named_before_its_weights(static_folders, monkeypatch):
    pytest.importorskip("openvino")
    ir = _ir_folder(static_folders["full"], "full-ir2")
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    with pytest.raises(UserError, match="runtime 'ort' cannot run openvino artifacts"):
        deploykit.load(ir, runtime="ort")


def test_a_dynamic_graph_refused_on_ort_names_openvino_which_computes_it_exactly(int8_folders, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    with pytest.raises(UserError, match="run it with runtime openvino, which computes its products exactly"):
        deploykit.load(int8_folders["full"])


def test_load_takes_the_same_graph_on_a_cpu_with_vnni(int8_folders, monkeypatch):
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx512_vnni")
    assert deploykit.load(int8_folders["full"]).logits(["a fine film"]).shape == (1, 2)


def test_a_bench_row_runs_the_graph_and_says_its_products_saturate(int8_folders, monkeypatch):
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    loaded = load_runtime(load_artifact(int8_folders["full"]), "ort", threads=1)
    assert any("saturate" in note for note in loaded.notes)
    assert not any("saturate" in n for n in load_runtime(load_artifact(int8_folders["seven"]), "ort", 1).notes)


def test_predict_exits_2_with_one_line(int8_folders, monkeypatch):
    from typer.testing import CliRunner

    from deploykit.cli import app

    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    result = CliRunner().invoke(app, ["predict", str(int8_folders["full"]), "a fine film"])
    assert result.exit_code == 2
    assert "quantize.preset=avx2" in result.output and "Traceback" not in result.output


def test_quantize_warns_when_a_forced_preset_saturates_here(monkeypatch, capsys):
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    warn_unfit("avx512_vnni")
    assert "quantize.preset=avx512_vnni writes 8-bit weights" in " ".join(capsys.readouterr().err.split())
    warn_unfit("tensorrt")  # TensorRT's 8-bit weights, scored by ONNX Runtime here
    assert "quantize.preset=tensorrt writes 8-bit weights for TensorRT" in " ".join(capsys.readouterr().err.split())
    warn_unfit("avx2")
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx512_vnni")
    warn_unfit("avx512_vnni")
    assert capsys.readouterr().err == ""


def test_a_causal_lm_preset_sets_its_weight_width():
    assert [reduce_range_for(p) for p in ("auto", "avx2", "avx512_vnni", "arm64")] == [None, True, False, False]
    with pytest.raises(UserError, match="tensorrt is for encoder classifiers"):
        reduce_range_for("tensorrt")
