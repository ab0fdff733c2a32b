"""`deploykit serve`: the V2 and /predict endpoints, bad bodies, metrics, micro-batching, SIGTERM drain.

Endpoint and batching tests run the app in-process (Starlette's TestClient) on a fake predictor whose
logits spell out which text they came from; the last tests start the real `deploykit serve` subprocess
on a tiny artifact.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from deploykit.errors import UserError
from deploykit.serve import parse_size
from deploykit.serve.app import build_app
from deploykit.serve.batching import Batcher


class FakePredictor:
    """ClassifierPredictor's serving surface. Text "r<i> w<j> ..." gets logits [i, j, -len]: who asked is visible."""

    name = "fake"
    runtime = "ort"
    max_length = 32

    def __init__(self, batch_invariant: bool = True, delay: float = 0.0, fail_on: str | None = None):
        self.labels = ["negative", "positive", "neutral"]
        self.batch_invariant = batch_invariant
        self.delay = delay
        self.fail_on = fail_on
        self.calls: list[tuple[list, int]] = []

    def logits(self, inputs, batch_size: int = 32) -> np.ndarray:
        self.calls.append((list(inputs), batch_size))
        if self.delay:  # a served fake says when a request is in the model: tests signal it then, not after a sleep
            print("fake model: scoring", file=sys.stderr, flush=True)
        time.sleep(self.delay)
        if self.fail_on and any(self.fail_on in str(row) for row in inputs):
            raise ValueError(f"cannot score {self.fail_on!r}")
        return np.array([_code(row) for row in inputs], dtype=np.float32).reshape(len(inputs), 3)


def _code(row) -> list[float]:
    text = row[0] if isinstance(row, tuple) else row
    words = text.split()
    numbers = [float(w[1:]) for w in words[:2] if w[:1] in "rw" and w[1:].isdigit()] + [0.0, 0.0]
    return [numbers[0], numbers[1], -float(len(text))]


def infer_body(texts, **extra):
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}], **extra}


@pytest.fixture
def client():
    predictor = FakePredictor()
    with TestClient(build_app(predictor, max_request_rows=4, max_body_bytes=2000)) as c:
        c.predictor = predictor
        yield c


def test_v2_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2").json()["name"] == "deploykit"
    meta = client.get("/v2/models/fake").json()
    assert meta["name"] == "fake" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("label", "BYTES", [-1]), ("score", "FP32", [-1]), ("logits", "FP32", [-1, 3])]
    assert client.get("/v2/models/fake/ready").json()["ready"] is True


def test_v2_infer_answers_the_v2_shape(client):
    body = infer_body(["r1 w2 x", "r3 w0 yy"], id="req-7")
    out = client.post("/v2/models/fake/infer", json=body).json()
    assert out["model_name"] == "fake" and out["id"] == "req-7"
    tensors = {o["name"]: o for o in out["outputs"]}
    assert tensors["label"] == {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["positive", "negative"]}
    assert tensors["logits"]["shape"] == [2, 3] and tensors["logits"]["data"] == [1, 2, -7, 3, 0, -8]
    assert tensors["score"]["datatype"] == "FP32" and 0.5 < tensors["score"]["data"][0] < 1
    # only the outputs asked for, in that order; [n, 1] shapes with nested data are read too
    nested = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [["r2 w0"]]}],
              "outputs": [{"name": "logits"}, {"name": "label"}]}
    out = client.post("/v2/models/fake/infer", json=nested).json()
    assert [o["name"] for o in out["outputs"]] == ["logits", "label"] and "id" not in out


def test_predict_is_pipeline_shaped(client):
    one = client.post("/predict", json={"texts": ["r0 w5", "r5 w0"]}).json()["predictions"]
    assert [p["label"] for p in one] == ["positive", "negative"] and set(one[0]) == {"label", "score"}
    two = client.post("/predict", json={"texts": ["r0 w5"], "top_k": 2}).json()["predictions"]
    assert [p["label"] for p in two[0]] == ["positive", "negative"]
    every = client.post("/predict", json={"texts": ["r0 w5"], "top_k": None}).json()["predictions"]
    assert len(every[0]) == 3 and abs(sum(p["score"] for p in every[0]) - 1) < 1e-5
    pairs = client.post("/predict", json={"texts": ["r1 w0"], "text_pairs": ["b"]})
    assert pairs.status_code == 200 and client.predictor.calls[-1][0] == [("r1 w0", "b")]


