"""deploykit/runtimes.py's RUNTIMES: one table whose columns every reader of runtime facts uses."""

import pytest

from deploykit.runtimes import AUTO, LABELS, READS, RUNTIMES, TARGETS


def test_the_columns_are_views_of_the_one_table():
    from deploykit.measure.plots import MARKERS
    from deploykit.serve.app import PLATFORMS

    for table in (READS, TARGETS, LABELS, MARKERS, PLATFORMS):
        assert list(table) == list(RUNTIMES)
    assert READS["openvino"] == ("onnx", "openvino") and PLATFORMS["ort"] == "onnxruntime_onnx"
    assert len(set(MARKERS.values())) == len(MARKERS)  # each runtime tells itself apart in a plot


def test_auto_measures_what_bench_measured_before_the_table():
    assert AUTO == {"pytorch": ["torch", "torch-bf16"], "onnx": ["ort", "ort-cuda"], "openvino": ["openvino"],
                    "tensorrt": ["tensorrt"]}
    # every runtime reads its own format first, and runs somewhere
    assert all(rt.reads and rt.targets and set(rt.auto_for) <= set(rt.reads) for rt in RUNTIMES.values())


def ort_spins(session) -> bool:
    # ORT spins unless the session was told not to (an absent entry is its default: on)
    try:
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") != "0"
    except RuntimeError:
        return True


def test_ort_sessions_spin_as_deployed_unless_told_not_to(tmp_path, monkeypatch):
    from conftest import make_tiny_model
    from tiny_onnx import export_tiny_onnx

    import deploykit.runtimes as runtimes
    from deploykit.artifact import load_artifact
    from deploykit.predictor import ClassifierPredictor

    art = load_artifact(export_tiny_onnx(make_tiny_model(tmp_path / "bert", "bert", seed=1), tmp_path / "onnx"))
    made = []
    real = runtimes.ort_session
    monkeypatch.setattr(runtimes, "ort_session", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    runtimes.load_runtime(art, "ort", 2)
    runtimes.load_runtime(art, "ort", 2, spinning=False)
    ClassifierPredictor(art, threads=2)  # what deploykit.load and `deploykit serve` run
    assert [ort_spins(s) for s in made] == [True, False, True]


DENORMAL_PROBE = """
import sys
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from deploykit.evaluate import ort_session

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
graph = helper.make_graph([helper.make_node("Mul", ["x", "one"], ["y"])], "mul", [x], [y], [one])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), sys.argv[2])
session = ort_session(sys.argv[2]) if sys.argv[1] == "deploykit" else ort.InferenceSession(sys.argv[2])
print(session.run(None, {"x": np.full(4, 1e-40, dtype=np.float32)})[0][0])
"""


def test_ort_sessions_flush_denormals_to_zero(tmp_path):
    """ORT's session.set_denormal_as_zero, in a fresh process each: ORT also sets it on the creating thread,
    so one process cannot hold a session without it after one with it."""
    import subprocess
    import sys

    def run(how: str) -> float:
        out = subprocess.run([sys.executable, "-c", DENORMAL_PROBE, how, str(tmp_path / f"{how}.onnx")],
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip())

    assert run("plain") == pytest.approx(1e-40, rel=1e-3)  # ONNX Runtime's default keeps the denormal
    assert run("deploykit") == 0.0
