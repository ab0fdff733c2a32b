"""The standard INT8 recipe vs deploykit's, side by side in one run, on the fine-tuned SST-2 teacher.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/quantize_sst2.py [--teacher runs/teacher-sst2] \
        [--out runs/bench-quantize] [--set quantize.mode=static]

Rows: the PyTorch FP32 teacher (accuracy only); the standard recipe (plain ONNX export + ONNX Runtime dynamic INT8
with Optimum's avx512_vnni preset, `stages/quantize.py::standard_baseline`); deploykit's INT8
(`deploykit quantize --int8`: fused export, this CPU's preset, accuracy gate on sst2/dev.tsv).
Accuracy is on sst2/test.tsv. Latency and throughput come from `deploykit.benchmark.measure`, which
interleaves the two INT8 models in blocks of calls on real test sentences (2 threads, ORT spinning off).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

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
    ap.add_argument("--latency-samples", type=int, default=400)
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
    result.update(machine=describe(), teacher_fp32=fp32, deploykit_int8=ours.manifest["int8"],
                  gate=ours.manifest["tries"], float_nodes=ours.manifest["float_nodes"],
                  validation=ours.metrics["validation"])
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print_table(result, ours, baseline)


def print_table(result: dict, ours, baseline) -> None:
    fp32 = result["teacher_fp32"]["accuracy"]
    quantized = {"standard recipe INT8": baseline, "deploykit INT8": ours}
    print("| recipe | sst2/test accuracy | Δ vs FP32 (pt) | batch-1 p50 ms | batch-1 p90 ms | batch-32 sent/s "
          "| size MB | INT8 matmuls |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| PyTorch FP32 (teacher) | {fp32:.2f} | - | - | - | - | - | - |")
    for r in result["rows"]:
        matmuls = quantized[r["name"]].metrics["quantized_ops"]["quantized_matmuls"]
        lat = r["latency_ms"] or {}
        print(f"| {r['name']} | {r['accuracy']:.2f} | {r['accuracy'] - fp32:+.2f} | {lat.get('p50')} | "
              f"{lat.get('p90')} | {(r['throughput'] or {}).get('32')} | {r['size_mb']:.1f} | {matmuls} |")
    i = result["deploykit_int8"]
    print(f"\ndeploykit INT8: {i['mode']}, preset {i['preset']} (reduce_range {i['reduce_range']}), "
          f"op types {i['op_types']}; gate tries {[(len(t['float_nodes']), t['accuracy']) for t in result['gate']]} "
          f"on sst2/dev (float {result['validation']['float']['accuracy']:.2f}); machine {result['machine']['cpu']}, "
          f"{result['machine']['cores']} cores")


if __name__ == "__main__":
    main()
