"""accelerate's bf16 autocast wrapper on a training model's forward: around evaluations, and off for good after.

With `bf16=True` accelerate replaces `model.forward` by an autocast version; what a stage measures and keeps must
run as the saved float32 safetensors do, on every CPU (deploykit/train/trainer.py's Float32Results uses these).
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def float32_forward(model):
    """Run `model` outside the mixed-precision wrapper accelerate puts on its forward while it trains.

    With `bf16=True` accelerate replaces `model.forward` by an autocast version and keeps the plain one as
    `model._original_forward`; every call through the model (evaluation included) then runs in bf16, while
    the saved safetensors run in float32. Inside this block the plain forward is back, so what is measured
    is what is saved; outside it training goes on in bf16. A model without the wrapper is left as it is.
    """
    original = model.__dict__.get("_original_forward")
    if original is None:
        yield model
        return
    wrapped = model.__dict__.get("forward")
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped


def release(model):
    """`model` without accelerate's mixed-precision wrapper, for good (in place; returns it).

    Without this a model trained with bf16 on a CPU with native bf16 stays in bf16 autocast after
    `trainer.train()`: importance scores, teacher logits, metrics and the reload check would all be
    computed in bf16 while the saved artifact runs in float32 (the prune reload check failed on such a
    CPU with logits 8e-3 apart). Source: accelerate's `Accelerator.prepare_model` / `unwrap_model(...,
    keep_fp32_wrapper=False)`.
    """
    import inspect

    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model, keep_fp32_wrapper=False)
    # accelerate's unwrap follows `__wrapped__` past transformers' own decorators on the class's forward (its
    # deprecated-keyword mapping among them) and binds the bare function: a causal LM trained in bf16 then took
    # `past_key_values` as an unknown keyword and decoded every token without its cache. The class's forward,
    # decorated, is put back where the instance holds that bare function.
    bare = getattr(model.__dict__.get("forward"), "__func__", None)
    if bare is not None and bare is inspect.unwrap(type(model).forward):
        del model.__dict__["forward"]
    return model


def is_autocast_wrapped(model) -> bool:
    """True while accelerate's autocast wrapper sits on `model.forward` (see `release`)."""
    return "_original_forward" in model.__dict__
