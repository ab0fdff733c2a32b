"""deploykit/llm/bench.py on the tiny Llama: the rows' keys and values (behaviour, not timings)."""

from __future__ import annotations

import pytest

from deploykit.errors import UserError
from deploykit.llm.bench import GenSubject, generation_report, measure_generation, reference_row
from deploykit.llm.generate import TorchGenerator
from test_runtimes import ort_spins

PROMPTS = ["the movie was really good and", "a film", "Review: it was dull"]


@pytest.fixture(scope="module")
def rows(tiny_llama):
    loaded = TorchGenerator(tiny_llama)
    subjects = [GenSubject("tiny", tiny_llama, baseline=True),
                GenSubject("tiny-bf16", tiny_llama, runtime="torch-bf16"),
                GenSubject("in-memory", tiny_llama, runtime="torch", factory=lambda: loaded)]
    return measure_generation(subjects, PROMPTS, batch_sizes=(1, 4), new_tokens=6, repeats=4, threads=1,
                              memory=False)


def test_one_row_per_subject_and_batch_with_positive_figures(rows):
    assert [(r["name"], r["batch_size"]) for r in rows] == [
        ("tiny", 1), ("tiny", 4), ("tiny-bf16", 1), ("tiny-bf16", 4), ("in-memory", 1), ("in-memory", 4)]
    for r in rows:
        assert r["status"] == "ok" and r["runs"] == 4 and r["threads"] == 1
        assert r["decoded_tokens"] == r["new_tokens"] == 6  # stop ids off: a random model's EOS ends nothing
        assert 0 < r["ttft_ms"]["p50"] <= r["ttft_ms"]["p90"]
        assert r["decode_tok_s"] > 0 and r["size_mb"] > 0 and r["parameters"] > 0
        assert r["exact_match"] is None and r["perplexity"] is None  # the caller fills quality
    assert rows[0]["baseline"] and rows[2]["runtime_label"] == "PyTorch bf16"


def test_onnx_folder_runs_on_ort_with_memory_from_a_fresh_process(tiny_llama, tmp_path):
    from deploykit.llm.onnx_export import export_causal_lm

    export_causal_lm(tiny_llama, None, tmp_path / "export", parity_prompts=PROMPTS[:1], parity_new_tokens=2)
    rows = measure_generation([GenSubject("tiny", tiny_llama), GenSubject("onnx", tmp_path / "export")], PROMPTS,
                              batch_sizes=(2,), new_tokens=3, repeats=1, rounds=1, threads=1)
    assert [r["runtime"] for r in rows] == ["torch", "ort"]  # auto: ORT where model.onnx is
    for row in rows:
        assert row["decoded_tokens"] == 3 and row["size_mb"] > 0
        assert row["peak_rss_mb"] > row["model_rss_mb"] > 0
        assert "fresh process" in row["memory_method"]


def test_ort_generators_spin_as_deployed_and_each_block_waits_first(tiny_llama, tmp_path, monkeypatch):
    import deploykit.llm.bench as bench
    from deploykit.llm.onnx_export import export_causal_lm
    from deploykit.measure.bench_plan import SWITCH_PAUSE_S

    export_causal_lm(tiny_llama, None, tmp_path / "export", parity_prompts=PROMPTS[:1], parity_new_tokens=2)
    gen = bench.make_generator(tmp_path / "export", "ort", threads=2)
    assert ort_spins(gen.session)  # as llama.cpp's and PyTorch's threads, which busy-wait too
    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: events.append(("pause", s)))
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda *a, **k: events.append(("generate", a[1])) or real(*a, **k))
    bench._block(bench._Timed(GenSubject("onnx", tmp_path / "export"), "ort", gen), PROMPTS, 1, range(2), 3, 2)
    # the pause precedes the untimed warm-up (2 tokens) and the timed runs (3 tokens each)
    assert events == [("pause", SWITCH_PAUSE_S), ("generate", 2), ("generate", 3), ("generate", 3)]


def test_reference_row_has_size_and_a_caveat_but_no_speed(tmp_path):
    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"\0" * 2**20)
    row = reference_row("original", str(gguf), exact_match=61.0, perplexity=3.2)
    assert row["size_mb"] == 1.0 and row["exact_match"] == 61.0 and row["reference"]
    assert row["ttft_ms"] is None and row["decode_tok_s"] is None and "llama.cpp" in row["note"]


def test_report_dict_carries_the_method(rows):
    rep = generation_report(rows, title="tiny")
    assert rep["kind"] == "generation" and rep["method"]["batch_sizes"] == [1, 4]
    assert rep["method"]["new_tokens"] == 6 and rep["machine"]["cores"]
    assert rep["method"]["ort_spinning"] is True and rep["method"]["switch_pause_ms"] == 50


def test_bad_settings_are_user_errors(tiny_llama):
    with pytest.raises(UserError, match="at least 2"):
        measure_generation([GenSubject("tiny", tiny_llama)], PROMPTS, new_tokens=1)
    with pytest.raises(UserError, match="runtime='tensorrt'"):
        measure_generation([GenSubject("tiny", tiny_llama, runtime="tensorrt")], PROMPTS)


def test_a_baseline_that_is_not_among_the_causal_lms_is_one_line_and_writes_nothing(tiny_llama, tiny_bert, tmp_path):
    from deploykit.artifact import load_artifact
    from deploykit.config import BenchConfig, build_recipe
    from deploykit.llm.bench_stage import report
    from deploykit.measure.bench_plan import Subject

    recipe = build_recipe({"data": {"task": "generation", "name": "sst2"}})  # never read: refused first
    subjects = [Subject("teacher", load_artifact(tiny_llama))]
    with pytest.raises(UserError, match="--baseline builds the standard-recipe row of text classifiers.*drop --baseline"):
        report(recipe, BenchConfig(), subjects, tmp_path / "tmp", tmp_path / "out", baseline_source=tiny_bert)
    assert not (tmp_path / "tmp").exists() and not (tmp_path / "out").exists()
