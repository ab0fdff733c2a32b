"""The ONNX export engine: a PyTorch sequence classifier to a parity-checked, fused `model.onnx`.

    from deploykit.onnx.export import export_onnx
    report = export_onnx("runs/sst2/finetune", None, Path("out"), texts=["a fine film", "bad"])
    report["parity"], report["fused_ops"]   # max |Δlogits| per step, fused operator counts

The `export` and `quantize` stages, the standard baseline and TensorRT builds call `export_onnx`; the
caller stages `out_dir` and writes the manifest. The graph goes through the TorchScript exporter
(`dynamo=False`) with eager attention, optionally rewritten first (`deploykit.onnx.trim`,
`deploykit.onnx.packing`), its Reshape targets made constant after packing (`deploykit.onnx.shapes`)
and ONNX Runtime's transformer fusions applied; `deploykit.onnx.parity` checks it against PyTorch after
each of those steps.
"""

from __future__ import annotations

import shutil
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from deploykit.architectures import supporting
from deploykit.artifact import Artifact
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.onnx.packing import can_pack, packed_encoder
from deploykit.onnx.parity import BUILTIN_TEXTS, check_parity, parity_batches, torch_logits
from deploykit.onnx.trim import can_trim, trimmed_last_layer

MIN_OPSET = 17


def _load_model(model_or_dir):
    """A float32 classifier in eval mode with eager attention (sdpa does not fuse into Attention); a folder whose
    config names a *ForTokenClassification architecture loads its per-token head (logits [batch, seq, labels])."""
    from transformers import AutoConfig

    from deploykit.saved import load_saved

    if isinstance(model_or_dir, (str, Path)):
        archs = AutoConfig.from_pretrained(model_or_dir).architectures or []
        task = "token_classification" if any(str(a).endswith("ForTokenClassification") for a in archs) \
            else "classification"
        # every weight from the folder: a head missing from it would be exported as random numbers
        model = load_saved(Path(model_or_dir), task, attn_implementation="eager")
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


def _torchscript_export(model, names: list[str], sample: dict[str, np.ndarray], path: Path, opset: int,
                        per_token: bool = False) -> None:
    import torch

    class LogitsOnly(torch.nn.Module):
        # positional inputs in `names` order; one named output instead of a ModelOutput
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors))).logits

    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    # a token classifier's logits [batch, seq, labels] follow the input's length too
    axes["logits"] = {0: "batch_size", 1: "sequence_length"} if per_token else {0: "batch_size"}
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
    """`deploykit.onnx.shapes.try_static_shapes` on the file, in place."""
    import onnx

    from deploykit.onnx.shapes import try_static_shapes

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
            (`deploykit.onnx.trim`; architectures it does not know export whole, with a log line).
        remove_padding: the encoder runs on the batch's real tokens only (`deploykit.onnx.packing`, with the
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
        _torchscript_export(model, names, _widest(batches), onnx_path, opset, per_token=reference[0].ndim == 3)
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
    # the architecture table's `fuse`: graphs ONNX Runtime's `bert` optimizer knows how to fuse
    if optimize and model_type in supporting("fuse"):
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


def copy_onnx_folder(parent: Artifact, dest: Path) -> None:
    """Copy an ONNX artifact's files (graph, external weights, config, tokenizer), not its manifest."""
    for item in parent.path.iterdir():
        if item.is_file() and item.name != "manifest.json":
            shutil.copy2(item, dest / item.name)


def copy_side_files(src_folder: Path, dest: Path, onnx_name: str) -> None:
    """config.json and tokenizer files, not the graph or a manifest: Optimum's ORTModel layout."""
    for item in src_folder.iterdir():
        if item.is_file() and item.suffix != ".onnx" and item.name not in ("manifest.json", onnx_name + ".data"):
            shutil.copy2(item, dest / item.name)


def encoder_export_job(parent_path: str | Path, cfg, args: dict, record: dict | None = None, note: str = ""):
    """The export stage's job for an encoder: `export_onnx` of `parent_path` with the export section `cfg` (opset,
    fusions, atol) and the kind's `args` (parity texts, trained length, rewrites); `note` names what the graph
    outputs in the log line (e.g. " (per-token logits, ...)")."""
    from deploykit.jobs import ExportJob

    def write(folder: Path) -> dict:
        return export_onnx(parent_path, None, folder, opset=cfg.opset, optimize=cfg.optimize, atol=cfg.atol, **args)

    def describe(report: dict) -> str:
        return (f"{note}, parity {max(report['parity'].values()):.1e}, "
                f"fused {report['fused_ops'] or 'nothing'}")

    return ExportJob(write, lambda report: {"parity_max_abs_diff": max(report["parity"].values())}, describe,
                     record or {})
