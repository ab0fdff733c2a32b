"""What bf16 training changes, measured: the default recipe's fine-tune with bf16 off and on, same machine, one run.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/bf16_training.py [--rows 4000] [--out runs/bf16-training]

Both fine-tunes start from the same seed and rows; they run one after the other in this process (never
at once: two trainings on 2 cores would time each other). `bf16: on` emulates bf16 on CPUs without
AVX512_BF16/AMX, so the table says whether this CPU has it. Test accuracy is scored from the saved
float32 artifacts, as every later stage and gate sees them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deploykit.config import load_recipe
from deploykit.data import load_task
from deploykit.evaluate import evaluate_artifact
from deploykit.hardware import describe
from deploykit.pipeline import run_stage

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sst2-minilm.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bf16-training")
    ap.add_argument("--rows", type=int, default=4000, help="training rows (the recipe trains on 20,000)")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args()
    if not os.environ.get("DEPLOYKIT_DATA_DIR"):
        raise SystemExit("set DEPLOYKIT_DATA_DIR to the folder holding sst2/ (e.g. ../shared/data)")
    machine = describe()
    results = []
    for bf16 in ("off", "on"):
        # one epoch, not the recipe's step budget with early stopping: both runs then take the same steps
        recipe = load_recipe(RECIPE, [f"data.max_train_samples={args.rows}", f"finetune.bf16={bf16}",
                                      "finetune.epochs=1", "finetune.max_steps=-1",
                                      "distill=null", "prune=null", "quantize=null", "bench=null", *args.sets])
        art = run_stage("finetune", recipe, None, Path(args.out) / bf16, force=True)
        test = evaluate_artifact(art, load_task(recipe.data).test, recipe.data.max_length)
        m = art.metrics
        results.append((bf16, m["train_seconds"], m["train_seconds"] / max(m["optimizer_steps"], 1),
                        m["validation"]["accuracy"], test["accuracy"], test["macro_f1"]))
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores; bf16 native: {machine['bf16_native']}; "
          f"ISA: {' '.join(machine['isa'])}")
    print(f"fine-tune of {RECIPE.name} on {args.rows} SST-2 rows, 1 epoch; test = all of sst2/test.tsv\n")
    print("| bf16 | train s | s / step | validation acc | test acc | test macro-F1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for bf16, secs, per_step, val, acc, f1 in results:
        print(f"| {bf16} | {secs:.0f} | {per_step:.2f} | {val:.2f} | {acc:.2f} | {f1:.2f} |")
    off, on = results
    print(f"\nbf16 on vs off: {off[1] / on[1]:.2f}x the training speed, test accuracy {on[4] - off[4]:+.2f} pt")


if __name__ == "__main__":
    main()
