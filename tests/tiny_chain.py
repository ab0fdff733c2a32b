"""Every artifact kind `recipes/tiny-ci.yaml` makes, built once for tests that use finished artifacts (predict, serve).

    from tiny_chain import build_tiny_chain
    folders = build_tiny_chain(tmp)   # {"finetune": Path, ..., "quantize": ..., "export": ..., "dynamic": ..., "raw": ...}

The recipe runs on the learnable sentiment task of conftest (one sentiment word among fillers) instead of
400 SST-2 rows, with more fine-tuning epochs: a tiny model then gives different answers to different texts,
so a test comparing labels across runtimes can fail. About 30 s on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "recipes" / "tiny-ci.yaml"
CHAIN = ("finetune", "distill", "prune", "quantize")


def build_tiny_chain(root: Path) -> dict[str, Path]:
    """Run tiny-ci (no bench) into `root`/run, then the extra kinds a user may hold.

    Returns:
        finetune/distill/prune: PyTorch folders; quantize: static INT8 ONNX, padding-free (the recipe's final
        artifact); export: float ONNX of prune (fused, padding-free); dynamic: dynamic INT8 ONNX of prune;
        raw: a plain ONNX export of finetune without token_type_ids and without a manifest.
    """
    from conftest import write_task
    from tiny_onnx import export_tiny_onnx

    from deploykit.config import load_recipe
    from deploykit.pipeline import run_recipe, run_stage

    task = write_task(root / "task", 256, 64, 64)
    sets = [f"model.source={REPO / 'recipes' / 'assets' / 'tiny-bert'}", "data.name=null", f"data.path={task}",
            "data.max_train_samples=null", "data.max_eval_samples=null", "finetune.epochs=15",
            "finetune.learning_rate=5e-3", "bench=null", "export.format=onnx",
            # float32 training on every machine: bf16 auto trains this 86k-parameter model to other answers where
            # bf16 is native (on an H200 it learned one label for every text); the tests here compare runtimes
            "finetune.bf16=off", "distill.bf16=off"]
    recipe = load_recipe(TINY, sets)
    run_recipe(recipe, root / "run")
    folders = {stage: root / "run" / stage for stage in CHAIN}
    folders["export"] = run_stage("export", recipe, folders["prune"], root / "export").path
    dynamic = load_recipe(TINY, sets + ["quantize.mode=dynamic"])
    folders["dynamic"] = run_stage("quantize", dynamic, folders["prune"], root / "dynamic").path
    folders["raw"] = export_tiny_onnx(folders["finetune"], root / "raw", inputs=["input_ids", "attention_mask"])
    (folders["raw"] / "manifest.json").unlink()  # copied from finetune's folder: a raw export has none
    return folders
