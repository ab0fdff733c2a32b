"""Task metrics for any artifact (PyTorch or ONNX), and the accuracy gate every stage passes through.

    from deploykit.evaluate import evaluate_artifact
    evaluate_artifact(load_artifact("runs/sst2/finetune"), task.test, max_length=128)
    # {'accuracy': 90.6, 'macro_f1': 90.6, 'n': 872}

Metrics are in percent, so a gate's `max_drop: 0.5` reads as half an accuracy point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from deploykit import fpenv
from deploykit.data import Split, fit_max_length
from deploykit.encoding import transformers_encoder
from deploykit.errors import GateError, UserError  # noqa: F401  (GateError: imported from here by callers)
from deploykit.model_errors import first_line

Predictor = Callable[[dict[str, np.ndarray]], np.ndarray]

# operators that compute an activation scale at run time, over the whole input tensor
RUNTIME_SCALE_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
EVAL_BATCH = 64


def metrics(logits: np.ndarray, labels: list[int] | np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 in percent (macro over the labels present in gold or predictions)."""
    y = np.asarray(labels)
    pred = np.asarray(logits).argmax(-1)
    f1s = []
    for c in np.union1d(y, pred):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": round(float(np.mean(pred == y)) * 100, 3),
            "macro_f1": round(float(np.mean(f1s)) * 100, 3), "n": int(len(y))}


def torch_predictor(model, dtype=None) -> Predictor:
    import inspect

    import torch

    model.eval()
    accepted = set(inspect.signature(model.forward).parameters)

    # a model that trained on the GPU (prune recovery, distillation) is still there: feed it there
    device = next(model.parameters()).device

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in batch.items() if k in accepted}
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return model(**inputs).logits.float().cpu().numpy()

    return run


DENORMALS_AS_ZERO = "session.set_denormal_as_zero"


