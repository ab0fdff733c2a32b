"""Where each supported architecture keeps the parts that structured pruning removes.

    arch = arch_of(model)            # Arch for BERT, RoBERTa, DistilBERT or Llama-type models
    shape_of(model)                  # Shape(layers=6, hidden=384, heads=12, head_size=32, ffn=1536, vocab=30522, kv_heads=12)

One dict literal maps a config's `model_type` to its field and module names; nothing else
in deploykit.pruning depends on an architecture's naming.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass

import torch

from deploykit.errors import UserError
from deploykit.layers import count_field, layer_list


@dataclass(frozen=True)
class Arch:
    """Names of one architecture's config fields and modules (module paths are relative to a layer)."""

    hidden: str                       # config field of the residual width
    heads: str                        # config field of the attention head count
    ffn: str                          # config field of the FFN intermediate width
    query: str                        # query projection, the root of a head group
    ffn_in: tuple[str, ...]           # FFN projections whose output rows are the intermediate neurons
    attention: str                    # attention module whose head-count attributes follow the pruning
    head_attrs: tuple[str, ...]       # its attributes that hold the head count
    all_head_attrs: tuple[str, ...]   # its attributes that hold heads x head size
    explicit_head_dim: bool = False   # config carries head_dim, so fewer heads alone is expressible
    dense_head: str | None = None     # hidden->hidden layer after the encoder (pooler), from the model root


BERT = dict(hidden="hidden_size", heads="num_attention_heads", ffn="intermediate_size",
            query="attention.self.query", ffn_in=("intermediate.dense",), attention="attention.self",
            head_attrs=("num_attention_heads",), all_head_attrs=("all_head_size",))

ARCHS = {
    "bert": Arch(**BERT, dense_head="bert.pooler.dense"),
    "roberta": Arch(**BERT, dense_head="classifier.dense"),
    "distilbert": Arch(hidden="dim", heads="n_heads", ffn="hidden_dim", query="attention.q_lin",
                       ffn_in=("ffn.lin1",), attention="attention", head_attrs=("n_heads",),
                       all_head_attrs=("dim",), dense_head="pre_classifier"),
    "llama": Arch(hidden="hidden_size", heads="num_attention_heads", ffn="intermediate_size",
                  query="self_attn.q_proj", ffn_in=("mlp.gate_proj", "mlp.up_proj"), attention="self_attn",
                  head_attrs=(), all_head_attrs=(), explicit_head_dim=True),
}


def arch_of(model_or_config) -> Arch:
    """The Arch entry for a model or config; a UserError names the supported types otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHS:
        raise UserError(f"prune: architecture {model_type!r} is not supported "
                        f"(supported: {', '.join(sorted(ARCHS))})")
    return ARCHS[model_type]


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
    return Shape(layers=getattr(config, count_field(config)), hidden=hidden, heads=heads,
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
        query = sub(first, arch.query)
        head_size = shape_of(config).head_size
        heads = query.out_features // head_size
        setattr(config, arch.heads, heads)
        setattr(config, arch.ffn, sub(first, arch.ffn_in[0]).out_features)
        for layer in layers:
            attention = sub(layer, arch.attention)
            for name in arch.head_attrs:
                setattr(attention, name, heads)
            for name in arch.all_head_attrs:
                setattr(attention, name, heads * head_size)
        if arch.explicit_head_dim and hasattr(config, "num_key_value_heads"):
            kv_heads = sub(first, "self_attn.k_proj").out_features // head_size
            config.num_key_value_heads = kv_heads
            for layer in layers:
                sub(layer, arch.attention).num_key_value_groups = heads // kv_heads
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
