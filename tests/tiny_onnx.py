"""A tiny ONNX classifier folder for tests that need one (bench): plain TorchScript export, no fusion.

    from tiny_onnx import export_tiny_onnx
    export_tiny_onnx(make_tiny_model(tmp / "bert"), tmp / "onnx")   # model.onnx + config + tokenizer
"""

from __future__ import annotations

import shutil
from pathlib import Path

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def export_tiny_onnx(model_dir: Path, out: Path, inputs: list[str] = INPUTS) -> Path:
    """Export a tiny BERT classifier folder to `out`/model.onnx beside its config and tokenizer files.

    `inputs`: the graph's inputs, a prefix of INPUTS (["input_ids", "attention_mask"]: a graph without
    token_type_ids, as some exporters write it).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    out.mkdir(parents=True, exist_ok=True)
    ids = torch.ones(1, 8, dtype=torch.long)
    # dynamo=False: the TorchScript exporter takes a second here; the tests measure, not export
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))[:len(inputs)]
    torch.onnx.export(model, args, str(out / "model.onnx"),
                      input_names=inputs, output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={k: {0: "batch", 1: "sequence"} for k in inputs})
    for f in model_dir.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    return out
