"""The reload check catches checkpoints whose shapes the config cannot express."""

import pytest
import torch
import torch_pruning as tp
from transformers import AutoModelForSequenceClassification

from conftest import tiny_config
from deploykit.pruning.arch import arch_of, shape_of, sync_config
from deploykit.pruning.importance import group_importance
from deploykit.pruning.reload import ReloadError, check_reload
from deploykit.pruning.units import Kept, prune_heads

INPUTS = [{"input_ids": torch.randint(1000, 2000, (2, 10), generator=torch.Generator().manual_seed(0))}]


def tiny_bert():
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config("bert")).eval()


def test_unpruned_model_passes(tmp_path):
    model = tiny_bert()
    model.save_pretrained(tmp_path)
    assert check_reload(model, tmp_path, INPUTS) == 0.0


def test_heads_without_residual_width_are_caught(tmp_path):
    # BERT computes head size as hidden / heads: 2 heads of 16 in a 64-wide model reload as 2 heads of 32
    model = tiny_bert()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=INPUTS[0])
    prune_heads(model, graph, arch_of(model), 2, 16, group_importance("l2"), Kept.start(shape_of(model)))
    sync_config(model)
    assert model.config.num_attention_heads == 2 and model.config.hidden_size == 64
    with torch.inference_mode():
        model(**INPUTS[0])  # the in-memory model itself runs fine
    model.save_pretrained(tmp_path)
    with pytest.raises(ReloadError, match="config does not express|cannot load"):
        check_reload(model, tmp_path, INPUTS)


def test_config_left_stale_is_caught(tmp_path):
    model = tiny_bert()
    layer = model.bert.encoder.layer[0]
    with torch.no_grad():
        layer.intermediate.dense = torch.nn.Linear(64, 100)
        layer.output.dense = torch.nn.Linear(100, 64)
    model.save_pretrained(tmp_path)
    with pytest.raises(ReloadError):
        check_reload(model, tmp_path, INPUTS)


def test_logit_drift_is_caught(tmp_path):
    model = tiny_bert()
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        model.classifier.bias += 1.0  # the in-memory model no longer matches what was saved
    with pytest.raises(ReloadError, match="differs after reload"):
        check_reload(model, tmp_path, INPUTS)
