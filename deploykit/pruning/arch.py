"""Where each supported architecture keeps the parts that structured pruning removes.

    arch = arch_of(model)            # Arch for BERT, RoBERTa, DistilBERT or Llama-type models
    shape_of(model)                  # Shape(layers=6, hidden=384, heads=12, head_size=32, ffn=1536, vocab=30522, kv_heads=12)

The field and module names come from the one architecture table (`deploykit.architectures`, an entry's
`prune`); nothing else in deploykit.pruning depends on an architecture's naming.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass

import torch

from deploykit.architectures import Arch, architecture, layer_count_field
from deploykit.errors import UserError
from deploykit.layers import layer_list


def arch_of(model_or_config) -> Arch:
    """The architecture table's entry for a model or config that structured pruning supports (its names are
    in `Arch.prune`); a UserError names the supported types otherwise."""
    try:
        return architecture(model_or_config, "prune")
    except ValueError as err:
        raise UserError(f"prune: {err}") from None


@dataclass
class Shape:
    """The sizes a config expresses; what pruning changes."""

    layers: int
    hidden: int
    heads: int
    head_size: int
    ffn: int
    vocab: int
    kv_heads: int  # key/value heads; fewer than `heads` under grouped-query attention

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def shape_of(model_or_config) -> Shape:
    config = getattr(model_or_config, "config", model_or_config)
    arch = arch_of(config)
    hidden, heads = getattr(config, arch.hidden), getattr(config, arch.heads)
    head_size = getattr(config, "head_dim", None) if arch.explicit_head_dim else None
    return Shape(layers=getattr(config, layer_count_field(config)), hidden=hidden, heads=heads,
                 head_size=head_size or hidden // heads, ffn=getattr(config, arch.ffn),
                 vocab=config.vocab_size, kv_heads=getattr(config, "num_key_value_heads", None) or heads)


def sub(layer: torch.nn.Module, path: str) -> torch.nn.Module:
    return layer.get_submodule(path)


def sync_config(model) -> None:
    """Write the module sizes back into the config and attention modules after pruning.

    The config is what `from_pretrained` rebuilds the model from, so it must state the new sizes;
    the attention attributes keep the in-memory model consistent with what a reload builds.
    """
    arch = arch_of(model)
    config = model.config
    layers = layer_list(model)
    if len(layers):
        first = layers[0]
        query = sub(first, arch.prune.query)
        head_size = shape_of(config).head_size
        heads = query.out_features // head_size
        setattr(config, arch.heads, heads)
        setattr(config, arch.ffn, sub(first, arch.prune.ffn_in[0]).out_features)
        for layer in layers:
            attention = sub(layer, arch.prune.attention)
            for name in arch.prune.head_attrs:
                setattr(attention, name, heads)
            for name in arch.prune.all_head_attrs:
                setattr(attention, name, heads * head_size)
        if arch.explicit_head_dim and hasattr(config, "num_key_value_heads"):
            kv_heads = sub(first, arch.prune.key).out_features // head_size
            config.num_key_value_heads = kv_heads
            for layer in layers:
                sub(layer, arch.prune.attention).num_key_value_groups = heads // kv_heads
    setattr(config, arch.hidden, model.get_input_embeddings().embedding_dim)
    config.vocab_size = model.get_input_embeddings().num_embeddings


def measure(model, seq_len: int) -> dict[str, int]:
    """Parameters and MACs of one forward pass at batch 1 and `seq_len` tokens (Torch-Pruning's counter:
    Linear, Embedding and LayerNorm modules; attention's score products are not counted)."""
    import torch_pruning as tp

    max_pos = getattr(model.config, "max_position_embeddings", seq_len)
    seq_len = min(seq_len, max_pos - 2)  # RoBERTa positions start after the padding index
    ids = torch.full((1, seq_len), min(5, model.config.vocab_size - 1), dtype=torch.long,
                     device=next(model.parameters()).device)  # the GPU, after a recovery fine-tune there
    was_training = model.training
    model.eval()
    # its counter print()s a notice per module called by keyword only: stdout is the CLI's result channel
    with contextlib.redirect_stdout(io.StringIO()):
        macs, params = tp.utils.count_ops_and_params(model, {"input_ids": ids})
    model.train(was_training)
    return {"parameters": int(params), "macs": int(macs), "macs_seq_len": seq_len}
