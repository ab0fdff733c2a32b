"""Distil the SST-2 teacher (fine-tuned packaged MiniLM, 6 layers) into a 3-layer student built from its
own layers, and train the same student without KD, in one run; print both next to the teacher.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/distill_sst2.py --teacher runs/teacher-sst2 \
        [--train-rows 10000] [--out runs/bench-distill] [--set distill.temperature=4]

Both students start from the same teacher layers (every other one, ending on the top: [1, 3, 5]), see
the same training rows in the same order and use the same optimiser settings; only the loss differs
(KD: alpha_kd / alpha_ce as set below; no KD: alpha_kd=0, alpha_ce=1). Accuracy is on all of
sst2/test.tsv (the GLUE dev set, 872 rows). On a 2-core CPU a full SST-2 epoch takes 30+ minutes per
model, so by default a seeded subset of the training rows is used (`--train-rows`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deploykit.config import load_recipe
from deploykit.pipeline import run_stage

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sst2-minilm.yaml"
# shared by both students; the recipe's data section (max_length 64, label names) is kept. The learning
# rate is twice the teacher recipe's because one epoch of a subset is ~6x fewer steps than the teacher had
COMMON = ["distill.epochs=1", "distill.learning_rate=2e-4", "distill.batch_size=32", "distill.warmup_ratio=0.06",
          "distill.early_stopping_patience=null", "distill.logging_steps=100", "data.max_eval_samples=1000"]
KD = ["distill.alpha_kd=0.7", "distill.alpha_ce=0.3", "distill.temperature=2.0"]
NO_KD = ["distill.alpha_kd=0.0", "distill.alpha_ce=1.0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="runs/teacher-sst2", help="fine-tuned teacher folder")
    ap.add_argument("--train-rows", type=int, default=10000, help="seeded subset of sst2/train.tsv (0: all)")
    ap.add_argument("--out", default="runs/bench-distill")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="override for both runs")
    args = ap.parse_args()
    if not os.environ.get("DEPLOYKIT_DATA_DIR"):
        raise SystemExit("set DEPLOYKIT_DATA_DIR to the folder holding sst2/ (e.g. ../shared/data)")
    rows = [f"data.max_train_samples={args.train_rows}"] if args.train_rows else []
    runs = {}
    for name, loss in (("KD", KD), ("no KD", NO_KD)):
        recipe = load_recipe(RECIPE, ["distill={}"] + COMMON + rows + loss + args.sets)
        folder = Path(args.out) / ("kd" if name == "KD" else "no-kd")
        runs[name] = run_stage("distill", recipe, args.teacher, folder)

    kd = runs["KD"].metrics
    teacher_acc = kd["teacher"]["test"]["accuracy"]
    table = [("teacher (6 layers)", kd["teacher_parameters"], "-", kd["teacher"]["validation"]["accuracy"],
              teacher_acc, kd["teacher"]["test"]["macro_f1"], "-")]
    for name, art in runs.items():
        m = art.metrics
        table.append((f"student, {name} ({len(art.manifest['student']['layers_kept'])} layers "
                      f"{art.manifest['student']['layers_kept']})", m["parameters"], m["optimizer_steps"],
                      m["validation"]["accuracy"], m["test"]["accuracy"], m["test"]["macro_f1"], m["train_seconds"]))
    print(f"teacher {args.teacher}; train rows {args.train_rows or 'all'}; validation: first "
          f"{kd['teacher']['validation']['n']} rows of sst2/dev.tsv; test: sst2/test.tsv ({kd['teacher']['test']['n']} rows)")
    print("| model | parameters | steps | validation acc | test acc | test macro-F1 | train s |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r[0]} | {r[1] / 1e6:.1f}M | " + " | ".join(str(v) for v in r[2:]) + " |")
    kd_acc, plain_acc = kd["test"]["accuracy"], runs["no KD"].metrics["test"]["accuracy"]
    print(f"target KD >= teacher - 1.5: {kd_acc:.2f} vs {teacher_acc - 1.5:.2f} -> "
          f"{'met' if kd_acc >= teacher_acc - 1.5 else 'missed'}; "
          f"target KD > no KD: {kd_acc:.2f} vs {plain_acc:.2f} -> {'met' if kd_acc > plain_acc else 'missed'}")


if __name__ == "__main__":
    main()
