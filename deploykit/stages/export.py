"""`deploykit export`: a PyTorch classifier to parity-checked, fused ONNX, or to a TensorRT engine.

    deploykit export --from runs/sst2/finetune --data sst2 --out runs/sst2/export
    deploykit export --from runs/sst2/finetune --format tensorrt --set export.tensorrt.max_seq=128

ONNX goes through the TorchScript exporter (`dynamo=False`) with eager attention: measured on this
stack, it is the only path whose graph ONNX Runtime's transformer optimizer fuses completely
(Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization). Every transform is followed by
a parity check against PyTorch on real task texts; a drift beyond `export.atol` fails the command.
The folder is what Optimum's ORTModel classes read: model.onnx, config.json, tokenizer files, plus
deploykit's manifest.json.
"""

from __future__ import annotations

import shutil
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import ParityError, UserError
from deploykit.packing import can_pack, packed_encoder
from deploykit.trim import can_trim, trimmed_last_layer

MIN_OPSET = 17
# architectures whose graphs ONNX Runtime's `bert` optimizer knows how to fuse
FUSABLE = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert"}
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


def _load_model(model_or_dir):
    """A float32 classifier in eval mode with eager attention (sdpa does not fuse into Attention)."""
    from transformers import AutoModelForSequenceClassification

    if isinstance(model_or_dir, (str, Path)):
        model = AutoModelForSequenceClassification.from_pretrained(
            model_or_dir, attn_implementation="eager", use_safetensors=True)
    else:
        model = model_or_dir
        model.set_attn_implementation("eager")
    return model.float().eval()


def _input_names(model, tokenizer) -> list[str]:
    """The tokenizer outputs the model's forward accepts, in the tokenizer's order."""
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in tokenizer.model_input_names if n in accepted]
    if "input_ids" not in names:
        raise UserError(f"{type(model).__name__}: tokenizer gives {tokenizer.model_input_names}, "
                        "no input_ids the model accepts; only text classifiers export")
    return names


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


def max_delta(reference: list[np.ndarray], other: list[np.ndarray]) -> float:
    return float(max(np.abs(a - b).max() for a, b in zip(reference, other)))


def check_parity(onnx_path: Path, reference: list[np.ndarray], batches, atol: float, step: str) -> float:
    """Max |Δlogits| of `onnx_path` vs the PyTorch `reference`; ParityError when it exceeds `atol`."""
    delta = max_delta(reference, ort_logits(onnx_path, batches))
    if not delta <= atol:  # also catches NaN
        hint = {"optimize": "set export.optimize=false",
                "shapes": "set export.remove_padding=false"}.get(step, "check the model's custom code")
        raise ParityError(f"export: ONNX logits after {step} differ from PyTorch by {delta:.2e} > "
                          f"export.atol {atol:g}; {hint} or raise export.atol")
    return delta


def _torchscript_export(model, names: list[str], sample: dict[str, np.ndarray], path: Path, opset: int) -> None:
    import torch

    class LogitsOnly(torch.nn.Module):
        # positional inputs in `names` order; one named output instead of a ModelOutput
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors))).logits

    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes["logits"] = {0: "batch_size"}
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    with warnings.catch_warnings(), torch.inference_mode():
        # the TorchScript exporter is deprecated and says so; it is still the path that fuses fully
        warnings.simplefilter("ignore")
        torch.onnx.export(LogitsOnly(model), args, str(path), dynamo=False, input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)


def _rewrite(model, tokenizer, names: list[str], trim: bool, pack: bool) -> dict[str, bool]:
    """Which export-time rewrites apply: {"remove_padding": ..., "trim_last_layer": ...}; one asked for
    and impossible is logged with the reason."""
    packed = False
    if pack:
        why_not = can_pack(model, tokenizer, names)
        packed = why_not is None
        if not packed:
            log(f"export: padding stays in the graph: {why_not}")
    trimmed = trim and can_trim(model)
    if trim and not trimmed:
        log(f"export: no last-layer trim for model type {model.config.model_type!r}; exporting every position")
    return {"remove_padding": packed, "trim_last_layer": trimmed}


def _constant_shapes(onnx_path: Path) -> dict:
    """`deploykit.onnx_shapes.try_static_shapes` on the file, in place."""
    import onnx

    from deploykit.onnx_shapes import try_static_shapes

    model = onnx.load(str(onnx_path))
    report = try_static_shapes(model, log)
    if report["applied"]:
        onnx.save(model, str(onnx_path))
    return report


