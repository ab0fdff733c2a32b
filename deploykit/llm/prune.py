"""Structured pruning of Llama-type decoders (Llama, Qwen2, Mistral) into smaller plain HF models.

    from deploykit.llm.prune import prune_causal
    kept = prune_causal(model, ffn=0.5, kv_groups=1 / 3, depth=0.1, importance="taylor", batches=batches)
    model.save_pretrained(folder)                 # plain AutoModelForCausalLM.from_pretrained reloads it
    check_reload(model, folder, batches)          # deploykit.pruning.reload: same weights, same logits

Units, each the same count in every layer so the stock config expresses the result:
- `ffn`: FFN neurons (gate_proj/up_proj rows, down_proj columns) -> `intermediate_size`;
- `kv_groups`: whole grouped-query-attention groups, i.e. one KV head with the query heads that read it
  (its k/v rows, their q rows and o_proj columns) -> `num_key_value_heads` and `num_attention_heads`
  shrink together, `head_dim` stays (explicit in these configs), so the queries per KV head do too;
- `depth` / `drop_layers`: whole layers (deploykit.layers.keep_layers).
The residual width (hidden_size) is never pruned: embeddings, norms and the tied LM head keep it.

Whole units are cut by index_select on the Linear weights: with groups of contiguous rows the exact
slices are simpler than a dependency graph (Torch-Pruning also hung on GQA in an earlier attempt).
"""

from __future__ import annotations

import torch

from deploykit.architectures import supporting
from deploykit.errors import UserError
from deploykit.layers import check_dropped, layer_list
from deploykit.pruning.arch import Shape
from deploykit.pruning.importance import accumulate_gradients, element_scores
from deploykit.pruning.units import Kept, drop_depth, removed_count

IMPORTANCE = ("l2", "taylor")
# config fields a Llama-type decoder must carry for this module to know its shapes
FIELDS = ("num_attention_heads", "num_key_value_heads", "intermediate_size", "hidden_size")


def causal_shape(config) -> Shape:
    """The sizes pruning changes, read from a Llama-type config; UserError for other architectures."""
    missing = [f for f in FIELDS if getattr(config, f, None) is None]
    if missing:
        raise UserError(f"prune: {getattr(config, 'model_type', '?')!r} is not a Llama-type decoder "
                        f"(config lacks {', '.join(missing)}); supported: {', '.join(supporting('decoder_prune'))}")
    heads = config.num_attention_heads
    return Shape(layers=config.num_hidden_layers, hidden=config.hidden_size, heads=heads,
                 head_size=getattr(config, "head_dim", None) or config.hidden_size // heads,
                 ffn=config.intermediate_size, vocab=config.vocab_size, kv_heads=config.num_key_value_heads)


def prune_causal(model, *, ffn: float = 0.0, kv_groups: float = 0.0, depth: float = 0.0,
                 drop_layers: list[int] | None = None, importance: str = "taylor",
                 batches: list[dict[str, torch.Tensor]] | None = None) -> dict:
    """Prune a Llama-type causal LM in place; its config follows, so `save_pretrained` reloads plainly.

    Args:
        model: a LlamaForCausalLM-like model (q/k/v/o_proj attention, gate/up/down_proj MLP).
        ffn: share of FFN neurons removed from every layer.
        kv_groups: share of KV groups (a KV head with its query heads) removed from every layer.
        depth: share of layers removed, the least important ones.
        drop_layers: original indices of layers to remove instead of `depth`.
        importance: "l2" (weight magnitude) or "taylor" (|w * dL/dw| from the LM loss on `batches`).
        batches: tokenized batches with `labels` (needed for "taylor").

    Returns:
        The kept units for the manifest: original indices of the kept layers, dropped layers, and per
        kept layer the kept KV groups, query heads and FFN neurons; `shape` before and after.
    """
    shape = causal_shape(model.config)
    n_ffn, n_groups, n_layers, explicit = causal_counts(shape, ffn=ffn, kv_groups=kv_groups, depth=depth,
                                                        drop_layers=drop_layers, importance=importance,
                                                        has_batches=bool(batches))
    kept = Kept.start(shape)
    if n_layers:
        _gradients(model, importance, batches)
        drop_depth(model, importance, n_layers, explicit, kept)
    if n_ffn:
        _gradients(model, importance, batches)
        for i, layer in enumerate(layer_list(model)):
            keep = _top(ffn_scores(layer.mlp, importance), shape.ffn - n_ffn)
            slice_ffn(layer.mlp, keep)
            kept.ffn[i] = [kept.ffn[i][j] for j in keep]
    if n_groups:
        _gradients(model, importance, batches)
        for i, layer in enumerate(layer_list(model)):
            keep = _top(group_scores(layer.self_attn, shape, importance), shape.kv_heads - n_groups)
            kept.heads[i] = [kept.heads[i][h] for h in slice_kv_groups(layer.self_attn, keep, shape)]
    model.zero_grad(set_to_none=True)
    sync_causal_config(model, shape)
    return summary(kept, shape, causal_shape(model.config))


