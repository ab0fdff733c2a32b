"""Prove a saved model folder is what plain transformers rebuilds: same weights, same logits.

    model.save_pretrained(folder)
    check_reload(model, folder, [batch])     # raises ReloadError on any missing, unexpected,
                                             # mismatched or re-initialised weight, or drifting logits

transformers 5 only prints a load report when a checkpoint's shapes disagree with its config
(and re-initialises what it cannot load), so a pruned model the config cannot express would
otherwise "load" silently with random weights.
"""

from __future__ import annotations

import torch

from deploykit.errors import ReloadError  # noqa: F401  (a CheckError: exit code 3 at the CLI)
from deploykit.model_errors import first_line


def _auto_class(model):
    """The Auto class a user would reload `model` with: causal LM for a decoder LM, token classifier for a tagger,
    else sequence classifier."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(getattr(model.config, "model_type", None))
    if causal == type(model).__name__:
        return AutoModelForCausalLM
    if type(model).__name__.endswith("ForTokenClassification"):
        return AutoModelForTokenClassification
    return AutoModelForSequenceClassification


def check_reload(model, folder, inputs: list[dict[str, torch.Tensor]], atol: float = 1e-5) -> float:
    """Reload `folder` with plain `from_pretrained` and compare: `AutoModelForCausalLM` for a causal LM
    (e.g. LlamaForCausalLM), `AutoModelForTokenClassification` for a tagger, `AutoModelForSequenceClassification`
    otherwise.

    Args:
        model: the in-memory model that was saved to `folder`.
        folder: the `save_pretrained` output.
        inputs: batches of model inputs (labels are ignored) to compare logits on.
        atol: largest absolute logit difference accepted.

    Returns:
        The largest absolute logit difference seen.

    Raises:
        ReloadError: the folder does not load, loads with a non-empty loading report, holds other
            weights than the model, or gives other logits.
    """
    try:
        reloaded, info = _auto_class(model).from_pretrained(folder, output_loading_info=True)
    except Exception as err:  # noqa: BLE001 - any failure to load is the finding we report
        raise ReloadError(f"{folder}: plain from_pretrained cannot load the pruned model "
                          f"({type(err).__name__}: {first_line(err)})") from err
    problems = {k: list(v)[:5] for k, v in info.items() if v}
    if problems:
        raise ReloadError(f"{folder}: from_pretrained reports {problems}; the config does not express "
                          "the pruned shapes")
    _same_weights(model, reloaded, folder)
    return _same_logits(model, reloaded, inputs, atol, folder)


def _same_weights(model, reloaded, folder) -> None:
    ours, theirs = model.state_dict(), reloaded.state_dict()
    if set(ours) != set(theirs):
        diff = sorted(set(ours) ^ set(theirs))[:5]
        raise ReloadError(f"{folder}: reloaded model has other weights than the pruned one ({diff})")
    for name, tensor in ours.items():
        if tensor.shape != theirs[name].shape or not torch.equal(tensor.cpu(), theirs[name].cpu()):
            raise ReloadError(f"{folder}: weight {name} differs after reload "
                              f"({tuple(tensor.shape)} vs {tuple(theirs[name].shape)})")


def _same_logits(model, reloaded, inputs, atol: float, folder) -> float:
    was_training = model.training
    model.eval()
    reloaded.eval()
    worst = 0.0
    # a model that recovered on the GPU is compared there, beside its reloaded copy
    device = next(model.parameters()).device
    reloaded.to(device)
    with torch.inference_mode():
        for batch in inputs:
            feed = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            diff = (model(**feed).logits - reloaded(**feed).logits).abs().max().item()
            worst = max(worst, diff)
    model.train(was_training)
    if worst > atol:
        raise ReloadError(f"{folder}: reloaded logits differ by {worst:.2e} (> {atol:g})")
    return worst
