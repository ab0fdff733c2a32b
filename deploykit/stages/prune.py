"""`deploykit prune`: structured pruning into a smaller model that plain transformers reloads.

    deploykit prune --from runs/sst2/finetune --data sst2 --data-dir ../shared/data \
        --set prune.ffn=0.5 --set prune.width=0.3333 --set prune.vocab=true \
        --set prune.recovery.epochs=1 --out runs/sst2/prune

Units: `ffn` (FFN neurons, same count per layer), `width` (residual channels with whole heads,
hidden = heads x head size), `depth` / `drop_layers` (whole layers), `heads` (configs with an
explicit head_dim only), `vocab` (tokens the training texts use; the tokenizer is rewritten).
The schedule prunes in `steps` steps, each optionally followed by a short recovery fine-tune that
distils from the unpruned model or from the model that one was distilled from (`recovery_teacher`; auto: the
latter where validation is unseen text, `recovery_teacher` below).
The output is reloaded with plain `from_pretrained` and must give the in-memory model's logits, else the
stage fails and writes nothing.

What is loaded, cut, ranked, scored and recovered on comes from the task's kind (`Kind.prune_job`): text
classifiers (deploykit/pruning/text_job.py) and token classifiers (deploykit/ner/prune.py) cut encoder units
(deploykit/pruning/units.py EncoderCut), causal LMs FFN neurons, KV groups and layers (deploykit/llm/prune_job.py).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from deploykit.artifact import Artifact, scratch, staging, write_manifest
from deploykit.config import DistillConfig, Recipe
from deploykit.console import log, warn
from deploykit.errors import UserError
from deploykit.jobs import PruneJob
from deploykit.lineage import recorded_folder, teacher_record
from deploykit.train.resume import claim, forget, going_on_from, last_checkpoint
from deploykit.kinds import kind_of


def _recover(model, teacher, recipe: Recipe, job: PruneJob, datasets: tuple, work: Path, resumable: bool):
    """Short fine-tune of the pruned model; distils from `teacher` (`recovery_teacher`) when one is given.
    `resumable`: `work` holds this step's checkpoints of an interrupted `deploykit run` of the same config, to go
    on from."""
    from deploykit.train.trainer import build_trainer

    cfg = recipe.prune
    kd = {}
    if teacher is not None:
        # the distillation section's loss weights when the recipe has one, else the kind's defaults
        d = recipe.distill or DistillConfig(**job.distill_defaults)
        kd = dict(trainer_cls=job.trainer_cls, teacher=teacher, temperature=d.temperature, alpha_kd=d.alpha_kd,
                  alpha_ce=d.alpha_ce, **job.cut.recovery_kd(cfg), **job.kd_args(d))
    trainer = build_trainer(model, cfg.recovery, work, job.tokenizer, datasets[0], datasets[1], stage="prune",
                            **job.trainer_args, **kd)
    if job.compute_metrics is not None:  # the kind's score picks the recovery checkpoint kept
        trainer.compute_metrics = job.compute_metrics
    if getattr(trainer, "projection", None) is not None:
        job.cut.start_projection(trainer.projection)
    # the pruning before recovery is deterministic, so the checkpoint's weights fit the model cut again
    checkpoint = last_checkpoint(work, "prune") if resumable else None
    if checkpoint is None:
        shutil.rmtree(work, ignore_errors=True)
    with going_on_from(trainer, checkpoint, "prune recovery") as checkpoint:
        trainer.train(resume_from_checkpoint=checkpoint)
    shutil.rmtree(work, ignore_errors=True)
    return trainer.model


# recovery_teacher auto: above this share of validation rows seen in training, recovery distils from the parent. The
# teacher was trained on those rows and reproduces their labels; the pruned student cannot, so its validation loss
# against the teacher rises while it may still improve on unseen text, and patience keeps an early checkpoint
# (SST-2, 89% of the validation inside a training row: -0.46 pt on test from the teacher). Where validation is unseen
# text the teacher gave AG News +1.0 pt (INT8 final, test) and dolly +2.6 pt (bench/README.md runs 54 and 55).
# Half, as data.validation_overlap: auto calls a split that shares its text with training.
SEEN_MAX = 0.5


def _auto_choice(cfg, job: PruneJob, source: str | None) -> tuple[str, str]:
    """recovery_teacher auto: ("parent" or "teacher", why), the validation overlap read once."""
    if cfg.hidden_kd:
        return "parent", "hidden_kd maps each kept layer to the unpruned model's"
    if source is None:
        return "parent", "the input's manifest names no teacher folder (it was not distilled)"
    if job.load_teacher is None:
        return "parent", "this task kind loads no second model for recovery"
    if job.validation_seen is None:
        return "parent", "this task kind does not say whether validation is unseen text"
    seen = job.validation_seen()
    if seen > SEEN_MAX:
        return "parent", (f"{seen:.1%} of the validation rows occur inside training texts, more than half, and the "
                          "teacher has fitted them (a file of unseen validation rows lets it distil from the teacher)")
    return "teacher", (f"the input was distilled from it, and {seen:.1%} of the validation rows occur inside training "
                       "texts, at most half")


def recovery_teacher(cfg, job: PruneJob, parent: Artifact | None, model) -> tuple[object | None, dict]:
    """(the model recovery distils from, None for none; the manifest's record of whom and why): a copy of the
    unpruned `model` (recovery_teacher: parent), or the teacher `parent`'s manifest names (teacher), loaded as the
    kind loads its models; auto picks as `_auto_choice` says, and falls back
    to the parent, in a warning line, where that teacher cannot be read.

    Raises:
        UserError: teacher, where the parent was not distilled, the kind cannot load one, the recorded teacher is
            gone, its labels are not the data's in the data's order, or its vocabulary differs from the model's
            (recovery feeds both the same word pieces).
    """
    if not (cfg.recovery and cfg.distill_from_parent):
        return None, {"from": None}
    where = parent.path if parent is not None else "the model source"
    record = teacher_record(parent.manifest if parent is not None else {})
    source = record.get("source") if isinstance(record, dict) else None
    if parent is not None and (found := recorded_folder(record, "source", parent.path)) is not None:
        source = str(found)  # the recorded folder, or its copy beside the parent in a run folder copied whole
    who, why = _auto_choice(cfg, job, source) if cfg.recovery_teacher == "auto" else \
        (cfg.recovery_teacher, f"recovery_teacher: {cfg.recovery_teacher}")
    if who == "parent":
        if cfg.recovery_teacher == "auto":
            log(f"prune: recovery distils from the unpruned model (recovery_teacher auto: {why})")
        return copy.deepcopy(model).eval(), {"from": "parent", "why": why}
    try:
        teacher = _load_teacher(job, source, where, model)
    except UserError as err:
        if cfg.recovery_teacher == "teacher":
            raise UserError(f"prune.recovery_teacher: teacher: {err}; set prune.recovery_teacher: parent") from None
        warn(f"prune: warning: recovery distils from the unpruned model (recovery_teacher auto): {err}")
        return copy.deepcopy(model).eval(), {"from": "parent", "why": str(err)}
    why = why if cfg.recovery_teacher == "teacher" else f"recovery_teacher auto: {why}"
    log(f"prune: recovery distils from the teacher {source} ({why})")
    return teacher, {"from": "teacher", "source": source, "why": why}


def _load_teacher(job: PruneJob, source: str | None, where, model):
    """The teacher `source` as the kind loads it (its labels checked there), or UserError saying why it cannot be
    recovery's (without the setting's name: the caller says whether that is an error or a fallback)."""
    if source is None:
        raise UserError(f"{where} names no teacher folder (a `deploykit distill` output does)")
    if job.load_teacher is None:
        raise UserError("recovery from the teacher is not supported for this task kind yet")
    try:
        teacher = job.load_teacher(source).eval()
    except UserError as err:  # a moved or deleted folder, other labels: say why it was read
        raise UserError(f"{where}'s teacher: {err}") from None
    if teacher.config.vocab_size != model.config.vocab_size:
        raise UserError(f"{source} has {teacher.config.vocab_size} word pieces, {where} {model.config.vocab_size}")
    return teacher


@contextlib.contextmanager
def _work(work: Path, key: str | None) -> Iterator[bool]:
    """The stage's scratch folder: removed however the stage ends, unless `deploykit run` gave a key (then kept
    when interrupted, for its next start); yields whether it holds checkpoints written under that key."""
    if key is None:
        with scratch(work):
            yield False
        return
    kept = claim(work, "prune", key)
    yield kept
    forget(work)


def run(recipe: Recipe, parent: Artifact | None, out_dir: Path, resume_key: str | None = None) -> Artifact:
    """Prune `parent` (or `recipe.model.source`) as `recipe.prune` says; write a plain HF folder to `out_dir`.

    `resume_key`: `deploykit run`'s hash of this config and input; the recovery checkpoints of an interrupted
    run of the same key are kept and gone on from (deploykit/train/resume.py). Without it they are scratch.

    Raises:
        UserError: no data section, a kind or unit this model cannot take, a plan that removes too much.
        CheckError / ReloadError: vocabulary pruning or the saved folder changed the model's logits.
    """
    from transformers import set_seed

    from deploykit.pruning.arch import measure
    from deploykit.pruning.reload import check_reload

    cfg = recipe.prune
    if recipe.data is None:
        raise UserError("prune needs a data section (or --data NAME_OR_PATH) for importance and evaluation")
    kind = kind_of(recipe.data.task)
    if kind.prune_job is None:
        raise UserError(f"prune: data.task {kind.name} cannot be pruned yet")
    if parent is not None and parent.format != "pytorch":
        raise UserError(f"{parent.path}: prune takes a PyTorch model folder, not {parent.format}; prune before "
                        "export/quantize (--from the finetune or distill folder)")
    source = str(parent.path) if parent is not None else recipe.model.source
    set_seed(recipe.data.seed)
    job = kind.prune_job(recipe, source, parent)
    model, tokenizer, cut = job.model, job.tokenizer, job.cut
    cut.check(model, cfg)  # every bad request fails here, before any work
    teacher, recovered_from = recovery_teacher(cfg, job, parent, model)

    start = time.time()
    before = {**measure(model, cfg.macs_seq_len), "shape": cut.shape(model),
              "validation": job.evaluate(model, tokenizer, "validation")}
    datasets = job.recovery_data() if cfg.recovery else None
    out_dir = Path(out_dir).resolve()
    work = out_dir.with_name(f".{out_dir.name}.work")
    pruned = None
    with _work(work, resume_key) as resumable:
        for step in range(1, cfg.steps + 1):
            cut.step(model, cfg, step, job.importance)
            log(f"prune: step {step}/{cfg.steps}: {cut.shape(model)}")
            if cfg.recovery:
                if step == cfg.steps:  # what recovery is worth: the model as the last cut left it
                    pruned = {"validation": job.evaluate(model.eval(), tokenizer, "validation")}
                model = _recover(model, teacher, recipe, job, datasets, work / f"step{step}", resumable)
        kept_tokens, vocab_diff, before_vocab = None, None, None
        if cfg.vocab:
            # its check proves the training texts' logits unchanged; a word no training text holds may split into
            # other pieces, so validation is scored on both sides of the cut (bench/README.md run 55)
            pieces = model.config.vocab_size
            before_vocab = {"validation": job.evaluate(model.eval(), tokenizer, "validation")}
            tokenizer, kept_tokens, vocab_diff = job.prune_vocab(model, tokenizer, work / "tokenizer", job.max_length)
        model.eval()
        after = {**measure(model, cfg.macs_seq_len), "shape": cut.shape(model),
                 "validation": job.evaluate(model, tokenizer, "validation")}
        # a causal LM without exact answers scores perplexity only
        key = kind.metric if kind.metric in after["validation"] else next(iter(after["validation"]))
        if before_vocab is not None:
            log(f"prune: vocabulary {pieces:,} -> {len(kept_tokens):,} word pieces, validation {key} "
                f"{before_vocab['validation'][key]} -> {after['validation'][key]} (words no training text holds "
                "split into other pieces)")
        metrics = {"before": before, "after": after, "before_recovery": pruned, "before_vocab": before_vocab,
                   "test": job.evaluate(model, tokenizer, "test"),
                   "parameters_ratio": round(after["parameters"] / before["parameters"], 4),
                   "macs_ratio": round(after["macs"] / before["macs"], 4),
                   "vocab_max_logit_diff": vocab_diff, "seconds": round(time.time() - start, 1)}
        check = job.check_batches(model, tokenizer)
        with staging(out_dir) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            metrics["reload_max_logit_diff"] = check_reload(model, tmp, check)
            manifest = write_manifest(tmp, stage="prune", format="pytorch", parent=parent,
                                      config=recipe.model_dump(include={"model", "data", "prune"}), metrics=metrics,
                                      source=source, labels=job.labels, max_length=job.max_length, **job.record,
                                      kept={**cut.summary(), "tokens": kept_tokens}, recovery_teacher=recovered_from)
    val = after["validation"]
    log(f"prune: parameters {before['parameters'] / 1e6:.2f}M -> {after['parameters'] / 1e6:.2f}M, "
        f"MACs x{metrics['macs_ratio']:.2f}, validation {key} {before['validation'][key]} -> {val[key]}")
    return Artifact(out_dir, manifest)
