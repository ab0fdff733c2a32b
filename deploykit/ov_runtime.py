"""OpenVINO on the CPU for deploykit's encoder graphs: compiled once per input shape, the sequence padded to a bucket.

    predict = openvino_predictor(Path("runs/sst2/quantize/model.onnx"), threads=1)
    logits = predict({"input_ids": ids, "attention_mask": mask})       # as ONNX Runtime's predictor

OpenVINO's CPU plugin runs a model of dynamic shape with shape inference and memory planning at every call. On the
default recipe's INT8 graph (6M parameters) that was most of a call: p50 3.0 ms with 1.3 ms in its nodes, and a p90
of 25 ms as new lengths arrived (bench/README.md, "OpenVINO as a runtime"). A model compiled for one static shape
does neither, so the sequence is padded with masked positions up to the next multiple of `BUCKET` tokens and each
(batch, bucket) shape is compiled once, the most recent `MAX_SHAPES` kept. The attention mask hides the padding, so
the logits are the unpadded input's (per-token logits are cut back to its length). Kept dynamic, as compiled:
graphs without an attention_mask input, and graphs that quantize activations at run time (dynamic INT8), whose
scales would see the padded positions.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from deploykit.evaluate import Predictor, graph_feed

BUCKET = 16        # tokens: 128-token inputs need at most 8 shapes per batch size
MAX_SHAPES = 64    # compiled shapes kept (a compile takes ~0.1-0.3 s for these models)


def _config(threads: int | None) -> dict:
    # f32 named: on CPUs with native bf16 OpenVINO would otherwise run float graphs in bf16, and the same
    # artifact would answer differently from one machine to the next
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
            **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})}


def bucketable(path: Path, names: list[str]) -> bool:
    """Whether padding the sequence cannot change the graph's logits: an attention mask hides it, and no
    activation scale is computed at run time (an OpenVINO IR is NNCF's static INT8 or float)."""
    if "attention_mask" not in names:
        return False
    if path.suffix != ".onnx":
        return True
    from deploykit.onnx.ops import load_onnx, op_counts

    counts = op_counts(load_onnx(path, load_weights=False))
    return not (counts.get("DynamicQuantizeLinear") or counts.get("MatMulInteger"))


class Unreadable(RuntimeError):
    """OpenVINO cannot read the graph file itself (missing, corrupt, an IR without its model.bin): the user's to fix,
    where a graph it reads but cannot compile is this machine's runtime's limit."""


def openvino_predictor(path: Path, threads: int | None) -> Predictor:
    """The graph at `path` (ONNX or OpenVINO IR) run by OpenVINO's CPU plugin with the latency hint and `threads`
    fixed at compile time; static shapes per sequence bucket where `bucketable`, else one dynamic model.

    Raises:
        Unreadable: OpenVINO cannot read the graph file.
        RuntimeError: OpenVINO cannot compile the graph (the caller names it in one line).
    """
    import openvino as ov

    core = ov.Core()
    config = _config(threads)
    try:
        read = core.read_model(str(path))
    except RuntimeError as err:
        raise Unreadable(str(err)) from None
    names = [p.get_any_name() for p in read.inputs]
    if not bucketable(path, names):
        dynamic = core.compile_model(read, "CPU", config)
        request, output = dynamic.create_infer_request(), dynamic.outputs[0]
        # the request's output tensor is overwritten by the next call: hand the caller its own copy
        return lambda batch: np.array(request.infer(graph_feed(batch, names))[output], dtype=np.float32)
    compiled: OrderedDict[tuple[int, int], tuple] = OrderedDict()

    def for_shape(shape: tuple[int, int]):
        if shape in compiled:
            compiled.move_to_end(shape)
            return compiled[shape]
        model = read.clone()
        model.reshape({name: list(shape) for name in names})
        model_c = core.compile_model(model, "CPU", config)
        compiled[shape] = (model_c.create_infer_request(), model_c.outputs[0])
        while len(compiled) > MAX_SHAPES:
            compiled.popitem(last=False)
        return compiled[shape]

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = graph_feed(batch, names)
        rows, length = feed["input_ids"].shape
        width = -(-length // BUCKET) * BUCKET
        padded = {k: np.pad(v, ((0, 0), (0, width - length))) for k, v in feed.items()}  # masked: zeros
        request, output = for_shape((rows, width))
        logits = np.array(request.infer(padded)[output], dtype=np.float32)
        return logits[:, :length] if logits.ndim == 3 else logits  # per-token logits: the input's positions

    for_shape((1, BUCKET))  # compiled now: a graph OpenVINO cannot take fails at load, not at the first call
    run.shapes = compiled  # the static shapes compiled so far, least recently used first
    return run
