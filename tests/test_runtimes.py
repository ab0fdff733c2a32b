"""deploykit/runtimes.py's RUNTIMES: one table whose columns every reader of runtime facts uses."""

import numpy as np
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
import threading

import numpy as np
import onnx
from onnx import TensorProto, helper

from deploykit import fpenv
from deploykit.evaluate import ort_session

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
graph = helper.make_graph([helper.make_node("Mul", ["x", "one"], ["y"])], "mul", [x], [y], [one])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), sys.argv[1])
session = ort_session(sys.argv[1])
feed = {"x": np.full(4, 1e-40, dtype=np.float32)}
plain = session.run(None, feed)[0][0]
saved = fpenv.flush()
flushed = session.run(None, feed)[0][0]
fpenv.restore(saved)
seen = []
thread = threading.Thread(target=lambda: seen.append(5e-324 > 0))
thread.start(); thread.join()
print(plain, flushed, 5e-324 > 0, 1e-310 * 1.0, seen[0])
"""


@pytest.mark.skipif(not __import__("deploykit.fpenv").fpenv.AVAILABLE, reason="no known fenv_t layout (glibc x86-64)")
def test_ort_calls_flush_denormals_and_the_callers_float_math_keeps_them(tmp_path):
    """In a fresh process (ORT sets the creating thread's mode once per process): a session made by ort_session
    leaves the caller's thread and the threads it starts reading denormals (Python's float64 included); a call
    inside fpenv.flush/restore, as ort_predictor runs each one, flushes them."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", DENORMAL_PROBE, str(tmp_path / "mul.onnx")],
                         capture_output=True, text=True, check=True).stdout.split()
    plain, flushed, py_denormal, product, thread_denormal = out
    assert float(plain) == pytest.approx(1e-40, rel=1e-3)  # the calling thread computed it: mode untouched
    assert float(flushed) == 0.0
    assert py_denormal == "True" and float(product) == 1e-310 and thread_denormal == "True"


def test_ort_predictor_gives_the_same_logits_with_the_calls_flushed(tmp_path):
    from conftest import make_tiny_model
    from tiny_onnx import export_tiny_onnx

    from deploykit.artifact import load_artifact
    from deploykit.evaluate import ort_predictor, ort_session
    from deploykit.models import load_tokenizer

    art = load_artifact(export_tiny_onnx(make_tiny_model(tmp_path / "bert", "bert", seed=1), tmp_path / "onnx"))
    session = ort_session(art.onnx_path)
    enc = dict(load_tokenizer(str(art.path))(["a fine film", "bad"], padding=True, return_tensors="np"))
    want = session.run(None, {k: v.astype(np.int64) for k, v in enc.items()})[0]
    np.testing.assert_allclose(ort_predictor(session)(enc), want, atol=1e-6)
    assert 5e-324 > 0  # this thread's float math after both


def session_flushes(session) -> bool:
    try:
        return session.get_session_options().get_session_config_entry("session.set_denormal_as_zero") == "1"
    except RuntimeError:  # absent: ORT's default, off
        return False


@pytest.mark.parametrize("available", [True, False])  # forced: whatever this machine's C library
def test_without_a_known_float_environment_sessions_keep_ort_defaults(tmp_path, monkeypatch, available):
    from conftest import make_tiny_model
    from tiny_onnx import export_tiny_onnx

    from deploykit import fpenv
    from deploykit.artifact import load_artifact
    from deploykit.evaluate import ort_predictor, ort_session
    from deploykit.models import load_tokenizer

    if available and not fpenv.AVAILABLE:
        pytest.skip("no known fenv_t layout (glibc x86-64) on this machine")
    monkeypatch.setattr(fpenv, "AVAILABLE", available)
    art = load_artifact(export_tiny_onnx(make_tiny_model(tmp_path / "bert", "bert", seed=2), tmp_path / "onnx"))
    session = ort_session(art.onnx_path)
    assert session_flushes(session) is available  # never ORT's switch alone: it would leak into the caller's thread
    saved = fpenv.flush()
    fpenv.restore(saved)
    assert (saved is None) is not available and 5e-324 > 0
    enc = dict(load_tokenizer(str(art.path))(["a fine film"], return_tensors="np"))
    assert ort_predictor(session)(enc).shape == (1, 2)
