"""deploykit/ort_threads.py: the one-thread twin session for single rows, chosen by a probe when the model loads.

Which session is faster is a property of the machine: these tests force each outcome (a fake clock for the probe,
a forced verdict for the loader) and check what each one does, never a timing.
"""

from __future__ import annotations

import numpy as np
import pytest

import deploykit.ort_threads as ort_threads


class Clock:
    """time.perf_counter for `faster`: only the predictors move it, by their own fixed cost per call."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def predictor(self, cost: float):
        def run(feed):
            self.now += cost
            return feed
        return run


@pytest.mark.parametrize("one, many, chosen", [(1.0, 2.0, True), (2.0, 1.0, False), (1.0, 1.01, False)])
def test_the_probe_keeps_the_twin_only_when_it_is_clearly_faster(monkeypatch, one, many, chosen):
    clock = Clock()
    monkeypatch.setattr(ort_threads.time, "perf_counter", clock)
    assert ort_threads.faster(clock.predictor(one), clock.predictor(many), {}) is chosen


@pytest.fixture
def tiny_onnx_art(tmp_path):
    from conftest import make_tiny_model
    from tiny_onnx import export_tiny_onnx

    from deploykit.artifact import load_artifact

    return load_artifact(export_tiny_onnx(make_tiny_model(tmp_path / "bert", "bert", seed=1), tmp_path / "onnx"))


class Counting:
    """An ORT session that counts its calls (by batch size)."""

    def __init__(self, session):
        self.session, self.rows = session, []

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, outputs, feed):
        self.rows.append(len(feed["input_ids"]))
        return self.session.run(outputs, feed)


def test_single_rows_run_on_the_twin_and_batches_on_the_pool(tiny_onnx_art, monkeypatch):
    from deploykit.evaluate import ort_predictor, ort_session
    from deploykit.models import load_tokenizer

    monkeypatch.setattr(ort_threads, "faster", lambda *a, **k: True)
    pool = ort_session(tiny_onnx_art.onnx_path, 2)
    twin = ort_threads.single_row_twin(tiny_onnx_art.onnx_path, pool, 2, True, 8)
    assert twin is not None and twin.get_session_options().intra_op_num_threads == 1
    pool_calls, twin_calls = Counting(pool), Counting(twin)
    predict = ort_predictor(pool_calls, single=twin_calls)
    tok = load_tokenizer(str(tiny_onnx_art.path))
    one = dict(tok(["a fine film"], return_tensors="np"))
    many = dict(tok(["a fine film", "bad"], padding=True, return_tensors="np"))
    got_one, got_many = predict(one), predict(many)
    assert twin_calls.rows == [1] and pool_calls.rows == [2]
    # the same graph: the same logits either way
    np.testing.assert_allclose(got_one, ort_predictor(pool)(one), atol=1e-5)
    np.testing.assert_allclose(got_many[:1], got_one, atol=1e-5)


def test_the_loader_keeps_one_session_unless_the_twin_wins(tiny_onnx_art, monkeypatch):
    from deploykit.runtimes import load_runtime

    monkeypatch.setattr(ort_threads, "faster", lambda *a, **k: False)
    assert load_runtime(tiny_onnx_art, "ort", 2).notes == []
    monkeypatch.setattr(ort_threads, "faster", lambda *a, **k: True)
    assert load_runtime(tiny_onnx_art, "ort", 2).notes == ["batch 1 on a one-thread session (faster on this machine "
                                                          "when loaded)"]


@pytest.mark.parametrize("why", ["one thread", "large file", "other inputs"])
def test_no_twin_where_there_is_nothing_to_gain_or_too_much_to_hold(tiny_onnx_art, monkeypatch, why):
    from deploykit.evaluate import ort_session

    probed = []
    monkeypatch.setattr(ort_threads, "faster", lambda *a, **k: probed.append(1) or True)
    pool = ort_session(tiny_onnx_art.onnx_path, 2)
    threads = 1 if why == "one thread" else 2
    if why == "large file":
        monkeypatch.setattr(ort_threads, "TWIN_MAX_BYTES", 1000)
    if why == "other inputs":
        monkeypatch.setattr(ort_threads, "probe_feed", lambda session, length: None)
    assert ort_threads.single_row_twin(tiny_onnx_art.onnx_path, pool, threads, True, 8) is None
    assert probed == []


def test_the_probe_row_fits_the_graph(tiny_onnx_art):
    from deploykit.evaluate import ort_session

    session = ort_session(tiny_onnx_art.onnx_path, 1)
    feed = ort_threads.probe_feed(session, 12)
    assert feed["input_ids"].shape == (1, 12) and feed["input_ids"].max() == 12
    assert session.run(None, feed)[0].shape == (1, 2)
