"""The OpenVINO + NNCF peer row that `deploykit bench` puts beside the standard recipe.

    from deploykit.quant.ov_peer import openvino_nncf_peer, peer_missing
    art = openvino_nncf_peer(Path("runs/sst2/finetune"), Path("runs/sst2/bench/.openvino"), texts, max_length=64)

What an Intel-CPU user does by hand, following OpenVINO's and NNCF's own guides: a plain (unfused) ONNX
export of the fine-tuned model, `openvino.convert_model` to OpenVINO IR, then NNCF post-training static INT8
(`nncf.quantize` with `ModelType.TRANSFORMER`, 300 calibration rows from the training split), saved as
model.xml/model.bin. It runs under the `openvino` runtime (deploykit/runtimes.py) like any other row.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
from collections.abc import Iterator
from pathlib import Path

from deploykit.artifact import Artifact, scratch_in, staging, write_manifest
from deploykit.console import foreign_output
from deploykit.errors import UserError

CALIBRATION_ROWS = 300  # NNCF's default subset_size, and the number its BERT examples use
IR_FILE = "model.xml"  # its weights go to model.bin beside it


def peer_missing() -> str | None:
    """Why the peer row cannot be built here (a package missing), or None."""
    for module in ("openvino", "nncf"):
        if importlib.util.find_spec(module) is None:
            return f"the {module} package is not installed (pip install 'deploykit[openvino]')"
    return None


@contextlib.contextmanager
def telemetry_off() -> Iterator[None]:
    """OpenVINO's converter and NNCF send usage telemetry (Google Analytics) unless told not to: both treat a
    missing consent file as consent. deploykit sends nothing, and their sender, forked from a multi-threaded
    process, once hung `deploykit run` at exit blocked in the resolver. Inside this block both see their documented
    CI switches (NNCF_CI, read when nncf is first imported; CI=true with their disable_in_ci), restored after."""
    saved = {key: os.environ.get(key) for key in ("CI", "NNCF_CI")}
    os.environ.update(CI="true", NNCF_CI="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def calibration_rows(n_rows: int, seed: int = 0) -> list[int]:
    """`CALIBRATION_ROWS` seeded indices into a training split of `n_rows` (all of them when fewer)."""
    idx = list(range(n_rows))
    random.Random(seed).shuffle(idx)
    return sorted(idx[:CALIBRATION_ROWS])


def openvino_nncf_peer(model_dir: Path, out_dir: Path, texts: list, pairs: list | None = None,
                       max_length: int = 128) -> Artifact:
    """Build the OpenVINO IR + NNCF static INT8 peer of a fine-tuned classifier.

    Args:
        model_dir: a fine-tuned PyTorch classifier folder.
        out_dir: where the peer goes (model.xml, model.bin, config.json, tokenizer, manifest; format `openvino`).
        texts: calibration texts (the caller draws `CALIBRATION_ROWS` training rows); pairs: their second texts.
        max_length: tokens per calibration row at most (the model's trained max_length).

    Returns:
        The peer artifact (stage `peer`, format `openvino`).

    Raises:
        UserError: openvino or nncf missing, or `model_dir` not a PyTorch folder.
    """
    why = peer_missing()
    if why:
        raise UserError(f"the OpenVINO peer row: {why}")
    with telemetry_off():
        return _build(model_dir, out_dir, texts, pairs, max_length)


def _build(model_dir: Path, out_dir: Path, texts: list, pairs: list | None, max_length: int) -> Artifact:
    import nncf
    import openvino as ov
    from transformers import AutoTokenizer

    from deploykit.artifact import load_artifact
    from deploykit.evaluate import graph_feed
    from deploykit.onnx.export import copy_side_files, export_onnx
    from deploykit.onnx.ops import file_size

    parent = load_artifact(model_dir)
    if parent.format != "pytorch":
        raise UserError(f"{model_dir}: the OpenVINO peer starts from a PyTorch model folder, not {parent.format}")
    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    with staging(out_dir) as tmp, scratch_in(tmp) as work:
        report = export_onnx(parent.path, None, work, optimize=False)
        model = ov.convert_model(str(work / "model.onnx"))
        names = [port.get_any_name() for port in model.inputs]
        # one row per calibration item, at its own length, as NNCF's transformer examples feed them
        items = [graph_feed(dict(tokenizer(*([t, p] if pairs else [t]), truncation=True, max_length=max_length,
                                           return_tensors="np")), names)
                 for t, p in zip(texts, pairs or [None] * len(texts))]
        with foreign_output():  # NNCF's progress bars draw on stdout
            quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(items))
        ov.save_model(quantized, str(tmp / IR_FILE), compress_to_fp16=False)
        copy_side_files(work, tmp, "model.onnx")
        metrics = {"size_bytes": {"float_onnx": file_size(work / "model.onnx"),
                                  "int8_ir": sum((tmp / f).stat().st_size for f in (IR_FILE, "model.bin"))},
                   "calibration_rows": len(items)}
        manifest = write_manifest(tmp, stage="peer", format="openvino", parent=parent,
                                  config={"recipe": "plain ONNX export -> OpenVINO IR -> NNCF static INT8 "
                                                    "(ModelType.TRANSFORMER)", "openvino": ov.__version__,
                                          "nncf": nncf.__version__},
                                  metrics=metrics, ir_file=IR_FILE, export=report)
    return Artifact(Path(out_dir).resolve(), manifest)
