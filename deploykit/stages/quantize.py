"""`deploykit quantize --int8`: ONNX Runtime INT8 (dynamic, or static QDQ) behind an accuracy gate.

    deploykit quantize --from runs/sst2/finetune --int8 --data sst2 --out runs/sst2/quantize
    deploykit quantize --from runs/sst2/export --int8 --mode static --set quantize.calibration=percentile

A PyTorch input is exported first (fused, parity-checked, see `deploykit/onnx/export.py`). The float graph
goes through `quant_pre_process`, then INT8 with 7-bit weights that every CPU computes alike (`quantize.preset: avx2`).
The gate evaluates the INT8 model against its float parent on the validation split; when it loses
more than `quantize.max_drop` points, nodes are ranked by sensitivity and the most sensitive stay in
float (1, 2, 4, ... up to `quantize.max_float_nodes`; from `quantize.min_float_nodes` on the first try) until the
gate holds, or the stage fails with every try's figures; with `quantize.fallback_bits` the float nodes keep 8 or
16-bit weights (`deploykit.quant.int8.fallback_weights`) (the loop is `deploykit.quant.gate`, the INT8 steps `deploykit.quant.int8`).
`deploykit.quant.baseline.standard_baseline` builds the by-hand recipe (Optimum's avx512_vnni dynamic
preset on a plain export) that `deploykit bench` compares against.

What is quantized, how and how it is scored come from the task's kind (`Kind.quantize_job`, a
deploykit.jobs.QuantizeJob): encoders through deploykit/quant/encoder_job.py with the kind's export and scores
(text classifiers: deploykit/quant/text_job.py, accuracy, static calibration on training rows; token classifiers:
deploykit/ner/quantize.py, entity F1 over words), causal LMs through deploykit/llm/quantize_job.py (the KV-cache
decoder, INT8 or 4-bit weights, exact match). This module stages the folder, runs the gate, writes the manifest and
logs, once for every kind.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.artifact import Artifact, scratch_in, staging, write_manifest
from deploykit.config import Recipe
from deploykit.console import log
from deploykit.errors import UserError
from deploykit.kinds import kind_of


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path) -> Artifact:
    """INT8-quantize `parent` (PyTorch: exported first; ONNX: used as is) into `out_dir`.

    Raises:
        UserError: no input or data, a mode or artifact the kind cannot take, too few calibration rows.
        GateError: no try within `quantize.max_float_nodes` keeps the kind's metric within `quantize.max_drop`.
    """
    from deploykit.quant.gate import gate

    cfg = recipe.quantize
    if parent is None:
        raise UserError("quantize needs an input artifact: --from FOLDER (a fine-tuned model or its ONNX export)")
    if recipe.data is None:
        raise UserError("quantize needs a data section (or --data NAME_OR_PATH): the gate evaluates on its "
                        "validation split")
    kind = kind_of(recipe.data.task)
    if kind.quantize_job is None:
        raise UserError(f"quantize: data.task {kind.name} cannot be quantized to INT8 yet")
    job = kind.quantize_job(recipe, parent)  # a mode the kind does not take is refused here
    with staging(out_dir) as tmp, scratch_in(tmp) as work:
        reference = job.prepare(work)
        result = gate(cfg.max_drop, cfg.max_float_nodes, job.score, job.int8, job.rank, reference, metric=job.metric,
                      advice=job.advice, min_float_nodes=cfg.min_float_nodes)
        metrics, fields = job.finish(result, tmp)
        manifest = write_manifest(tmp, stage="quantize", format="onnx", parent=parent,
                                  config=recipe.model_dump(include={"data", "quantize"}), metrics=metrics,
                                  onnx_file="model.onnx", tries=result.tries, **fields)
    log(job.describe(result, metrics))
    return Artifact(Path(out_dir).resolve(), manifest)
