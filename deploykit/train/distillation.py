"""Distillation pieces shared by the encoder and causal-LM `deploykit distill`: the teacher, the student, its folder.

    from deploykit.train.distillation import save_student, student_from_teacher, teacher_source
    teacher_src = teacher_source(recipe.distill, parent)          # distill.teacher, else the parent folder
    student, kept, layer_map = student_from_teacher(recipe.distill, teacher)   # None: distill.student is set

Each kind's `distill_job` (deploykit/kinds/classification.py, deploykit/ner/distill.py, deploykit/llm/distill.py)
loads and scores its models its own way; where the teacher comes from, how a student is cut from its layers or checked
against its tokenizer, the size warning and the saved folder with its manifest are the same, and live here.
"""

from __future__ import annotations

import copy
from pathlib import Path

from deploykit.artifact import Artifact, staging, write_manifest
from deploykit.config import DistillConfig, Recipe
from deploykit.console import warn
from deploykit.errors import UserError
from deploykit.train.trainer import num_layers


def teacher_source(cfg: DistillConfig, parent: Artifact | None) -> str:
    """The teacher's folder or hub id: `distill.teacher`, else the parent artifact (a PyTorch folder)."""
    if cfg.teacher is not None:
        return cfg.teacher
    if parent is None:
        raise UserError("distill needs a teacher: --from FOLDER (a fine-tuned model) or distill.teacher")
    if parent.format != "pytorch":
        raise UserError(f"{parent.path}: the teacher must be a PyTorch model folder, not {parent.format}; "
                        "distil before export/quantize")
    return str(parent.path)


def check_recovery_teacher(recipe: Recipe, stages: list[str]) -> None:
    """`deploykit run` and `validate`, before any training: recovery_teacher: teacher needs a distilled input.

    Where prune is the run's first stage its input is `model.source`, whose manifest must name the teacher it was
    distilled from, and a teacher given as a local path must still be there (its labels and vocabulary are checked
    when the stage loads it).

    Raises:
        UserError: the run fine-tunes and prunes without distilling in between; a prune-only run whose model.source
            was not distilled, or whose teacher folder is gone."""
    cfg = recipe.prune
    if cfg is None or cfg.recovery_teacher != "teacher" or "prune" not in stages:
        return
    fix = "set prune.recovery_teacher: parent"
    if "finetune" in stages and "distill" not in stages:
        raise UserError("prune.recovery_teacher: teacher: in this recipe prune's input is the fine-tuned model, which "
                        f"has no teacher; add a distill section or {fix}")
    if "finetune" in stages or "distill" in stages:
        return
    from deploykit.artifact import MANIFEST, load_artifact
    from deploykit.models import resolve_source

    source = resolve_source(recipe.model.source)
    from deploykit.lineage import recorded_folder, teacher_record

    record = teacher_record(load_artifact(source).manifest) if (Path(source) / MANIFEST).is_file() else None
    teacher = record.get("source") if isinstance(record, dict) else None
    if not isinstance(teacher, str):
        raise UserError(f"prune.recovery_teacher: teacher: model.source {recipe.model.source} names no teacher "
                        f"folder (a `deploykit distill` output does); {fix}")
    if Path(teacher).is_absolute() and recorded_folder(record, "source", Path(source)) is None:
        raise UserError(f"prune.recovery_teacher: teacher: model.source {recipe.model.source} was distilled from "
                        f"{teacher}, which is gone; {fix}")


def check_layer_choices(recipe: Recipe, config) -> None:
    """`distill.student_layers`, `distill.layer_map` and `prune.drop_layers` against the layer counts the run will
    meet (`config`: the model source's), before any training: `deploykit run` and `validate` call it, so that an
    index out of range fails in one line before the teacher's fine-tuning, not after it.

    Raises:
        UserError: an index outside the model's layers, a repeated one, a layer_map whose length is not the
            student's layer count, or prune.drop_layers that would remove every layer.
    """
    from deploykit.layers import check_dropped, check_indices, check_layer_map, every_other

    stages = recipe.stages()
    try:
        n_layers = num_layers(config)
    except ValueError:
        return  # a model type without a known layer count field: the stage itself reports it
    prune_input = n_layers
    distill = recipe.distill if "distill" in stages else None
    if distill is not None and distill.student is None:
        kept = check_indices(distill.student_layers if distill.student_layers is not None else every_other(n_layers),
                             n_layers, "distill.student_layers")
        if distill.layer_map is not None:
            check_layer_map(distill.layer_map, len(kept), n_layers, student=f"keeps {len(kept)} layers ({kept})")
        prune_input = len(kept)
    elif distill is not None:
        return  # a separate student (distill.student): its own layer count is checked when it loads
    prune = recipe.prune if "prune" in stages else None
    if prune is not None and prune.drop_layers:
        what = "prune.drop_layers" if distill is None else f"prune.drop_layers (its input: the {prune_input}-layer student)"
        check_dropped(list(prune.drop_layers), prune_input, what)


