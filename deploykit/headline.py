"""The headline table of a `deploykit run`: final artifact vs the fine-tuned FP32 PyTorch teacher and
vs the standard recipe (plain ONNX + ORT dynamic INT8), all from one bench report.

    python -m deploykit.headline runs/sst2-minilm/bench/report.json

Ratios are computed from rows measured in the same process, never across runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deploykit.errors import UserError

# the targets the default recipe is held to (issue "deploykit run"), checked on every headline
TARGETS = {"accuracy_drop_max": 1.0, "latency_speedup_min": 10.0, "throughput_gain_min": 8.0,
           "vs_baseline_speedup_min": 3.0, "size_ratio_max": 0.1}


def _row(rows: list[dict], *, target: str, pick) -> dict | None:
    found = [r for r in rows if r.get("target") == target and r.get("status") == "ok" and pick(r)]
    return min(found, key=lambda r: r["latency_ms"]["p50"]) if found else None


def headline(report: dict, teacher: str, final: str, target: str = "cpu") -> dict:
    """Pick the teacher's PyTorch FP32 row, the final artifact's fastest row and the baseline row."""
    rows = report["rows"]
    t = _row(rows, target=target, pick=lambda r: Path(r["artifact"]) == Path(teacher) and r["runtime"] == "torch")
    f = _row(rows, target=target, pick=lambda r: Path(r["artifact"]) == Path(final) and not r.get("baseline"))
    b = _row(rows, target=target, pick=lambda r: bool(r.get("baseline")))
    if t is None or f is None:
        raise UserError(f"report has no {target} rows for the teacher ({teacher}) and the final artifact ({final})")
    big = max(int(k) for k in f["throughput"])

    def ratio(a, c):
        return round(a / c, 2) if a and c else None

    out = {
        "target": target, "teacher": t, "final": f, "baseline": b, "throughput_batch": big,
        "accuracy_drop": round(t["accuracy"] - f["accuracy"], 3),
        "latency_speedup": ratio(t["latency_ms"]["p50"], f["latency_ms"]["p50"]),
        "throughput_gain": ratio(f["throughput"][str(big)], t["throughput"].get(str(big))),
        "vs_baseline_speedup": ratio(b["latency_ms"]["p50"], f["latency_ms"]["p50"]) if b else None,
        "size_ratio": ratio(f["size_mb"], t["size_mb"]),
    }
    out["met"] = {
        "accuracy": out["accuracy_drop"] <= TARGETS["accuracy_drop_max"],
        "latency": (out["latency_speedup"] or 0) >= TARGETS["latency_speedup_min"],
        "throughput": (out["throughput_gain"] or 0) >= TARGETS["throughput_gain_min"],
        "vs_baseline": (out["vs_baseline_speedup"] or 0) >= TARGETS["vs_baseline_speedup_min"],
        "size": (out["size_ratio"] or 1) <= TARGETS["size_ratio_max"],
    }
    return out


def to_markdown(h: dict) -> str:
    big = h["throughput_batch"]
    lines = [f"| model ({h['target']}) | runtime | accuracy % | p50 batch-1 ms | sent/s @{big} | size MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, r in (("fine-tuned teacher", h["teacher"]), ("standard recipe (ONNX + ORT dynamic INT8)", h["baseline"]),
                     ("deploykit final", h["final"])):
        if r is not None:
            lines.append(f"| {label} | {r['runtime_label']} | {r['accuracy']:.2f} | {r['latency_ms']['p50']:.2f} | "
                         f"{r['throughput'].get(str(big), float('nan'))} | {r['size_mb']:.2f} |")
    m = h["met"]
    lines += ["", "| measure | value | target | met |", "| --- | --- | --- | --- |",
              f"| accuracy drop vs teacher | {h['accuracy_drop']:.2f} pt | ≤ {TARGETS['accuracy_drop_max']} pt | {m['accuracy']} |",
              f"| batch-1 p50 speed-up vs teacher | {h['latency_speedup']}× | ≥ {TARGETS['latency_speedup_min']}× | {m['latency']} |",
              f"| batch-{big} throughput gain vs teacher | {h['throughput_gain']}× | ≥ {TARGETS['throughput_gain_min']}× | {m['throughput']} |",
              f"| batch-1 p50 speed-up vs standard recipe | {h['vs_baseline_speedup']}× | ≥ {TARGETS['vs_baseline_speedup_min']}× | {m['vs_baseline']} |",
              f"| size vs teacher | {h['size_ratio']}× | ≤ {TARGETS['size_ratio_max']}× | {m['size']} |"]
    return "\n".join(lines)


def write(report_path: Path, teacher: str, final: str) -> str:
    report = json.loads(Path(report_path).read_text())
    h = headline(report, teacher, final)
    text = to_markdown(h)
    Path(report_path).with_name("headline.md").write_text(text + "\n")
    Path(report_path).with_name("headline.json").write_text(json.dumps(h, indent=2, default=str))
    return text


def main() -> None:
    report_path = Path(sys.argv[1])
    state = json.loads((report_path.parent.parent / "pipeline.json").read_text())
    stages = state["stages"]
    teacher = stages["finetune"]["path"]
    final = stages[list(stages)[-1]]["path"]
    print(write(report_path, teacher, final))


if __name__ == "__main__":
    main()
