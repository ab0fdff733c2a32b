"""Benchmark results -> report.json, report.md and a self-contained report.html with plots.

    from deploykit.report import write_reports
    write_reports(report, Path("runs/bench"))   # report = {"machine": ..., "method": ..., "rows": [...]}

`deploykit bench` (deploykit/stages/bench.py) builds `report`. The plots are matplotlib figures
(Agg backend, no display needed): accuracy vs batch-1 latency with its Pareto front, size on disk,
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

from deploykit.runtimes import RUNTIMES

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


def is_generation(report: dict) -> bool:
    return report.get("kind") == "generation"


def row_label(row: dict[str, Any]) -> str:
    return f"{row['name']} · {row['runtime']} · {row['target']}"


def measured(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "ok"]


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    front: list[tuple[float, float]] = []
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc))
    return front


# ---------------------------------------------------------------- plots

def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(8, 4.8), dpi=110)


# one look per row across all plots: colour = artifact, marker = runtime, line/fill = target
MARKERS = {name: rt.marker for name, rt in RUNTIMES.items()}
LINES = {"cpu": "-", "edge": "--", "gpu": ":"}


def _colors(rows: list[dict]) -> dict[str, str]:
    return {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(r["name"] for r in rows))}


def plot_pareto(rows: list[dict], path: Path, metric: tuple[str, str] = ("accuracy", "accuracy %")) -> None:
    from matplotlib.lines import Line2D

    key, label = metric
    plt, (fig, ax) = _figure()
    colors = _colors(rows)
    pts = [r for r in rows if r["latency_ms"] and r.get(key) is not None]
    for r in pts:
        marker = "*" if r["baseline"] else MARKERS[r["runtime"]]
        ax.scatter(r["latency_ms"]["p50"], r[key], marker=marker, s=160 if r["baseline"] else 50,
                   edgecolors=colors[r["name"]], linewidths=1.5,
                   facecolors="none" if r["target"] == "edge" else colors[r["name"]])
    for target in dict.fromkeys(r["target"] for r in pts):
        front = pareto_front([(r["latency_ms"]["p50"], r[key]) for r in pts if r["target"] == target])
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", alpha=0.7,
                linestyle=LINES[target])
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=n) for n, c in colors.items()]
    handles += [Line2D([], [], color="k", marker=MARKERS[rt], linestyle="", markerfacecolor="none", label=rt)
                for rt in dict.fromkeys(r["runtime"] for r in pts)]
    handles += [Line2D([], [], color="grey", linestyle=LINES[t],
                       label=f"front, {t}" + (" (hollow)" if t == "edge" else "")) for t in dict.fromkeys(
                           r["target"] for r in pts)]
    lats = [r["latency_ms"]["p50"] for r in pts]
    if lats and max(lats) > 10 * min(lats):
        ax.set_xscale("log")
    name = label.removesuffix(" %")
    _finish(plt, fig, ax, path, "batch-1 latency p50 (ms, lower is better)", f"{name} (%)",
            f"{name[0].upper() + name[1:]} vs latency (★ = standard-recipe baseline)", handles)


def plot_size(rows: list[dict], path: Path) -> None:
    plt, (fig, ax) = _figure()
    sizes = {r["name"]: (r["size_mb"], r["parameters"], r["baseline"]) for r in rows if r["size_mb"] is not None}
    names = list(sizes)
    bars = ax.barh(names, [sizes[n][0] for n in names],
                   color=["C3" if sizes[n][2] else "C0" for n in names])
    for bar, n in zip(bars, names):
        params = sizes[n][1]
        text = f"{sizes[n][0]:.1f} MB" + (f" · {params / 1e6:.2f} M params" if params else "")
        ax.annotate(text, (bar.get_width(), bar.get_y() + bar.get_height() / 2), fontsize=8,
                    xytext=(3, -3), textcoords="offset points")
    ax.invert_yaxis()
    ax.set_xlabel("size on disk (MB)")
    ax.set_title("Model size (red = standard-recipe baseline)")
    ax.margins(x=0.3)
    _save(plt, fig, path)


def plot_throughput(rows: list[dict], path: Path) -> None:
    plt, (fig, ax) = _figure()
    colors = _colors(rows)
    values, sizes = [], set()
    ax.set_xscale("log", base=2)
    for r in rows:
        if r["throughput"]:
            sizes |= {int(b) for b in r["throughput"]}
            values += list(r["throughput"].values())
            ax.plot([int(b) for b in r["throughput"]], list(r["throughput"].values()), color=colors[r["name"]],
                    marker="*" if r["baseline"] else MARKERS[r["runtime"]], linestyle=LINES[r["target"]],
                    label=row_label(r))
    ax.set_xticks(sorted(sizes), [str(b) for b in sorted(sizes)])
    ax.minorticks_off()
    if values and max(values) > 20 * min(values):
        ax.set_yscale("log")
    _finish(plt, fig, ax, path, "batch size", "sentences / s (higher is better)", "Throughput by batch size",
            ax.get_legend_handles_labels()[0])


def quality_key(rows: list[dict]) -> str:
    """Exact match when any row has it (labelled answers), else perplexity (free-text responses)."""
    return "exact_match" if any(r.get("exact_match") is not None for r in rows) else "perplexity"


def plot_quality_speed(rows: list[dict], path: Path) -> None:
    plt, (fig, ax) = _figure()
    colors = _colors(rows)
    key = quality_key(rows)
    ok = [r for r in rows if r["status"] == "ok" and r.get(key) is not None]
    smallest = min((r["batch_size"] for r in ok), default=None)
    for r in ok:
        if r["batch_size"] == smallest:
            ax.scatter(r["decode_tok_s"], r[key], color=colors[r["name"]], s=160 if r["baseline"] else 50,
                       marker="*" if r["baseline"] else MARKERS.get(r["runtime"], "o"),
                       label=f"{r['name']} · {r['runtime_label']}")
    for r in rows:  # no speed of its own: a level to compare against
        if r.get("reference") and r.get(key) is not None:
            ax.axhline(r[key], color="grey", linestyle="--", label=f"{r['name']} (reference)")
    better = "higher" if key == "exact_match" else "lower"
    _finish(plt, fig, ax, path, f"decode tokens/s at batch {smallest} (higher is better)",
            f"{'exact match (%)' if key == 'exact_match' else 'perplexity'} ({better} is better)",
            "Quality vs decode speed (★ = baseline)", ax.get_legend_handles_labels()[0])


def plot_by_batch(rows: list[dict], path: Path, value: Callable[[dict], float], ylabel: str, title: str) -> None:
    plt, (fig, ax) = _figure()
    colors = _colors(rows)
    ax.set_xscale("log", base=2)
    sizes: set[int] = set()
    for name, runtime in dict.fromkeys((r["name"], r["runtime"]) for r in rows if r["status"] == "ok"):
        mine = sorted((r for r in rows if (r["name"], r["runtime"], r["status"]) == (name, runtime, "ok")),
                      key=lambda r: r["batch_size"])
        sizes |= {r["batch_size"] for r in mine}
        ax.plot([r["batch_size"] for r in mine], [value(r) for r in mine], color=colors[name],
                marker="*" if mine[0]["baseline"] else MARKERS.get(runtime, "o"),
                label=f"{name} · {mine[0]['runtime_label']}")
    ax.set_xticks(sorted(sizes), [str(b) for b in sorted(sizes)])
    ax.minorticks_off()
    _finish(plt, fig, ax, path, "batch size", ylabel, title, ax.get_legend_handles_labels()[0])


def _finish(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str, handles: list) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best")
    _save(plt, fig, path)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


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


def generation_method_lines(report: dict) -> list[str]:
    m, mc = report["method"], report["machine"]
    memory = next((r["memory_method"] for r in report["rows"] if r.get("memory_method")), None)
    lines = [
        _machine_line(mc),
        f"Decoding: greedy with stop ids disabled, so every run decodes exactly {m['new_tokens']} new tokens; "
        f"chat-rendered prompts of {m['prompt_tokens']} tokens; {m['runs']} timed runs per model and batch size "
        f"on {m['threads']} thread{'' if m['threads'] == 1 else 's'}, in blocks per model (each opened by an untimed warm-up); "
        "ONNX Runtime spinning off.",
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
        f"ONNX Runtime spinning: {'on' if m['ort_spinning'] else 'off'} (session.intra_op.allow_spinning=0).",
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


def _view(report: dict) -> tuple[list[str], list[list[str]], list[str], dict[str, str]]:
    """Table header, table cells, method lines and plot captions of either kind of report."""
    if is_generation(report):
        return (*generation_table(report), generation_method_lines(report), GENERATION_PLOTS)
    return (*table(report), method_lines(report), PLOTS)


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


def _plots(report: dict) -> dict[str, Callable[[Path], None]]:
    rows = report["rows"]
    ok = measured(rows)
    if is_generation(report):
        return {"quality_speed": lambda p: plot_quality_speed(rows, p), "size": lambda p: plot_size(rows, p),
                "decode": lambda p: plot_by_batch(ok, p, lambda r: r["decode_tok_s"],
                                                  "decode tokens / s (higher is better)", "Decode speed by batch size"),
                "ttft": lambda p: plot_by_batch(ok, p, lambda r: r["ttft_ms"]["p50"],
                                                "time to first token p50 (ms, lower is better)",
                                                "Time to first token by batch size")}
    return {"pareto": lambda p: plot_pareto(ok, p, tuple(quality_columns(report)[0])), "size": lambda p: plot_size(rows, p),
            "throughput": lambda p: plot_throughput(ok, p)}


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