def _widest(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The trace sample: a batch with padding, so that traced shapes cannot be specialised to a full one."""
    return max(batches, key=lambda b: (b["attention_mask"] == 0).sum() if "attention_mask" in b else 0)


def fuse(onnx_path: Path, out_path: Path, config, embeddings: bool = True) -> dict[str, int]:
    """ONNX Runtime transformer fusions with the model's real head count and width (pruned models differ).

    `embeddings=False` leaves the embedding lookups as Gather + Add + LayerNormalization: the fused
    EmbedLayerNormalization holds the word table in float, where a plain Gather can be quantized.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = embeddings
    optimized = optimize_model(str(onnx_path), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, optimization_options=options)
    optimized.save_model_to_file(str(out_path))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def export_onnx(model_or_dir, tokenizer, out_dir: str | Path, *, opset: int = MIN_OPSET, optimize: bool = True,
                atol: float = 1e-4, texts: list[str] | None = None, pairs: list[str] | None = None,
                max_length: int = 128, fuse_embeddings: bool = True, trim_last_layer: bool = False,
                remove_padding: bool = False) -> dict:
    """Export a sequence classifier to `out_dir/model.onnx` (+ config.json, tokenizer), checked and fused.

    Args:
        model_or_dir: a HF folder or a loaded `PreTrainedModel` (switched to eager attention).
        tokenizer: its tokenizer; None loads it from `model_or_dir`.
        out_dir: an existing folder to write into (the caller stages it and writes the manifest).
        opset: ONNX opset, at least 17.
        optimize: apply ONNX Runtime's transformer fusions (encoders only).
        fuse_embeddings: with `optimize`, also fuse the embeddings (EmbedLayerNormalization); False keeps
            the word-table Gather for INT8.
        atol: the largest max |Δlogits| vs PyTorch accepted after each transform.
        texts / pairs: parity-check inputs (real task texts); default: a few built-in sentences.
        max_length: truncation length of the parity inputs.
        trim_last_layer: the last layer computes only position 0, the token the head reads
            (`deploykit.trim`; architectures it does not know export whole, with a log line).
        remove_padding: the encoder runs on the batch's real tokens only (`deploykit.packing`, with the
            trim when `trim_last_layer`); where it cannot apply, a log line says why and the trim alone is tried.

    Returns:
        A report for the manifest: opset, inputs, parity Δ per step, fused operator counts.
    """
    from transformers import AutoTokenizer

    from deploykit.data import Split, fit_max_length

    if opset < MIN_OPSET:
        raise UserError(f"export.opset={opset} is too old; use {MIN_OPSET} or newer")
    out_dir = Path(out_dir)
    model = _load_model(model_or_dir)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_or_dir)
    texts, pairs = (texts, pairs) if texts else (BUILTIN_TEXTS, None)
    # "auto" (no trained length recorded): long enough for every parity text
    max_length = fit_max_length(max_length, model.config, tokenizer, Split(texts, pairs, [0] * len(texts)))
    names = _input_names(model, tokenizer)
    # batches of 16 padded to their longest row, and one row alone: batch 1 has no padding at all
    batches = parity_batches(tokenizer, texts, pairs, names, max_length)
    batches += parity_batches(tokenizer, texts[:1], pairs[:1] if pairs else None, names, max_length)
    reference = torch_logits(model, batches)

    onnx_path = out_dir / "model.onnx"
    rewrite = _rewrite(model, tokenizer, names, trim_last_layer, remove_padding)
    if rewrite["remove_padding"]:
        rewriting = packed_encoder(model, trim=rewrite["trim_last_layer"])
    else:
        rewriting = trimmed_last_layer(model) if rewrite["trim_last_layer"] else nullcontext()
    with rewriting:
        _torchscript_export(model, names, _widest(batches), onnx_path, opset)
    # the reference logits came from the untouched model: parity covers the rewrite too
    report = {"onnx_file": onnx_path.name, "opset": opset, "inputs": names, "rewrite": rewrite,
              "parity_rows": sum(len(b["input_ids"]) for b in batches),
              "parity": {"export": check_parity(onnx_path, reference, batches, atol, "export")},
              "fused_ops": {}, "optimized": False}
    if rewrite["remove_padding"]:
        # the packing's index arithmetic leaves ~200 Shape/Gather/Concat nodes feeding Reshape targets that
        # are fixed: constant targets made static INT8 8% faster at batch 1, 7% at batch 32 (bench/README.md)
        report["static_shapes"] = _constant_shapes(onnx_path)
        report["parity"]["shapes"] = check_parity(onnx_path, reference, batches, atol, "shapes")
    model_type = model.config.model_type
    if optimize and model_type in FUSABLE:
        fused_path = out_dir / "model.fused.onnx"
        report["fused_ops"] = fuse(onnx_path, fused_path, model.config, embeddings=fuse_embeddings)
        report["parity"]["optimize"] = check_parity(fused_path, reference, batches, atol, "optimize")
        fused_path.replace(onnx_path)
        report["optimized"] = True
    elif optimize:
        log(f"export: no ONNX Runtime fusions for model type {model_type!r}; writing the plain graph")
    model.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return report


