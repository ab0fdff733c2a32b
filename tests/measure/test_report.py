"""deploykit/measure/report.py: report.json / report.md / report.html and the plots, from hand-made rows."""

import base64
import json
from html.parser import HTMLParser

from deploykit.measure.plots import pareto_front
from deploykit.measure.report import markdown, write_reports


def row(name, runtime, target="cpu", *, acc=90.0, p50=5.0, size=20.0, baseline=False, skipped=False):
    ok = not skipped
    return {
        "name": name, "artifact": f"/runs/{name}", "stage": name, "format": "onnx" if "ort" in runtime else "pytorch",
        "baseline": baseline, "runtime": runtime, "runtime_label": runtime.upper(), "target": target,
        "device": "cpu" if ok else None, "threads": 2, "status": "ok" if ok else "skipped",
        "note": "no CUDA GPU on this machine" if skipped else None, "bf16_native": None,
        "latency_ms": {"p50": p50, "p90": p50 * 1.2, "p99": p50 * 1.5, "mean": p50 * 1.1, "n": 200} if ok else None,
        "throughput": {"1": 1000 / p50, "8": 8000 / p50, "32": 20000 / p50} if ok else None,
        "peak_rss_mb": 400.0 if ok else None, "model_rss_mb": 90.0 if ok else None,
        "memory_method": "subprocess" if ok else None, "size_mb": size, "parameters": 22_700_000,
        "accuracy": acc if ok else None, "macro_f1": acc - 0.1 if ok else None, "eval_n": 872 if ok else None,
    }


def report(rows):
    return {
        "title": "sst2-minilm", "created": "2026-11-24T05:00:00+0000",
        "machine": {"cpu": "AMD EPYC", "cores": 2, "isa": ["avx2"], "bf16_native": False, "cuda": None},
        "method": {"targets": ["cpu", "gpu"], "cores": 2, "batch_sizes": [1, 8, 32], "latency_samples": 200,
                   "warmup": 10, "min_time_s": 2.0, "texts": 200, "eval_n": 872, "tokens": "median 23, 5 to 61",
                   "block": 25, "block_warmup": 2, "throughput_rounds": 2, "ort_spinning": False,
                   "memory": "subprocess peak RSS", "split": "test", "quick": False, "load_average": [7.5, 8.1],
                   "baseline": "standard recipe of /runs/finetune"},
        "rows": rows,
    }


ROWS = [row("finetune", "torch", acc=91.0, p50=10.0, size=86.0),
        row("finetune", "torch-bf16", acc=90.8, p50=6.0, size=86.0),
        row("quantize", "ort", acc=90.5, p50=2.0, size=22.0),
        row("baseline", "ort", acc=89.0, p50=2.1, size=23.0, baseline=True),
        row("quantize", "ort-cuda", "gpu", skipped=True, size=22.0)]


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.rows = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs["src"], attrs.get("alt")))
        self.rows += tag == "tr"


def test_pareto_front_keeps_only_undominated_points():
    pts = [(10.0, 91.0), (6.0, 90.8), (2.0, 90.5), (2.1, 89.0), (3.0, 90.0)]
    assert pareto_front(pts) == [(2.0, 90.5), (6.0, 90.8), (10.0, 91.0)]


def test_all_report_files_are_written(tmp_path):
    paths = write_reports(report(ROWS), tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"report.json", "report.md", "report.html", "pareto.png",
                                                   "size.png", "throughput.png"}
    assert json.loads(paths["json"].read_text())["rows"] == ROWS
    for name in ("pareto", "size", "throughput"):
        assert paths[name].read_bytes().startswith(b"\x89PNG")


def test_markdown_has_one_table_line_per_row_and_the_method(tmp_path):
    md = markdown(report(ROWS))
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
    assert len(table) == 1 + len(ROWS)  # header + rows
    assert "| baseline (baseline) | ORT |" in md and "no CUDA GPU on this machine |" in md
    assert "ONNX Runtime spinning: off" in md and "sent/s @32" in md  # a report of an earlier bench still reads
    spun = report(ROWS)
    spun["method"].update(ort_spinning=True, switch_pause_ms=50)
    assert "ONNX Runtime spinning: on, as deployed (ORT's default); every block opens with a 50 ms pause" in markdown(spun)
    assert "7.5 before and 8.1 after measuring, on 2 cores: other processes competed" in md
    assert "![Accuracy vs batch-1 latency" in md and "(pareto.png)" in md


def test_html_parses_and_embeds_its_plots(tmp_path):
    paths = write_reports(report(ROWS), tmp_path)
    page = Page()
    page.feed(paths["html"].read_text())
    page.close()
    assert page.rows == 1 + len(ROWS)
    assert len(page.images) == 3 and all(alt for _, alt in page.images)
    for src, _ in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    # self-contained: nothing is fetched from elsewhere
    assert "http" not in paths["html"].read_text().split("<body>", 1)[1]


def test_quick_runs_are_labelled(tmp_path):
    rep = report(ROWS)
    rep["method"]["quick"] = True
    assert "QUICK RUN" in markdown(rep)


