"""`deploykit export`: a PyTorch classifier to parity-checked, fused ONNX, or to a TensorRT engine.

    deploykit export --from runs/sst2/finetune --data sst2 --out runs/sst2/export
    deploykit export --from runs/sst2/finetune --format tensorrt --set export.tensorrt.max_seq=128
    deploykit export --from runs/chat/prune --recipe recipes/sst2-smollm2.yaml --format gguf   # llama.cpp

ONNX goes through the TorchScript exporter (`dynamo=False`) with eager attention: measured on this
stack, it is the only path whose graph ONNX Runtime's transformer optimizer fuses completely
(Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization). Every transform is followed by
a parity check against PyTorch on real task texts; a drift beyond `export.atol` fails the command.
The folder is what Optimum's ORTModel classes read: model.onnx, config.json, tokenizer files, plus
deploykit's manifest.json. The engine is `deploykit.onnx.export.export_onnx` (deploykit/onnx/); this
module is the stage around it: inputs, the manifest and the log, and the kind's `export_job` (parity texts,
trained length, the rewrites it takes; causal LMs: the decoder with its KV cache, deploykit/llm/export_job.py).
In `deploykit run`, a recipe with a quantize section has no export stage for ONNX: quantize exports its PyTorch
parent with the `export:` settings itself (`Recipe.stages`), so no run folder holds a copy of the INT8 graph posing
as an export.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.kinds import kind_of, task_of


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path) -> Artifact:
    """Export `parent` into `out_dir`: PyTorch to ONNX, PyTorch or ONNX to a TensorRT engine.

    An ONNX parent is refused for `format: onnx` in one line (it is exported already; copying it would make
    a second artifact of one graph).
    """
    from deploykit.onnx.ops import file_size

    cfg = recipe.export
    if parent is None:
        raise UserError("export needs an input artifact: --from FOLDER (a fine-tuned model)")
    if cfg.format == "tensorrt":
        from deploykit.tensorrt import run_tensorrt

        return run_tensorrt(recipe, parent, out_dir)
    if cfg.format == "gguf" and parent.format != "pytorch":
        raise UserError(f"{parent.path} is an artifact of format {parent.format} (stage {parent.stage or 'unknown'}): "
                        "export --format gguf writes a PyTorch causal-LM folder; give its PyTorch parent "
                        "(the finetune, distill or prune output)")
    if parent.format == "onnx":
        from deploykit.onnx.ops import load_onnx

        load_onnx(parent.onnx_path, load_weights=False)  # a broken file is named as such first
        raise UserError(f"{parent.path} is ONNX already (stage {parent.stage or 'unknown'}): use it as it is, "
                        "export its PyTorch parent, or build a TensorRT engine from it with --format tensorrt")
    if parent.format != "pytorch":
        raise UserError(f"{parent.path}: a {parent.format} artifact cannot be exported to ONNX; give the PyTorch model")
    kind = kind_of(recipe.data.task if recipe.data is not None else task_of(parent))  # --from FOLDER alone: its kind
    if cfg.format == "gguf" and kind.gguf_job is None:
        raise UserError(f"export.format gguf is for Llama-type causal LMs; {parent.path} is a {kind.name} model: "
                        "use export.format onnx")
    if cfg.format == "onnx" and kind.export_job is None:
        raise UserError(f"export: data.task {kind.name} cannot be exported to ONNX yet")
    # what the kind's graph (or the GGUF writer) cannot take is refused here, before anything is written
    job = kind.gguf_job(recipe, parent) if cfg.format == "gguf" else kind.export_job(recipe, parent)
    with staging(out_dir) as tmp:
        report = job.write(tmp)
        size = file_size(tmp / job.file) if job.format == "onnx" else (tmp / job.file).stat().st_size
        manifest = write_manifest(tmp, stage="export", format=job.format, parent=parent,
                                  config=recipe.model_dump(include={"export"}),
                                  metrics={**job.metrics(report), "size_bytes": size}, **job.record, **report)
    log(f"export: {out_dir}/{job.file}{job.describe(report)}")
    return Artifact(Path(out_dir).resolve(), manifest)
