"""The standard-recipe INT8 baseline that `deploykit bench` compares deploykit's models against.

    from deploykit.quant.baseline import standard_baseline
    art = standard_baseline(Path("runs/sst2/finetune"), Path("runs/sst2/bench/.baseline"))

What users do by hand: a plain (unfused) ONNX export, then ONNX Runtime dynamic INT8 with Optimum's
avx512_vnni preset (`OPTIMUM_AVX512_VNNI_DYNAMIC`), whatever CPU this runs on. The bench stage and
bench/quantize_sst2.py build their `baseline` row with it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from deploykit.artifact import Artifact, scratch_in, staging, write_manifest
from deploykit.errors import UserError

# what `ORTQuantizer` + `AutoQuantizationConfig.avx512_vnni(is_static=False)` passes to ONNX Runtime
OPTIMUM_AVX512_VNNI_DYNAMIC = {"op_types_to_quantize": ["MatMul", "Add"], "per_channel": True,
                               "reduce_range": False, "activations": "uint8 asymmetric",
                               "weights": "int8 symmetric"}


@contextmanager
def _no_preprocessing_advice():
    """ONNX Runtime's quantize_dynamic logs "Please consider to run pre-processing before quantization" on the root
    logger for every model without its pre-processing tag; the preset being reproduced (Optimum's) skips that step
    on purpose, so in a bench the line is noise between deploykit's own."""
    def drop(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing before quantization")

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def standard_baseline(model_dir: Path, out_dir: Path) -> Artifact:
    """The recipe users follow by hand: a plain (unfused) ONNX export, then ONNX Runtime dynamic INT8
    with Optimum's avx512_vnni preset (what `ORTQuantizer` + `AutoQuantizationConfig.avx512_vnni(
    is_static=False)` does: MatMul/Add, per-channel symmetric int8 weights, uint8 activations, full
    range, no pre-processing), whatever CPU this runs on.

    Args:
        model_dir: a fine-tuned PyTorch classifier folder.
        out_dir: where the baseline ONNX artifact goes (model.onnx, config.json, tokenizer, manifest).

    Returns:
        The baseline artifact (stage `baseline`, format `onnx`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from deploykit.artifact import load_artifact
    from deploykit.onnx.export import copy_side_files, export_onnx
    from deploykit.onnx.ops import file_size, load_onnx, quantized_op_counts

    parent = load_artifact(model_dir)
    if parent.format != "pytorch":
        raise UserError(f"{model_dir}: the standard baseline starts from a PyTorch model folder, not {parent.format}")
    with staging(out_dir) as tmp, scratch_in(tmp) as work:
        report = export_onnx(parent.path, None, work, optimize=False)
        s = OPTIMUM_AVX512_VNNI_DYNAMIC
        with _no_preprocessing_advice():
            quantize_dynamic(str(work / "model.onnx"), str(tmp / "model.onnx"),
                             op_types_to_quantize=s["op_types_to_quantize"], per_channel=s["per_channel"],
                             reduce_range=s["reduce_range"], weight_type=QuantType.QInt8,
                             extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        copy_side_files(work, tmp, "model.onnx")
        metrics = {"size_bytes": {"float": file_size(work / "model.onnx"), "int8": file_size(tmp / "model.onnx")},
                   "quantized_ops": quantized_op_counts(load_onnx(tmp / "model.onnx", load_weights=False))}
        manifest = write_manifest(tmp, stage="baseline", format="onnx", parent=parent,
                                  config={"recipe": "plain ONNX export + ORT dynamic INT8, Optimum avx512_vnni preset",
                                          **s}, metrics=metrics, onnx_file="model.onnx", export=report)
    return Artifact(Path(out_dir).resolve(), manifest)
