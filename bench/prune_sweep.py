"""Prune one parent several ways (one `deploykit prune` stage per variant) and tabulate what each keeps.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/prune_sweep.py --parent runs/sst2-minilm/distill \
        --recipe recipes/sst2-minilm.yaml --out runs/prune-sweep \
        --variant base: --variant hidden:prune.hidden_kd=1.0 \
        --variant gentle:prune.width=0.1667,prune.ffn=0.6,prune.hidden_kd=1.0

Each variant is `name:key=value,key=value` over the recipe (the same keys as `--set`); `name:` alone is
the recipe's own prune section. Prints one Markdown table: shape, MACs and parameters vs the parent,
validation and `sst2/test.tsv` accuracy, the drop on test vs the parent, stage seconds. Accuracy is what
matters here; the stage time depends on the machine (run it on a GPU to sweep quickly).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from deploykit.artifact import load_artifact
from deploykit.config import load_recipe
from deploykit.data import load_task
from deploykit.evaluate import evaluate_artifact
from deploykit.pipeline import run_stage


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition(":")
    if not name:
        raise SystemExit(f"--variant {text!r}: write name:key=value,key=value")
    return name, [s for s in sets.split(",") if s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parent", required=True, help="the unpruned model folder (a distill or finetune stage)")
    ap.add_argument("--recipe", default="recipes/sst2-minilm.yaml")
    ap.add_argument("--out", default="runs/prune-sweep")
    ap.add_argument("--variant", action="append", required=True, dest="variants")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="applied to every variant")
    args = ap.parse_args()
    if not os.environ.get("DEPLOYKIT_DATA_DIR"):
        raise SystemExit("set DEPLOYKIT_DATA_DIR to the folder holding sst2/ (e.g. ../shared/data)")
    parent = Path(args.parent)
    out = Path(args.out)
    rows = []
    base = load_recipe(args.recipe, args.sets)
    parent_test = evaluate_artifact(load_artifact(parent), load_task(base.data).test, base.data.max_length)["accuracy"]
    for text in args.variants:
        name, sets = parse_variant(text)
        recipe = load_recipe(args.recipe, [*args.sets, *sets])
        start = time.time()
        art = run_stage("prune", recipe, parent, out / name)
        m = art.metrics
        shape = m["after"]["shape"]
        rows.append({
            "variant": name, "sets": " ".join(sets) or "(recipe)",
            "shape": f"{shape['layers']}L/{shape['hidden']}/{shape['heads']}h/ffn {shape['ffn']}/vocab {shape['vocab']}",
            "macs": m["macs_ratio"], "params": m["parameters_ratio"],
            "val": m["after"]["validation"]["accuracy"], "test": m["test"]["accuracy"],
            "drop": round(parent_test - m["test"]["accuracy"], 2), "seconds": round(time.time() - start),
        })
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nparent {parent}: sst2/test.tsv {parent_test:.2f}\n")
    print("| variant | settings | shape | MACs × | params × | val acc | test acc | test drop (pt) | stage s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['sets']} | {r['shape']} | {r['macs']:.2f} | {r['params']:.2f} | {r['val']:.2f} "
              f"| {r['test']:.2f} | {r['drop']:.2f} | {r['seconds']} |")


if __name__ == "__main__":
    main()
