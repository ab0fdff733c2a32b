"""The headline table picks the right rows and computes same-run ratios against the targets."""

import pytest

from deploykit.errors import UserError
from deploykit.measure.headline import headline, to_markdown


def row(artifact, runtime, p50, tput, size, acc, baseline=False, target="cpu"):
    return {"artifact": artifact, "runtime": runtime, "runtime_label": runtime, "target": target, "status": "ok",
            "baseline": baseline, "latency_ms": {"p50": p50}, "throughput": {"1": 1000 / p50, "32": tput},
            "size_mb": size, "accuracy": acc}


REPORT = {"rows": [
    row("/r/finetune", "torch", 10.0, 150.0, 90.0, 88.0),
    row("/r/finetune", "torch-bf16", 6.0, 270.0, 90.0, 88.0),
    row("/r/bench/baseline", "ort", 2.0, 400.0, 23.0, 87.0, baseline=True),
    row("/r/quantize", "ort", 0.5, 2000.0, 5.0, 87.5),
    row("/r/quantize", "ort", 0.4, 100.0, 5.0, 87.5, target="edge"),
]}


def test_ratios_and_targets():
    h = headline(REPORT, "/r/finetune", "/r/quantize")
    assert h["teacher"]["runtime"] == "torch"  # FP32, not the faster bf16 row
    assert h["latency_speedup"] == 20.0 and h["throughput_gain"] == 13.333
    assert h["vs_baseline_speedup"] == 4.0 and h["size_ratio"] == 0.056
    assert h["accuracy_drop"] == 0.5
    assert all(h["met"].values())
    md = to_markdown(h)
    assert "| deploykit final | ort | 87.50 | 0.50 |" in md


def test_a_ratio_just_under_its_target_is_missed_however_it_rounds():
    # 2.996x rounds to 3.00 at two decimals; the target is judged on the exact ratio
    report = {"rows": [*REPORT["rows"][:2], row("/r/bench/baseline", "ort", 1.498, 400.0, 23.0, 87.0, baseline=True),
                       *REPORT["rows"][3:]]}
    h = headline(report, "/r/finetune", "/r/quantize")
    assert h["vs_baseline_speedup"] == 2.996 and h["met"]["vs_baseline"] is False


def test_missing_rows_is_a_clear_error():
    with pytest.raises(UserError, match="no cpu rows"):
        headline(REPORT, "/r/other", "/r/quantize")


def test_end_to_end_latency_is_judged_against_the_model_alone():
    import copy

    report = copy.deepcopy(REPORT)
    report["rows"][3]["e2e_latency_ms"] = {"p50": 0.8}  # 0.5 ms model, 0.3 ms tokenizer and post-processing
    h = headline(report, "/r/finetune", "/r/quantize")
    assert h["e2e_ratio"] == 1.6 and h["met"]["e2e"] is False
    assert "| end-to-end batch-1 p50 (text in, label out: deploykit.load) vs model only | 0.80 ms, 1.6× | ≤ 1.5× | False |" \
        in to_markdown(h)
    assert "e2e" not in headline(REPORT, "/r/finetune", "/r/quantize")["met"]  # older reports: not judged


def test_the_recipe_sets_its_own_bars_and_the_rest_stay_the_defaults():
    from deploykit.config import HeadlineConfig

    bars = HeadlineConfig(accuracy_drop_max=0.3, latency_speedup_min=25.0).model_dump()
    h = headline(REPORT, "/r/finetune", "/r/quantize", targets=bars)
    assert h["targets"]["accuracy_drop_max"] == 0.3 and h["targets"]["size_ratio_max"] == 0.1  # unset: default
    assert h["met"]["accuracy"] is False and h["met"]["latency"] is False  # 0.5 pt, 20x against 0.3 pt, 25x
    assert h["met"]["vs_baseline"] is True
    md = to_markdown(h)
    assert "| ≤ 0.3 pt | False |" in md and "| ≥ 25.0× | False |" in md


def test_a_recipe_headline_section_is_validated_and_reaches_the_written_headline(tmp_path):
    import json

    from deploykit.config import build_recipe
    from deploykit.errors import UserError
    from deploykit.measure.headline import write

    with pytest.raises(UserError, match="latency_speedup"):
        build_recipe({"data": {"name": "sst2"}, "bench": {"headline": {"latency_speedup": 5}}})
    recipe = build_recipe({"data": {"name": "sst2"}, "bench": {"headline": {"size_ratio_max": 0.01}}})
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    text = write(tmp_path / "report.json", "/r/finetune", "/r/quantize", targets=recipe.bench.headline.model_dump())
    assert "| size vs teacher | 0.056× | ≤ 0.01× | False |" in text
    assert json.loads((tmp_path / "headline.json").read_text())["targets"]["size_ratio_max"] == 0.01


# ---- causal LMs: the llama.cpp peer (issue 23)

