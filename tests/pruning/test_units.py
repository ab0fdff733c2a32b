"""Pruning units on tiny BERT / RoBERTa / DistilBERT / Llama models built in the test."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import tiny_config
from deploykit.config import PruneConfig
from deploykit.errors import UserError
from deploykit.pruning.arch import arch_of, measure, shape_of
from deploykit.pruning.units import Kept, plan, prune_step


def tiny(arch: str, layers: int = 3):
    torch.manual_seed(0)
    key = "n_layers" if arch == "distilbert" else "num_hidden_layers"
    return AutoModelForSequenceClassification.from_config(tiny_config(arch, **{key: layers}))


def task_batches(n: int = 2) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(1000, 2000, (4, 12), generator=g),
             "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1, 0, 1])} for _ in range(n)]


def prune(model, **ratios) -> Kept:
    cfg = PruneConfig(importance_batches=2, **ratios)
    shape = shape_of(model)
    kept = Kept.start(shape)
    target = plan(cfg, shape, arch_of(model))
    for step in range(1, cfg.steps + 1):
        prune_step(model, cfg, target, step, task_batches(), kept)
    return kept


@pytest.mark.parametrize("importance, steps", [("taylor", 1), ("l2", 2)])
def test_width_ffn_depth_reload_with_identical_logits(arch, tmp_path, importance, steps):
    model = tiny(arch)
    kept = prune(model, width=0.5, ffn=0.5, depth=0.34, importance=importance, steps=steps)
    shape = shape_of(model)
    assert (shape.layers, shape.hidden, shape.heads, shape.head_size, shape.ffn) == (2, 32, 2, 16, 64)
    assert len(kept.layers) == 2 and all(len(h) == 2 for h in kept.heads) and len(kept.channels) == 32
    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    batch = {k: v for k, v in task_batches(1)[0].items() if k != "labels"}
    with torch.inference_mode():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)


def test_heads_are_chosen_per_layer_by_importance(tmp_path):
    model = tiny("bert", layers=2)
    with torch.no_grad():
        # make head 3 of layer 0 and head 1 of layer 1 carry all the weight: they must survive
        for layer, head in ((0, 3), (1, 1)):
            attention = model.bert.encoder.layer[layer].attention.self
            for lin in (attention.query, attention.key, attention.value):
                lin.weight[head * 16:(head + 1) * 16] *= 50
    kept = prune(model, width=0.75, importance="l2")
    assert kept.heads == [[3], [1]]


def test_macs_and_parameters_shrink():
    model = tiny("bert")
    before = measure(model, 32)
    prune(model, ffn=0.5, importance="l2")
    after = measure(model, 32)
    assert after["parameters"] < before["parameters"] and after["macs"] < before["macs"]
    assert shape_of(model).ffn == 64 and model.config.intermediate_size == 64


def test_llama_heads_alone_are_expressible(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=3000, hidden_size=64, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
        intermediate_size=128, num_hidden_layers=2, pad_token_id=0))
    prune(model, heads=0.5, ffn=0.5, importance="taylor")
    assert (model.config.num_attention_heads, model.config.num_key_value_heads, model.config.hidden_size) == (2, 2, 64)
    model.eval().save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    batch = {k: v for k, v in task_batches(1)[0].items() if k != "labels"}
    with torch.inference_mode():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)


def test_grouped_query_heads_are_refused():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    with pytest.raises(UserError, match="grouped-query attention"):
        plan(PruneConfig(heads=0.5), shape_of(config), arch_of(config))


def test_width_on_llama_points_to_heads():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, head_dim=16)
    with pytest.raises(UserError, match="use prune.heads"):
        plan(PruneConfig(width=0.5), shape_of(config), arch_of(config))
