"""The standard INT8 recipe vs deploykit's, side by side in one run, on the fine-tuned SST-2 teacher.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/quantize_sst2.py [--teacher runs/teacher-sst2] \
        [--out runs/bench-quantize] [--set quantize.mode=static]

Rows: the PyTorch FP32 teacher (accuracy only); the standard recipe (plain ONNX export + ONNX Runtime
dynamic INT8 with Optimum's avx512_vnni preset, `deploykit/quant/baseline.py::standard_baseline`); deploykit's
INT8 (`deploykit quantize --int8`: fused export, this CPU's preset, accuracy gate on sst2/dev.tsv), once
per accuracy budget given with --max-drop (default: the recipe default 0.5, and 0.1).
Accuracy is on sst2/test.tsv (dynamic INT8 one row at a time: its activation scales span the batch; its
accuracy in length-sorted batches of 64 is printed beside it). Latency and throughput come from `deploykit.measure.benchmark.measure`, which
interleaves the models in blocks of calls on real test sentences (2 threads, ORT spinning off), and
from a paired comparison: adjacent blocks of each model, their latency ratio to the standard recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from deploykit.artifact import load_artifact
from deploykit.config import build_recipe
from deploykit.data import load_task
from deploykit.evaluate import evaluate_artifact
from deploykit.hardware import describe
from deploykit.measure.bench_plan import Settings, Subject
from deploykit.measure.benchmark import measure
from deploykit.pipeline import run_stage
from deploykit.quant.baseline import standard_baseline

DATA = {"name": "sst2", "label_names": ["negative", "positive"], "max_length": 64}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="runs/teacher-sst2")
    ap.add_argument("--out", default="runs/bench-quantize")
    ap.add_argument("--set", action="append", default=[], dest="sets",
                    help="recipe override, e.g. quantize.mode=static")
    ap.add_argument("--max-drop", type=float, nargs="+", default=[0.5, 0.1],
                    help="one deploykit INT8 row per accuracy budget of the gate (points on sst2/dev)")
    ap.add_argument("--latency-samples", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=40, help="paired latency: alternating blocks per artifact")
    args = ap.parse_args()
    if not os.environ.get("DEPLOYKIT_DATA_DIR"):
        raise SystemExit("set DEPLOYKIT_DATA_DIR to the folder holding sst2/ (e.g. ../shared/data)")
    out = Path(args.out)
    teacher = load_artifact(args.teacher)

    subjects = [Subject("standard recipe INT8", standard_baseline(teacher.path, out / "standard"), baseline=True)]
    for drop in args.max_drop:
        recipe = build_recipe({"data": DATA, "quantize": {"max_drop": drop}}, args.sets)
        art = run_stage("quantize", recipe, teacher.path, out / f"deploykit-max-drop-{drop}")
        subjects.append(Subject(f"deploykit INT8 (max_drop {drop})", art))
    test = load_task(recipe.data).test
    # the teacher gives the reference accuracy only: torch's OpenMP threads would share the two cores
    # with the ONNX Runtime rows being timed
    fp32 = evaluate_artifact(teacher, test, DATA["max_length"])
    settings = Settings(targets=["cpu"], runtimes=["ort"], batch_sizes=[1, 32], latency_samples=args.latency_samples,
                        warmup=10, min_time_s=4.0, eval_samples=None, memory="in-process")
    result = measure(subjects, test, settings, max_length=DATA["max_length"])
    # dynamic INT8 is scored one row at a time (its scales span the batch); its batched figure, for reference
    result["batched_accuracy"] = {s.name: evaluate_artifact(s.artifact, test, DATA["max_length"], batch_size=64)
                                  ["accuracy"] for s in subjects}
    result["paired"] = paired_latency([s.artifact for s in subjects], test, rounds=args.rounds)
    result.update(machine=describe(), teacher_fp32=fp32, deploykit={
        s.name: {k: s.artifact.manifest[k] for k in ("int8", "tries", "float_nodes")}
        | {"validation": s.artifact.metrics["validation"]} for s in subjects[1:]})
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print_table(result, {s.name: s.artifact for s in subjects})


def paired_latency(artifacts: list, split, rounds: int, block: int = 25) -> dict:
    """Batch-1 latency of ONNX artifacts in adjacent blocks, the order rotated every round.

    On a machine shared with other jobs the load changes from second to second; the ratio of two
    adjacent blocks cancels most of it, where pooled percentiles do not. Ratios are against the first.
    """
    from transformers import AutoTokenizer

    from deploykit.evaluate import ort_predictor, ort_session

    tok = AutoTokenizer.from_pretrained(artifacts[0].path)
    feeds = [{k: v.astype(np.int64) for k, v in tok([t], return_tensors="np").items()} for t in split.texts]
    keys = [str(a.path) for a in artifacts]
    runs = {k: ort_predictor(ort_session(a.onnx_path, threads=2, spinning=False)) for k, a in zip(keys, artifacts)}
    times: dict = {k: [] for k in keys}
    ratios: dict = {k: [] for k in keys[1:]}
    for r in range(rounds):
        chunk = [feeds[(r * block + i) % len(feeds)] for i in range(block)]
        medians = {}
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            for feed in chunk[:3]:  # untimed: the switch from the other session
                runs[k](feed)
            block_times = []
            for feed in chunk:
                start = time.perf_counter()
                runs[k](feed)
                block_times.append((time.perf_counter() - start) * 1e3)
            times[k] += block_times
            medians[k] = float(np.median(block_times))
        for k in ratios:
            ratios[k].append(medians[k] / medians[keys[0]])
    return {"p50_ms": {k: round(float(np.median(t)), 3) for k, t in times.items()},
            "min_ms": {k: round(float(np.min(t)), 3) for k, t in times.items()},
            "median_ratio_vs_first": {k: round(float(np.median(v)), 3) for k, v in ratios.items()},
            "rounds_faster_than_first": {k: sum(x < 1 for x in v) for k, v in ratios.items()},
            "rounds": rounds, "block": block}


def print_table(result: dict, artifacts: dict) -> None:
    fp32 = result["teacher_fp32"]["accuracy"]
    paired = result["paired"]
    print("| recipe | sst2/test accuracy | Δ vs FP32 (pt) | accuracy, batches of 64 | batch-1 p50 ms (paired) | "
          "ratio vs standard | batch-1 min ms | batch-1 p50 ms (bench) | batch-32 sent/s | size MB | INT8 matmuls | "
          "nodes kept float |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| PyTorch FP32 (teacher) | {fp32:.2f} | - | - | - | - | - | - | - | - | - | - |")
    for r in result["rows"]:
        art = artifacts[r["name"]]
        key, lat = str(art.path), r["latency_ms"] or {}
        print(f"| {r['name']} | {r['accuracy']:.2f} | {r['accuracy'] - fp32:+.2f} | {result['batched_accuracy'][r['name']]:.2f} | {paired['p50_ms'][key]} | "
              f"{paired['median_ratio_vs_first'].get(key, 1.0)} | {paired['min_ms'][key]} | {lat.get('p50')} | "
              f"{(r['throughput'] or {}).get('32')} | {r['size_mb']:.1f} | "
              f"{art.metrics['quantized_ops']['quantized_matmuls']} | {len(art.manifest.get('float_nodes', []))} |")
    for name, d in result["deploykit"].items():
        i, v = d["int8"], d["validation"]
        print(f"\n{name}: {i['mode']}, preset {i['preset']} (reduce_range {i['reduce_range']}), op types "
              f"{i['op_types']}; gate on sst2/dev (float {v['float']['accuracy']:.2f}): tries "
              f"{[(len(t['float_nodes']), t['accuracy']) for t in d['tries']]}; float nodes {d['float_nodes']}")
    print(f"\npaired: {paired['rounds']} rounds of {paired['block']} calls; rounds faster than the standard recipe: "
          f"{paired['rounds_faster_than_first']}; machine {result['machine']['cpu']}, {result['machine']['cores']} "
          f"cores, load average {result['method'].get('load_average')}")


if __name__ == "__main__":
    main()
