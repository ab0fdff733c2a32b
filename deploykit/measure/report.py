"""Benchmark results -> report.json, report.md and a self-contained report.html with plots.

    from deploykit.measure.report import write_reports
    write_reports(report, Path("runs/bench"))   # report = {"machine": ..., "method": ..., "rows": [...]}

`deploykit bench` (deploykit/stages/bench.py) builds `report`. The plots (deploykit/measure/plots.py) are matplotlib figures
(Agg backend): quality (accuracy, or the kind's lead column) vs batch-1 latency with its Pareto front, size on disk,
throughput by batch size. They are written as PNG files beside report.md and embedded as base64 in
report.html, so the HTML file can be mailed or attached on its own.

A report with `"kind": "generation"` (causal LMs, built by deploykit.llm.bench.generation_report) has
one row per model x batch size and its own table and plots: exact match (or perplexity) vs decode
tokens/s, size on disk, decode tokens/s and time to first token by batch size.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Callable

from deploykit.measure.plots import (
    measured,
    plot_by_batch,
    plot_pareto,
    plot_quality_speed,
    plot_size,
    plot_throughput,
)

PLOTS = {"pareto": "Accuracy vs batch-1 latency (p50); the line is the Pareto front per target",
         "size": "Size on disk of each artifact's model files",
         "throughput": "Throughput by batch size"}
GENERATION_PLOTS = {"quality_speed": "Quality vs decode tokens/s at the smallest batch; dashed = reference GGUF",
                    "size": "Size on disk of each model's files",
                    "decode": "Decode tokens/s by batch size",
                    "ttft": "Time to first token (p50) by batch size"}


DEFAULT_METRICS = [["accuracy", "accuracy %"], ["macro_f1", "macro-F1 %"]]


def quality_columns(report: dict) -> list[list[str]]:
    """The report's quality columns, [row key, label]; the first leads (plots, headline). Reports written
    before the kinds said theirs are a text classifier's."""
    return report.get("method", {}).get("metrics") or DEFAULT_METRICS


# ---------------------------------------------------------------- tables

def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the Markdown and HTML tables."""
    batches = report["method"]["batch_sizes"]
    quality = quality_columns(report)
    head = (["artifact", "runtime", "target", "threads", *(label for _, label in quality), "p50 ms", "p90 ms", "p99 ms"]
            + [f"sent/s @{b}" for b in batches] + ["peak RSS MB", "model RSS MB", "size MB", "params M", "note"])
    body = []
    for r in report["rows"]:
        lat = r["latency_ms"] or {}
        tput = r["throughput"] or {}
        body.append([r["name"] + (" (baseline)" if r["baseline"] else ""), r["runtime_label"], r["target"],
                     _fmt(r["threads"]), *(_fmt(r.get(key)) for key, _ in quality), _fmt(lat.get("p50")),
                     _fmt(lat.get("p90")), _fmt(lat.get("p99"))]
                    + [_fmt(tput.get(str(b)), 1) for b in batches]
                    + [_fmt(r["peak_rss_mb"], 1), _fmt(r["model_rss_mb"], 1), _fmt(r["size_mb"]), _fmt(r["parameters"] / 1e6 if r["parameters"] else None), r["note"] or ""])
    return head, body


def generation_table(report: dict) -> tuple[list[str], list[list[str]]]:
    head = ["model", "runtime", "batch", "threads", "exact match %", "perplexity", "TTFT p50 ms", "TTFT p90 ms",
            "decode tok/s", "peak RSS MB", "model RSS MB", "size MB", "params M", "note"]
    body = []
    for r in report["rows"]:
        ttft = r["ttft_ms"] or {}
        body.append([r["name"] + (" (baseline)" if r["baseline"] else ""), r["runtime_label"],
                     _fmt(r["batch_size"]), _fmt(r["threads"]), _fmt(r["exact_match"]), _fmt(r["perplexity"], 3),
                     _fmt(ttft.get("p50"), 1), _fmt(ttft.get("p90"), 1), _fmt(r["decode_tok_s"], 1),
                     _fmt(r["peak_rss_mb"], 1), _fmt(r["model_rss_mb"], 1), _fmt(r["size_mb"]),
                     _fmt(r["parameters"] / 1e6 if r["parameters"] else None), r["note"] or ""])
    return head, body


def _machine_line(mc: dict) -> str:
    return (f"Machine: {mc.get('cpu')}, {mc.get('cores')} cores, ISA {', '.join(mc.get('isa') or []) or '?'}; "
            f"bf16 native: {mc.get('bf16_native')}; GPU: {mc.get('cuda') or 'none'}.")


def _spinning_line(m: dict) -> str:
    # reports written before ORT was timed as deployed carry no "ort_spinning": their sessions did not spin
    if not m.get("ort_spinning"):
        return "ONNX Runtime spinning: off (session.intra_op.allow_spinning=0)."
    return (f"ONNX Runtime spinning: on, as deployed (ORT's default); every block opens with a "
            f"{m.get('switch_pause_ms', 0)} ms pause so that the previous row's idle threads stop spinning first.")


def generation_method_lines(report: dict) -> list[str]:
    m, mc = report["method"], report["machine"]
    memory = next((r["memory_method"] for r in report["rows"] if r.get("memory_method")), None)
    lines = [
        _machine_line(mc),
        f"Decoding: greedy with stop ids disabled, so every run decodes exactly {m['new_tokens']} new tokens; "
        f"chat-rendered prompts of {m['prompt_tokens']} tokens; {m['runs']} timed runs per model and batch size "
        f"on {m['threads']} thread{'' if m['threads'] == 1 else 's'}, in blocks per model (each opened by an untimed "
        "warm-up).",
        _spinning_line(m),
        "TTFT: prefill plus the first token. Decode tok/s: tokens after the first, summed over the batch, divided "
        "by the time after the first (median over runs). Tokenization excluded.",
        f"Memory: {memory or 'not measured'}.",
    ]
    if m.get("eval"):
        lines.append(f"Quality: {m['eval']}.")
    if m.get("load_average") is not None:
        lines.append(f"System load (1-min average) {m['load_average']} when the report was built, on "
                     f"{mc.get('cores')} cores.")
    return lines


def method_lines(report: dict) -> list[str]:
    m, mc = report["method"], report["machine"]
    lines = [
        _machine_line(mc),
        f"Latency: batch 1, model call only (tokenization excluded), {m['latency_samples']} calls per row on "
        f"{m['texts']} real {m['split']} texts at their natural lengths ({m['tokens']} tokens).",
        f"Interleaving: all rows in one process, warmed up, then measured target by target in blocks of "
        f"{m['block']} calls "
        f"(each opened by {m['block_warmup']} untimed calls), rotating through the rows; throughput in "
        f"{m['throughput_rounds']} rotating blocks per batch size, {m['min_time_s']} s per batch size in all.",
        _spinning_line(m),
        f"Memory: {m['memory']}.",
        f"{' and '.join(label.removesuffix(' %') for _, label in quality_columns(report))}: {m['eval_n']} "
        f"examples of the {m['split']} split, in length-sorted batches of "
        f"{m.get('eval_batch', 64)}, one row at a time for graphs that quantize activations at run time (dynamic INT8: its "
        "scales span the batch, so batching changes its predictions).",
        "Targets: cpu = all cores, edge = 1 thread and batches up to 8, gpu = CUDA device.",
    ]
    start, end = m.get("load_average") or (None, None)
    if start is not None:
        busy = max(start, end) > mc.get("cores", 1)
        lines.append(f"System load (1-min average) {start} before and {end} after measuring, on {mc.get('cores')} "
                     "cores" + (": other processes competed for the CPU, so latencies are inflated, "
                                "multi-threaded ones most" if busy else "."))
    if m.get("baseline"):
        lines.append(f"Baseline: {m['baseline']}.")
    if m.get("peer"):
        lines.append(f"Peer: {m['peer']}.")
    if m["quick"]:
        lines.append("QUICK RUN (--quick): few iterations; a smoke test, not a measurement.")
    return lines


# the report layouts, by the report's "kind" (absent: a classifier's, whatever columns its method names):
# (table, method lines, plot captions, plot builders)
VIEWS: dict[str, tuple[Callable, Callable, dict[str, str], Callable]] = {}


def _view(report: dict) -> tuple[list[str], list[list[str]], list[str], dict[str, str]]:
    """Table header, table cells, method lines and plot captions of the report's layout."""
    make_table, lines, captions, _ = VIEWS[report.get("kind", "classification")]
    return (*make_table(report), lines(report), captions)


