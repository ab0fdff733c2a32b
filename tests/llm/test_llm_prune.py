"""Structured pruning of a tiny GQA Llama: FFN neurons, whole KV groups, layers; plain reload; importance."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deploykit.errors import UserError
from deploykit.llm.prune import prune_causal
from deploykit.pruning.arch import measure
from deploykit.pruning.reload import check_reload

HEAD_DIM, REP = 8, 2  # tiny Llama: 4 query heads over 2 KV heads


def chat_batches(folder, n: int = 2, size: int = 4) -> list[dict[str, torch.Tensor]]:
    """Right-padded ChatML batches with labels on the assistant's answer only."""
    tok = AutoTokenizer.from_pretrained(folder)
    rows = []
    for i in range(n * size):
        prompt = tok.apply_chat_template([{"role": "user", "content": f"Review: the movie was good {i}"}],
                                         add_generation_prompt=True, tokenize=False)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok("positive<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((p + r, [-100] * len(p) + r))
    out = []
    for b in range(n):
        part = rows[b * size:(b + 1) * size]
        width = max(len(ids) for ids, _ in part)
        pad = lambda xs, v: [x + [v] * (width - len(x)) for x in xs]  # noqa: E731
        out.append({"input_ids": torch.tensor(pad([ids for ids, _ in part], tok.pad_token_id)),
                    "attention_mask": torch.tensor(pad([[1] * len(ids) for ids, _ in part], 0)),
                    "labels": torch.tensor(pad([lab for _, lab in part], -100))})
    return out


def load(folder):
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def test_ffn_kv_group_and_layer_pruning_reloads_plainly(tiny_llama, tmp_path):
    model, batches = load(tiny_llama), chat_batches(tiny_llama)
    before = measure(model, 16)["parameters"]
    orig = {k: v.clone() for k, v in model.model.layers[1].state_dict().items()}

    kept = prune_causal(model, ffn=0.5, kv_groups=0.5, drop_layers=[0], importance="taylor", batches=batches)

    assert kept["layers"] == [1] and kept["dropped_layers"] == [0]
    (group,) = kept["kv_groups"][0]
    heads = list(range(group * REP, (group + 1) * REP))
    assert kept["heads"] == [heads]
    layer = model.model.layers[0]
    # the kept query heads are exactly those reading the kept KV head: weights copied, not retrained
    q_rows = [h * HEAD_DIM + j for h in heads for j in range(HEAD_DIM)]
    kv_rows = list(range(group * HEAD_DIM, (group + 1) * HEAD_DIM))
    assert torch.equal(layer.self_attn.q_proj.weight, orig["self_attn.q_proj.weight"][q_rows])
    assert torch.equal(layer.self_attn.k_proj.weight, orig["self_attn.k_proj.weight"][kv_rows])
    assert torch.equal(layer.self_attn.v_proj.weight, orig["self_attn.v_proj.weight"][kv_rows])
    assert torch.equal(layer.self_attn.o_proj.weight, orig["self_attn.o_proj.weight"][:, q_rows])
    neurons = kept["ffn"][0]
    assert len(neurons) == 32
    assert torch.equal(layer.mlp.gate_proj.weight, orig["mlp.gate_proj.weight"][neurons])
    assert torch.equal(layer.mlp.down_proj.weight, orig["mlp.down_proj.weight"][:, neurons])
    assert measure(model, 16)["parameters"] < before

    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["head_dim"],
            config["intermediate_size"], config["num_hidden_layers"], config["hidden_size"]) == (1, 2, 8, 32, 1, 32)
    assert check_reload(model, tmp_path, batches) == 0.0
    prompt = batches[0]["input_ids"][:1, :int(batches[0]["attention_mask"][0].sum())]
    out = load(tmp_path).generate(prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt.shape[1] + 4


def test_depth_drops_the_least_important_layer_by_count(tiny_llama):
    model = load(tiny_llama)
    kept = prune_causal(model, depth=0.5, importance="l2")
    assert len(kept["layers"]) == 1 and model.config.num_hidden_layers == 1
    assert model.model.layers[0].self_attn.layer_idx == 0  # the KV cache is indexed by the new position
    model(input_ids=torch.tensor([[5, 6, 7]]))


@pytest.mark.parametrize("field, ratio, words", [
    ("kv_groups", 1.0, "leaves no KV group"), ("kv_groups", 0.1, "less than one KV group"),
    ("ffn", 1.0, "leaves no FFN neuron"), ("depth", 1.0, "leaves no layer")])
def test_ratios_that_leave_nothing_are_one_line_user_errors(tiny_llama, field, ratio, words):
    with pytest.raises(UserError, match=words) as err:
        prune_causal(load(tiny_llama), **{field: ratio}, importance="l2")
    assert "\n" not in str(err.value)


def test_taylor_needs_batches(tiny_llama):
    with pytest.raises(UserError, match="taylor needs"):
        prune_causal(load(tiny_llama), ffn=0.5, importance="taylor")


def _big_but_useless_neuron(model, j: int) -> None:
    # a huge neuron whose output is thrown away: largest by magnitude, no effect on the loss
    for layer in model.model.layers:
        with torch.no_grad():
            layer.mlp.gate_proj.weight[j] *= 50
            layer.mlp.up_proj.weight[j] *= 50
            layer.mlp.down_proj.weight[:, j] = 0


def _big_but_useless_group(model, g: int) -> None:
    rows = slice(g * REP * HEAD_DIM, (g + 1) * REP * HEAD_DIM)
    for layer in model.model.layers:
        with torch.no_grad():
            layer.self_attn.q_proj.weight[rows] *= 50
            layer.self_attn.k_proj.weight[g * HEAD_DIM:(g + 1) * HEAD_DIM] *= 50
            layer.self_attn.o_proj.weight[:, rows] = 0


def test_taylor_removes_a_large_useless_neuron_that_l2_keeps(tiny_llama):
    batches = chat_batches(tiny_llama)
    picks = {}
    for kind in ("l2", "taylor"):
        model = load(tiny_llama)
        _big_but_useless_neuron(model, 7)
        picks[kind] = prune_causal(model, ffn=1 / 64, importance=kind, batches=batches)["ffn"]
    assert all(7 in layer for layer in picks["l2"])
    assert all(7 not in layer and len(layer) == 63 for layer in picks["taylor"])


def test_taylor_removes_a_large_useless_kv_group_that_l2_keeps(tiny_llama):
    batches = chat_batches(tiny_llama)
    picks = {}
    for kind in ("l2", "taylor"):
        model = load(tiny_llama)
        _big_but_useless_group(model, 1)
        picks[kind] = prune_causal(model, kv_groups=0.5, importance=kind, batches=batches)["kv_groups"]
    assert picks == {"l2": [[1], [1]], "taylor": [[0], [0]]}


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_other_llama_type_decoders_prune_and_reload(arch, tmp_path):
    # Qwen2 has q/k/v biases (sliced with their rows) and per-layer layer_types
    from transformers import AutoConfig

    config = AutoConfig.for_model(arch, vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                  num_attention_heads=6, num_key_value_heads=3, head_dim=8, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = {"input_ids": torch.randint(0, 64, (2, 9))}
    batches = [{**ids, "labels": ids["input_ids"]}]
    kept = prune_causal(model, ffn=0.25, kv_groups=1 / 3, depth=1 / 3, importance="taylor", batches=batches)
    assert all(len(g) == 2 for g in kept["kv_groups"]) and len(kept["layers"]) == 2
    model.save_pretrained(tmp_path)
    assert check_reload(model, tmp_path, batches) == 0.0
    assert (model.config.num_attention_heads, model.config.num_key_value_heads, model.config.intermediate_size) == (4, 2, 48)
