"""The one stage table, and the runner behind `deploykit run recipe.yaml`.

    deploykit run recipes/sst2-minilm.yaml --out runs/sst2

Stages run in the fixed order of `STAGES`, each reading the previous stage's artifact and writing
`<out>/<stage>/`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from deploykit.artifact import (RUN_STATE, Artifact, changed_files, check_out_dir, clear_stale, config_hash,
                                load_artifact)
from deploykit.config import Recipe
from deploykit.console import log, warn
from deploykit.errors import UserError
from deploykit.evaluate import check_gate
from deploykit.fingerprint import stage_inputs
from deploykit.kinds import kind_of
from deploykit.lineage import check_task, fit_columns, warn_if_left_over
from deploykit.models import is_gguf, load_config, resolve_source
from deploykit.transfer import check_unlabeled

# stage name -> module holding its `run(recipe, parent, out_dir) -> Artifact`; imported lazily
# because torch / onnxruntime imports cost seconds that `deploykit validate` should not pay
STAGE_MODULES = {
    "finetune": "deploykit.stages.finetune",
    "distill": "deploykit.stages.distill",
    "prune": "deploykit.stages.prune",
    "quantize": "deploykit.stages.quantize",
    "export": "deploykit.stages.export",
    "bench": "deploykit.stages.bench",
}
NEEDS_INPUT = {"distill", "prune", "quantize", "export", "bench"}
# training stages that resume from the checkpoints of an interrupted `deploykit run` (deploykit/train/resume.py;
# prune: its recovery)
RESUMABLE = {"finetune", "distill", "prune"}

NO_STAGES = "recipe has no stages (add finetune, distill, prune, quantize, export or bench)"


def stage_function(stage: str):
    if stage not in STAGE_MODULES:
        raise UserError(f"unknown stage {stage!r} (stages: {', '.join(STAGE_MODULES)})")
    return importlib.import_module(STAGE_MODULES[stage]).run


def run_stage(stage: str, recipe: Recipe, source: str | Path | None, out_dir: Path, force: bool = False,
              **options) -> Artifact:
    """Run one stage on the artifact at `source` (None: the recipe's model) into `out_dir`.

    `out_dir` is checked before anything runs (`artifact.check_out_dir`): a new or empty folder, or an
    earlier output of this stage; `force` also replaces another stage's output.
    """
    fn = stage_function(stage)
    parent = load_artifact(source) if source is not None else None
    if parent is not None:
        warn_if_left_over(parent)  # `--from run/prune` after a later run of another recipe replaced its input
    if stage != "finetune":  # fine-tuning may give a model another head; every later stage reads it as it is
        check_task(recipe, parent)
    recipe = fit_columns(recipe, parent)  # a pair model's data read as pairs where the recipe does not say
    if parent is None and stage in NEEDS_INPUT and not (stage == "distill" and recipe.distill.teacher):
        raise UserError(f"{stage} needs an input artifact: --from FOLDER (a previous stage's output)")
    out = check_out_dir(out_dir, stage, force)
    if parent is not None and (out == parent.path.resolve() or out in parent.path.resolve().parents):
        raise UserError(f"--out {out_dir}: would replace the input artifact {parent.path}; give another folder")
    # an output inside the input folder would change the input (and be copied into the next stage's output);
    # a bare .onnx file's artifact is just the folder it lies in, which may hold anything
    if parent is not None and Path(source).expanduser().is_dir() and parent.path.resolve() in out.parents:
        raise UserError(f"--out {out_dir}: is inside the input artifact {parent.path}; give a folder outside it")
    artifact = fn(recipe, parent, Path(out_dir), **options)
    _close_distributed()
    return artifact


def _close_distributed() -> None:
    """Under torchrun, wait for rank 0 to finish writing, then tear the process group down: a rank that
    exits with gloo still up aborts ("terminate called without an active exception")."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# what to turn when a stage fails the accuracy gate, named in the error
GATE_KNOBS = {
    "distill": "keep more layers (distill.student_layers), train longer (distill.epochs) or raise gate.max_drop",
    "prune": "lower the prune ratios, add prune.recovery or more prune.steps, or raise gate.max_drop",
    "quantize": "use quantize.mode: dynamic, lower quantize.max_drop to keep more nodes in float, or raise gate.max_drop",
    "export": "the export drifted: check export.atol and the parity report in its manifest",
}
STATE_FILE = RUN_STATE


# a student this many points above its teacher means the teacher stopped training too early; on few
# evaluation rows the margin is two standard errors of the teacher's score instead
UNDER_TRAINED_MARGIN = 0.5


def under_trained_margin(score: float, n: int | None) -> float:
    """Points a stage must score above the teacher before the teacher counts as under-trained: 0.5, or two
    binomial standard errors of a score in percent on `n` rows when that is larger (200 rows: ~7 pt)."""
    if not n:
        return UNDER_TRAINED_MARGIN
    p = min(max(score / 100, 0.0), 1.0)
    return max(UNDER_TRAINED_MARGIN, 200 * (p * (1 - p) / n) ** 0.5)


def _check_step(recipe: Recipe, stage: str, gate: dict, parent_stage: str, state: dict) -> None:
    """The accuracy gate after `stage`: within gate.max_drop of the teacher and within gate.max_step_drop
    of its own input; a stage scoring clearly above the teacher marks the teacher as under-trained."""
    metric, value, teacher, before = gate["metric"], gate["value"], gate["reference"], gate.get("input")
    shown = f" (teacher {teacher:.2f}" + (f", input {before:.2f})" if before is not None else ")")
    log(f"{stage}: {metric} {value:.2f}{shown}")
    if value > teacher + under_trained_margin(teacher, gate.get("n")) and not state.get("warnings"):
        note = (f"the fine-tuned teacher is under-trained: it scores {metric} {teacher:.2f} on {gate['split']}, "
                f"{stage} {value:.2f}; drops are measured from a weak reference (train the teacher longer or "
                "better: finetune.max_epochs, finetune.max_minutes, finetune.learning_rate)")
        state["warnings"] = [note]
        warn(f"warning: {note}")
    knob = GATE_KNOBS.get(stage, "")
    check_gate(stage, teacher, value, recipe.gate.max_drop, knob, metric)
    if before is not None:
        step = recipe.gate.max_step_drop if recipe.gate.max_step_drop is not None else recipe.gate.max_drop
        check_gate(stage, before, value, step, knob.replace("gate.max_drop", "gate.max_step_drop"), metric,
                   versus=f"its input ({parent_stage})",
                   budget="max_step_drop" if recipe.gate.max_step_drop is not None else "max_drop")


def _state(out_dir: Path) -> dict:
    f = out_dir / STATE_FILE
    return json.loads(f.read_text()) if f.is_file() else {"stages": {}}


def _save_state(out_dir: Path, state: dict) -> None:
    tmp = out_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(out_dir / STATE_FILE)


# sections a stage reads besides its own: quantize exports a PyTorch parent with the export settings
ALSO_READS = {"quantize": ("export",)}


def _stage_hash(recipe: Recipe, stage: str, parent_hash: str | None) -> str:
    """Hash of what a stage's output depends on: its section (and those it also reads), model and data,
    and its input's hash."""
    section = getattr(recipe, stage).model_dump(mode="json")
    for other in ALSO_READS.get(stage, ()):
        if getattr(recipe, other) is not None:
            section = {stage: section, other: getattr(recipe, other).model_dump(mode="json")}
    shared = recipe.model_dump(mode="json", include={"model", "data"})
    return config_hash(stage, section, shared, parent_hash)


def _why_again(recipe: Recipe, stage: str, folder: Path) -> str | None:
    """The recipe settings that differ from those the stage in `folder` was built with, up to three; None where
    none do (its input changed) or the folder has no manifest."""
    from deploykit.train.resume import settings_diff

    try:
        written = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(written, dict):
        return None
    # the sections the manifest holds (a quantize folder records data and quantize, not model)
    now = recipe.model_dump(mode="json", include={"model", "data", stage} & written.keys())
    return settings_diff({k: written[k] for k in now}, now)


def _gate_value(recipe: Recipe, artifact: Artifact, task) -> float:
    return kind_of(recipe.data.task).gate_value(recipe, artifact, task)


def load_any_task(cfg):
    """The task data a recipe's stages read (labelled texts, prompt/response pairs...), as its kind reads it."""
    return kind_of(cfg.task).load_task(cfg)


def check_run_folders(out_dir: Path, stages: list[str]) -> Path:
    """Every folder a run writes, checked before the first stage trains for half an hour: `out_dir` is new,
    empty or a run folder, and each `<out_dir>/<stage>` new, empty or that stage's output. Returns
    `out_dir` resolved; UserError otherwise."""
    out_dir = check_out_dir(out_dir, "run")
    for stage in stages:
        check_out_dir(out_dir / stage, stage)
    return out_dir


def run_recipe(recipe: Recipe, out_dir: Path) -> dict:
    """Run the recipe's stages in order into `out_dir/<stage>/`; returns the pipeline state.

    A stage whose config and input are unchanged since the last run is skipped; after each stage the
    accuracy gate compares it with the fine-tuned teacher and stops the run when it fails. One run at a time
    writes to `out_dir` (deploykit/run_lock.py); a second is a UserError.
    """
    from deploykit.run_lock import run_lock

    with run_lock(out_dir, scratch=(STATE_FILE,)):
        return _run_recipe(recipe, out_dir)


def _run_recipe(recipe: Recipe, out_dir: Path) -> dict:
    stages = recipe.stages()
    if not stages:
        raise UserError(NO_STAGES)
    if recipe.data is None:
        raise UserError("recipe has no data section; every stage needs the task data")
    kind_of(recipe.data.task).check_run(recipe, stages)
    if "finetune" not in stages and not is_gguf(recipe.model.source):  # the chain starts from a trained model
        start = load_artifact(resolve_source(recipe.model.source))
        check_task(recipe, start)
        recipe = fit_columns(recipe, start)
    out_dir = check_run_folders(out_dir, stages)
    for stage in stages:  # what a SIGKILLed run left beside a stage this run may skip as unchanged
        clear_stale(out_dir / stage)
    task = load_any_task(recipe.data)
    check_unlabeled(recipe)
    from deploykit.train.distillation import check_layer_choices, check_recovery_teacher

    check_recovery_teacher(recipe, stages)
    source = resolve_source(recipe.model.source)  # a wrong model path fails before the run folder is made
    if ("distill" in stages or "prune" in stages) and not is_gguf(recipe.model.source):
        m = recipe.model
        check_layer_choices(recipe, load_config(m.source, trust_remote_code=m.trust_remote_code, revision=m.revision))
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _state(out_dir)
    if not (out_dir / STATE_FILE).is_file():
        _save_state(out_dir, state)  # marks the folder as a run folder from the start
    parent: Artifact | None = None if "finetune" in stages else load_artifact(source)
    parent_hash = None if parent is None else config_hash("source", recipe.model.source)
    teacher = parent
    reference = state.get("reference") if parent is not None else None
    artifacts: list[Artifact] = [] if parent is None else [parent]
    measured_as = [recipe.gate.metric, recipe.gate.split]  # what the stored gate scores must be to reuse them
    previous = reference  # the gate score of the stage's input (the teacher's for the first one)
    parent_stage = "teacher"
    state.pop("warnings", None)
    changed = False
    for stage in stages:
        if stage == "bench":
            continue
        h = _stage_hash(recipe, stage, parent_hash)
        folder = out_dir / stage
        prev = state["stages"].get(stage, {})
        damaged = changed_files(folder) if prev.get("hash") == h else []
        if damaged:
            log(f"{stage}: {', '.join(damaged)} changed since this run wrote it; running the stage again")
        inputs = stage_inputs(recipe, stage)
        before = prev.get("inputs", inputs)  # a folder written before inputs were recorded: taken as read from these
        edited = sorted(k for k in before.keys() | inputs.keys() if before.get(k) != inputs.get(k))
        if edited and prev.get("hash") == h:
            log(f"{stage}: {', '.join(edited)} changed since this run read it; running the stage again")
        unchanged = not (changed or damaged or edited) and prev.get("hash") == h
        if unchanged and (folder / "manifest.json").is_file():
            art = load_artifact(folder)
            log(f"{stage}: unchanged, skipped ({folder})", style="dim")
            if "inputs" not in prev or prev.get("path") != str(folder):  # a run folder copied or moved: its paths
                prev["inputs"], prev["path"] = inputs, str(folder)
                _save_state(out_dir, state)
        else:
            if not changed and prev.get("hash") not in (None, h) and (why := _why_again(recipe, stage, folder)):
                log(f"{stage}: the recipe changed since this run built it: {why}; running the stage again")
            changed = True  # every later stage re-runs: its input is new
            log(f"{stage} -> {folder}", head="bold")
            # checkpoints of an interrupted run are resumed from only with the same config, input and files
            resume = {"resume_key": config_hash(h, inputs)} if stage in RESUMABLE else {}
            art = run_stage(stage, recipe, parent.path if parent else None, folder, **resume)
            state["stages"][stage] = {"hash": h, "path": str(folder), "gate": None, "inputs": inputs}
            if stage == "finetune":
                reference = state["reference"] = None  # a new teacher: measure it again
            _save_state(out_dir, state)
        if stage == "finetune":
            teacher = art
        if teacher is not None and (reference is None or state.get("reference_for") != measured_as):
            reference = state["reference"] = _gate_value(recipe, teacher, task)
            state["reference_for"] = measured_as
            _save_state(out_dir, state)
        if stage == "finetune" or previous is None:
            previous = reference
        gate = state["stages"][stage].get("gate")
        if gate is not None and [gate.get("metric"), gate.get("split")] != measured_as:
            gate = None  # gate.metric or gate.split changed since it was measured: measure again
        if stage != "finetune" and gate is None:
            value = _gate_value(recipe, art, task)
            gate = state["stages"][stage]["gate"] = {"metric": recipe.gate.metric, "split": recipe.gate.split,
                                                    "value": value, "reference": reference, "input": previous,
                                                    "n": len(task.split(recipe.gate.split))}
            _save_state(out_dir, state)
        if gate is not None:
            _check_step(recipe, stage, gate, parent_stage, state)
            _save_state(out_dir, state)
            previous = gate["value"]
        artifacts.append(art)
        parent, parent_hash, parent_stage = art, h, stage
    stale = [s for s in state["stages"] if s not in stages] if changed else []
    if stale:
        # stages of an earlier recipe built on what this run replaced: not this run's, and no longer its chain
        for s in stale:
            state["stages"].pop(s)
        warn(f"warning: {out_dir}: {', '.join(stale)} {'is' if len(stale) == 1 else 'are'} left from an earlier recipe and built "
            f"on what this run replaced ({', '.join(str(out_dir / s) for s in stale)}): not part of this run; remove "
            "them, or add those stages to the recipe to rebuild them")
        _save_state(out_dir, state)
    if changed or "bench" in stages:
        # an earlier report describes the artifacts this run replaced: never print it as this run's
        state.pop("report", None), state.pop("headline", None)
        _save_state(out_dir, state)
    if "bench" in stages:
        from deploykit.stages.bench import run_many

        baseline = teacher.path if teacher is not None and recipe.bench.baseline else None
        report = run_many(recipe, [a.path for a in artifacts], out_dir / "bench", baseline_source=baseline)
        state["report"] = str(report)
        if teacher is not None and len(artifacts) > 1:
            from deploykit.measure.headline import write

            state["headline"] = write(out_dir / "bench" / "report.json", str(teacher.path), str(artifacts[-1].path),
                                      state.get("warnings"), recipe.bench.headline.model_dump())
        _save_state(out_dir, state)
    return state
