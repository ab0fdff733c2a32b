"""Importance of prunable units: magnitude (L2) or first-order Taylor |w * dL/dw| on task batches.

    accumulate_gradients(model, batches)          # Taylor needs .grad on every weight
    group_importance("taylor")                    # a Torch-Pruning importance for DepGraph groups
    layer_scores(model, "l2")                     # one score per transformer layer (depth pruning)

Per-channel and per-head scores come from Torch-Pruning's group importances, which sum a
channel's score over every weight the channel touches (e.g. Q, K, V rows and O columns of a head).
"""

from __future__ import annotations

from typing import Iterable

import torch

from deploykit.layers import layer_list


def accumulate_gradients(model, batches: Iterable[dict[str, torch.Tensor]]) -> float:
    """Sum the task loss gradients of `batches` into `.grad`; returns the mean loss.

    Dropout stays off (eval mode) so the scores do not depend on a random mask.
    """
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    losses = []
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        losses.append(float(loss.detach()))
    model.train(was_training)
    return sum(losses) / max(len(losses), 1)


def group_importance(kind: str):
    """Torch-Pruning importance for a dependency group: L2 magnitude or first-order Taylor."""
    import torch_pruning as tp

    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)


def element_scores(param: torch.nn.Parameter, kind: str) -> torch.Tensor:
    """Per-weight score: |w * g| (Taylor estimate of the loss change when w is zeroed) or w^2."""
    if kind == "taylor":
        if param.grad is None:
            raise RuntimeError("Taylor importance needs gradients; call accumulate_gradients first")
        return (param.detach() * param.grad).abs()
    return param.detach() ** 2


def layer_scores(model, kind: str) -> list[float]:
    """One score per layer: the summed element scores of its weights, divided by their count so a
    layer's score does not grow with its size (layers of one model have equal sizes anyway)."""
    scores = []
    for layer in layer_list(model):
        total, count = 0.0, 0
        for p in layer.parameters():
            total += float(element_scores(p, kind).sum())
            count += p.numel()
        scores.append(total / max(count, 1))
    return scores
