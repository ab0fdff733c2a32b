"""What `deploykit.load` refuses before a model runs, each in one line naming the fix: an unknown runtime or
one that cannot read the folder's format, a device it does not run on, a thread count that is not a positive
integer, a folder without tokenizer files or with a tokenizer that is not the model's; and `unicode_fault`, the
text no tokenizer takes, and `first_blank`, the text with nothing to score (shared by every predictor and the server).

    runtime = resolve_runtime("onnx", "auto", device=None)   # "ort" ("ort-cuda" with device="cuda")
    check_tokenizer_files(Path("runs/sst2-minilm/quantize"))
"""

from __future__ import annotations

import importlib.util

from deploykit.errors import UserError
from deploykit.records import is_blank, unicode_fault  # noqa: F401 - every predictor's text checks, imported from here
from deploykit.runtimes import READS, ir_path
from deploykit.tokenizer_files import TOKENIZER_FILES, check_tokenizer_files, check_vocabulary  # noqa: F401

RUNTIMES = ("auto", *READS)


def check_logits_width(artifact, labels: int) -> None:
    """Refuse an ONNX graph whose `logits` output holds another number of classes than config.json's id2label
    (a config copied from another model): the runtime would answer with ids the labels do not match, and
    `labels[argmax]` named a class the graph never scored ("neu" from a 2-class graph). The last dimension of the
    output is static in every classifier export; a dynamic one is left to the per-call check in the predictor."""
    if artifact.format != "onnx" or not artifact.onnx_path.is_file():
        return
    import onnx

    graph = onnx.load(str(artifact.onnx_path), load_external_data=False).graph
    output = next((o for o in graph.output if o.name == "logits"), None)
    dims = output.type.tensor_type.shape.dim if output is not None else []
    width = dims[-1].dim_value if dims else 0
    if width and width != labels:
        raise UserError(logits_width_fault(artifact.path, width, labels))


def logits_width_fault(folder, width: int, labels: int) -> str:
    return (f"{folder}: the model scores {width} classes but its config.json names {labels} labels (id2label); "
            "copy config.json from the folder the model was exported from")

def first_blank(texts: list[str]) -> int | None:
    """The index of the first text without a visible character (records.is_blank), else None. It tokenizes to the
    special tokens alone and gets a confident label from nothing (SST-2's final: "positive 0.964"), so every way in
    refuses it: `deploykit predict`, `deploykit.load` and the server."""
    return next((i for i, text in enumerate(texts) if is_blank(text)), None)


def check_threads(threads) -> None:
    """A positive integer or None. More threads than this process's cores is logged, not refused (a container's
    share can change after start): they wait on each other (the SST-2 final graph at batch 1 on a 2-core machine:
    8.2 ms a call with 64 threads, 0.7 with 2; twenty-sixth session)."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UserError(f"threads={threads!r} must be a positive integer, or None for the runtime's default")
    from deploykit.hardware import cores

    if threads is not None and threads > cores():
        from deploykit.console import warn

        warn(f"warning: threads={threads} is more than the {cores()} cores this process may use; each call then "
            f"waits on threads that share a core (use at most {cores()}, or None)")


def check_int8_fits(artifact, runtime: str, device: str | None, openvino_takes_it: bool = True) -> None:
    """Refuse an INT8 graph whose products ONNX Runtime or OpenVINO on this CPU would saturate (deploykit/quant/fit.py):
    one quantized for a CPU with VNNI, loaded on one without, where its answers change (17 of 872 on SST-2).
    `openvino_takes_it`: whether OpenVINO could run this model instead (not a causal LM), for the fix the line names.
    """
    from deploykit.quant.fit import saturation_fault

    if device not in (None, "cpu") or artifact.format not in ("onnx", "tensorrt", "openvino"):
        return
    ir = artifact.format == "openvino"
    # the runtime that will read it; one that cannot (ort on an IR) is named by the loader, not here
    reader = {"auto": "openvino" if ir else "ort" if artifact.format == "onnx" else None,
              "ort": None if ir else "ort", "openvino": "openvino"}.get(runtime)
    if reader is None:
        return
    graph = ir_path(artifact) if ir else artifact.onnx_path
    if not graph.is_file() or not (fault := saturation_fault(graph, reader)):
        return
    parent = (artifact.manifest.get("parent") or {}).get("path") or "<the float model it came from>"
    recipe = "<your recipe>" if ir else "<the recipe it was built with>"
    fix = f"`deploykit quantize --from {parent} -r {recipe} --set quantize.preset=avx2`"
    if ir:  # an IR folder comes from NNCF (bench's peer) or a user's own conversion: NNCF's switch for 7-bit weights
        fix += ", or in NNCF with advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=" \
               "nncf.OverflowFix.ENABLE)"
    exact = ""
    if reader == "ort" and openvino_takes_it and importlib.util.find_spec("openvino") and \
            not saturation_fault(graph, "openvino"):
        exact = ", run it with runtime openvino, which computes its products exactly (MatMulInteger as a float MatMul)"
    raise UserError(f"{artifact.path}: {fault}; quantize it again with 7-bit weights, the same answers on every CPU "
                    f"({fix}){exact}, or run it on a CPU with AVX-512 VNNI, AVX-VNNI or AMX")


def resolve_runtime(fmt: str, runtime: str, device: str | None) -> str:
    """The runtime that will run an artifact of format `fmt`; a one-line UserError for one that cannot."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    cuda = device is not None and str(device).startswith("cuda")
    if device is not None and not cuda and device != "cpu":
        raise UserError(f"device={device!r}: use cpu or cuda")
    if runtime == "auto":
        runtime = {"pytorch": "torch", "onnx": "ort-cuda" if cuda else "ort", "openvino": "openvino",
                   "tensorrt": "tensorrt"}.get(fmt, "")
    # a TensorRT folder keeps the ONNX it was built from, so ONNX Runtime can run it where TensorRT cannot
    readable = fmt in READS.get(runtime, ()) or (fmt == "tensorrt" and "onnx" in READS.get(runtime, ()))
    if not readable:
        runs = [r for r in READS if fmt in READS[r]]
        raise UserError(f"runtime {runtime or 'auto'!r} cannot run {fmt} artifacts; use "
                        f"{' or '.join(runs) or 'another folder'}")
    if (cuda and runtime in ("ort", "openvino")) or (device == "cpu" and runtime in ("ort-cuda", "tensorrt")):
        raise UserError(f"runtime {runtime} with device={device!r}: ort and openvino run on the CPU, ort-cuda and "
                        "tensorrt on cuda")
    return runtime