def ort_session(onnx_path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                spinning: bool = True, profile_prefix: str | Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if profile_prefix is not None:  # ORT's per-node kernel times, written by session.end_profiling()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:
        # idle ORT threads otherwise keep spinning and steal the cores of whatever runs next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if fpenv.AVAILABLE:
        # Flush denormals to zero in ORT's pool threads (its documented session option): masked attention scores
        # leave MLAS's softmax exp with denormals that x86 computes ~10x slower, a fifth of a padded SST-2 batch
        # 32's time; 1.24x faster with it (bench/README.md, twenty-eighth session). ORT would also set the mode for
        # good on this thread: `fpenv.kept` undoes that, and ort_predictor's calls flush on the calling thread.
        opts.add_session_config_entry(DENORMALS_AS_ZERO, "1")
    opts.log_severity_level = 3
    try:
        with fpenv.kept():
            return ort.InferenceSession(str(onnx_path), opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types for unreadable models
        raise UserError(f"{onnx_path}: ONNX Runtime cannot load it ({first_line(err)})") from None


def graph_feed(batch: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The tokenizer's batch as an ONNX graph's int64 inputs `names`; an input the tokenizer did not give (e.g.
    a BERT graph's token_type_ids) is zeros. Shared by every runtime that reads ONNX graphs."""
    feed = {k: np.asarray(batch[k], dtype=np.int64) for k in names if k in batch}
    feed.update({k: np.zeros_like(feed["input_ids"]) for k in names if k not in feed})
    return feed


def ort_predictor(session, choice=None) -> Predictor:
    """A Predictor over an ORT session; with `choice` (a deploykit.ort_threads.ThreadChoice holding `session` and a
    one-thread twin), each call runs on whichever of the two ran calls of its size faster lately."""
    names = [i.name for i in session.get_inputs()]

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = graph_feed(batch, names)
        saved = fpenv.flush()  # FTZ/DAZ on this thread for the call only (deploykit/fpenv.py)
        try:
            return choice.run(feed) if choice is not None else session.run(None, feed)[0]
        finally:
            fpenv.restore(saved)

    return run


def predict(predictor: Predictor, split: Split, tokenizer, max_length: int, batch_size: int = 64,
            stride: int | None = None, encoder=None) -> np.ndarray:
    """Logits [rows, labels] for every row of `split`, in order; rows are batched by length to waste little padding.

    `stride` (from `windows.stride_for`): each text is scored as windows of `max_length` tokens overlapping by
    `stride`, and its row is the mean of their logits (deploykit/windows.py); None truncates. `encoder` (from
    `encoding.encoder_for`): what turns a batch of rows into the model's inputs; default the tokenizer's call.

    Raises:
        UserError: `stride` with sentence pairs.
    """
    if stride is not None:
        from deploykit.windows import score

        return score(predictor, split, tokenizer, max_length, stride, batch_size)
    encoder = encoder or transformers_encoder(tokenizer, max_length)
    if len(split) == 1:  # one request: nothing to sort or batch (a server's usual call)
        return np.asarray(predictor(encoder(split)))
    lengths = [len(t) + (len(p) if split.pairs else 0)
               for t, p in zip(split.texts, split.pairs or split.texts)]
    order = np.argsort(lengths, kind="stable")
    out: list[np.ndarray] = [None] * len(split)  # type: ignore[list-item]
    for start in range(0, len(order), batch_size):
        idx = [int(i) for i in order[start:start + batch_size]]
        logits = predictor(encoder(split.take(idx)))
        for i, row in zip(idx, logits):
            out[i] = row
    return np.stack(out)


def artifact_predictor(artifact, threads: int | None = None) -> Predictor:
    """A predictor for a PyTorch or ONNX artifact (TensorRT is measured by `deploykit bench`)."""
    if artifact.format == "onnx":
        return ort_predictor(ort_session(artifact.onnx_path, threads))
    if artifact.format == "pytorch":
        from deploykit.saved import load_saved

        return torch_predictor(load_saved(artifact.path, "classification"))
    raise UserError(f"{artifact.path}: cannot evaluate a {artifact.format} artifact on this machine")


def eval_batch_size(onnx_path: str | Path | None) -> int:
    """Rows per batch when scoring a model: 1 for a graph that quantizes activations at run time, else 64.

    Dynamic INT8 takes one activation scale per tensor, that is over every row in the batch (padding
    included), so a row's logits depend on the rows batched with it: the same model scored 86.58 and
    87.16 on sst2/test.tsv in two batchings. One row at a time is what a per-request server sees and
    gives one answer; for every other graph batching changes only the speed.
    """
    if onnx_path is None:
        return EVAL_BATCH
    from deploykit.onnx.ops import load_onnx, op_counts

    counts = op_counts(load_onnx(onnx_path, load_weights=False))
    return 1 if any(counts[op] for op in RUNTIME_SCALE_OPS) else EVAL_BATCH


def evaluate_artifact(artifact, split: Split, max_length: int | str, batch_size: int | None = None,
                      task=None, data=None) -> dict[str, float]:
    """Metrics of `artifact` on `split`; `batch_size` None picks `eval_batch_size` of its graph.

    `max_length` "auto" is the length the artifact's manifest records, else measured on `task`'s rows.
    Long texts are scored as pooled windows when `data` (the recipe's DataConfig) says `long_texts: windows`
    or the manifest records a `window_stride` (`windows.stride_for`)."""
    from transformers import AutoTokenizer

    from deploykit.windows import stride_for

    tokenizer = AutoTokenizer.from_pretrained(artifact.path)
    if batch_size is None:
        batch_size = eval_batch_size(artifact.onnx_path if artifact.format == "onnx" else None)
    max_length = fit_max_length(max_length, artifact.path, tokenizer, task or split,
                                recorded=artifact.manifest.get("max_length"))
    stride = stride_for(data, max_length, tokenizer, artifact.manifest)
    return metrics(predict(artifact_predictor(artifact), split, tokenizer, max_length, batch_size, stride),
                   split.labels)


def check_gate(stage: str, reference: float, value: float, max_drop: float, knob: str,
               metric: str = "accuracy", versus: str = "teacher", budget: str = "max_drop") -> None:
    """Raise GateError naming the stage, the drop and the recipe knob to turn, if the drop is too large.

    Args:
        reference: the score compared with: the teacher's, or the stage's input's (`versus` names it).
        budget: the recipe key `max_drop` comes from, named in the error.
    """
    drop = reference - value
    if drop > max_drop + 1e-9:
        raise GateError(f"gate failed after {stage}: {metric} {value:.2f} vs {versus} {reference:.2f} "
                        f"(-{drop:.2f} pt > gate.{budget} {max_drop}); {knob}")
