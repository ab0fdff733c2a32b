"""A causal LM's KV cache in and out of its PyTorch forward, under the keyword its transformers version uses."""

from __future__ import annotations


def cache_feed(model, cache) -> dict:
    """The keyword a causal LM's forward takes its KV cache by: `cache` in recent transformers 5 releases,
    `past_key_values` before (5.25 keeps it as a deprecated alias, to go in 5.40).

    Passing the name the forward itself declares keeps decoding right where the old name's mapping is gone: after
    bf16 training accelerate's unwrap had stripped it (deploykit/train/autocast.py `release`), every step decoded
    its last token alone, and fine-tuning recorded an exact match of 0.0 for a model that scored 37.5 once saved.
    """
    import inspect

    name = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    return {name: cache}


def cache_of(out):
    """The KV cache a causal LM's forward returned, under either name (see `cache_feed`)."""
    cache = getattr(out, "cache", None) if "cache" in out else None
    return cache if cache is not None else out.past_key_values