def test_a_model_trained_on_single_texts_refuses_pairs():
    # the predictor scores a pair as one joined input and warns in Python; a client never sees that warning
    predictor = FakePredictor()
    predictor.trained_on_pairs = False
    with TestClient(build_app(predictor, max_request_rows=4, max_body_bytes=2000)) as c:
        assert "text_pair" not in [t["name"] for t in c.get("/v2/models/fake").json()["inputs"]]
        refused = c.post("/predict", json={"texts": ["r1 w0"], "text_pairs": ["b"]})
        assert refused.status_code == 400 and "trained on single texts" in refused.json()["error"]
        v2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["r1 w0"]},
                         {"name": "text_pair", "shape": [1], "datatype": "BYTES", "data": ["b"]}]}
        assert c.post("/v2/models/fake/infer", json=v2).status_code == 400
        assert c.post("/predict", json={"texts": ["r1 w0"]}).status_code == 200
        assert [call[0] for call in predictor.calls] == [["r1 w0"]]  # the refused pairs never reached the model


def test_a_model_trained_on_pairs_refuses_single_texts():
    predictor = FakePredictor()
    predictor.trained_on_pairs = True
    with TestClient(build_app(predictor, max_request_rows=4, max_body_bytes=2000)) as c:
        pair_input = [t for t in c.get("/v2/models/fake").json()["inputs"] if t["name"] == "text_pair"]
        assert pair_input and pair_input[0]["optional"] is False
        refused = c.post("/predict", json={"texts": ["r1 w0"]})
        assert refused.status_code == 400 and "trained on sentence pairs" in refused.json()["error"]
        v2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["r1 w0"]}]}
        assert c.post("/v2/models/fake/infer", json=v2).status_code == 400
        assert c.post("/predict", json={"texts": ["r1 w0"], "text_pairs": ["b"]}).status_code == 200
        assert [call[0] for call in predictor.calls] == [[("r1 w0", "b")]]  # only the pairs reached the model


