"""Structured pruning units (ffn, width with heads, heads, depth), each kept uniform across layers.

    target = plan(cfg, shape_of(model), arch_of(model))     # validates the request, counts what goes
    kept = Kept.start(shape_of(model))
    for step in range(1, cfg.steps + 1):
        prune_step(model, cfg, target, step, batches, kept)

Torch-Pruning's DependencyGraph finds every weight a unit touches (a head's Q/K/V rows and O
columns; the residual stream's embeddings, LayerNorms, projections and pooler). We do not use
MetaPruner's ratios: its rounding and global ranking give per-layer sizes no config can express,
so we rank each group with a Torch-Pruning importance ourselves and prune exactly `n` per layer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from deploykit.architectures import Arch
from deploykit.config import PruneConfig
from deploykit.errors import UserError
from deploykit.layers import check_dropped, keep_layers, layer_list
from deploykit.pruning.arch import Shape, arch_of, shape_of, sub, sync_config
from deploykit.pruning.importance import accumulate_gradients, group_importance, layer_scores


@dataclass
class Target:
    """How many of each unit the whole schedule removes (heads and FFN neurons: per layer)."""

    layers: int = 0
    drop_layers: list[int] | None = None
    heads: int = 0          # heads removed per layer
    residual: bool = False  # heads go with residual channels (width) rather than alone (heads)
    ffn: int = 0

    def at(self, step: int, steps: int, attr: str) -> int:
        """Cumulative count removed by the end of `step` (linear schedule)."""
        return round(getattr(self, attr) * step / steps)


@dataclass
class Kept:
    """Original indices of what remains, for the manifest (heads and FFN neurons per kept layer)."""

    original: Shape
    layers: list[int]
    heads: list[list[int]]
    channels: list[int]
    ffn: list[list[int]]

    @classmethod
    def start(cls, shape: Shape) -> Kept:
        return cls(shape, list(range(shape.layers)), [list(range(shape.heads)) for _ in range(shape.layers)],
                   list(range(shape.hidden)), [list(range(shape.ffn)) for _ in range(shape.layers)])

    def summary(self) -> dict:
        return {"layers": self.layers, "heads": self.heads, "channels": self.channels,
                "ffn_per_layer": [len(f) for f in self.ffn]}


def _removed(ratio: float, total: int) -> int:
    return round(ratio * total)


def plan(cfg: PruneConfig, shape: Shape, arch: Arch) -> Target:
    """Validate the request against the model and count what goes; one UserError line per problem."""
    target = Target()
    if cfg.heads:
        if not arch.explicit_head_dim:
            raise UserError(f"prune.heads={cfg.heads}: this config computes head size as hidden / heads, so "
                            "fewer heads alone cannot be reloaded; use prune.width (heads with residual channels)")
        if shape.kv_heads != shape.heads:
            raise UserError(f"prune.heads={cfg.heads}: grouped-query attention ({shape.heads} query / "
                            f"{shape.kv_heads} key-value heads) is not supported yet; use prune.ffn or prune.depth")
        target.heads = removed_count("heads", cfg.heads, shape.heads, "attention head")
    if cfg.width:
        if arch.explicit_head_dim:
            raise UserError(f"prune.width={cfg.width}: not supported for this architecture; use prune.heads "
                            "and prune.ffn")
        channels = _removed(cfg.width, shape.hidden)
        if channels % shape.head_size:
            raise UserError(f"prune.width={cfg.width} removes {channels} of {shape.hidden} channels, not whole "
                            f"heads of {shape.head_size}; use a multiple of 1/{shape.heads} "
                            f"(e.g. {1 / shape.heads:.4f} per head)")
        target.heads = removed_count("width", cfg.width, shape.heads, "attention head", channels // shape.head_size)
        target.residual = True
    if cfg.ffn:
        target.ffn = _removed(cfg.ffn, shape.ffn)
        if target.ffn >= shape.ffn:
            raise UserError(f"prune.ffn={cfg.ffn} leaves no FFN neuron of {shape.ffn}; use a smaller ratio")
    if cfg.depth and cfg.drop_layers:
        raise UserError("prune: give prune.depth (by importance) or prune.drop_layers (explicit), not both")
    if cfg.drop_layers:
        target.drop_layers = check_dropped(list(cfg.drop_layers), shape.layers)
        target.layers = len(target.drop_layers)
    elif cfg.depth:
        target.layers = removed_count("depth", cfg.depth, shape.layers, "layer")
    if not (target.layers or target.heads or target.ffn or cfg.vocab):
        raise UserError("prune: nothing to prune; set prune.ffn, prune.width, prune.depth, prune.drop_layers, "
                        "prune.heads or prune.vocab")
    return target


def removed_count(field: str, ratio: float, total: int, unit: str, removed: int | None = None) -> int:
    """How many of `total` units `prune.<field>=ratio` removes (per layer): `removed` when the caller counted them
    (heads that a width cut takes), else the ratio rounded; 0 for ratio 0. Encoders and causal LMs share it.

    Raises:
        UserError: the count removes every unit, or none although the ratio asked for some.
    """
    if not ratio:
        return 0
    n = round(ratio * total) if removed is None else removed
    if n >= total:
        raise UserError(f"prune.{field}={ratio} leaves no {unit} of {total}; use a ratio below {(total - 1) / total:.4f}")
    if n == 0:
        raise UserError(f"prune.{field}={ratio} removes less than one {unit} of {total}; "
                        f"use at least {1 / total:.4f}")
    return n


def prune_step(model, cfg: PruneConfig, target: Target, step: int, batches: list[dict], kept: Kept) -> None:
    """Bring the model to the schedule's sizes for `step` (1-based) of `cfg.steps`, in place.

    Counts are cumulative from the original model, so rounding never drifts across steps.
    """
    # a model that recovered on the GPU after the previous step is pruned where its batches are: the CPU
    model.cpu()
    original = kept.original
    if target.layers:
        # an explicit list goes at once: its indices name layers of the original model
        goal = target.layers if target.drop_layers is not None else target.at(step, cfg.steps, "layers")
        n_drop = goal - (original.layers - len(kept.layers))
        if n_drop > 0:
            _gradients(model, cfg, batches)
            drop_depth(model, cfg.importance, n_drop, target.drop_layers, kept)
    if target.ffn or target.heads:
        _prune_widths(model, cfg, target, step, batches, kept)
    model.zero_grad(set_to_none=True)


def _prune_widths(model, cfg: PruneConfig, target: Target, step: int, batches: list[dict], kept: Kept) -> None:
    """FFN neurons, then heads (and with `width` the residual channels), on one dependency graph."""
    import torch_pruning as tp

    arch, original = arch_of(model), kept.original
    example = {k: v for k, v in batches[0].items() if k != "labels"}
    with warnings.catch_warnings():
        # RMSNorm weights are bare parameters; Torch-Pruning's default for them (last dim) is right
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        # trace to the logits: Llama-type models also return a cache that the tracer cannot follow
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=example, forward_fn=lambda m, inputs: m(**inputs, use_cache=False).logits)
    importance = group_importance(cfg.importance)
    if target.ffn:
        _gradients(model, cfg, batches)
        prune_ffn(model, graph, arch, original.ffn - target.at(step, cfg.steps, "ffn"), importance, kept)
    if target.heads:
        heads_keep = original.heads - target.at(step, cfg.steps, "heads")
        _gradients(model, cfg, batches)
        prune_heads(model, graph, arch, heads_keep, original.head_size, importance, kept)
        if target.residual:
            _gradients(model, cfg, batches)
            prune_residual(model, graph, arch, heads_keep * original.head_size, importance, kept)
    sync_config(model)


def _gradients(model, cfg: PruneConfig, batches: list[dict]) -> None:
    # fresh gradients for every unit: the previous unit changed the function being differentiated
    if cfg.importance == "taylor":
        accumulate_gradients(model, batches)


def drop_depth(model, kind: str, n_drop: int, explicit: list[int] | None, kept: Kept) -> None:
    """Remove `n_drop` layers: the explicit original indices, else the least important (deploykit.layers)."""
    if explicit is not None:
        drop = [kept.layers.index(i) for i in explicit if i in kept.layers]
    else:
        drop = torch.argsort(torch.tensor(layer_scores(model, kind)))[:n_drop].tolist()
    keep = [i for i in range(len(kept.layers)) if i not in set(drop)]
    keep_layers(model, keep)
    kept.layers = [kept.layers[i] for i in keep]
    kept.heads = [kept.heads[i] for i in keep]
    kept.ffn = [kept.ffn[i] for i in keep]


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    return sorted(torch.argsort(scores.float().cpu(), stable=True)[:n].tolist())


def _drop(indices: list, removed: list[int]) -> list:
    gone = set(removed)
    return [c for j, c in enumerate(indices) if j not in gone]


def _prune_least(graph, module, pruning_fn, n_channels: int, n_keep: int, importance, block: int = 1) -> list[int]:
    """Score every channel of `module`'s dependency group, sum the scores over blocks of `block`
    channels (a head), prune the lowest blocks so that `n_keep` remain; returns the dropped blocks."""
    group = graph.get_pruning_group(module, pruning_fn, idxs=list(range(n_channels)))
    scores = importance(group).view(-1, block).sum(1)
    drop = _lowest(scores, scores.numel() - n_keep)
    idxs = [b * block + j for b in drop for j in range(block)]
    graph.get_pruning_group(module, pruning_fn, idxs=idxs).prune()
    return drop


def prune_ffn(model, graph, arch: Arch, n_keep: int, importance, kept: Kept) -> None:
    """Keep the `n_keep` most important FFN neurons in every layer (their up and down projections)."""
    import torch_pruning as tp

    for i, layer in enumerate(layer_list(model)):
        root = sub(layer, arch.prune.ffn_in[0])
        if root.out_features > n_keep:
            drop = _prune_least(graph, root, tp.prune_linear_out_channels, root.out_features, n_keep, importance)
            kept.ffn[i] = _drop(kept.ffn[i], drop)


def prune_heads(model, graph, arch: Arch, n_keep: int, head_size: int, importance, kept: Kept) -> None:
    """Keep the `n_keep` most important heads of every layer (chosen per layer; Q/K/V rows, O columns)."""
    import torch_pruning as tp

    for i, layer in enumerate(layer_list(model)):
        query = sub(layer, arch.prune.query)
        if query.out_features // head_size > n_keep:
            drop = _prune_least(graph, query, tp.prune_linear_out_channels, query.out_features, n_keep,
                                importance, block=head_size)
            kept.heads[i] = _drop(kept.heads[i], drop)


def prune_residual(model, graph, arch: Arch, n_keep: int, importance, kept: Kept) -> None:
    """Keep `n_keep` residual channels, chosen once for the whole stream (embeddings, every LayerNorm,
    every projection in and out of it); the pooler-like dense head shrinks to the same width."""
    import torch_pruning as tp

    embeddings = model.get_input_embeddings()
    if embeddings.embedding_dim <= n_keep:
        return
    drop = _prune_least(graph, embeddings, tp.prune_embedding_out_channels, embeddings.embedding_dim, n_keep,
                        importance)
    kept.channels = _drop(kept.channels, drop)
    dense = dense_head(model, arch)
    if dense is not None:
        # the config sizes the pooler (hidden -> hidden) with the same hidden_size
        _prune_least(graph, dense, tp.prune_linear_out_channels, dense.out_features, n_keep, importance)


def dense_head(model, arch: Arch) -> torch.nn.Linear | None:
    """The hidden -> hidden layer after the encoder (BERT's pooler, RoBERTa's classifier.dense), where this head
    class has one: a token classifier reads the hidden states directly (BERT's is built without its pooler)."""
    if arch.prune.dense_head is None:
        return None
    try:
        dense = model.get_submodule(arch.prune.dense_head)
    except AttributeError:  # no such module, or a None on the way (bert.pooler of a token classifier)
        return None
    return dense if isinstance(dense, torch.nn.Linear) else None


class EncoderCut:
    """The prune stage's cut for encoders (text and token classifiers): plans every unit against the model before
    any work, prunes to the schedule's sizes step by step, and lets a recovery learn each pruned layer's hidden
    states from the parent layer it was cut from (`prune.hidden_kd`)."""

    def check(self, model, cfg: PruneConfig) -> None:
        """UserError in one line for a request this model cannot take (`plan`)."""
        shape = shape_of(model)
        self.target = plan(cfg, shape, arch_of(model))
        self.kept = Kept.start(shape)

    def step(self, model, cfg: PruneConfig, step: int, batches: list[dict]) -> None:
        prune_step(model, cfg, self.target, step, batches, self.kept)

    @staticmethod
    def shape(model) -> dict:
        return shape_of(model).as_dict()

    def summary(self) -> dict:
        return self.kept.summary()

    def recovery_kd(self, cfg: PruneConfig) -> dict:
        """The recovery trainer's hidden-state terms: each kept layer learns from the parent layer it was."""
        return {"alpha_hidden": cfg.hidden_kd, "layer_map": list(self.kept.layers) if cfg.hidden_kd else None}

    def start_projection(self, projection: torch.nn.Linear) -> None:
        """Start the student -> parent hidden-state projection as the channel selection width pruning made:
        the kept channels then match from the first step and only the removed ones must be learned."""
        channels = self.kept.channels
        with torch.no_grad():
            projection.weight.zero_()
            projection.bias.zero_()
            projection.weight[channels, torch.arange(len(channels))] = 1.0
