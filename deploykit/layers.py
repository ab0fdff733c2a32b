"""Pick and keep a subset of a transformer's layers: shared by distillation's student builder and
depth pruning, so both make the same kind of model.

    student = keep_layers(copy.deepcopy(teacher), [0, 2, 4])   # a 3-layer model of the teacher's own layers
    every_other(6)                                            # [1, 3, 5]
"""

from __future__ import annotations

import torch

from deploykit.architectures import layer_count_field, layer_paths, resolve, supporting
from deploykit.errors import UserError


def layer_list(model) -> torch.nn.ModuleList:
    """The ModuleList of transformer blocks, found under any task head at one of the architecture table's
    `layers` paths (BERT `encoder.layer`, DistilBERT `transformer.layer`, Llama-type `layers`): by structure,
    so a model type outside the table that keeps its layers the same way works too."""
    base = getattr(model, "base_model", model)
    # "model.layers": a causal LM whose base_model is the task model itself
    for path in (*layer_paths(), "model.layers"):
        node = resolve(base, path)
        if isinstance(node, torch.nn.ModuleList):
            return node
    raise UserError(f"{type(model).__name__}: cannot find its transformer layers "
                    f"(supported: {', '.join(supporting())})")


def every_other(n_layers: int) -> list[int]:
    """Default student: every other layer ending with the last (6 -> [1, 3, 5]); the top layer carries
    most task information, as in DistilBERT's initialisation."""
    return list(range(n_layers - 1, -1, -2))[::-1]


def check_indices(keep: list[int], n_layers: int, what: str) -> list[int]:
    if not keep:
        raise UserError(f"{what}: keep at least one layer")
    bad = [i for i in keep if not 0 <= i < n_layers]
    if bad:
        raise UserError(f"{what}: layer index {bad[0]} out of range (the model has layers 0..{n_layers - 1})")
    if len(set(keep)) != len(keep):
        raise UserError(f"{what}: layer indices repeat ({keep})")
    return sorted(keep)


def check_dropped(drop: list[int], n_layers: int, what: str = "prune.drop_layers") -> list[int]:
    """`prune.drop_layers` against its input's `n_layers` (`what` names it in index errors): the sorted indices.

    Raises:
        UserError: an index out of range or repeated, or every layer dropped.
    """
    dropped = check_indices(drop, n_layers, what)
    if len(dropped) >= n_layers:
        raise UserError(f"prune.drop_layers {dropped} removes every layer of its {n_layers}-layer input; "
                        "keep at least one")
    return dropped


def check_layer_map(layer_map: list[int], n_student: int, n_teacher: int, student: str | None = None) -> list[int]:
    """`distill.layer_map` (student layer i learns from teacher layer layer_map[i]) against both layer counts;
    `student` says what the student is in the message (default: "has N layers").

    Raises:
        UserError: not one entry per student layer, or a teacher layer out of range.
    """
    if len(layer_map) != n_student:
        raise UserError(f"distill.layer_map has {len(layer_map)} entries but the student "
                        f"{student or f'has {n_student} layers'}; give one teacher layer per student layer")
    bad = [j for j in layer_map if not 0 <= j < n_teacher]
    if bad:
        raise UserError(f"distill.layer_map: teacher layer {bad[0]} out of range (the teacher has layers "
                        f"0..{n_teacher - 1})")
    return list(layer_map)


def keep_layers(model, keep: list[int]):
    """Keep only the layers in `keep` (in model order), in place; config's layer count follows."""
    layers = layer_list(model)
    keep = check_indices(list(keep), len(layers), "layers")
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(kept):
        # Llama-type attention indexes the KV cache by its own layer_idx
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx
    parent = model.get_submodule(_parent_path(model, layers))
    for name, child in parent.named_children():
        if child is layers:
            setattr(parent, name, kept)
    setattr(model.config, layer_count_field(model.config), len(keep))
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    return model


def _parent_path(model, target) -> str:
    for name, module in model.named_modules():
        if any(child is target for child in module.children()):
            return name
    raise RuntimeError("layer list has no parent module")
