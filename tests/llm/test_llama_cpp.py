"""llama.cpp beside deploykit's causal-LM rows (deploykit/llm/llama_cpp_gen.py, the bench's llama.cpp subjects).

A stand-in `llama_cpp` module (put in place of the real one where that is installed) decodes greedily with the tiny Llama's own PyTorch
weights through the documented high-level API (`Llama(model_path, ...)`, `reset()`, `generate(tokens, temp=0)`),
so what is tested is deploykit's side: the prompt ids it hands over, stop ids, per-step timing, batch 1 only,
the rows and the refusals. Where llama-cpp-python is installed, the last tests run the real library.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from deploykit.config import BenchConfig
from deploykit.errors import UserError
from deploykit.llm.generate import TorchGenerator

pytest.importorskip("gguf")

PROMPTS = ["the movie was really good and", "a film", "Review: it was dull"]


class FakeLlama:
    """llama-cpp-python's `Llama` as deploykit calls it, decoding greedily with the source model in PyTorch."""

    model = None  # the HF model the GGUF was written from
    calls: list = []

    def __init__(self, model_path, n_ctx=512, n_threads=None, n_threads_batch=None, verbose=True):
        assert Path(model_path).is_file() and not verbose
        self.n_threads = n_threads
        self.resets = 0
        FakeLlama.calls.append(self)

    def reset(self):
        self.resets += 1

    def generate(self, tokens, temp=0.8, reset=True, **sampler):
        assert temp == 0.0 and sampler["repeat_penalty"] == 1.0  # greedy, no penalty: argmax like ours
        self.prompts = getattr(self, "prompts", []) + [list(tokens)]
        ids = list(tokens)
        while True:
            with torch.inference_mode():
                logits = FakeLlama.model(torch.tensor([ids])).logits[0, -1]
            token = int(logits.argmax())
            yield token
            ids.append(token)


@pytest.fixture
def fake_llama_cpp(tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM

    FakeLlama.model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    FakeLlama.calls = []
    module = types.ModuleType("llama_cpp")
    module.Llama = FakeLlama
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    return FakeLlama


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory) -> Path:
    from deploykit.llm.bench_stage import write_llama_cpp_files

    return write_llama_cpp_files(tiny_llama, ["f16"], tmp_path_factory.mktemp("llama-cpp"))["f16"]


def test_greedy_tokens_equal_pytorch_and_each_prompt_goes_alone(fake_llama_cpp, tiny_llama, tiny_gguf):
    from deploykit.llm.llama_cpp_gen import LlamaCppGenerator

    gen = LlamaCppGenerator(tiny_gguf, tiny_llama, threads=1)
    torch_gen = TorchGenerator(tiny_llama)
    want = torch_gen.generate(PROMPTS, 6, stop_ids=[])
    got = gen.generate(PROMPTS, 6, stop_ids=[])
    np.testing.assert_array_equal(got.tokens, want.tokens)
    assert list(got.lengths) == [6, 6, 6] and len(got.step_seconds) == 6 and min(got.step_seconds) > 0
    llm = fake_llama_cpp.calls[-1]
    # the prompt ids without the batch's left padding, and a cleared cache before each prompt
    ids = [torch_gen.tokenizer(p)["input_ids"] for p in PROMPTS]
    assert llm.prompts == ids and llm.resets == 3 and llm.n_threads == 1


def test_stop_ids_end_a_row_and_pad_the_rest(fake_llama_cpp, tiny_llama, tiny_gguf):
    from deploykit.llm.llama_cpp_gen import LlamaCppGenerator

    gen = LlamaCppGenerator(tiny_gguf, tiny_gguf)  # the tokenizer read back from the GGUF file
    free = gen.generate(PROMPTS[:1], 6, stop_ids=[])
    stop = int(free.tokens[0, 2])
    first = list(free.tokens[0]).index(stop)
    out = gen.generate(PROMPTS[:1], 6, stop_ids=[stop])
    assert out.lengths[0] == first + 1 and out.tokens.shape[1] == first + 1  # up to and including the stop


