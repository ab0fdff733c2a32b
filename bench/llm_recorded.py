"""Does each causal-LM stage of a run record the quality its saved folder has? One table per run folder.

    DEPLOYKIT_DATA_DIR=../shared/data deploykit run bench/llm_bf16_check.yaml --out runs/llm-bf16
    DEPLOYKIT_DATA_DIR=../shared/data python bench/llm_recorded.py runs/llm-bf16

A stage trained in bf16 (`bf16: auto` on an AMX CPU or a CUDA GPU) evaluates its model as trained, inside the
autocast wrapper; this scores each saved folder again in float32 on the same validation prompts and prints both.
They differed when accelerate's unwrap dropped transformers' `cache` keyword and decoding ran without its KV cache
(forty-fifth session: recorded 0.0, folder 37.5). Prints the machine's CPU flags beside the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a `deploykit run` folder of a generation recipe")
    args = parser.parse_args()
    from deploykit.config import Recipe
    from deploykit.hardware import cpu_flags
    from deploykit.llm.data import load_chat_task
    from deploykit.llm.quality import evaluate_causal

    print("| stage | bf16 | recorded: exact match / perplexity | saved folder, float32: exact match / perplexity |")
    print("|---|---|---|---|")
    for stage in ("finetune", "distill", "prune"):
        folder = args.run / stage
        if not (folder / "manifest.json").is_file():
            continue
        manifest = json.loads((folder / "manifest.json").read_text())
        config = manifest["config"]
        recipe = Recipe.model_validate({k: v for k, v in config.items() if k in ("name", "model", "data")})
        split = load_chat_task(recipe.data).validation
        again = evaluate_causal(str(folder), split, recipe.data, runtime="torch")
        metrics = manifest.get("metrics", {})
        # prune records its model "after" its recovery
        recorded = metrics.get("validation") or (metrics.get("after") or {}).get("validation") or {}
        section = config.get(stage) or {}
        bf16 = (section.get("recovery") or {}).get("bf16") if stage == "prune" else section.get("bf16")
        print(f"| {stage} | {bf16} | {recorded.get('exact_match')} / {recorded.get('perplexity')} | "
              f"{again['exact_match']} / {again['perplexity']} |")
    shown = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    print(f"\nCPU flags: {' '.join(f for f in shown if f in cpu_flags()) or 'none of ' + ', '.join(shown)}")


if __name__ == "__main__":
    main()
