"""The GPU paths on a CUDA machine: bench target gpu, ort-cuda and TensorRT rows, training on CUDA, detection.

Every test here needs torch.cuda.is_available(); on a CPU-only machine the module is skipped (the CPU
side of the same code, with its "no CUDA GPU" skip notes, is tested in test_benchmark.py and
stages/test_bench.py).
"""

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, write_task
from tiny_onnx import export_tiny_onnx

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny PyTorch artifact, its ONNX export and a tiny task, built once."""
    from deploykit.artifact import load_artifact
    from deploykit.config import DataConfig
    from deploykit.data import load_task

    root = tmp_path_factory.mktemp("gpu")
    model = make_tiny_model(root / "bert", "bert", seed=3)
    onnx = export_tiny_onnx(model, root / "onnx")
    task = write_task(root / "task")
    return load_artifact(model), load_artifact(onnx), load_task(DataConfig(path=str(task))).test, task


@pytest.fixture(scope="module")
def measured(tiny):
    from deploykit.config import BenchConfig
    from deploykit.measure.bench_plan import Settings, Subject
    from deploykit.measure.benchmark import measure

    torch_art, onnx_art, split, _ = tiny
    settings = Settings.from_config(BenchConfig(quick=True, targets=["cpu", "gpu"]))
    return measure([Subject("torch", torch_art), Subject("onnx", onnx_art)], split, settings, max_length=32)


def test_hardware_reports_the_gpu():
    import deploykit.hardware as hw

    d = hw.describe()
    assert d["cuda"] == torch.cuda.get_device_name(0)
    assert d["cuda_devices"] >= 1 and d["cuda_memory_gb"] > 0 and d["cuda_version"]
    major = torch.cuda.get_device_capability(0)[0]
    assert d["cuda_capability"].startswith(f"{major}.")
    assert hw.bf16_supported("cuda") is (major >= 8) and d["cuda_bf16_native"] is (major >= 8)
    # the machine's CPU is judged by its own flags, not by the GPU beside it
    cpu_native = "amx_bf16" in hw.cpu_flags() or "avx512_bf16" in hw.cpu_flags()
    assert d["bf16_native"] == hw.bf16_supported("cpu")
    assert cpu_native <= hw.bf16_supported("cpu")
    assert hw.bf16_supported() == hw.bf16_supported("cuda")  # training's device: the GPU


def test_gpu_torch_rows_are_measured(measured):
    gpu = {r["runtime"]: r for r in measured["rows"] if r["target"] == "gpu" and r["format"] == "pytorch"}
    assert set(gpu) == {"torch", "torch-bf16"}
    for r in gpu.values():
        assert r["status"] == "ok" and r["device"] == "cuda", r["note"]
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["n"] == 10
        assert set(r["throughput"]) == {"1", "8", "32"} and all(v > 0 for v in r["throughput"].values())
        assert 0 <= r["accuracy"] <= 100 and r["eval_n"] == 32
        assert "GPU" in r["memory_method"]
    assert gpu["torch-bf16"]["bf16_native"] is (torch.cuda.get_device_capability(0)[0] >= 8)
    # the same weights in fp32 on the GPU and on the CPU classify the same texts alike
    cpu = next(r for r in measured["rows"] if r["target"] == "cpu" and r["runtime"] == "torch")
    assert cpu["status"] == "ok" and cpu["device"] == "cpu"
    assert gpu["torch"]["accuracy"] == cpu["accuracy"]


def test_cpu_rows_on_a_gpu_machine_judge_the_cpu(measured):
    from deploykit.hardware import bf16_supported

    bf16 = next(r for r in measured["rows"] if r["target"] == "cpu" and r["runtime"] == "torch-bf16")
    assert bf16["bf16_native"] is bf16_supported("cpu")
    assert ("emulated here" in (bf16["note"] or "")) is (not bf16_supported("cpu"))


def test_gpu_and_cpu_logits_agree(tiny):
    from deploykit.runtimes import load_runtime

    torch_art, _, split, _ = tiny
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(torch_art.path)
    feed = dict(tok(split.texts[:8], padding=True, return_tensors="np"))
    on_cpu = load_runtime(torch_art, "torch", threads=1, device="cpu").predict(feed)
    on_gpu = load_runtime(torch_art, "torch", threads=1, device="cuda").predict(feed)
    assert on_gpu.dtype == np.float32 and on_gpu.shape == on_cpu.shape == (8, 2)
    assert np.abs(on_gpu - on_cpu).max() < 1e-3  # TF32 may be on for matmuls
    bf16 = load_runtime(torch_art, "torch-bf16", threads=1, device="cuda").predict(feed)
    assert np.abs(bf16 - on_cpu).max() < 5e-2


def test_ort_cuda_row_is_measured_or_says_why_not(measured):
    import onnxruntime as ort

    row = next(r for r in measured["rows"] if r["runtime"] == "ort-cuda")
    assert row["target"] == "gpu"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        # onnxruntime-gpu: measured on the GPU, or skipped because ORT fell back to the CPU
        assert (row["status"] == "ok" and row["device"] == "cuda") or "fell back" in row["note"]
    else:
        assert row["status"] == "skipped" and "CUDAExecutionProvider" in row["note"]
        assert "onnxruntime-gpu" in row["note"]


def test_tensorrt_row_needs_only_the_package_here(tmp_path):
    import importlib.util

    from deploykit.artifact import load_artifact
    from deploykit.config import BenchConfig
    from deploykit.measure.bench_plan import Settings, Subject, plan_rows

    folder = tmp_path / "trt"
    folder.mkdir()
    (folder / "model.engine").write_bytes(b"\0" * 1024)
    (folder / "manifest.json").write_text(json.dumps({"stage": "export", "format": "tensorrt"}))
    rows = plan_rows([Subject("trt", load_artifact(folder))],
                     Settings.from_config(BenchConfig(quick=True, targets=["gpu"])))
    assert [(r.runtime, r.target) for r in rows] == [("tensorrt", "gpu")]
    if importlib.util.find_spec("tensorrt") is None:
        assert "tensorrt package" in rows[0].skip
    else:
        assert rows[0].skip is None


def test_training_arguments_pick_the_gpu(tmp_path, monkeypatch):
    from deploykit.config import TrainConfig
    from deploykit.train.trainer import training_args

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    args = training_args(TrainConfig(), tmp_path / "work")
    assert args.use_cpu is False and args.device.type == "cuda" and args.ddp_backend is None
    assert args.bf16 is (torch.cuda.get_device_capability(0)[0] >= 8)  # bf16: auto


def test_more_ranks_than_gpus_train_on_cpu_with_gloo(tmp_path, monkeypatch):
    from deploykit.train.trainer import train_on_gpu

    monkeypatch.setenv("WORLD_SIZE", str(torch.cuda.device_count() + 1))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(torch.cuda.device_count() + 1))
    assert train_on_gpu() is False
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert train_on_gpu() is True


def test_finetune_trains_on_the_gpu(tiny, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    import deploykit.train.trainer as training
    from deploykit.config import build_recipe
    from deploykit.pipeline import run_stage

    torch_art, _, _, task = tiny
    seen = []
    real = training.build_trainer

    def spy(*args, **kwargs):
        trainer = real(*args, **kwargs)
        seen.append(trainer)
        return trainer

    monkeypatch.setattr(training, "build_trainer", spy)
    import deploykit.stages.finetune as ft

    if hasattr(ft, "build_trainer"):
        monkeypatch.setattr(ft, "build_trainer", spy)
    recipe = build_recipe({"model": {"source": str(torch_art.path)},
                           "data": {"path": str(task), "max_length": 32, "label_names": ["negative", "positive"]},
                           "finetune": {"epochs": 4, "learning_rate": 3e-3, "batch_size": 8, "eval_batch_size": 32,
                                        "warmup_ratio": 0.0, "early_stopping_patience": None,
                                        "logging_steps": 1000, "bf16": "off"}})
    art = run_stage("finetune", recipe, None, tmp_path / "ft")
    assert seen and seen[0].args.device.type == "cuda" and seen[0].args.use_cpu is False
    assert next(seen[0].model.parameters()).is_cuda
    # fp32 on the GPU learns the tiny task as fp32 on the CPU does (stages/test_finetune.py); bf16 autocast
    # (bf16: auto on a GPU) learns it far more slowly at this learning rate, on the CPU too
    assert art.metrics["validation"]["accuracy"] > 60
    # the saved folder is a plain model that loads on the CPU
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft")
    assert next(model.parameters()).device.type == "cpu"


def test_torch_predictor_feeds_a_model_on_the_gpu(tiny):
    from transformers import AutoModelForSequenceClassification

    from deploykit.evaluate import torch_predictor

    torch_art, _, _, _ = tiny
    model = AutoModelForSequenceClassification.from_pretrained(torch_art.path)
    ids = np.ones((2, 6), dtype=np.int64)
    want = torch_predictor(model)({"input_ids": ids})
    got = torch_predictor(model.to("cuda"))({"input_ids": ids})
    assert isinstance(got, np.ndarray) and np.abs(got - want).max() < 1e-3


def test_bench_report_with_cpu_and_gpu_targets(tiny, tmp_path):
    from deploykit.config import build_recipe
    from deploykit.stages.bench import run_many

    torch_art, onnx_art, _, task = tiny
    recipe = build_recipe({"name": "tiny", "data": {"path": str(task), "max_length": 32},
                           "bench": {"quick": True, "baseline": False, "targets": ["cpu", "gpu"]}})
    out = run_many(recipe, [torch_art.path, onnx_art.path], tmp_path / "bench")
    report = json.loads((out / "report.json").read_text())
    assert report["machine"]["cuda"] == torch.cuda.get_device_name(0)
    ok = {(r["runtime"], r["target"]) for r in report["rows"] if r["status"] == "ok"}
    assert {("torch", "gpu"), ("torch-bf16", "gpu"), ("torch", "cpu"), ("ort", "cpu")} <= ok
    assert "cuda" in (out / "report.md").read_text().lower() or "gpu" in (out / "report.md").read_text().lower()


def test_causal_lm_on_the_gpu_decodes_what_it_decodes_on_the_cpu(tiny_llama):
    """A causal LM that just trained on the GPU is scored there (finetune, distill and prune score it in memory):
    the generator feeds its CPU token arrays to the model's device and reads the logits back."""
    from deploykit.llm.generate import TorchGenerator
    from deploykit.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_llama))
    on_cpu = TorchGenerator(load_causal_lm(str(tiny_llama)), tokenizer)
    on_gpu = TorchGenerator(load_causal_lm(str(tiny_llama)).to("cuda"), tokenizer)
    prompts = ["hello there", "a longer prompt with more words in it"]
    want, got = on_cpu.generate(prompts, 6), on_gpu.generate(prompts, 6)
    # later tokens may part at a near-tie (GPU and CPU sum in other orders); the first is the prefill's argmax
    assert got.tokens.shape[0] == 2 and got.tokens.dtype == np.int64
    np.testing.assert_array_equal(got.tokens[:, 0], want.tokens[:, 0])
    ids, mask = np.array([[5, 6, 7, 8]]), np.ones((1, 4), dtype=np.int64)
    logits = on_gpu.logits(ids, mask)
    assert logits.dtype == np.float32 and np.abs(logits - on_cpu.logits(ids, mask)).max() < 1e-3
