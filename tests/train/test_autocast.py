"""A model released from accelerate's bf16 wrapper runs its class's own forward, decorators and all."""

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM
from transformers.cache_utils import DynamicCache

from deploykit.llm.generate import TorchGenerator
from deploykit.train.autocast import is_autocast_wrapped, release

IDS = np.array([[5, 9, 11, 4, 7, 8, 12, 6]], dtype=np.int64)


def _released(folder):
    model = AutoModelForCausalLM.from_pretrained(folder)
    model = Accelerator(mixed_precision="bf16").prepare_model(model)  # what Trainer.train does with bf16 on
    assert is_autocast_wrapped(model)
    model = release(model)
    assert not is_autocast_wrapped(model)
    return model


def test_a_released_causal_lm_decodes_through_its_cache(tiny_llama):
    model = _released(tiny_llama)
    gen = TorchGenerator(model, tokenizer=object())
    mask = np.ones_like(IDS)
    full = gen.logits(IDS, mask)  # no cache: every position from the whole prefix
    step = gen.stepper()
    got = [step(IDS[:, :4], mask[:, :4], np.arange(4)[None])]
    got += [step(IDS[:, i:i + 1], mask[:, :i + 1], np.array([[i]])) for i in range(4, IDS.shape[1])]
    # before: accelerate's unwrap dropped transformers' keyword mapping, the cache was ignored, and each step
    # saw its one token alone (0.26 apart on step 2); fine-tuning recorded exact match 0.0 for a model scoring 37.5
    np.testing.assert_allclose(np.concatenate(got), full[0, 3:], atol=1e-4)


def test_the_old_cache_keyword_still_reaches_the_model(tiny_llama):
    model = _released(tiny_llama)
    ids = torch.from_numpy(IDS)
    with torch.inference_mode():
        whole = model(ids).logits[:, -1]
        past = DynamicCache(config=model.config)
        model(ids[:, :-1], past_key_values=past, use_cache=True)
        last = model(ids[:, -1:], past_key_values=past, use_cache=True).logits[:, -1]
    torch.testing.assert_close(last, whole, atol=1e-4, rtol=0)
