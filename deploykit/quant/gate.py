"""The accuracy gate of INT8 quantization: quantize, evaluate, keep the most sensitive nodes float until it holds.

    from deploykit.quant.gate import gate
    result = gate(max_drop=0.5, max_float_nodes=8, evaluate=score, quantize=int8, rank=ranking,
                  float_model=Path("pre.onnx"))
    result.model, result.float_nodes, result.tries   # the accepted INT8 graph and how it got there

deploykit/stages/quantize.py runs it over every kind's QuantizeJob (deploykit/quant/encoder_job.py,
deploykit/llm/quantize_job.py), each with its own quantize / evaluate / rank methods; the loop, the doubling of
float nodes (1, 2, 4, ...) and the one-line GateError with every try's figures are shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deploykit.console import log
from deploykit.errors import GateError


@dataclass
class GateResult:
    model: Path                       # the accepted INT8 graph
    reference: dict                   # float metrics on the validation split
    metrics: dict                     # INT8 metrics on the validation split
    tries: list[dict] = field(default_factory=list)        # float nodes and accuracy of every try
    ranking: list[tuple[str, float]] = field(default_factory=list)  # node sensitivity, worst first

    @property
    def float_nodes(self) -> list[str]:
        return self.tries[-1]["float_nodes"]


def gate(max_drop: float, max_float_nodes: int, evaluate: Callable[[Path], dict],
         quantize: Callable[[list[str], int], Path], rank: Callable[[], list[tuple[str, float]]],
         float_model: Path, metric: str = "accuracy", advice: str = "", min_float_nodes: int = 0) -> GateResult:
    """Quantize, evaluate, and keep the most sensitive nodes in float (1, 2, 4, ... of them) until the
    INT8 model loses at most `max_drop` points against `float_model`; GateError with every try's
    accuracy otherwise.

    Args:
        max_drop / max_float_nodes: the recipe's limits.
        evaluate: path -> metrics on the validation split.
        quantize: (nodes kept float, try number) -> path of the INT8 model.
        rank: the sensitivity ranking, computed only if the first try fails.
        float_model: the float graph the drop is measured against.
        metric: the key of `evaluate`'s result that the gate compares (exact_match for causal LMs).
        advice: what else the GateError suggests (", or try --mode static"), where the job has an alternative.
        min_float_nodes: the first try already keeps this many of the most sensitive nodes float, whatever the
            drop (the ranking is computed first): for a layer known to be sensitive, where the validation rows are too
            few to tell a 0.05-point loss from noise.
    """
    result = GateResult(float_model, evaluate(float_model), {})
    if min_float_nodes:
        result.ranking = rank()
    k = min(min_float_nodes, len(result.ranking))
    while True:
        float_nodes = [name for name, _ in result.ranking[:k]]
        candidate = quantize(float_nodes, len(result.tries))
        scores = evaluate(candidate)
        drop = round(result.reference[metric] - scores[metric], 3)
        result.tries.append({"float_nodes": float_nodes, metric: scores[metric], "drop": drop})
        log(f"quantize: try {len(result.tries) - 1}: {len(float_nodes)} nodes float, {metric} "
            f"{scores[metric]:.2f} (float {result.reference[metric]:.2f}, drop {drop:.2f})")
        if drop <= max_drop + 1e-9:
            result.model, result.metrics = candidate, scores
            return result
        if len(result.tries) == 1 and max_float_nodes and not result.ranking:
            result.ranking = rank()
        limit = min(max_float_nodes, len(result.ranking))
        if k >= limit:
            figures = ", ".join(f"{len(t['float_nodes'])} float: {t[metric]:.2f}" for t in result.tries)
            raise GateError(f"gate failed after quantize: INT8 validation {metric} ({figures}) vs float "
                            f"{result.reference[metric]:.2f} loses more than max_drop {max_drop} with up to "
                            f"{limit} nodes float; raise quantize.max_float_nodes or quantize.max_drop{advice}")
        k = min(max(1, 2 * k), limit)


def gate_metrics(result: GateResult, float_onnx: Path, int8_onnx: Path) -> dict:
    """The manifest's metrics of a gated INT8 graph, for every task kind: validation scores of the float and
    INT8 graphs and the last try's drop, both files' sizes (bytes), and the INT8 graph's quantized op counts."""
    from deploykit.onnx.ops import file_size, load_onnx, quantized_op_counts

    return {"validation": {"float": result.reference, "int8": result.metrics, "drop": result.tries[-1]["drop"]},
            "size_bytes": {"float": file_size(float_onnx), "int8": file_size(int8_onnx)},
            "quantized_ops": quantized_op_counts(load_onnx(int8_onnx, load_weights=False))}
