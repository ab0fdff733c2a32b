"""deploykit/architectures.py: every entry's names resolve on a tiny model of its type built here, the
capability sets are what the modules accept, and an unknown model_type is refused in one line.

    python -m pytest -q tests/test_architectures.py
"""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from deploykit.architectures import ARCHITECTURES, architecture, layer_count_field, resolve, supporting
from deploykit.errors import UserError

DECODER = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
ENCODER = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=64, pad_token_id=0)
CONFIGS = {"electra": dict(ENCODER, embedding_size=16),
           "distilbert": dict(vocab_size=100, dim=32, hidden_dim=64, n_layers=2, n_heads=4, max_position_embeddings=64)}


def tiny(model_type: str, causal: bool = False):
    """A randomly initialised 2-layer, 32-wide model of `model_type` (a causal LM when `causal`)."""
    kwargs = DECODER if ARCHITECTURES[model_type].decoder_prune else CONFIGS.get(model_type, ENCODER)
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(0)
    auto = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    return auto.from_config(config, attn_implementation="eager").eval()


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_every_entry_names_what_its_model_has(model_type):
    from deploykit.layers import layer_list
    from deploykit.train.trainer import layer_index, num_layers

    arch = ARCHITECTURES[model_type]
    model = tiny(model_type)
    layers = resolve(model.base_model, arch.layers)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == 2
    assert layer_list(model) is layers
    assert layer_count_field(model.config) == arch.layer_count and getattr(model.config, arch.layer_count) == 2
    assert num_layers(model.config) == 2
    assert (getattr(model.config, arch.hidden), getattr(model.config, arch.heads), getattr(model.config, arch.ffn)) \
        == (32, 4, 64)
    assert arch.explicit_head_dim == hasattr(model.config, "head_dim")
    # training.py's per-layer match finds the layer of every parameter under the layer list
    names = [n for n, _ in model.named_parameters() if f"{arch.layers}.1." in n]
    assert names and {layer_index(n) for n in names} == {1}
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(arch.lora_targets) <= leaves
    if arch.encoder_layer is not None:
        for field, path in vars(arch.encoder_layer).items():
            assert resolve(layers[0], path) is not None, f"{model_type}: encoder_layer.{field}={path!r}"
    if arch.prune is not None:
        for path in (arch.prune.query, arch.prune.attention, *arch.prune.ffn_in, arch.prune.key):
            if path is not None:
                layers[0].get_submodule(path)
        if arch.prune.dense_head is not None:
            assert model.get_submodule(arch.prune.dense_head).out_features == 32


def test_the_capability_sets_are_todays():
    encoders = ["bert", "camembert", "distilbert", "electra", "roberta", "xlm-roberta"]
    assert supporting("fuse") == supporting("trim") == encoders
    assert supporting("prune") == ["bert", "distilbert", "llama", "roberta"]
    assert supporting("decoder_prune") == ["llama", "mistral", "qwen2"]
    assert supporting() == sorted(encoders + ["llama", "mistral", "qwen2"])


@pytest.mark.parametrize("model_type", supporting("trim"))
def test_trim_and_packing_keep_the_logits_of_every_trim_entry(model_type):
    from deploykit.onnx.packing import packed_encoder
    from deploykit.onnx.trim import can_trim, trimmed_last_layer

    model = tiny(model_type)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 11, 12, 0, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (torch.arange(6) < torch.tensor([[6], [3]])).long()}
    with torch.no_grad():
        want = model(**batch).logits
        assert can_trim(model)
        with trimmed_last_layer(model):
            trimmed = model(**batch).logits
        with packed_encoder(model):
            packed = model(**batch).logits
    torch.testing.assert_close(trimmed, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed, want, atol=1e-5, rtol=0)


def test_trim_and_packing_refuse_a_type_without_trim_support_in_one_line():
    from deploykit.onnx.packing import can_pack
    from deploykit.onnx.trim import can_trim, trimmed_last_layer

    model = tiny("llama")
    assert not can_trim(model)
    with pytest.raises(ValueError) as err, trimmed_last_layer(model):
        pass
    assert str(err.value) == ("architecture 'llama' is not supported for the last-layer trim and padding-free "
                              "packing (supported: bert, camembert, distilbert, electra, roberta, xlm-roberta)")
    assert can_pack(model, None, ["input_ids", "attention_mask"]).startswith("model type 'llama' (known: ['bert'")


def test_pruning_refuses_a_type_without_prune_names():
    from deploykit.pruning.arch import arch_of, shape_of

    assert arch_of(tiny("llama")) is ARCHITECTURES["llama"]
    assert shape_of(tiny("distilbert")).as_dict() == dict(layers=2, hidden=32, heads=4, head_size=8, ffn=64,
                                                          vocab=100, kv_heads=4)
    with pytest.raises(UserError, match=r"^prune: architecture 'qwen2' is not supported for structured pruning "
                                        r"\(supported: bert, distilbert, llama, roberta\)$"):
        arch_of(tiny("qwen2").config)


def test_decoder_pruning_names_the_table_types():
    from deploykit.llm.prune import causal_shape

    assert causal_shape(tiny("mistral", causal=True).config).kv_heads == 2
    with pytest.raises(UserError, match=r"supported: llama, mistral, qwen2$"):
        causal_shape(tiny("bert").config)


def test_lora_default_targets_come_from_the_table():
    from deploykit.stages.finetune import _lora_targets

    assert [_lora_targets(tiny(t)) for t in ("electra", "distilbert", "qwen2")] == \
        [["query", "value"], ["q_lin", "v_lin"], ["q_proj", "v_proj"]]


@pytest.mark.parametrize("given", ["gpt2", None])
def test_an_unknown_model_type_is_one_line_naming_the_supported_ones(given):
    with pytest.raises(ValueError) as err:
        architecture(given)
    assert str(err.value) == (f"architecture {given!r} is not supported (supported: bert, camembert, distilbert, "
                              "electra, llama, mistral, qwen2, roberta, xlm-roberta)")
    with pytest.raises(ValueError, match="unknown capability 'pack'"):
        supporting("pack")


def test_a_model_config_or_string_finds_the_same_entry():
    model = tiny("roberta")
    assert architecture(model) is architecture(model.config) is architecture("roberta") is ARCHITECTURES["roberta"]
    assert architecture(model, "fuse").fuse and architecture("llama", "prune").prune.key == "self_attn.k_proj"