@pytest.mark.parametrize("path, body, status, message", [
    ("/predict", b"{not json", 400, "not valid JSON"),
    ("/predict", b"", 400, "body is empty"),
    ("/predict", b"[1, 2]", 400, "must be a JSON object"),
    ("/predict", {"text": ["x"]}, 400, "unknown field 'text'"),
    ("/predict", {"texts": "x"}, 400, "texts must be a list"),
    ("/predict", {"texts": []}, 400, "texts is empty"),
    ("/predict", {"texts": ["x", 3]}, 400, "texts[1] must be a string"),
    ("/predict", b'{"texts": ["x", "bad \\ud800"]}', 400, "texts[1] is not valid Unicode (a lone surrogate at character 4)"),
    ("/predict", b'{"texts": ["x"], "text_pairs": ["\\udfff"]}', 400, "text_pairs[0] is not valid Unicode"),
    ("/predict", {"texts": ["x"], "top_k": 0}, 400, "top_k must be"),
    # an empty text was answered as the special tokens alone ("positive 0.964" from SST-2's final)
    ("/predict", {"texts": ["x", " "]}, 400, "texts[1] is an empty text"),
    ("/predict", {"texts": ["\u200b\u00ad\u0301"]}, 400, "texts[0] is an empty text (or invisible characters only)"),
    ("/predict", {"texts": ["\u3164\u2800"]}, 400, "texts[0] is an empty text"),  # drawn blank, read as [UNK]
    ("/v2/models/fake/infer", infer_body(["a", ""]), 400, "'text' input's element 1 is an empty text"),
    ("/predict", {"texts": ["x"], "text_pairs": ["a", "b"]}, 400, "one pair per text"),
    ("/predict", {"texts": ["x"] * 5}, 413, "at most 4 per request"),
    ("/predict", {"texts": ["x" * 3000]}, 413, "--max-body-bytes"),
    ("/v2/models/fake/infer", {"inputs": []}, 400, '"inputs" must be'),
    ("/v2/models/fake/infer", {"inputs": [{"name": "txt"}]}, 400, 'unknown input "txt"'),
    ("/v2/models/fake/infer", {"inputs": [{"name": "text_pair", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
     400, "no 'text' input"),
    ("/v2/models/fake/infer", infer_body(["a"]) | {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32",
                                                               "data": [1.0]}]}, 400, 'datatype must be "BYTES"'),
    ("/v2/models/fake/infer", {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]},
     400, "holds 2 elements but data has 1"),
    ("/v2/models/fake/infer", infer_body(["a"], outputs=[{"name": "probs"}]), 400, 'unknown output "probs"'),
    # json.loads kept the last of two keys ("bad" was answered for a client that sent both), and answered a twice-asked
    # output twice
    ("/predict", b'{"texts": ["good"], "texts": ["bad"]}', 400, "gives 'texts' twice in one object"),
    ("/v2/models/fake/infer", infer_body(["a"], outputs=[{"name": "label"}, {"name": "label"}]), 400,
     "output 'label' is asked for twice"),
    ("/v2/models/fake/infer", infer_body(["a"], outputs=[{"name": "score", "parameters": "x"}]), 400,
     "outputs[0].parameters must be an object, not a string"),
    ("/v2/models/fake/infer", b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\\ud800"]}]}',
     400, "inputs[0] (text) data[0] is not valid Unicode"),
    ("/v2/models/fake/infer", infer_body(["a"] * 5), 413, "at most 4"),
    # fields the protocol does not have, or of another type, were ignored (a non-string id was echoed back)
    ("/v2/models/fake/infer", infer_body(["a"]) | {"input": []}, 400, "unknown field 'input' in the request"),
    ("/v2/models/fake/infer", infer_body(["a"], id=7), 400, '"id" must be a string, not a number'),
    ("/v2/models/fake/infer", infer_body(["a"]) | {"parameters": []}, 400, '"parameters" must be an object'),
    ("/v2/models/fake/infer", infer_body(["a"]) | {"parameters": {"binary_data_output": True}}, 400,
     "binary_data_output is not supported"),
    ("/v2/models/fake/infer", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"],
                                           "dtype": "str"}]}, 400, "inputs[0] (text): unknown field 'dtype'"),
    ("/v2/models/other/infer", infer_body(["a"]), 404, "unknown model 'other'"),
    ("/v1/models/fake:predict", {"instances": []}, 404, "no endpoint"),
])
def test_bad_requests_are_one_line_json_errors(client, path, body, status, message):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = client.post(path, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error
    assert client.predictor.calls == []  # nothing bad reaches the model


def test_a_body_nested_too_deeply_is_a_400():
    predictor = FakePredictor()
    with TestClient(build_app(predictor)) as c:
        for path in ("/predict", "/v2/models/fake/infer"):
            response = c.post(path, content=b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
            assert response.status_code == 400 and "nested too deeply" in response.json()["error"], response.text
    assert predictor.calls == []


@pytest.mark.parametrize("number, message", [
    ("9" * 5000, "holds a number of 5000 digits; no field takes a number that large"),
    ("-" + "9" * 5000, "holds a number of 5000 digits"),
    ("NaN", "NaN is not a JSON number"), ("Infinity", "Infinity is not a JSON number"),
    ("-Infinity", "-Infinity is not a JSON number")])
def test_numbers_json_has_not_are_a_400_not_a_model_failure(number, message, caplog):
    # a 5000-digit top_k was a 500 (int()'s "Exceeds the limit (4300 digits)", a ValueError parse_json let through),
    # logged with a traceback and counted as the model's failure in /metrics
    predictor = FakePredictor()
    with TestClient(build_app(predictor)) as c:
        for path, body in (("/predict", '{"texts": ["a"], "top_k": %s}'),
                           ("/v2/models/fake/infer", '{"inputs": [{"name": "text", "shape": [%s], '
                                                     '"datatype": "BYTES", "data": ["a"]}]}')):
            response = c.post(path, content=(body % number).encode())
            assert response.status_code == 400, response.text
            assert message in response.json()["error"] and "\n" not in response.json()["error"]
        metrics = c.get("/metrics").text
    assert 'kind="server"' not in metrics and "Traceback" not in caplog.text
    assert predictor.calls == []


def test_wrong_method_and_unknown_model_metadata(client):
    assert client.get("/predict").status_code == 405 and "error" in client.get("/predict").json()
    assert client.get("/v2/models/nope").json() == {"error": "unknown model 'nope'; this server serves 'fake'"}


def test_metrics_expose_counts_latency_and_batches(client):
    client.post("/predict", json={"texts": ["r1 w1", "r2 w2"]})
    client.post("/predict", json={"texts": []})
    text = client.get("/metrics").text
    assert 'deploykit_requests_total{code="200",endpoint="/predict"} 1.0' in text
    assert 'deploykit_requests_total{code="400",endpoint="/predict"} 1.0' in text
    assert 'deploykit_request_errors_total{endpoint="/predict",kind="client"} 1.0' in text
    assert 'deploykit_request_latency_seconds_count{endpoint="/predict"} 2.0' in text
    assert "deploykit_batch_rows_sum 2.0" in text and "deploykit_queue_depth 0.0" in text


def test_a_model_failure_is_a_500_json_error_and_logged(caplog):
    predictor = FakePredictor(fail_on="boom")
    with TestClient(build_app(predictor)) as c:
        response = c.post("/predict", json={"texts": ["r1 boom"]})
        assert response.status_code == 500
        assert response.json() == {"error": "inference failed: ValueError: cannot score 'boom'"}
        assert "Traceback" in caplog.text and "POST /predict failed" in caplog.text
        assert c.post("/predict", json={"texts": ["r1 w1"]}).status_code == 200  # the server goes on
        assert 'deploykit_request_errors_total{endpoint="/predict",kind="server"} 1.0' in c.get("/metrics").text


def _concurrent(c, n: int, rows: int = 2) -> list[dict]:
    """n clients at once, client i sending rows "r<i> w<j>"; returns each client's response body."""
    answers: list[dict | None] = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        texts = [f"r{i} w{j}" for j in range(rows)]
        answers[i] = c.post("/v2/models/fake/infer", json=infer_body(texts, id=str(i))).json()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


def _assert_own_rows(answers: list[dict], rows: int) -> None:
    for i, answer in enumerate(answers):
        assert answer["id"] == str(i)
        logits = np.array(answer["outputs"][2]["data"]).reshape(rows, 3)
        assert logits[:, 0].tolist() == [i] * rows and logits[:, 1].tolist() == list(range(rows))


def test_concurrent_requests_are_batched_and_each_caller_gets_its_rows():
    predictor = FakePredictor(delay=0.2)  # while one call runs, the others queue up
    with TestClient(build_app(predictor, max_batch=32, max_wait_ms=50)) as c:
        answers = _concurrent(c, 8)
        metrics = c.get("/metrics").text
    _assert_own_rows(answers, 2)
    senders = [{row.split()[0] for row in rows} for rows, _ in predictor.calls]
    assert max(len(s) for s in senders) > 1, senders  # rows of several requests shared a call
    assert sum(len(rows) for rows, _ in predictor.calls) == 16 and len(predictor.calls) < 8
    assert all(batch_size == 32 for _, batch_size in predictor.calls)
    assert "deploykit_batch_requests_count" in metrics


def test_batch_dependent_graphs_are_never_batched_across_requests():
    predictor = FakePredictor(batch_invariant=False, delay=0.05)
    with TestClient(build_app(predictor, max_batch=32, max_wait_ms=50)) as c:
        answers = _concurrent(c, 6, rows=3)
    _assert_own_rows(answers, 3)
    assert len(predictor.calls) == 6
    assert all(len({row.split()[0] for row in rows}) == 1 and bs == 1 for rows, bs in predictor.calls)


def test_max_batch_caps_a_call_and_a_failing_request_does_not_fail_its_neighbours():
    predictor = FakePredictor(fail_on="boom")

    async def main():
        batcher = Batcher(lambda rows: predictor.logits(rows), max_batch=4, max_wait_s=0.0)
        batcher.start()
        jobs = [batcher.submit([f"r{i} w0", f"r{i} w1"]) for i in range(3)] + [batcher.submit(["r9 boom"])]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(main())
    assert [r[:, 0].tolist() for r in results[:3]] == [[0, 0], [1, 1], [2, 2]]
    assert isinstance(results[3], ValueError)
    assert max(len(rows) for rows, _ in predictor.calls) <= 4


def test_only_a_lone_one_row_request_runs_on_the_event_loop_thread():
    threads = []

    def infer(rows):
        threads.append((len(rows), threading.current_thread().name))
        return np.zeros((len(rows), 2), dtype=np.float32)

    async def main():
        loop_thread = threading.current_thread().name
        batcher = Batcher(infer, max_batch=32, max_wait_s=0.0)
        batcher.start()
        await batcher.submit(["one"])                        # alone, one row: no hand-off
        await batcher.submit(["a", "b"])                     # two rows: the worker thread
        batcher.arriving += 1                                # another request is being received
        await batcher.submit(["one"])
        batcher.arriving -= 1
        await asyncio.gather(*(batcher.submit([f"r{i}"]) for i in range(3)))  # queued together
        await batcher.stop()
        return loop_thread

    loop_thread = asyncio.run(main())
    assert threads[0] == (1, loop_thread)
    assert all(name.startswith("deploykit-infer") for _, name in threads[1:]), threads


def test_two_workers_run_two_calls_at_once_and_each_caller_still_gets_its_rows():
    both_in = threading.Barrier(2, timeout=20)  # passes only when two calls are inside the model together
    calls = []

    def infer(rows):
        calls.append(list(rows))
        if len(calls) <= 2:
            both_in.wait()
        return np.array([_code(row) for row in rows], dtype=np.float32)

    async def main(workers):
        batcher = Batcher(infer, max_batch=2, max_wait_s=0.0, workers=workers)
        batcher.start()
        jobs = [batcher.submit([f"r{i} w0", f"r{i} w1"]) for i in range(4)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(main(2))
    assert [r[:, :2].tolist() for r in results] == [[[i, 0], [i, 1]] for i in range(4)]
    assert sorted(tuple(c) for c in calls) == sorted((f"r{i} w0", f"r{i} w1") for i in range(4))
    calls.clear()
    both_in.reset()
    one = asyncio.run(main(1))  # one worker: the first call waits for a second that never comes alongside
    assert isinstance(one[0], threading.BrokenBarrierError)


def test_stop_answers_the_calls_in_flight_on_every_worker():
    def infer(rows):
        time.sleep(0.2)
        return np.array([_code(row) for row in rows], dtype=np.float32)

    async def main():
        batcher = Batcher(infer, max_batch=1, max_wait_s=0.0, workers=2)
        batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit([f"r{i} w0"])) for i in range(5)]
        await asyncio.sleep(0.05)  # two calls are in the model
        await batcher.stop()
        answered = await asyncio.wait_for(asyncio.gather(*jobs), 5)  # answered, not left pending by the stop
        return [a[0, 0] for a in answered]

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def test_each_worker_thread_tokenizes_with_its_own_tokenizer():
    from deploykit.serve.app import _per_thread

    class Tokenizing(FakePredictor):
        def __init__(self):
            super().__init__()
            self.tokenizer = {"vocab": ["[PAD]"]}  # stands in for a fast tokenizer (deep-copied per thread)
            self.seen = []

        def logits(self, inputs, batch_size: int = 32):
            self.seen.append((threading.current_thread().name, id(self.tokenizer)))
            return super().logits(inputs, batch_size)

    predictor = Tokenizing()
    infer = _per_thread(predictor, 8)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: infer([f"r{i} w0"]), range(8)))
    # copies record on the shared list; one tokenizer per thread, none of them the original
    tokenizers = {}
    for thread, tok in predictor.seen:
        tokenizers.setdefault(thread, set()).add(tok)
    assert all(len(ids) == 1 for ids in tokenizers.values())
    assert len({next(iter(ids)) for ids in tokenizers.values()}) == len(tokenizers)
    assert id(predictor.tokenizer) not in {tok for _, tok in predictor.seen}


