"""deploykit/ort_threads.py: each call on the one-thread twin or the multi-threaded session, whichever ran calls of
its size faster lately.

Which session is faster is a property of the machine, and on a VM it changes by the minute: these tests drive the
choice with fake sessions on a fake clock (each outcome forced, and a change of speed mid-way) and check what
runs where, never a timing. The real sessions are checked for giving the same logits either way.
"""

from __future__ import annotations

import numpy as np
import pytest

import deploykit.ort_threads as ort_threads
from deploykit.ort_threads import EXPLORE_EVERY, ThreadChoice


class Clock:
    """time.perf_counter for ThreadChoice.run: only the fake sessions move it, by their cost per token."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeSession:
    """An ORT session whose calls cost `cost` seconds per token on `clock`; `calls` counts them by rows."""

    def __init__(self, clock: Clock, cost: float):
        self.clock, self.cost, self.calls = clock, cost, []

    def run(self, outputs, feed):
        self.clock.now += self.cost * feed["input_ids"].size
        self.calls.append(len(feed["input_ids"]))
        return [np.zeros((len(feed["input_ids"]), 2))]


def feed(rows: int, tokens: int = 10) -> dict:
    return {"input_ids": np.ones((rows, tokens), dtype=np.int64)}


@pytest.fixture
def clocked(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(ort_threads.time, "perf_counter", clock)
    return clock


@pytest.mark.parametrize("many_cost, one_cost, winner", [(1.0, 2.0, "many"), (2.0, 1.0, "one")])
def test_calls_run_on_the_faster_session_and_now_and_then_on_the_other(clocked, many_cost, one_cost, winner):
    many, one = FakeSession(clocked, many_cost), FakeSession(clocked, one_cost)
    choice = ThreadChoice(many, one)
    for _ in range(2 * EXPLORE_EVERY):
        choice.run(feed(32))
    fast, slow = (many, one) if winner == "many" else (one, many)
    # each side once to start, then the faster one, and the other at every EXPLORE_EVERY-th call
    assert len(slow.calls) == 1 + 2 and len(fast.calls) == 2 * EXPLORE_EVERY - 3


def test_a_change_of_speed_mid_way_moves_the_calls_to_the_session_now_faster(clocked):
    # a VM's host moved the vCPUs apart: two threads, faster until then, now run 2x slower than one
    many, one = FakeSession(clocked, 1.0), FakeSession(clocked, 1.5)
    choice = ThreadChoice(many, one)
    for _ in range(100):
        choice.run(feed(32))
    many.cost = 3.0
    before = len(one.calls)
    for _ in range(100):
        choice.run(feed(32))
    assert len(one.calls) - before >= 97  # a call or two to notice, then one thread
    many.cost = 1.0  # and back: seen at the next call that explores it, and taken within a few of those
    before = len(many.calls)
    for _ in range(8 * EXPLORE_EVERY):
        choice.run(feed(32))
    assert len(many.calls) - before > 4 * EXPLORE_EVERY


def test_batch_sizes_are_judged_apart(clocked):
    # single rows faster on one thread, batches on two (the SST-2 final graph on a machine whose cores share a cache)
    class BySize(FakeSession):
        def run(self, outputs, f):
            self.cost = self.costs[len(f["input_ids"]) > 1]
            return super().run(outputs, f)

    many, one = BySize(clocked, 0.0), BySize(clocked, 0.0)
    many.costs, one.costs = (1.2, 1.0), (1.0, 1.7)
    choice = ThreadChoice(many, one)
    for _ in range(EXPLORE_EVERY - 1):
        choice.run(feed(1))
        choice.run(feed(32))
    assert many.calls.count(1) == 1 and one.calls.count(32) == 1


def test_sessions_within_a_few_percent_do_not_trade_places_on_noise(clocked):
    many, one = FakeSession(clocked, 1.0), FakeSession(clocked, 0.98)  # one thread 2% faster, then 2% slower
    choice = ThreadChoice(many, one)
    for i in range(3 * EXPLORE_EVERY):
        one.cost = 0.98 if i % 2 else 1.02
        choice.run(feed(32))
    assert len(one.calls) <= 1 + 3


def test_calls_from_several_threads_at_once_are_all_run_and_counted():
    # `deploykit serve --workers` shares one loaded model between worker threads
    import threading

    class Slow:
        def __init__(self):
            self.calls, self.lock = 0, threading.Lock()

        def run(self, outputs, f):
            with self.lock:
                self.calls += 1
            return [np.zeros((len(f["input_ids"]), 2))]

    many, one = Slow(), Slow()
    choice = ThreadChoice(many, one)
    workers = [threading.Thread(target=lambda: [choice.run(feed(rows)) for rows in (1, 8, 32) * 50])
               for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert many.calls + one.calls == 4 * 150
    assert {k: v[2] for k, v in choice._seen.items()} == {1: 200, 4: 200, 6: 200}  # classes 1, 8-15, 32+


def test_the_time_is_taken_per_token_so_long_and_short_rows_compare(clocked):
    many, one = FakeSession(clocked, 1.0), FakeSession(clocked, 2.0)
    choice = ThreadChoice(many, one)
    choice.run(feed(8, tokens=5))     # many: 40 tokens
    choice.run(feed(8, tokens=60))    # one: 480 tokens, twice the cost per token
    choice.run(feed(8, tokens=60))
    assert many.calls == [8, 8] and one.calls == [8]


@pytest.fixture
def tiny_onnx_art(tmp_path):
    from conftest import make_tiny_model
    from tiny_onnx import export_tiny_onnx

    from deploykit.artifact import load_artifact

    return load_artifact(export_tiny_onnx(make_tiny_model(tmp_path / "bert", "bert", seed=1), tmp_path / "onnx"))


def test_both_sessions_give_the_same_logits(tiny_onnx_art):
    from deploykit.evaluate import ort_predictor, ort_session
    from deploykit.models import load_tokenizer

    pool = ort_session(tiny_onnx_art.onnx_path, 2)
    choice = ThreadChoice.for_graph(tiny_onnx_art.onnx_path, pool, 2, True)
    assert choice is not None and choice.sessions[1].get_session_options().intra_op_num_threads == 1
    predict = ort_predictor(pool, choice=choice)
    tok = load_tokenizer(str(tiny_onnx_art.path))
    many = dict(tok(["a fine film", "bad"], padding=True, return_tensors="np"))
    first, second = predict(many), predict(many)  # each side once
    assert len(choice._seen) == 1 and None not in next(iter(choice._seen.values()))
    np.testing.assert_allclose(first, second, atol=1e-5)
    np.testing.assert_allclose(first, ort_predictor(pool)(many), atol=1e-5)


def test_the_loader_says_how_the_rows_run(tiny_onnx_art):
    from deploykit.runtimes import ONE_OR_MANY, load_runtime

    assert load_runtime(tiny_onnx_art, "ort", 2).notes == [ONE_OR_MANY]
    assert load_runtime(tiny_onnx_art, "ort", 1).notes == []


@pytest.mark.parametrize("why", ["one thread", "one core", "large file"])
def test_no_twin_where_there_is_nothing_to_choose_or_too_much_to_hold(tiny_onnx_art, monkeypatch, why):
    from deploykit.evaluate import ort_session

    pool = ort_session(tiny_onnx_art.onnx_path, 2)
    threads = {"one thread": 1, "one core": None}.get(why, 2)  # None: ORT's default, one thread per core
    if why == "one core":
        monkeypatch.setattr(ort_threads.os, "cpu_count", lambda: 1)
    if why == "large file":
        monkeypatch.setattr(ort_threads, "TWIN_MAX_BYTES", 1000)
    assert ThreadChoice.for_graph(tiny_onnx_art.onnx_path, pool, threads, True) is None