def causal_counts(shape: Shape, *, ffn: float, kv_groups: float, depth: float, drop_layers: list[int] | None,
                  importance: str, has_batches: bool) -> tuple[int, int, int, list[int] | None]:
    """(FFN neurons per layer, KV groups per layer, layers, explicit layer indices or None) that `prune_causal`
    removes; UserError in one line for a request the model cannot take. No work is done."""
    if importance not in IMPORTANCE:
        raise UserError(f"prune.importance={importance!r}: use one of {', '.join(IMPORTANCE)}")
    if importance == "taylor" and not has_batches:
        raise UserError("prune.importance=taylor needs training batches for its gradients; give data or use l2")
    n_ffn = removed_count("ffn", ffn, shape.ffn, "FFN neuron")
    n_groups = removed_count("kv_groups", kv_groups, shape.kv_heads, "KV group")
    if depth and drop_layers:
        raise UserError("prune: give prune.depth (by importance) or prune.drop_layers (explicit), not both")
    explicit = check_dropped(list(drop_layers), shape.layers) if drop_layers else None
    n_layers = len(explicit) if explicit else removed_count("depth", depth, shape.layers, "layer")
    if not (n_ffn or n_groups or n_layers):
        raise UserError("prune: nothing to prune; set prune.ffn, prune.heads (KV groups), prune.depth or "
                        "prune.drop_layers")
    return n_ffn, n_groups, n_layers, explicit


def _gradients(model, importance: str, batches) -> None:
    # fresh gradients for every unit: the previous cut changed the function being differentiated
    if importance == "taylor":
        accumulate_gradients(model, batches)


def _top(scores: torch.Tensor, n_keep: int) -> list[int]:
    """Indices of the `n_keep` highest scores, in their original order (ties: the lower index stays)."""
    order = torch.argsort(scores.float().cpu(), descending=True, stable=True)
    return sorted(order[:n_keep].tolist())


def _rows(linear: torch.nn.Linear, kind: str, block: int = 1) -> torch.Tensor:
    """Score of each block of `block` output rows (weight and bias)."""
    s = element_scores(linear.weight, kind).sum(1)
    if linear.bias is not None:
        s = s + element_scores(linear.bias, kind)
    return s.view(-1, block).sum(1)


def _cols(linear: torch.nn.Linear, kind: str, block: int = 1) -> torch.Tensor:
    """Score of each block of `block` input columns (the bias belongs to no column)."""
    return element_scores(linear.weight, kind).sum(0).view(-1, block).sum(1)


def ffn_scores(mlp, kind: str) -> torch.Tensor:
    """One score per FFN neuron: its gate and up rows plus its down column."""
    return _rows(mlp.gate_proj, kind) + _rows(mlp.up_proj, kind) + _cols(mlp.down_proj, kind)


def group_scores(attn, shape: Shape, kind: str) -> torch.Tensor:
    """One score per KV group: the KV head's k/v rows plus its query heads' q rows and o columns.

    HF's repeat_kv lets query head h read KV head h // (heads / kv_heads), so group g owns the
    contiguous query heads g * rep .. (g + 1) * rep - 1.
    """
    d, rep = shape.head_size, shape.heads // shape.kv_heads
    return (_rows(attn.k_proj, kind, d) + _rows(attn.v_proj, kind, d)
            + _rows(attn.q_proj, kind, d * rep) + _cols(attn.o_proj, kind, d * rep))


def _select(linear: torch.nn.Linear, idx: list[int], dim: int) -> None:
    """Keep rows (dim 0) or input columns (dim 1) `idx` of `linear`, in place (same module object)."""
    index = torch.tensor(idx, dtype=torch.long, device=linear.weight.device)
    linear.weight = torch.nn.Parameter(linear.weight.detach().index_select(dim, index).clone(),
                                       requires_grad=linear.weight.requires_grad)
    if dim == 0:
        if linear.bias is not None:
            linear.bias = torch.nn.Parameter(linear.bias.detach().index_select(0, index).clone(),
                                             requires_grad=linear.bias.requires_grad)
        linear.out_features = len(idx)
    else:
        linear.in_features = len(idx)


def _expand(blocks: list[int], size: int) -> list[int]:
    return [b * size + j for b in blocks for j in range(size)]


def slice_ffn(mlp, keep: list[int]) -> None:
    """Keep FFN neurons `keep` of one layer."""
    _select(mlp.gate_proj, keep, 0)
    _select(mlp.up_proj, keep, 0)
    _select(mlp.down_proj, keep, 1)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def slice_kv_groups(attn, keep: list[int], shape: Shape) -> list[int]:
    """Keep KV groups `keep` of one layer; returns the (current) indices of the query heads kept.

    The queries per KV head do not change, so the module's num_key_value_groups stays right.
    """
    d, rep = shape.head_size, shape.heads // shape.kv_heads
    heads = _expand(keep, rep)
    _select(attn.k_proj, _expand(keep, d), 0)
    _select(attn.v_proj, _expand(keep, d), 0)
    _select(attn.q_proj, _expand(heads, d), 0)
    _select(attn.o_proj, _expand(heads, d), 1)
    return heads


def sync_causal_config(model, shape: Shape) -> None:
    """Write the sliced sizes into the config: what `from_pretrained` rebuilds the model from.

    head_dim is written out too: a config that derived it from hidden / heads would otherwise
    compute a different head size once the head count drops.
    """
    first = layer_list(model)[0]
    config = model.config
    config.head_dim = shape.head_size
    config.intermediate_size = first.mlp.gate_proj.out_features
    config.num_attention_heads = first.self_attn.q_proj.out_features // shape.head_size
    config.num_key_value_heads = first.self_attn.k_proj.out_features // shape.head_size


def summary(kept: Kept, before: Shape, after: Shape) -> dict:
    """Kept units in original indices, for the manifest."""
    rep = before.heads // before.kv_heads
    return {"layers": kept.layers,
            "dropped_layers": [i for i in range(before.layers) if i not in set(kept.layers)],
            "kv_groups": [[h // rep for h in heads[::rep]] for heads in kept.heads],
            "heads": kept.heads,
            "ffn": kept.ffn,
            "shape_before": before.as_dict(), "shape_after": after.as_dict()}