def test_the_listening_socket_is_tcp_so_replies_go_out_at_once():
    from deploykit.serve import _bind

    with _bind("127.0.0.1", 0) as sock:  # asyncio sets TCP_NODELAY only where proto is IPPROTO_TCP
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
        sock.listen()
        with pytest.raises(UserError, match="cannot listen there"):
            _bind("127.0.0.1", sock.getsockname()[1])


@pytest.mark.parametrize("text, size", [("1MB", 1_000_000), ("512KB", 512_000), ("1MiB", 1 << 20), ("2048", 2048)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1XB", "-1", "0"])
def test_parse_size_refuses(text):
    with pytest.raises(UserError, match="--max-body-bytes"):
        parse_size(text)


# --- the real `deploykit serve` process -------------------------------------------------------------------

# `deploykit serve` with deploykit.predictor.load replaced by a FakePredictor whose every call takes 1 s
FAKE_SERVE = """
import sys, types
sys.path.insert(0, {tests!r})
from test_serve import FakePredictor
sys.modules["deploykit.predictor"] = types.SimpleNamespace(load=lambda path, **kw: FakePredictor(delay=1.0),
                                                           is_causal_lm=lambda artifact: False)
from deploykit.cli import main
sys.argv = ["deploykit", "serve", {folder!r}, "--port", "0", *{extra!r}]
main()
"""


class Server:
    """A `deploykit serve` subprocess: its URL from the startup line, its stderr kept (drained by a thread)."""

    def __init__(self, argv: list[str], timeout: float = 120):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.url = ""
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"http://[\d.]+:\d+", line)
            if found:
                self.url = found.group(0)
                break
        assert self.url, f"the server did not start: {''.join(self.lines)}"
        self.started = len(self.lines)  # what came before the port opened (serve's one-row probe) is not waited for
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Until a line of the server's stderr since it started serving holds `text` (the drain thread appends them)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)[self.started:]):
            assert time.monotonic() < deadline, f"no {text!r} from the server: {''.join(self.lines)}"
            time.sleep(0.01)

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_sigterm_lets_a_request_in_the_model_finish_then_exits_0(tmp_path):
    tests = str(Path(__file__).resolve().parent)
    (tmp_path / "config.json").write_text("{}")  # a folder load_artifact takes; the fake predictor ignores it
    with Server([sys.executable, "-c", FAKE_SERVE.format(tests=tests, folder=str(tmp_path), extra=[])]) as server:
        with httpx.Client(base_url=server.url) as keep_alive:  # a kept-alive connection answers again and again
            assert all(keep_alive.get("/v2/health/live").status_code == 200 for _ in range(10))
        # (that replies are not held back by Nagle is asserted without a clock, on the socket itself:
        # test_the_listening_socket_is_tcp_so_replies_go_out_at_once; a timed assertion failed under load)
        answer: dict = {}

        def slow():  # the fake model takes 1 s: SIGTERM lands while it computes
            answer["response"] = httpx.post(f"{server.url}/predict", json={"texts": ["r4 w2"]}, timeout=30)

        client = threading.Thread(target=slow)
        client.start()
        server.wait_for("fake model: scoring")  # SIGTERM while the request is in the model, however busy the box
        code = server.stop()
        client.join(30)
    assert code == 0, "".join(server.lines)
    assert answer["response"].status_code == 200
    assert answer["response"].json()["predictions"][0]["label"] == "negative"  # logits [4, 2, -5]
    assert "serve: stopped" in "".join(server.lines) and "error" not in "".join(server.lines)


@pytest.mark.parametrize("second_sigterm", [False, True])
def test_a_slow_client_cannot_hold_shutdown_open(tmp_path, second_sigterm):
    tests = str(Path(__file__).resolve().parent)
    (tmp_path / "config.json").write_text("{}")
    timeout = ["--shutdown-timeout", "120" if second_sigterm else "1"]  # forced by the second SIGTERM, or by 1 s
    with Server([sys.executable, "-c", FAKE_SERVE.format(tests=tests, folder=str(tmp_path), extra=timeout)]) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"texts\": [")  # 11 of the 100 bytes, then silence
            time.sleep(0.5)
            start = time.perf_counter()
            server.proc.send_signal(signal.SIGTERM)
            if second_sigterm:
                time.sleep(0.5)
                server.proc.send_signal(signal.SIGTERM)
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
            code = server.proc.wait(30)
            took = time.perf_counter() - start
        time.sleep(0.3)  # the stderr thread reads the last lines
    log = "".join(server.lines)
    assert code == 143, log
    assert took < 15, took
    assert reply.startswith(b"HTTP/1.1 503") and b"shutting down" in reply, reply
    assert "Traceback" not in log and "1 request cut off" in log, log
    assert ("a second SIGTERM" if second_sigterm else "--shutdown-timeout 1 s") in log, log


