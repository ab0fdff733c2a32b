"""`deploykit export` for causal LMs: the decoder with its KV cache as graph inputs and outputs.

    deploykit export --from runs/sst2-smollm2/prune --recipe recipes/sst2-smollm2.yaml --out runs/x/export

Parity is the same greedy tokens as PyTorch on up to 20 validation prompts (deploykit/llm/onnx_export.py).
"""

from __future__ import annotations

from pathlib import Path

from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.config import Recipe
from deploykit.errors import UserError


def run(recipe: Recipe, parent: Artifact, out_dir: Path) -> Artifact:
    """A causal LM with its KV cache as inputs/outputs; parity = the same greedy tokens on task prompts."""
    from transformers import AutoTokenizer

    from deploykit.llm.data import load_chat_task, render_prompt
    from deploykit.llm.onnx_export import export_causal_lm
    from deploykit.onnx.ops import file_size

    cfg = recipe.export
    if recipe.data is None:
        raise UserError(f"export: {parent.path} is a causal LM, checked on the greedy answers to task prompts; "
                        "give the recipe's data section (--recipe RECIPE or --data NAME_OR_PATH)")
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    prompts = [render_prompt(tokenizer, p, recipe.data)
               for p in load_chat_task(recipe.data).validation.prompts[: min(cfg.parity_samples, 20)]]
    with staging(out_dir) as tmp:
        report = export_causal_lm(parent.path, tokenizer, tmp, opset=cfg.opset, parity_prompts=prompts)
        metrics = {"parity": report["parity"], "size_bytes": file_size(tmp / "model.onnx")}
        manifest = write_manifest(tmp, stage="export", format="onnx", parent=parent,
                                  config=recipe.model_dump(include={"export"}), metrics=metrics, **report)
    return Artifact(Path(out_dir).resolve(), manifest)