def markdown(report: dict) -> str:
    head, body, lines, plots = _view(report)
    out = [f"# deploykit bench: {report['title']}", "", f"_{report['created']}_", ""]
    out += [f"- {line}" for line in lines] + [""]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(" --- " for _ in head) + "|")
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    out.append("")
    out += [f"![{caption}]({name}.png)" for name, caption in plots.items()]
    return "\n".join(out) + "\n"


def html_page(report: dict, images: dict[str, bytes]) -> str:
    head, body, lines, plots = _view(report)
    esc = html.escape
    rows = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    figures = "\n".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(images[name]).decode()}" '
        f'alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
        for name, caption in plots.items())
    method = "\n".join(f"<li>{esc(line)}</li>" for line in lines)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>deploykit bench: {esc(report['title'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: right; }}
td:first-child, td:nth-child(2), td:nth-child(3), td:last-child {{ text-align: left; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 100%; }}
</style></head>
<body>
<h1>deploykit bench: {esc(report['title'])}</h1>
<p><em>{esc(report['created'])}</em></p>
<ul>
{method}
</ul>
<table>
<thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
{figures}
</body></html>
"""


def _classifier_plots(report: dict) -> dict[str, Callable[[Path], None]]:
    rows = report["rows"]
    ok = measured(rows)
    lead = tuple(quality_columns(report)[0])
    return {"pareto": lambda p: plot_pareto(ok, p, lead), "size": lambda p: plot_size(rows, p),
            "throughput": lambda p: plot_throughput(ok, p)}


def _generation_plots(report: dict) -> dict[str, Callable[[Path], None]]:
    rows = report["rows"]
    ok = measured(rows)
    return {"quality_speed": lambda p: plot_quality_speed(rows, p), "size": lambda p: plot_size(rows, p),
            "decode": lambda p: plot_by_batch(ok, p, lambda r: r["decode_tok_s"],
                                              "decode tokens / s (higher is better)", "Decode speed by batch size"),
            "ttft": lambda p: plot_by_batch(ok, p, lambda r: r["ttft_ms"]["p50"],
                                            "time to first token p50 (ms, lower is better)",
                                            "Time to first token by batch size")}


VIEWS.update({"classification": (table, method_lines, PLOTS, _classifier_plots),
              "generation": (generation_table, generation_method_lines, GENERATION_PLOTS, _generation_plots)})


def _plots(report: dict) -> dict[str, Callable[[Path], None]]:
    return VIEWS[report.get("kind", "classification")][3](report)


def write_reports(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md, report.html and the plot PNGs into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    for name, plot in _plots(report).items():
        paths[name] = out_dir / f"{name}.png"
        plot(paths[name])
    paths["md"].write_text(markdown(report), encoding="utf-8")
    images = {name: paths[name].read_bytes() for name in _view(report)[3]}
    paths["html"].write_text(html_page(report, images), encoding="utf-8")
    return paths