def test_llama_cpp_rows_are_batch_1_with_their_label(fake_llama_cpp, tiny_llama, tiny_gguf):
    from deploykit.llm.bench import GenSubject, measure_generation

    rows = measure_generation([GenSubject("tiny", tiny_llama), GenSubject("tiny GGUF", tiny_gguf)], PROMPTS,
                              batch_sizes=(1, 4), new_tokens=4, repeats=2, threads=1, memory=False)
    assert [(r["name"], r["batch_size"], r["runtime"]) for r in rows] == [
        ("tiny", 1, "torch"), ("tiny", 4, "torch"), ("tiny GGUF", 1, "llama.cpp")]
    gguf_row = rows[-1]
    assert gguf_row["runtime_label"] == "llama.cpp CPU" and gguf_row["decoded_tokens"] == 4
    assert gguf_row["size_mb"] == round(tiny_gguf.stat().st_size / 2**20, 2) and gguf_row["decode_tok_s"] > 0


def test_bench_writes_one_gguf_per_type_from_the_last_float_artifact(fake_llama_cpp, tiny_llama, tmp_path):
    from deploykit.artifact import Artifact
    from deploykit.llm.bench_stage import llama_cpp_subjects

    onnx = Artifact(tmp_path / "int8", {"format": "onnx"})
    subjects = llama_cpp_subjects(BenchConfig(llama_cpp=["f16", "q8_0"]), [Artifact(tiny_llama, {"format": "pytorch"}),
                                  onnx], ["prune", "quantize"], tmp_path / "bench")
    assert [(s.name, s.runtime, Path(s.folder).name) for s in subjects] == [
        ("prune as GGUF F16", "llama.cpp", "f16.gguf"), ("prune as GGUF Q8_0", "llama.cpp", "q8_0.gguf")]
    assert all(Path(s.folder).is_file() for s in subjects)
    assert llama_cpp_subjects(BenchConfig(llama_cpp=[]), [Artifact(tiny_llama, {"format": "pytorch"})], ["x"],
                              tmp_path / "off") == []


def _q8_bench_recipe(tiny_llama, tiny_task):
    """A quick bench of the tiny Llama on the tiny sentiment task with one llama.cpp row (Q8_0)."""
    from deploykit.config import build_recipe

    return build_recipe({"model": {"source": str(tiny_llama)},
                         "data": {"path": str(tiny_task), "task": "generation", "max_length": 64,
                                  "prompt_template": "Is this review positive or negative?\n{sentence}",
                                  "label_names": ["negative", "positive"]},
                         "gate": {"metric": "exact_match"},
                         "bench": {"quick": True, "batch_sizes": [1], "new_tokens": 3, "eval_samples": 4,
                                   "llama_cpp": ["q8_0"]}})


def test_bench_report_names_the_gguf_files_inside_the_bench_folder(fake_llama_cpp, tiny_llama, tiny_task, tmp_path,
                                                                   monkeypatch):
    import json

    import deploykit.llm.bench as gen_bench
    from deploykit.pipeline import run_stage

    import deploykit.llm.bench_stage as bench_stage

    # a fresh process would not see the stand-in: no memory child, no trial run
    monkeypatch.setattr(gen_bench, "_memory", lambda *args: {})
    monkeypatch.setattr(bench_stage, "runs_here", lambda *args: True)

    run_stage("bench", _q8_bench_recipe(tiny_llama, tiny_task), tiny_llama, tmp_path / "bench")
    rows = json.loads((tmp_path / "bench" / "report.json").read_text())["rows"]
    gguf = [r for r in rows if r["runtime"] == "llama.cpp"]
    assert [r["folder"] for r in gguf] == ["llama.cpp/q8_0.gguf"] and gguf[0]["exact_match"] is not None
    assert (tmp_path / "bench" / "llama.cpp" / "q8_0.gguf").is_file()


CRASHING_LLAMA_CPP = """
import os, signal


class Llama:  # llama.cpp dying in native code, as llama-cpp-python 0.3.36 does in llama_decode on an AMX Xeon
    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        os.kill(os.getpid(), signal.SIGSEGV)
"""