def gen(name, runtime, tps, em, *, batch=1, size=100.0):
    return {"name": name, "folder": f"/r/{name}", "runtime": runtime, "runtime_label": runtime, "target": "cpu",
            "status": "ok", "batch_size": batch, "reference": False, "ttft_ms": {"p50": 1000 / tps},
            "decode_tok_s": tps, "size_mb": size, "exact_match": em, "perplexity": None, "label_match": None}


GEN = [gen("finetune", "torch", 20.0, 90.0, size=500.0), gen("quantize", "ort", 90.0, 89.5),
       gen("finetune as GGUF Q8_0", "llama.cpp", 130.0, 90.0), gen("finetune as GGUF Q4_K_M", "llama.cpp", 120.0, 89.0),
       gen("quantize", "ort", 200.0, 89.5, batch=8)]


@pytest.mark.parametrize("ours, em, met", [(90.0, 89.5, False), (130.0, 89.5, True), (130.0, 88.0, False)])
def test_generation_headline_holds_the_final_against_llama_cpp_q4_k_m(ours, em, met):
    from deploykit.measure.headline import generation_headline, generation_markdown

    rows = [r if r["name"] != "quantize" or r["batch_size"] != 1 else {**r, "decode_tok_s": ours, "exact_match": em}
            for r in GEN]
    h = generation_headline({"rows": rows}, "/r/finetune", "/r/quantize")
    assert h["llama_cpp"]["name"] == "finetune as GGUF Q4_K_M"  # Q4_K_M, though Q8_0 decodes faster here
    assert h["vs_llama_cpp_decode"] == round(ours / 120.0, 3) and h["met"]["vs_llama_cpp"] is met
    text = generation_markdown(h)
    assert "| llama.cpp peer | llama.cpp |" in text and f"| {met} |" in text.splitlines()[-1]


def test_generation_headline_without_llama_cpp_rows_judges_no_such_bar():
    from deploykit.measure.headline import generation_headline, generation_markdown

    h = generation_headline({"rows": [r for r in GEN if r["runtime"] != "llama.cpp"]}, "/r/finetune", "/r/quantize")
    assert h["llama_cpp"] is None and h["vs_llama_cpp_decode"] is None and "vs_llama_cpp" not in h["met"]
    assert "llama.cpp" not in generation_markdown(h)


def test_ratios_block_by_block_show_a_machine_whose_speed_moved_during_the_bench(tmp_path):
    import copy
    import json

    from deploykit.measure.headline import write

    steady, moved = copy.deepcopy(REPORT), copy.deepcopy(REPORT)
    for report, final_blocks in ((steady, [2000.0, 1900.0, 2100.0, 2000.0]), (moved, [2400.0, 1200.0, 1250.0, 2450.0])):
        teacher, final, base = report["rows"][0], report["rows"][3], report["rows"][2]
        teacher["throughput_blocks"] = {"32": [150.0, 150.0, 150.0, 150.0]}
        final["throughput_blocks"] = {"32": final_blocks}
        teacher["latency_block_p50_ms"], base["latency_block_p50_ms"] = [10.0, 10.0], [2.0, 2.0]
        final["latency_block_p50_ms"] = [0.5, 0.5]
    h = headline(steady, "/r/finetune", "/r/quantize")
    assert h["spread"] == {"latency_speedup": [20.0, 20.0, 20.0], "throughput_gain": [12.667, 13.333, 14.0],
                           "vs_baseline_speedup": [4.0, 4.0, 4.0]}
    assert h["unsteady"] == [] and "| batch-32 throughput gain vs teacher | 13.333× (blocks 12.667–14.0×) |" \
        in to_markdown(h)
    # one VM's two-thread ORT row ran 2x slower in half the blocks (bench/README.md, thirty-eighth session)
    h = headline(moved, "/r/finetune", "/r/quantize")
    assert h["spread"]["throughput_gain"] == [8.0, 16.0, 16.333]
    assert len(h["unsteady"]) == 1 and h["unsteady"][0].startswith("throughput gain moved from 8.0x to 16.333x")
    (tmp_path / "report.json").write_text(json.dumps(moved))
    text = write(tmp_path / "report.json", "/r/finetune", "/r/quantize")
    assert text.startswith("**warning:** throughput gain moved") and "depends on when it was taken" in text
    assert json.loads((tmp_path / "headline.json").read_text())["warnings"] == h["unsteady"]
    # reports written before blocks were kept, and --quick's single blocks: no spread, no warning
    assert headline(REPORT, "/r/finetune", "/r/quantize")["spread"] == {
        "latency_speedup": None, "throughput_gain": None, "vs_baseline_speedup": None}
    for r in moved["rows"]:
        r["throughput_blocks"] = {k: v[:1] for k, v in (r.get("throughput_blocks") or {}).items()} or None
        r["latency_block_p50_ms"] = (r.get("latency_block_p50_ms") or [None])[:1] if "latency_block_p50_ms" in r else None
    h = headline(moved, "/r/finetune", "/r/quantize")
    assert set(h["spread"].values()) == {None} and h["unsteady"] == [] and "blocks" not in to_markdown(h)
