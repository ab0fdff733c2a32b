"""The project's headline figure: the default recipe end to end on this machine, final artifact vs the
fine-tuned FP32 PyTorch teacher and vs the standard recipe (plain ONNX + ORT dynamic INT8), measured
in one bench run.

    DEPLOYKIT_DATA_DIR=../shared/data python bench/headline.py [--out runs/sst2-minilm] [--set k=v ...]
    # the decoder-LLM chain (SmolLM2 -> INT8 ONNX with KV cache), its own targets:
    DEPLOYKIT_DATA_DIR=../shared/data python bench/headline.py --recipe recipes/sst2-smollm2.yaml --out runs/sst2-smollm2

Stages already in `--out` with unchanged config are reused (the runner's resume), so re-running after
a crash or an edit to a later section only redoes what changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deploykit.config import load_recipe
from deploykit.pipeline import run_recipe

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sst2-minilm.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--out", default="runs/sst2-minilm")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args()
    state = run_recipe(load_recipe(args.recipe, args.sets), Path(args.out))
    print(state.get("headline", "no headline: the recipe needs a finetune stage, a later stage and bench"))
    for stage, info in state["stages"].items():
        gate = info.get("gate")
        if gate:
            print(f"gate after {stage}: {gate['metric']} {gate['value']:.2f} vs teacher {gate['reference']:.2f} "
                  f"on {gate['split']}")


if __name__ == "__main__":
    main()
