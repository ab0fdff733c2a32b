"""A finished PyTorch folder loaded to answer with: every weight from its safetensors, or one line saying why not.

    model = load_saved(Path("runs/sst2-minilm/finetune"), "classification")   # AutoModelForSequenceClassification

`from_pretrained` initialises at random what a checkpoint lacks (a classifier head dropped from
model.safetensors, a config.json whose id2label was edited to another label count) and prints a load report:
training can want that (a fresh head), but a model that predicts would answer from random weights, differently
on every load. deploykit.load, predict, serve, bench's torch rows and the ONNX export load through here.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.errors import UserError
from deploykit.model_errors import load_errors, load_failure
from deploykit.models import TASK_MODELS, nonfinite_weights


def load_saved(path: Path, task: str, **kwargs):
    """The model of `path` for `task` (a key of deploykit.models.TASK_MODELS), in eval mode; `kwargs` go to
    `from_pretrained` (attn_implementation="eager" for an ONNX export).

    Raises:
        UserError: the weights do not read (truncated, not safetensors), or some weight the model needs is missing
            from them or has another shape than config.json gives it, or a weight holds NaN or inf.
    """
    import transformers

    from deploykit.console import no_load_bars, quiet_load_report

    auto = getattr(transformers, TASK_MODELS[task][1])
    try:
        with no_load_bars(), quiet_load_report():  # the load report's table: the lines below say what it would
            model, info = auto.from_pretrained(path, use_safetensors=True, output_loading_info=True,
                                               ignore_mismatched_sizes=True, **kwargs)
    except load_errors() as err:
        raise load_failure(str(path), str(path), err) from None
    mismatched = [m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys") or []]
    if mismatched:
        raise UserError(f"{path}: config.json gives {mismatched[0]} another shape than model.safetensors holds (the "
                        f"label count in id2label?); the model would answer from random weights: copy config.json "
                        "again from the folder the model came from")
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise UserError(f"{path}: model.safetensors lacks {len(missing)} of the model's weights (e.g. {missing[0]}); the "
                        "model would answer from random weights: copy the weights again from the folder they came from")
    bad, total = nonfinite_weights(model)
    if bad:
        raise UserError(f"{path}: model.safetensors holds NaN or inf in {len(bad)} of its {total} weight tensors (e.g. "
                        f"{bad[0]}): the model would answer NaN; the training that wrote it diverged")
    return model.eval()
