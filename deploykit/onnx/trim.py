"""Export-time rewrite of an encoder classifier: the last layer computes only the token the head reads.

A sequence classifier's head reads one position of the last hidden state, position 0 ([CLS] / <s>):
BERT's pooler, RoBERTa's and ELECTRA's classification heads and DistilBERT's pre-classifier all take
`hidden[:, 0]`. In the last layer, every token's keys and values still matter (token 0 attends to them),
but its query, attention output, layer norms and feed-forward are wasted on every other token. Running
them for one token per row gives the same logits for less work: at the default recipe's 3 layers and
~49 padded tokens per batch-32 row, about a quarter of the multiply-adds and a third of the element-wise
ops (bench/README.md). The export's parity check against the untouched PyTorch model is the guard.

    with trimmed_last_layer(model):
        torch.onnx.export(model, ...)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields

from deploykit.architectures import ARCHITECTURES, architecture, resolve, supporting

# the architectures it applies to are those of deploykit.architectures with an `encoder_layer` (their
# sequence-classification head reads position 0 of the last hidden state); anything else exports untouched


@dataclass
class LayerParts:
    """The pieces of one post-norm encoder layer, named the same for every architecture."""
    query: object
    key: object
    value: object
    heads: int
    head_dim: int
    attn_out: object
    attn_norm: object
    ffn_in: object
    act: object
    ffn_out: object
    ffn_norm: object


def layer_parts(layer, model_type: str) -> LayerParts:
    """The modules of one encoder layer, at the paths its architecture's `encoder_layer` names (shared with
    `deploykit.onnx.packing`)."""
    names = ARCHITECTURES[model_type].encoder_layer
    return LayerParts(**{f.name: resolve(layer, getattr(names, f.name)) for f in fields(LayerParts)})


def encoder_layers(model, model_type: str):
    """The ModuleList of encoder layers, at its architecture's `layers` path."""
    return resolve(model.base_model, ARCHITECTURES[model_type].layers)


def _first_token_layer(parts: LayerParts):
    import torch

    class FirstTokenLayer(torch.nn.Module):
        """The layer's own weights, with the query side cut to position 0; same call signature."""

        def __init__(self):
            super().__init__()
            # registered as submodules, so the exporter sees parameters (not traced constants)
            self.query, self.key, self.value = parts.query, parts.key, parts.value
            self.attn_out, self.attn_norm = parts.attn_out, parts.attn_norm
            self.ffn_in, self.act, self.ffn_out, self.ffn_norm = parts.ffn_in, parts.act, parts.ffn_out, parts.ffn_norm
            self.heads, self.head_dim = parts.heads, parts.head_dim

        def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
            p = self
            batch = hidden_states.shape[0]
            first = hidden_states[:, :1]

            def heads(x):  # [B, T, H*D] -> [B, H, T, D]
                return x.view(batch, -1, p.heads, p.head_dim).transpose(1, 2)

            q, k, v = heads(p.query(first)), heads(p.key(hidden_states)), heads(p.value(hidden_states))
            scores = torch.matmul(q, k.transpose(2, 3)) * (p.head_dim ** -0.5)
            if attention_mask is not None:
                mask = attention_mask[:, :, :1, :] if attention_mask.dim() == 4 else attention_mask
                if mask.dtype == torch.bool:  # sdpa-style: True = attend
                    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
                else:                         # eager: additive, 0 or a large negative
                    scores = scores + mask
            context = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(batch, 1, -1)
            attended = p.attn_norm(p.attn_out(context) + first)
            return p.ffn_norm(p.ffn_out(p.act(p.ffn_in(attended))) + attended)

    return FirstTokenLayer()


def can_trim(model) -> bool:
    model_type = getattr(model.config, "model_type", None)
    return model_type in supporting("trim") and len(encoder_layers(model, model_type)) > 0


@contextmanager
def trimmed_last_layer(model):
    """Within the block, `model`'s last encoder layer outputs position 0 only (the model must be in eval
    mode: dropout is skipped); the original layer is put back on exit."""
    model_type = model.config.model_type
    architecture(model_type, "trim")  # a one-line ValueError naming the types it knows
    if not can_trim(model):
        raise ValueError(f"no last-layer trim for model type {model_type!r}: it has no layers")
    layers = encoder_layers(model, model_type)
    original = layers[-1]
    layers[-1] = _first_token_layer(layer_parts(original, model_type))
    try:
        yield model
    finally:
        layers[-1] = original