def test_a_llama_cpp_crash_costs_its_row_not_the_bench(fake_llama_cpp, tiny_llama, tiny_task, tmp_path, monkeypatch):
    import json
    import os

    import deploykit.llm.bench as gen_bench
    from deploykit.pipeline import run_stage

    # this process decodes with the stand-in; the trial run's fresh process imports a llama_cpp that segfaults
    crashing = tmp_path / "crashing"
    (crashing / "llama_cpp").mkdir(parents=True)
    (crashing / "llama_cpp" / "__init__.py").write_text(CRASHING_LLAMA_CPP)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(crashing), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(gen_bench, "_memory", lambda *args: {})
    lines = []
    monkeypatch.setattr("deploykit.llm.bench_stage.log", lines.append)
    run_stage("bench", _q8_bench_recipe(tiny_llama, tiny_task), tiny_llama, tmp_path / "bench")
    rows = json.loads((tmp_path / "bench" / "report.json").read_text())["rows"]
    assert [r["runtime"] for r in rows] == ["torch"] and rows[0]["decode_tok_s"] > 0
    crash = [line for line in lines if "no llama.cpp row" in line]
    assert len(crash) == 1 and "killed by SIGSEGV" in crash[0] and "as GGUF Q8_0" in crash[0]
    assert FakeLlama.calls == []  # nothing ran llama.cpp in this process


def test_without_llama_cpp_python_no_rows_and_one_line_errors(tiny_llama, tiny_gguf, tmp_path, monkeypatch):
    from deploykit.artifact import Artifact
    from deploykit.llm.bench_stage import llama_cpp_subjects
    from deploykit.llm.llama_cpp_gen import LlamaCppGenerator

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails, whatever is installed
    assert llama_cpp_subjects(BenchConfig(), [Artifact(tiny_llama, {"format": "pytorch"})], ["prune"], tmp_path) == []
    assert not (tmp_path / "llama.cpp").exists()
    with pytest.raises(UserError, match="llama-cpp-python is not installed"):
        LlamaCppGenerator(tiny_gguf, tiny_llama)


def test_bad_calls_are_user_errors(fake_llama_cpp, tiny_llama, tiny_gguf, tmp_path, monkeypatch):
    from deploykit.llm.llama_cpp_gen import LlamaCppGenerator

    with pytest.raises(UserError, match="is not a file"):
        LlamaCppGenerator(tmp_path / "missing.gguf", tiny_llama)
    gen = LlamaCppGenerator(tiny_gguf, tiny_llama, n_ctx=8)
    with pytest.raises(UserError, match="greedy decoding only"):
        gen.generate(PROMPTS, 4, do_sample=True)
    with pytest.raises(UserError, match="exceeds n_ctx 8"):
        gen.generate(PROMPTS, 4)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 16)

    def refuse(self, model_path, **kwargs):  # what llama-cpp-python raises for a file llama.cpp cannot read
        raise ValueError(f"Failed to load model from file: {model_path}")

    monkeypatch.setattr(fake_llama_cpp, "__init__", refuse)
    with pytest.raises(UserError, match="llama.cpp cannot load .*broken.gguf: Failed to load model") as err:
        LlamaCppGenerator(broken, tiny_llama)
    assert "\n" not in str(err.value)


# ---- the real library, where it is installed

def test_real_llama_cpp_decodes_the_f32_file_like_pytorch(tiny_llama, tmp_path):
    pytest.importorskip("llama_cpp")
    from deploykit.llm.bench_stage import write_llama_cpp_files
    from deploykit.llm.llama_cpp_gen import LlamaCppGenerator

    path = write_llama_cpp_files(tiny_llama, ["f32"], tmp_path)["f32"]
    got = LlamaCppGenerator(path, tiny_llama, threads=1).generate(PROMPTS, 6, stop_ids=[])
    want = TorchGenerator(tiny_llama).generate(PROMPTS, 6, stop_ids=[])
    # the same float32 weights, llama.cpp's kernels: every greedy token (a near-tie could flip one in 18)
    assert (got.tokens == want.tokens).mean() >= 17 / 18


def test_real_llama_cpp_makes_a_k_quant_in_process(tiny_llama, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    import deploykit.llm.gguf_export as gguf_export
    from deploykit.llm.bench_stage import write_llama_cpp_files

    monkeypatch.setattr(gguf_export.shutil, "which", lambda name: None)  # no llama-quantize: the binding
    path = write_llama_cpp_files(tiny_llama, ["q4_k_m"], tmp_path)["q4_k_m"]
    assert path.is_file() and not (tmp_path / "q4_k_m.f16.gguf").exists()
