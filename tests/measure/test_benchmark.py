"""deploykit/measure/benchmark.py, runtimes.py and footprint.py on a tiny BERT (PyTorch and ONNX) with --quick settings."""

import json
import os
import tempfile

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, write_task
from tiny_onnx import export_tiny_onnx

from deploykit.artifact import load_artifact
from deploykit.config import BenchConfig, DataConfig
from deploykit.data import load_task
from deploykit.evaluate import evaluate_artifact
from deploykit.measure.bench_plan import Settings, Subject, plan_rows
from deploykit.measure.benchmark import measure
from deploykit.measure.footprint import parameter_count, peak_memory, size_mb
from deploykit.models import count_parameters
from deploykit.runtimes import plan

GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny PyTorch artifact, its ONNX export and the test split of a tiny task, built once."""
    root = tmp_path_factory.mktemp("bench")
    model = make_tiny_model(root / "bert", "bert", seed=3)
    onnx = export_tiny_onnx(model, root / "onnx")
    split = load_task(DataConfig(path=str(write_task(root / "task")))).test
    return load_artifact(model), load_artifact(onnx), split


@pytest.fixture(scope="module")
def measured(tiny):
    torch_art, onnx_art, split = tiny
    settings = Settings.from_config(BenchConfig(quick=True, targets=["cpu", "edge", "gpu"]))
    return measure([Subject("torch", torch_art), Subject("onnx", onnx_art)], split, settings, max_length=32)


def test_plan_picks_runtimes_by_format_and_target():
    assert plan("pytorch", "cpu", None) == (["torch", "torch-bf16"], None)
    assert plan("onnx", "edge", None) == (["ort"], None)
    assert plan("onnx", "gpu", None) == (["ort-cuda"], None)
    runtimes, note = plan("tensorrt", "cpu", None)
    assert runtimes == ["tensorrt"] and "runs on target gpu" in note
    runtimes, note = plan("onnx", "cpu", ["torch"])
    assert runtimes == ["torch"] and "reads a onnx artifact" in note
    assert plan("onnx", "cpu", ["torch", "ort", "ort-cuda"]) == (["ort"], None)
    # OpenVINO reads the same ONNX folders on the CPU targets, when bench.runtimes names it
    assert plan("onnx", "edge", ["ort", "openvino"]) == (["ort", "openvino"], None)
    runtimes, note = plan("onnx", "gpu", ["openvino"])
    assert runtimes == ["openvino"] and "runs on target cpu or edge" in note


def test_one_row_per_artifact_runtime_target(measured):
    keys = {(r["name"], r["runtime"], r["target"]) for r in measured["rows"]}
    assert len(keys) == len(measured["rows"]) == 9
    assert keys == {("torch", rt, t) for rt in ("torch", "torch-bf16") for t in ("cpu", "edge", "gpu")} | {
        ("onnx", "ort", "cpu"), ("onnx", "ort", "edge"), ("onnx", "ort-cuda", "gpu")}
    assert len({frozenset(r) for r in measured["rows"]}) == 1  # measured and skipped rows share one schema


@pytest.mark.skipif(GPU, reason="checks the skip note on a machine without a GPU")
def test_gpu_rows_are_skipped_with_a_note_not_an_error(measured):
    gpu = [r for r in measured["rows"] if r["target"] == "gpu"]
    assert gpu and all(r["status"] == "skipped" and "no CUDA GPU" in r["note"] for r in gpu)
    assert all(r["latency_ms"] is None and r["accuracy"] is None for r in gpu)


def test_cpu_rows_hold_every_measure(measured):
    cpu = [r for r in measured["rows"] if r["target"] in ("cpu", "edge")]
    assert all(r["status"] == "ok" for r in cpu)
    for r in cpu:
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["n"] == 10
        assert set(r["throughput"]) == ({"1", "8", "32"} if r["target"] == "cpu" else {"1", "8"})
        # each block's figure is kept (--quick: one throughput block per batch size, one latency block)
        assert set(r["throughput_blocks"]) == set(r["throughput"]) and all(
            len(v) == 1 and v[0] > 0 for v in r["throughput_blocks"].values())
        assert len(r["latency_block_p50_ms"]) == 1 and r["latency_block_p50_ms"][0] > 0
        assert all(v > 0 for v in r["throughput"].values())
        assert r["threads"] == (1 if r["target"] == "edge" else measured["method"]["cores"])
        assert r["model_rss_mb"] is not None and r["memory_method"].startswith("in-process")
        assert 0 <= r["accuracy"] <= 100 and r["eval_n"] == 32 and r["eval_batch"] == 64  # float graphs: batched
    # ORT rows are timed as deployed: spinning on, each block opened by a pause that outlasts the spin tail
    assert measured["method"]["ort_spinning"] is True and measured["method"]["switch_pause_ms"] == 50


def test_every_block_waits_for_the_previous_rows_idle_threads(monkeypatch):
    from deploykit.measure import benchmark
    from deploykit.measure.bench_plan import BLOCK_WARMUP, SWITCH_PAUSE_S

    events, out = [], []
    monkeypatch.setattr(benchmark.time, "sleep", lambda s: events.append(("pause", s)))
    benchmark._timed(lambda call: events.append(("call", call)), [1, 2, 3], out)
    # ORT's idle threads spin ~30 ms after a call on 2 cores: the pause must come first and outlast that
    assert events[0] == ("pause", SWITCH_PAUSE_S) and SWITCH_PAUSE_S >= 0.03
    assert events[1:] == [("call", c) for c in [1, 2, 3][:BLOCK_WARMUP] + [1, 2, 3]] and len(out) == 3


def test_accuracy_matches_an_independent_evaluation(tiny, measured):
    torch_art, onnx_art, split = tiny
    for art, runtime in ((torch_art, "torch"), (onnx_art, "ort")):
        expected = evaluate_artifact(art, split.head(32), max_length=32)
        row = next(r for r in measured["rows"] if r["runtime"] == runtime and r["target"] == "cpu")
        assert (row["accuracy"], row["macro_f1"]) == (expected["accuracy"], expected["macro_f1"])


def test_size_and_parameters(tiny):
    torch_art, onnx_art, _ = tiny
    from transformers import AutoModelForSequenceClassification

    params = count_parameters(AutoModelForSequenceClassification.from_pretrained(torch_art.path))
    assert parameter_count(torch_art) == params
    # ONNX counts initializers: the same weights, give or take constants the exporter folds in
    assert abs(parameter_count(onnx_art) - params) / params < 0.01
    assert size_mb(torch_art) == round((torch_art.path / "model.safetensors").stat().st_size / 2**20, 2)
    assert size_mb(onnx_art) == round(onnx_art.onnx_path.stat().st_size / 2**20, 2)


def test_tensorrt_artifact_is_skipped_without_tensorrt(tiny, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here: the engine path runs for real")
    except ImportError:
        pass
    folder = tmp_path / "trt"
    folder.mkdir()
    (folder / "model.engine").write_bytes(b"\0" * 1024)
    (folder / "manifest.json").write_text(json.dumps({"stage": "export", "format": "tensorrt"}))
    settings = Settings.from_config(BenchConfig(quick=True, targets=["cpu", "gpu"]))
    rows = plan_rows([Subject("trt", load_artifact(folder))], settings)
    assert [(r.runtime, r.target) for r in rows] == [("tensorrt", "cpu"), ("tensorrt", "gpu")]
    assert "runs on target gpu" in rows[0].skip
    assert "CUDA" in rows[1].skip or "tensorrt package" in rows[1].skip


def test_peak_memory_in_a_fresh_process(tiny, tmp_path, monkeypatch):
    _, onnx_art, split = tiny
    # the child gets its spec on stdin: no file in the temp folder that a killed bench would leave behind
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    mem = peak_memory(onnx_art, "ort", threads=1, device="cpu", batch=split.head(8), max_length=32)
    assert mem["peak_rss_mb"] > mem["model_rss_mb"] > 0
    # a fresh process: far below the test process, which holds torch, transformers and several models
    assert mem["model_rss_mb"] < 200 and mem["memory_method"].startswith("subprocess")


def test_latency_texts_are_the_same_for_every_artifact(tiny):
    from deploykit.measure.benchmark import Inputs

    torch_art, onnx_art, split = tiny
    inputs = Inputs(split, Settings.from_config(BenchConfig(quick=True)), max_length=32)
    a, b = inputs.singles(torch_art), inputs.singles(onnx_art)
    assert len(a) == 10 and all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    # batch 1 is never padded: every single holds its sentence at its natural length
    assert all(x["attention_mask"].all() for x in a)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to tell cpu from edge")
def test_each_target_runs_with_its_own_thread_count(tiny, monkeypatch):
    import deploykit.measure.benchmark as bench

    torch_art, _, split = tiny
    seen, real = set(), bench.load_runtime

    def spy(*args, **kwargs):
        loaded = real(*args, **kwargs)
        inner = loaded.predict
        loaded.predict = lambda batch: (seen.add(torch.get_num_threads()), inner(batch))[1]
        return loaded

    monkeypatch.setattr(bench, "load_runtime", spy)
    before = torch.get_num_threads()
    # edge first: the model loaded for the edge row is reused by the cpu row and must not keep 1 thread
    settings = Settings.from_config(BenchConfig(quick=True, targets=["edge", "cpu"], runtimes=["torch"]))
    rows = measure([Subject("torch", torch_art)], split, settings, max_length=32)["rows"]
    assert [r["threads"] for r in rows] == [1, len(os.sched_getaffinity(0))]
    assert seen == {1, len(os.sched_getaffinity(0))}
    assert torch.get_num_threads() == before  # the caller's setting comes back


def _machine(monkeypatch, cuda: bool, providers: list[str], tensorrt: bool):
    """Pretend this machine has (or lacks) CUDA, onnxruntime-gpu's CUDA provider and the tensorrt package."""
    import sys
    import types

    import onnxruntime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(providers))
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt") if tensorrt else None)


