"""Parity of an ONNX export with its PyTorch source: the same logits, within an `atol`, on real texts.

    from deploykit.onnx.parity import check_parity, parity_batches, torch_logits
    batches = parity_batches(tokenizer, texts, None, ["input_ids", "attention_mask"])
    reference = torch_logits(model, batches)
    check_parity(Path("model.onnx"), reference, batches, atol=1e-4, step="export")   # max |Δlogits|

`deploykit.onnx.export.export_onnx` runs the check after every transform (export, constant shapes,
fusion); a drift beyond `atol` raises ParityError, which says which knob to turn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.errors import ParityError

# used for the parity check when the recipe has no data section
BUILTIN_TEXTS = [
    "a gripping, beautifully acted film.",
    "the plot drags and the jokes fall flat",
    "An unremarkable sequel that nobody asked for, although the soundtrack is pleasant enough.",
    "wow",
    "It is neither the best nor the worst thing I have seen this year, but I would watch it again.",
    "terrible",
    "a quiet , moving portrait of two brothers",
    "The cast does what it can with a script that never decides what it wants to be.",
]


def parity_batches(tokenizer, texts: list[str], pairs: list[str] | None, names: list[str],
                   max_length: int = 128, batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    """Tokenized batches padded to their longest row: varied shapes exercise the dynamic axes."""
    out = []
    for start in range(0, len(texts), batch_size):
        args = [texts[start:start + batch_size]]
        if pairs is not None:
            args.append(pairs[start:start + batch_size])
        enc = tokenizer(*args, truncation=True, max_length=max_length, padding=True, return_tensors="np")
        out.append({n: enc[n].astype(np.int64) for n in names})
    return out


def torch_logits(model, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return [model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.float().numpy() for b in batches]


def ort_logits(onnx_path: Path, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    from deploykit.evaluate import ort_predictor, ort_session

    predictor = ort_predictor(ort_session(onnx_path))
    return [predictor(b) for b in batches]


def max_delta(reference: list[np.ndarray], other: list[np.ndarray], batches=None) -> float:
    """Max |Δ| over every logit; per-token logits [batch, seq, labels] over every real token of `batches`
    (padding positions are never read, and the fused graph need not agree there)."""
    deltas = []
    for i, (a, b) in enumerate(zip(reference, other)):
        if a.shape != b.shape:
            return float("inf")
        diff = np.abs(a - b)
        if diff.ndim == 3 and batches is not None and "attention_mask" in batches[i]:
            diff = diff[batches[i]["attention_mask"].astype(bool)]
        deltas.append(diff.max() if diff.size else 0.0)
    return float(max(deltas))


def check_parity(onnx_path: Path, reference: list[np.ndarray], batches, atol: float, step: str) -> float:
    """Max |Δlogits| of `onnx_path` vs the PyTorch `reference` (every token's, for per-token logits); ParityError
    when it exceeds `atol`."""
    delta = max_delta(reference, ort_logits(onnx_path, batches), batches)
    if not delta <= atol:  # also catches NaN
        hint = {"optimize": "set export.optimize=false",
                "shapes": "set export.remove_padding=false"}.get(step, "check the model's custom code")
        raise ParityError(f"export: ONNX logits after {step} differ from PyTorch by {delta:.2e} > "
                          f"export.atol {atol:g}; {hint} or raise export.atol")
    return delta