def check_tokenizer(student_src: str, teacher_tok, trust_remote_code: bool) -> None:
    """UserError in one line unless the separate student `student_src` has the teacher's vocabulary."""
    from deploykit.models import load_tokenizer

    try:
        student_tok = load_tokenizer(student_src, trust_remote_code)
    except UserError as err:
        raise UserError(f"distill.student {student_src!r}: no tokenizer could be loaded ({err}); the student folder "
                        "must hold the tokenizer it shares with the teacher") from None
    s_vocab, t_vocab = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s_vocab != t_vocab:
        example = next((t for t in t_vocab if s_vocab.get(t) != t_vocab[t]), None) or next(iter(s_vocab))
        raise UserError(f"distill.student {student_src!r}: its tokenizer differs from the teacher's "
                        f"({len(s_vocab)} vs {len(t_vocab)} tokens, first difference at {example!r}); "
                        "the student must use the teacher's vocabulary")


def student_from_teacher(cfg: DistillConfig, teacher):
    """(student, kept layers, layer map) built from the teacher's own layers, or None when `distill.student`
    names a separate model. Shared by the encoder and causal-LM distillation."""
    from deploykit.layers import check_indices, every_other, keep_layers

    n_teacher = num_layers(teacher.config)
    if cfg.student is None:
        keep = check_indices(cfg.student_layers if cfg.student_layers is not None else every_other(n_teacher),
                             n_teacher, "distill.student_layers")
        return keep_layers(copy.deepcopy(teacher), keep), keep, cfg.layer_map or keep
    if cfg.student_layers is not None:
        raise UserError("distill.student_layers picks teacher layers for a student built from the teacher; "
                        "with distill.student set, use distill.layer_map to pair layers")
    return None


def build_student(cfg: DistillConfig, teacher, tokenizer, load, trust_remote_code: bool = False):
    """(student, kept teacher layers or None, layer map or None for the uniform default): cut from the teacher's
    layers (`distill.student_layers`, default every other one), else `load(distill.student)`, a separate model that
    must share the teacher's vocabulary (UserError otherwise)."""
    built = student_from_teacher(cfg, teacher)
    if built is not None:
        return built
    check_tokenizer(cfg.student, tokenizer, trust_remote_code)
    return load(cfg.student), None, cfg.layer_map


def warn_if_larger(student, teacher) -> tuple[int, int]:
    """(student, teacher) parameter counts; a warning, even under --quiet, when the student is larger."""
    from deploykit.models import count_parameters

    n_s, n_t = count_parameters(student), count_parameters(teacher)
    if n_s > n_t:
        # printed even under --quiet: the run is allowed, but it is almost certainly not what was meant
        warn(f"warning: distill: the student ({n_s / 1e6:.2f}M parameters) is larger than the "
                      f"teacher ({n_t / 1e6:.2f}M); distillation is meant to shrink a model")
    return n_s, n_t


def describe(teacher, student, n_teacher: int, n_student: int, kept, cfg: DistillConfig, data: str) -> str:
    """The distill stage's opening line: both models' sizes and depths, how the student was made, the data."""
    return (f"distill: teacher {n_teacher / 1e6:.1f}M params / {num_layers(teacher.config)} layers -> student "
            f"{n_student / 1e6:.1f}M / {num_layers(student.config)} layers"
            + (f" (teacher layers {kept})" if kept else f" ({cfg.student})") + f", {data}")


def save_student(model, tokenizer, recipe: Recipe, parent: Artifact | None, out_dir: Path, metrics: dict,
                 labels: list[str] | None, *, teacher: dict, kept: list[int] | None, layer_map,
                 max_length: int | None = None, **record) -> dict:
    """Write the student folder (weights, tokenizer, manifest with its teacher and layers) atomically; `record`
    (the kind's extra manifest fields, e.g. the window stride) is kept for the stages and predictor that follow."""
    cfg = recipe.distill
    with staging(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        return write_manifest(
            tmp, stage="distill", format="pytorch", parent=parent,
            config=recipe.model_dump(include={"model", "data", "distill"}), metrics=metrics, labels=labels,
            teacher=teacher, student={"source": cfg.student or "teacher layers", "layers_kept": kept,
                                      "layer_map": layer_map, "layers": num_layers(model.config)},
            **({"max_length": max_length} if max_length else {}), **record)
