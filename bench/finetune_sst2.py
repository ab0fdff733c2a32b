"""Fine-tune the packaged MiniLM on the full SST-2 train file; print test accuracy and time per epoch.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/finetune_sst2.py [--out runs/teacher-sst2] [--set finetune.epochs=3]

The output folder is the SST-2 teacher that the other benchmarks start from.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deploykit.config import load_recipe
from deploykit.pipeline import run_stage

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sst2-minilm.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/teacher-sst2")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args()
    # the whole train file and up to 3 epochs (the default recipe trains on a third, for one epoch)
    defaults = ["data.max_train_samples=null", "finetune.epochs=3", "finetune.early_stopping_patience=1"]
    recipe = load_recipe(RECIPE, defaults + args.sets)
    if recipe.data.data_dir is None and not os.environ.get("DEPLOYKIT_DATA_DIR"):
        raise SystemExit("set DEPLOYKIT_DATA_DIR to the folder holding sst2/ (e.g. ../shared/data)")
    art = run_stage("finetune", recipe, None, Path(args.out))
    m = art.metrics
    rows = [("model", recipe.model.source), ("train rows", recipe.data.max_train_samples or "all of sst2/train.tsv"),
            ("max_length", recipe.data.max_length), ("epochs run", m["epochs_run"]),
            ("best checkpoint", m["best_checkpoint"]), ("seconds per epoch", m["seconds_per_epoch"]),
            ("validation accuracy (sst2/dev.tsv)", m["validation"]["accuracy"]),
            ("test accuracy (sst2/test.tsv)", m["test"]["accuracy"]),
            ("test macro-F1", m["test"]["macro_f1"])]
    width = max(len(k) for k, _ in rows)
    print(f"| {'what'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
