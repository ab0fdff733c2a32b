"""A tiny ONNX classifier folder for tests that need one (bench): plain TorchScript export, no fusion;
and the logits of an ONNX classifier folder's graph on a few texts (quantize tests).

    from tiny_onnx import export_tiny_onnx, ort_logits
    export_tiny_onnx(make_tiny_model(tmp / "bert"), tmp / "onnx")   # model.onnx + config + tokenizer
    ort_logits(tmp / "onnx" / "model.onnx", ["a fine film"])          # [1, labels]
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

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


def ort_logits(path: Path, texts: list[str]) -> np.ndarray:
    """Logits of the graph at `path` on `texts`, tokenized by the tokenizer beside it."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    enc = tok(texts, padding=True, return_tensors="np")
    return sess.run(None, {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()})[0]