def test_report_with_only_skipped_rows_still_renders(tmp_path):
    paths = write_reports(report([row("quantize", "ort-cuda", "gpu", skipped=True)]), tmp_path)
    assert paths["html"].is_file() and paths["pareto"].read_bytes().startswith(b"\x89PNG")


# --- generation reports (causal LMs) --------------------------------------------------------------

def gen_row(name, runtime, batch, *, em=60.0, tps=100.0, baseline=False):
    return {"name": name, "folder": f"/runs/{name}", "runtime": runtime, "runtime_label": runtime.upper(),
            "baseline": baseline, "reference": False, "status": "ok", "note": None, "batch_size": batch,
            "threads": 2, "new_tokens": 32, "decoded_tokens": 32, "runs": 10, "prompt_tokens": "median 40, 30 to 60",
            "ttft_ms": {"p50": 20.0 * batch, "p90": 25.0 * batch, "n": 10}, "decode_tok_s": tps * batch ** 0.5,
            "peak_rss_mb": 900.0, "model_rss_mb": 550.0, "memory_method": "subprocess: peak RSS of a fresh process",
            "size_mb": 513.0 if runtime == "torch" else 140.0, "parameters": 134_515_008,
            "exact_match": em, "perplexity": 3.5}


REFERENCE = {**gen_row("SmolLM2 Q4_1", "llama.cpp", 1), "runtime_label": "GGUF (llama.cpp)", "reference": True,
             "status": "reference", "note": "llama.cpp speed not measured", "batch_size": None, "threads": None,
             "ttft_ms": None, "decode_tok_s": None, "peak_rss_mb": None, "model_rss_mb": None, "size_mb": 94.2,
             "parameters": None, "exact_match": 58.0}
GEN_ROWS = [gen_row("finetune", "torch", 1, baseline=True), gen_row("finetune", "torch", 8, baseline=True),
            gen_row("int8", "ort", 1, em=57.0, tps=300.0), gen_row("int8", "ort", 8, em=57.0, tps=300.0), REFERENCE]


def gen_report(rows):
    return {"kind": "generation", "title": "chat-smollm2", "created": "2026-11-24T05:00:00+0000",
            "machine": {"cpu": "AMD EPYC", "cores": 2, "isa": ["avx2"], "bf16_native": False, "cuda": None},
            "method": {"batch_sizes": [1, 8], "new_tokens": 32, "runs": 10, "threads": 2,
                       "prompt_tokens": "median 40, 30 to 60", "eval": "exact match on 200 test rows",
                       "load_average": 2.1},
            "rows": rows}


def test_generation_report_writes_its_own_table_and_plots(tmp_path):
    paths = write_reports(gen_report(GEN_ROWS), tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"report.json", "report.md", "report.html", "quality_speed.png",
                                                   "size.png", "decode.png", "ttft.png"}
    md = paths["md"].read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
    assert len(table) == 1 + len(GEN_ROWS)
    assert "| TTFT p50 ms |" in md and "| decode tok/s |" in md and "sent/s" not in md
    assert "| finetune (baseline) | TORCH | 8 | 2 | 60.00 | 3.500 | 160.0 | 200.0 | 282.8 |" in md
    assert "| SmolLM2 Q4_1 | GGUF (llama.cpp) | – | – | 58.00 |" in md and "llama.cpp speed not measured" in md
    assert "exactly 32 new tokens" in md and "Quality: exact match on 200 test rows." in md
    page = Page()
    page.feed(paths["html"].read_text())
    page.close()
    assert page.rows == 1 + len(GEN_ROWS) and len(page.images) == 4
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG") for src, _ in page.images)


def test_generation_report_says_whether_ort_spun(tmp_path):
    old = write_reports(gen_report(GEN_ROWS), tmp_path / "old")["md"].read_text()
    assert "ONNX Runtime spinning: off" in old  # a report of an earlier LLM bench still reads as it was timed
    spun = gen_report(GEN_ROWS)
    spun["method"].update(ort_spinning=True, switch_pause_ms=50)
    md = write_reports(spun, tmp_path / "new")["md"].read_text()
    assert "ONNX Runtime spinning: on, as deployed (ORT's default); every block opens with a 50 ms pause" in md


def test_generation_report_without_exact_match_plots_perplexity(tmp_path):
    rows = [{**r, "exact_match": None} for r in GEN_ROWS]
    paths = write_reports(gen_report(rows), tmp_path)
    assert paths["quality_speed"].read_bytes().startswith(b"\x89PNG")


def test_encoder_report_is_unchanged_by_the_generation_kind(tmp_path):
    # the encoder report has no "kind": same files, same three plots, same table as before
    md = markdown(report(ROWS))
    assert "TTFT" not in md and md.count("![") == 3
    assert "\n| artifact | runtime | target | threads | accuracy % | macro-F1 % | p50 ms |" in md


def test_every_runtime_has_a_plot_marker():
    from deploykit.measure.plots import MARKERS
    from deploykit.runtimes import LABELS, READS, TARGETS

    assert set(MARKERS) == set(READS) == set(LABELS) == set(TARGETS)