def _parity_texts(recipe: Recipe, n: int) -> tuple[list[str] | None, list[str] | None, int]:
    """Up to `n` validation texts of the recipe's task (None without a data section), and max_length."""
    if recipe.data is None:
        return None, None, 128
    from deploykit.data import load_task

    split = load_task(recipe.data).validation.head(n)
    return split.texts, split.pairs, recipe.data.max_length


def copy_onnx_folder(parent: Artifact, dest: Path) -> None:
    """Copy an ONNX artifact's files (graph, external weights, config, tokenizer), not its manifest."""
    for item in parent.path.iterdir():
        if item.is_file() and item.name != "manifest.json":
            shutil.copy2(item, dest / item.name)


def _pass_through(recipe: Recipe, parent: Artifact, out_dir: Path) -> Artifact:
    """An ONNX parent (the quantize stage's INT8 model, in `deploykit run`) is checked and copied."""
    from deploykit.evaluate import ort_session
    from deploykit.onnx_ops import file_size, load_onnx

    load_onnx(parent.onnx_path, min_opset=13, load_weights=False)
    ort_session(parent.onnx_path)  # a graph ONNX Runtime cannot load fails here, in one line
    with staging(out_dir) as tmp:
        copy_onnx_folder(parent, tmp)
        manifest = write_manifest(tmp, stage="export", format="onnx", parent=parent,
                                  config=recipe.model_dump(include={"export"}),
                                  metrics={"size_bytes": file_size(tmp / parent.onnx_path.name)},
                                  onnx_file=parent.onnx_path.name, passed_through=True)
    log(f"export: {parent.path} is already ONNX; checked and copied to {out_dir}")
    return Artifact(Path(out_dir).resolve(), manifest)


def _export_causal(recipe: Recipe, parent: Artifact, out_dir: Path) -> Artifact:
    """A causal LM with its KV cache as inputs/outputs; parity = the same greedy tokens on task prompts."""
    from transformers import AutoTokenizer

    from deploykit.llm.data import load_chat_task, render_prompt
    from deploykit.llm.onnx_export import export_causal_lm
    from deploykit.onnx_ops import file_size

    cfg = recipe.export
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    prompts = [render_prompt(tokenizer, p, recipe.data)
               for p in load_chat_task(recipe.data).validation.prompts[: min(cfg.parity_samples, 20)]]
    with staging(out_dir) as tmp:
        report = export_causal_lm(parent.path, tokenizer, tmp, opset=cfg.opset, parity_prompts=prompts)
        metrics = {"parity": report["parity"], "size_bytes": file_size(tmp / "model.onnx")}
        manifest = write_manifest(tmp, stage="export", format="onnx", parent=parent,
                                  config=recipe.model_dump(include={"export"}), metrics=metrics, **report)
    return Artifact(Path(out_dir).resolve(), manifest)


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path) -> Artifact:
    """Export `parent` into `out_dir`: PyTorch to ONNX, PyTorch or ONNX to a TensorRT engine.

    An ONNX parent with `format: onnx` (the quantize stage runs first in a recipe) is passed through.
    """
    from deploykit.onnx_ops import file_size

    cfg = recipe.export
    if parent is None:
        raise UserError("export needs an input artifact: --from FOLDER (a fine-tuned model)")
    if cfg.format == "tensorrt":
        from deploykit.tensorrt import run_tensorrt

        return run_tensorrt(recipe, parent, out_dir)
    if parent.format == "onnx":
        return _pass_through(recipe, parent, out_dir)
    if parent.format != "pytorch":
        raise UserError(f"{parent.path}: a {parent.format} artifact cannot be exported to ONNX; give the PyTorch model")
    if recipe.data is not None and recipe.data.task == "generation":
        return _export_causal(recipe, parent, out_dir)
    texts, pairs, max_length = _parity_texts(recipe, cfg.parity_samples)
    if max_length == "auto":
        max_length = parent.manifest.get("max_length") or "auto"
    with staging(out_dir) as tmp:
        report = export_onnx(parent.path, None, tmp, opset=cfg.opset, optimize=cfg.optimize, atol=cfg.atol,
                             texts=texts, pairs=pairs, max_length=max_length, trim_last_layer=cfg.trim_last_layer,
                             remove_padding=cfg.remove_padding)
        metrics = {"parity_max_abs_diff": max(report["parity"].values()), "size_bytes": file_size(tmp / "model.onnx")}
        manifest = write_manifest(tmp, stage="export", format="onnx", parent=parent,
                                  config=recipe.model_dump(include={"export"}), metrics=metrics, **report)
    log(f"export: {out_dir}/model.onnx, parity {metrics['parity_max_abs_diff']:.1e}, "
        f"fused {report['fused_ops'] or 'nothing'}")
    return Artifact(Path(out_dir).resolve(), manifest)
