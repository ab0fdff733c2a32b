"""The standard INT8 recipe vs deploykit's, side by side in one run, on the fine-tuned SST-2 teacher.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/quantize_sst2.py [--teacher runs/teacher-sst2] \
        [--out runs/bench-quantize] [--set quantize.mode=static]

Rows: the PyTorch FP32 teacher (accuracy only); the standard recipe (plain ONNX export + ONNX Runtime dynamic INT8
with Optimum's avx512_vnni preset, `stages/quantize.py::standard_baseline`); deploykit's INT8
(`deploykit quantize --int8`: fused export, this CPU's preset, accuracy gate on sst2/dev.tsv).
Accuracy is on sst2/test.tsv. Latency and throughput come from `deploykit.benchmark.measure`, which
interleaves the two INT8 models in blocks of calls on real test sentences (2 threads, ORT spinning off),
and from a paired comparison: adjacent blocks of the two models, their latency ratio per round.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from deploykit.artifact import load_artifact
from deploykit.benchmark import Settings, Subject, measure
from deploykit.config import build_recipe
from deploykit.data import load_task
from deploykit.evaluate import evaluate_artifact
from deploykit.hardware import describe
from deploykit.pipeline import run_stage
from deploykit.stages.quantize import standard_baseline

DATA = {"name": "sst2", "label_names": ["negative", "positive"], "max_length": 64}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="runs/teacher-sst2")
    ap.add_argument("--out", default="runs/bench-quantize")
    ap.add_argument("--set", action="append", default=[], dest="sets",
                    help="recipe override, e.g. quantize.mode=static")
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=40, help="paired latency: alternating blocks per artifact")
    args = ap.parse_args()
    if not os.environ.get("DEPLOYKIT_DATA_DIR"):
        raise SystemExit("set DEPLOYKIT_DATA_DIR to the folder holding sst2/ (e.g. ../shared/data)")
    out = Path(args.out)
    recipe = build_recipe({"data": DATA, "quantize": {}}, args.sets)
    teacher = load_artifact(args.teacher)

    baseline = standard_baseline(teacher.path, out / "standard")
    ours = run_stage("quantize", recipe, teacher.path, out / "deploykit")
    test = load_task(recipe.data).test
    # the teacher gives the reference accuracy only: torch's OpenMP threads would share the two cores
    # with the ONNX Runtime rows being timed
    fp32 = evaluate_artifact(teacher, test, DATA["max_length"])
    subjects = [Subject("standard recipe INT8", baseline, baseline=True), Subject("deploykit INT8", ours)]
    settings = Settings(targets=["cpu"], runtimes=["ort"], batch_sizes=[1, 32], latency_samples=args.latency_samples,
                        warmup=10, min_time_s=4.0, eval_samples=None, memory="in-process")
    result = measure(subjects, test, settings, max_length=DATA["max_length"])
    result["paired"] = paired_latency(baseline, ours, test, rounds=args.rounds)
    result.update(machine=describe(), teacher_fp32=fp32, deploykit_int8=ours.manifest["int8"],
                  gate=ours.manifest["tries"], float_nodes=ours.manifest["float_nodes"],
                  validation=ours.metrics["validation"])
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print_table(result, ours, baseline)


def paired_latency(a, b, split, rounds: int, block: int = 25) -> dict:
    """Batch-1 latency of two ONNX artifacts in alternating adjacent blocks (order flipped every round).

    On a machine shared with other jobs the load changes from second to second; the ratio of two
    adjacent blocks cancels most of it, where pooled percentiles do not.
    """
    from transformers import AutoTokenizer

    from deploykit.evaluate import ort_predictor, ort_session

    tok = AutoTokenizer.from_pretrained(a.path)
    feeds = [{k: v.astype(np.int64) for k, v in tok([t], return_tensors="np").items()} for t in split.texts]
    runs = {art.path: ort_predictor(ort_session(art.onnx_path, threads=2, spinning=False)) for art in (a, b)}
    times: dict = {a.path: [], b.path: []}
    ratios = []
    for r in range(rounds):
        chunk = [feeds[(r * block + i) % len(feeds)] for i in range(block)]
        medians = {}
        for path in ((a.path, b.path) if r % 2 == 0 else (b.path, a.path)):
            for feed in chunk[:3]:  # untimed: the switch from the other session
                runs[path](feed)
            block_times = []
            for feed in chunk:
                start = time.perf_counter()
                runs[path](feed)
                block_times.append((time.perf_counter() - start) * 1e3)
            times[path] += block_times
            medians[path] = float(np.median(block_times))
        ratios.append(medians[b.path] / medians[a.path])
    return {"p50_ms": {str(p): round(float(np.median(t)), 3) for p, t in times.items()},
            "min_ms": {str(p): round(float(np.min(t)), 3) for p, t in times.items()},
            "median_ratio_b_over_a": round(float(np.median(ratios)), 3),
            "rounds_b_faster": sum(x < 1 for x in ratios), "rounds": rounds, "block": block}


def print_table(result: dict, ours, baseline) -> None:
    fp32 = result["teacher_fp32"]["accuracy"]
    quantized = {"standard recipe INT8": baseline, "deploykit INT8": ours}
    paired = result["paired"]
    print("| recipe | sst2/test accuracy | Δ vs FP32 (pt) | batch-1 p50 ms (paired) | batch-1 min ms | "
          "batch-1 p50 ms (bench) | batch-32 sent/s | size MB | INT8 matmuls |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| PyTorch FP32 (teacher) | {fp32:.2f} | - | - | - | - | - | - | - |")
    for r in result["rows"]:
        art = quantized[r["name"]]
        lat = r["latency_ms"] or {}
        print(f"| {r['name']} | {r['accuracy']:.2f} | {r['accuracy'] - fp32:+.2f} | "
              f"{paired['p50_ms'][str(art.path)]} | {paired['min_ms'][str(art.path)]} | {lat.get('p50')} | "
              f"{(r['throughput'] or {}).get('32')} | {r['size_mb']:.1f} | "
              f"{art.metrics['quantized_ops']['quantized_matmuls']} |")
    print(f"\npaired blocks: deploykit / standard batch-1 latency, median over {paired['rounds']} rounds = "
          f"{paired['median_ratio_b_over_a']}; deploykit faster in {paired['rounds_b_faster']}/{paired['rounds']} rounds")
    i = result["deploykit_int8"]
    print(f"\ndeploykit INT8: {i['mode']}, preset {i['preset']} (reduce_range {i['reduce_range']}), "
          f"op types {i['op_types']}; gate tries {[(len(t['float_nodes']), t['accuracy']) for t in result['gate']]} "
          f"on sst2/dev (float {result['validation']['float']['accuracy']:.2f}); machine {result['machine']['cpu']}, "
          f"{result['machine']['cores']} cores")


if __name__ == "__main__":
    main()
