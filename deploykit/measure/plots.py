"""The PNG plots of a bench report (matplotlib, Agg backend: no display needed), one function per figure.

    from deploykit.measure.plots import plot_pareto
    plot_pareto(rows, Path("pareto.png"), ("f1", "entity F1 %"))    # quality vs batch-1 latency, Pareto front

deploykit/measure/report.py decides which plots a report gets and embeds them in report.html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from deploykit.runtimes import RUNTIMES


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
