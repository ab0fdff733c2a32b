"""`deploykit export` for causal LMs: the decoder with its KV cache as an ONNX graph (the export stage's job), or
one GGUF file (`format: gguf`).

    deploykit export --from runs/sst2-smollm2/prune --recipe recipes/sst2-smollm2.yaml --out runs/x/export
    deploykit export --from runs/sst2-smollm2/prune --recipe recipes/sst2-smollm2.yaml --format gguf \\
        --set export.gguf_type=q8_0 --out runs/x/gguf

ONNX parity is the same greedy tokens as PyTorch on up to 20 validation prompts (deploykit/llm/onnx_export.py).
GGUF (Llama-type models, deploykit/llm/gguf_export.py) is read back and compared on the same prompts
(deploykit/llm/gguf_check.py); the folder holds model.gguf and the manifest.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.artifact import Artifact
from deploykit.config import Recipe
from deploykit.errors import UserError

GGUF_FILE = "model.gguf"


def _parity_prompts(recipe: Recipe, parent: Artifact, tokenizer) -> list[str]:
    """Up to 20 validation prompts of the recipe's task, rendered as the model is fed them."""
    from deploykit.llm.data import load_chat_task, render_prompt

    if recipe.data is None:
        raise UserError(f"export: {parent.path} is a causal LM, checked on the greedy answers to task prompts; "
                        "give the recipe's data section (--recipe RECIPE or --data NAME_OR_PATH)")
    return [render_prompt(tokenizer, p, recipe.data)
            for p in load_chat_task(recipe.data).validation.prompts[: min(recipe.export.parity_samples, 20)]]


def export_job(recipe: Recipe, parent: Artifact):
    """The export stage's job for a causal LM: the decoder with its KV cache as inputs/outputs; parity = the same
    greedy tokens as PyTorch on task prompts."""
    from transformers import AutoTokenizer

    from deploykit.jobs import ExportJob
    from deploykit.llm.onnx_export import export_causal_lm

    cfg = recipe.export
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    prompts = _parity_prompts(recipe, parent, tokenizer)  # a missing data section fails before any export

    def write(folder: Path) -> dict:
        return export_causal_lm(parent.path, tokenizer, folder, opset=cfg.opset, parity_prompts=prompts)

    def describe(report: dict) -> str:
        parity = report["parity"]
        return (f" (with its KV cache), the same greedy tokens as PyTorch on {parity['prompts']} prompts, prefill Δ "
                f"{parity['prefill_max_abs_diff']:.1e}")

    return ExportJob(write, lambda report: {"parity": report["parity"]}, describe)


def gguf_job(recipe: Recipe, parent: Artifact):
    """The export stage's job for `format: gguf`: a Llama-type causal LM as one GGUF file (export.gguf_type), read
    back and compared with PyTorch's greedy answers on task prompts (export.gguf_min_agreement).

    Raises:
        UserError: a model type, tokenizer or GGUF type the writer cannot take (before any weights load), or no
            data section to take the parity prompts from.
    """
    from deploykit.jobs import ExportJob
    from deploykit.llm.gguf_export import check_exportable
    from deploykit.models import load_config, load_tokenizer

    cfg = recipe.export
    source = str(parent.path)
    check_exportable(load_config(source), cfg.gguf_type, source)  # one line before any weights load
    tokenizer = load_tokenizer(source)
    prompts = _parity_prompts(recipe, parent, tokenizer)

    def write(folder: Path) -> dict:
        from deploykit.llm.gguf_check import check_gguf
        from deploykit.llm.gguf_export import write_gguf
        from deploykit.models import load_causal_lm

        model = load_causal_lm(source)
        report = write_gguf(model, tokenizer, folder / GGUF_FILE, cfg.gguf_type, name=Path(source).name)
        parity = check_gguf(model, tokenizer, folder / GGUF_FILE, cfg.gguf_type, prompts,
                            min_agreement=cfg.gguf_min_agreement)
        return {**report, "parity": parity}

    def describe(report: dict) -> str:
        return f", {cfg.gguf_type}, {report['size_bytes'] / 2**20:.1f} MiB"

    return ExportJob(write, lambda report: {"parity": report["parity"]}, describe, {"gguf_file": GGUF_FILE},
                     file=GGUF_FILE, format="gguf")
