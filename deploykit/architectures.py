"""The one architecture table: what deploykit knows about each `model_type` it supports, name written once.

    from deploykit.architectures import ARCHITECTURES, architecture, supporting
    architecture(model)              # the Arch of a model or config (or a model_type); ValueError if unknown
    architecture(model, "fuse")      # ... and it must support ONNX Runtime fusion, else a one-line ValueError
    supporting("trim")               # ['bert', 'camembert', 'distilbert', 'electra', 'roberta', 'xlm-roberta']

Every module that depends on an architecture's naming or capabilities reads this table: layers.py (layer
list, layer-count field), training.py (per-layer parameter names), stages/finetune.py (LoRA targets),
onnx/export.py (fusion), onnx/trim.py and onnx/packing.py (export-time rewrites), pruning/arch.py (encoder
width pruning), llm/prune.py (decoder pruning), models.py (the types an error message names). Adding an
architecture is one entry here plus its tests (tests/test_architectures.py builds a tiny model per entry).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderLayer:
    """Paths, relative to one post-norm encoder layer, of the parts `deploykit.onnx.trim` and
    `deploykit.onnx.packing` rebuild their layers from (the same names for every architecture there)."""

    query: str
    key: str
    value: str
    heads: str       # attribute of the attention module's head count
    head_dim: str    # attribute of its head size
    attn_out: str    # attention output projection
    attn_norm: str   # LayerNorm after attention + residual
    ffn_in: str
    act: str         # the FFN activation (a module or a function)
    ffn_out: str
    ffn_norm: str    # LayerNorm after FFN + residual


@dataclass(frozen=True)
class PruneNames:
    """Module names `deploykit.pruning` (heads, FFN neurons, residual width) removes rows and columns of;
    paths are relative to a layer unless said otherwise."""

    query: str                        # query projection, the root of a head group
    ffn_in: tuple[str, ...]           # FFN projections whose output rows are the intermediate neurons
    attention: str                    # attention module whose head-count attributes follow the pruning
    head_attrs: tuple[str, ...] = ()      # its attributes that hold the head count
    all_head_attrs: tuple[str, ...] = ()  # its attributes that hold heads x head size
    dense_head: str | None = None     # hidden->hidden layer after the encoder (pooler), from the model root
    key: str | None = None            # key projection: its rows give the KV-head count (explicit_head_dim)


@dataclass(frozen=True)
class Arch:
    """What deploykit knows and can do for one `model_type`.

    Attributes:
        layers: path from `model.base_model` to the ModuleList of transformer blocks (`deploykit.layers`,
            onnx trim/packing; its last name is what training.py's per-layer parameter match reads).
        lora_targets: attention query/value projection names LoRA adapts by default (stages/finetune.py).
        layer_count: config field of the layer count (`deploykit.layers.keep_layers`, training.py).
        hidden / heads / ffn: config fields of the residual width, head count, FFN width (pruning).
        explicit_head_dim: the config carries `head_dim`, so fewer heads alone is expressible (pruning).
        fuse: ONNX Runtime's `bert` optimizer fuses its graph (onnx/export.py).
        encoder_layer: the layer parts for the last-layer trim and padding-free packing (onnx/trim.py,
            onnx/packing.py: the sequence-classification head reads position 0); None: neither applies.
        prune: names for encoder structured pruning (pruning/arch.py, stages/prune.py); None: refused.
        decoder_prune: a Llama-type decoder whose FFN neurons and KV groups llm/prune.py removes.
    """

    layers: str
    lora_targets: tuple[str, ...]
    layer_count: str = "num_hidden_layers"
    hidden: str = "hidden_size"
    heads: str = "num_attention_heads"
    ffn: str = "intermediate_size"
    explicit_head_dim: bool = False
    fuse: bool = False
    encoder_layer: EncoderLayer | None = None
    prune: PruneNames | None = None
    decoder_prune: bool = False

    @property
    def trim(self) -> bool:
        """The last-layer trim and padding-free packing apply (both rebuild layers from `encoder_layer`)."""
        return self.encoder_layer is not None


BERT_LAYER = EncoderLayer(
    query="attention.self.query", key="attention.self.key", value="attention.self.value",
    heads="attention.self.num_attention_heads", head_dim="attention.self.attention_head_size",
    attn_out="attention.output.dense", attn_norm="attention.output.LayerNorm", ffn_in="intermediate.dense",
    act="intermediate.intermediate_act_fn", ffn_out="output.dense", ffn_norm="output.LayerNorm")
DISTILBERT_LAYER = EncoderLayer(
    query="attention.q_lin", key="attention.k_lin", value="attention.v_lin", heads="attention.n_heads",
    head_dim="attention.attention_head_size", attn_out="attention.out_lin", attn_norm="sa_layer_norm",
    ffn_in="ffn.lin1", act="ffn.activation", ffn_out="ffn.lin2", ffn_norm="output_layer_norm")
BERT_PRUNE = dict(query="attention.self.query", ffn_in=("intermediate.dense",), attention="attention.self",
                  head_attrs=("num_attention_heads",), all_head_attrs=("all_head_size",))
# BERT-family encoders ORT fuses and the export rewrites know; pruning is tested on BERT and RoBERTa only
ENCODER = dict(layers="encoder.layer", lora_targets=("query", "value"), fuse=True, encoder_layer=BERT_LAYER)
DECODER = dict(layers="layers", lora_targets=("q_proj", "v_proj"), explicit_head_dim=True, decoder_prune=True)

ARCHITECTURES: dict[str, Arch] = {
    "bert": Arch(**ENCODER, prune=PruneNames(**BERT_PRUNE, dense_head="bert.pooler.dense")),
    "roberta": Arch(**ENCODER, prune=PruneNames(**BERT_PRUNE, dense_head="classifier.dense")),
    "xlm-roberta": Arch(**ENCODER),
    "camembert": Arch(**ENCODER),
    "electra": Arch(**ENCODER),
    "distilbert": Arch(layers="transformer.layer", lora_targets=("q_lin", "v_lin"), layer_count="n_layers",
                       hidden="dim", heads="n_heads", ffn="hidden_dim", fuse=True, encoder_layer=DISTILBERT_LAYER,
                       prune=PruneNames(query="attention.q_lin", ffn_in=("ffn.lin1",), attention="attention",
                                        head_attrs=("n_heads",), all_head_attrs=("dim",),
                                        dense_head="pre_classifier")),
    "llama": Arch(**DECODER, prune=PruneNames(query="self_attn.q_proj", ffn_in=("mlp.gate_proj", "mlp.up_proj"),
                                              attention="self_attn", key="self_attn.k_proj")),
    "qwen2": Arch(**DECODER),
    "mistral": Arch(**DECODER),
}

# the capabilities `architecture(..., needs=)` and `supporting` ask about (Arch attributes that say yes or no),
# as error messages name them
CAPABILITIES = {"fuse": "ONNX Runtime fusion", "trim": "the last-layer trim and padding-free packing",
                "prune": "structured pruning", "decoder_prune": "decoder pruning"}


def model_type_of(model_or_config) -> str | None:
    """A model's, config's or plain string's model_type (None when it has none)."""
    if isinstance(model_or_config, str):
        return model_or_config
    return getattr(getattr(model_or_config, "config", model_or_config), "model_type", None)


def supporting(needs: str | None = None) -> list[str]:
    """The model types in the table (sorted), or those with capability `needs` (one of CAPABILITIES)."""
    if needs is not None and needs not in CAPABILITIES:
        raise ValueError(f"unknown capability {needs!r}; one of {', '.join(CAPABILITIES)}")
    return sorted(t for t, a in ARCHITECTURES.items() if needs is None or getattr(a, needs))


def architecture(model_or_config, needs: str | None = None) -> Arch:
    """The table's entry for a model, config or model_type string.

    Args:
        model_or_config: a transformers model, its config, or a model_type.
        needs: a capability the entry must have (one of CAPABILITIES), else it counts as unsupported.

    Raises:
        ValueError: one line naming the model type and the supported ones.
    """
    model_type = model_type_of(model_or_config)
    known = supporting(needs)
    if model_type not in known:
        what = f" for {CAPABILITIES[needs]}" if needs else ""
        raise ValueError(f"architecture {model_type!r} is not supported{what} (supported: {', '.join(known)})")
    return ARCHITECTURES[model_type]


def resolve(root, path: str):
    """The attribute at dotted `path` (`attention.self.query`) under `root`; None where one is missing."""
    node = root
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def layer_count_field(config) -> str:
    """The config field of the layer count: the table's for a known type, else the first common name the
    config sets (num_hidden_layers, n_layers, num_layers), else num_hidden_layers."""
    arch = ARCHITECTURES.get(model_type_of(config))
    if arch is not None:
        return arch.layer_count
    return next((k for k in ("num_hidden_layers", "n_layers", "num_layers") if getattr(config, k, None)),
                "num_hidden_layers")


def layer_paths() -> list[str]:
    """Every distinct `layers` path in the table, in table order (what `deploykit.layers` searches)."""
    return list(dict.fromkeys(a.layers for a in ARCHITECTURES.values()))


def default_lora_targets() -> list[tuple[str, ...]]:
    """Every distinct LoRA target set in the table, in table order (stages/finetune.py picks the first a
    model has: the choice goes by module names, so a fine-tune of a type outside the table still gets one)."""
    return list(dict.fromkeys(a.lora_targets for a in ARCHITECTURES.values()))