@pytest.mark.parametrize("cuda, providers, tensorrt, expect", [
    (False, ["CPUExecutionProvider"], False,
     {"ort-cuda": "no CUDA GPU", "tensorrt": "no CUDA GPU", "torch-gpu": "no CUDA GPU"}),
    (True, ["CPUExecutionProvider"], False,   # CUDA, but the CPU onnxruntime wheel and no TensorRT
     {"ort-cuda": "install onnxruntime-gpu", "tensorrt": "tensorrt package is not installed", "torch-gpu": None}),
    (True, ["CUDAExecutionProvider", "CPUExecutionProvider"], True, {"ort-cuda": None, "tensorrt": None,
                                                                      "torch-gpu": None})])
def test_gpu_runtimes_say_what_this_machine_lacks(cuda, providers, tensorrt, expect, monkeypatch):
    from deploykit.runtimes import unavailable

    _machine(monkeypatch, cuda, providers, tensorrt)
    got = {"ort-cuda": unavailable("ort-cuda", "gpu"), "tensorrt": unavailable("tensorrt", "gpu"),
           "torch-gpu": unavailable("torch", "gpu")}
    for runtime, reason in expect.items():
        assert (got[runtime] is None) if reason is None else (reason in got[runtime]), (runtime, got[runtime])
    assert unavailable("ort", "cpu") is None and unavailable("torch", "edge") is None


@pytest.mark.parametrize("native", [True, False])
def test_bf16_row_says_when_bf16_is_emulated(native, monkeypatch):
    import deploykit.hardware as hw
    from deploykit.measure.bench_plan import caveat

    monkeypatch.setattr(hw, "bf16_supported", lambda device=None: native)
    for target in ("cpu", "gpu"):
        note = caveat("torch-bf16", target)
        assert (note is None) is native and (native or "emulated" in note)
    assert caveat("torch", "cpu") is None