def _post_slowly(url: str, path: str, body: bytes, halfway) -> tuple[int, dict]:
    """POST `body` in two halves, calling `halfway()` between them; returns (status, JSON body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        conn.sendall(head + body[:len(body) // 2])
        halfway()
        conn.sendall(body[len(body) // 2:])
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < _length(reply):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def _length(reply: bytes) -> int:
    found = re.search(rb"(?i)content-length:\s*(\d+)", reply.partition(b"\r\n\r\n")[0])
    return int(found.group(1)) if found else 1 << 30


def test_real_server_answers_as_the_predictor_offline_and_drains_on_sigterm(tiny_chain):
    from conftest import sentiment_rows

    from deploykit.predictor import load

    folder = tiny_chain["quantize"]  # the recipe's final artifact: static INT8, padding-free
    offline = load(folder)
    assert offline.batch_invariant
    texts = [text for text, _ in sentiment_rows(24, seed=5)]
    expected, expected_logits = offline(texts), offline.logits(texts)
    # two calls at once on any machine: two threads tokenizing (each its own copy) and running one ORT session
    argv = [sys.executable, "-m", "deploykit.cli", "serve", str(folder), "--port", "0", "--max-wait-ms", "20",
            "--workers", "2"]
    with Server(argv) as server:
        assert f"serve: {folder.name} on ort, batching on" in server.lines[-1]
        assert "2 calls at once" in server.lines[-1]
        answers: dict[int, object] = {}

        def ask(i: int) -> None:  # 12 clients at once, 2 texts each, half on /predict and half on V2 infer
            mine = texts[2 * i:2 * i + 2]
            if i % 2:
                answers[i] = httpx.post(f"{server.url}/predict", json={"texts": mine}, timeout=30).json()
            else:
                answers[i] = httpx.post(f"{server.url}/v2/models/{folder.name}/infer", timeout=30,
                                        json=infer_body(mine, id=f"c{i}")).json()

        clients = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)
        for i, answer in answers.items():
            rows = slice(2 * i, 2 * i + 2)
            if i % 2:
                got = answer["predictions"]
                assert [p["label"] for p in got] == [p["label"] for p in expected[rows]]
                assert np.allclose([p["score"] for p in got], [p["score"] for p in expected[rows]], atol=1e-5)
            else:
                assert answer["id"] == f"c{i}"
                logits = np.array(answer["outputs"][2]["data"], dtype=np.float32).reshape(2, -1)
                np.testing.assert_allclose(logits, expected_logits[rows], atol=1e-5)
        assert len(answers) == 12

        # SIGTERM while a request is in flight (its body half sent): it is answered, then the process exits 0
        body = json.dumps({"texts": texts[:3]}).encode()
        status, reply = _post_slowly(server.url, "/predict", body, halfway=lambda: (
            time.sleep(0.3), server.proc.send_signal(signal.SIGTERM), time.sleep(0.5)))
        assert status == 200 and reply["predictions"] == expected[:3]
        assert server.proc.wait(30) == 0, "".join(server.lines)
    assert "serve: stopped" in "".join(server.lines)


def test_dynamic_int8_is_served_row_by_row_as_offline(tiny_chain):
    from deploykit.predictor import load

    predictor = load(tiny_chain["dynamic"])
    assert not predictor.batch_invariant
    texts = ["the film was good", "a dreadful and boring plot", "fine"]
    with TestClient(build_app(predictor)) as c:
        meta = c.get(f"/v2/models/{predictor.name}").json()
        out = c.post(f"/v2/models/{predictor.name}/infer", json=infer_body(texts)).json()
    assert meta["parameters"]["batching"] is False
    logits = np.array(out["outputs"][2]["data"], dtype=np.float32).reshape(3, -1)
    np.testing.assert_allclose(logits, predictor.logits(texts), atol=1e-6)


def test_a_bad_folder_is_one_line_exit_2(tmp_path, tiny_llama):
    from typer.testing import CliRunner

    from deploykit.cli import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path / "missing"), "--port", "0"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output
    causal = CliRunner().invoke(app, ["serve", str(tiny_llama), "--port", "0"])
    assert causal.exit_code == 2 and "a causal LM; deploykit serve takes text and token classifiers" in causal.output
    bad_size = CliRunner().invoke(app, ["serve", str(tmp_path), "--max-body-bytes", "lots"])
    assert bad_size.exit_code == 2 and "--max-body-bytes 'lots'" in bad_size.output


@pytest.mark.parametrize("cores, fmt, workers, threads, expected", [
    (2, "onnx", None, None, (2, 1)),       # two single-threaded calls at once: both cores under load
    (1, "onnx", None, None, (1, 1)),
    (16, "onnx", None, None, (2, 7)),      # every core but the event loop's, shared by the two calls
    (2, "onnx", None, 2, (2, 2)),          # --threads is per call
    (2, "onnx", 1, None, (1, 1)),
    (16, "openvino", None, None, (1, 15)),  # one call at a time: it gets every core but one
])
def test_calls_at_once_and_threads_per_call_follow_the_cores_and_the_runtime(cores, fmt, workers, threads, expected,
                                                                             monkeypatch, tmp_path):
    import deploykit.hardware
    import deploykit.predictor
    import deploykit.serve.app
    from deploykit.artifact import Artifact
    from deploykit.serve import serve

    asked = []

    def fake_build_app(predictor, **options):
        asked.append((options["workers"], predictor.threads))
        raise UserError("stop here: only the thread and call counts are under test")

    class Loaded(FakePredictor):  # answers the one row serve sends through a model before it opens the port
        def __init__(self, threads):
            super().__init__()
            self.threads = threads

    monkeypatch.setattr(deploykit.hardware, "cores", lambda: cores)
    monkeypatch.setattr(deploykit.predictor, "load", lambda folder, runtime="auto", threads=None: Loaded(threads))
    monkeypatch.setattr(deploykit.predictor, "is_causal_lm", lambda artifact: False)
    monkeypatch.setattr("deploykit.artifact.load_artifact", lambda folder: Artifact(tmp_path, {"format": fmt}))
    monkeypatch.setattr(deploykit.serve.app, "build_app", fake_build_app)
    with pytest.raises(UserError, match="stop here"):
        serve(tmp_path, threads=threads, workers=workers)
    assert asked == [expected]


def test_a_model_that_cannot_answer_is_refused_before_the_port_opens(tiny_chain, tmp_path, monkeypatch):
    # a config.json naming 3 labels beside a graph of dynamic width: every request was a 500 with a traceback
    from deploykit.serve import serve

    def no_port(*args, **kwargs):
        raise AssertionError("the port was bound for a model that cannot answer")

    monkeypatch.setattr("deploykit.serve._bind", no_port)
    monkeypatch.setattr("deploykit.evaluate.predict",  # what a runtime of dynamic output width answers
                        lambda predict, split, *args, **kwargs: np.zeros((len(split.texts), 3), np.float32))
    with pytest.raises(UserError, match="the model scores 3 classes but its config.json names 2 labels"):
        serve(tiny_chain["quantize"], workers=1)


def test_more_calls_at_once_than_the_runtime_takes_is_one_line(monkeypatch, tmp_path):
    from deploykit.artifact import Artifact
    from deploykit.serve import serve

    monkeypatch.setattr("deploykit.artifact.load_artifact", lambda folder: Artifact(tmp_path, {"format": "openvino"}))
    monkeypatch.setattr("deploykit.predictor.is_causal_lm", lambda artifact: False)
    with pytest.raises(UserError, match="--workers 2: runtime openvino runs one model call at a time here; use "
                                        "--workers 1 .*torch, torch-bf16, ort"):
        serve(tmp_path, workers=2)
