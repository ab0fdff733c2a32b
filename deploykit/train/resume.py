"""Where a training stage starts: afresh, or from the checkpoints an interrupted run of it kept.

`deploykit finetune --resume` resumes from whatever `.finetune.work` holds (the user asked for it). `deploykit run`
resumes finetune and distill on its own when it is started again after a kill: the stage's work folder carries
the hash of the config and input that wrote it (`resume-key`), and only checkpoints of the same key are taken
(the Trainer restores weights, optimizer, schedule, data order and RNG, so the result equals an uninterrupted
run's); a changed recipe starts afresh and says so.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

from deploykit.artifact import KEPT_FOR_RESUME, work_dir
from deploykit.console import log
from deploykit.errors import DeploykitError, UserError

KEY_FILE = "resume-key"
# the settings a standalone command trained its checkpoints with: `--resume` under other ones is refused
SETTINGS_FILE = "resume-settings.json"
# what the Trainer writes into a checkpoint before trainer_state.json, which it writes last
RESUME_FILES = ("optimizer.pt", "scheduler.pt")
# how `deploykit run` resumes, for the line an interrupted run ends with
BY_RUN = "kept: the same `deploykit run` command resumes from them"
BY_INTERRUPTED = "kept by an interrupted run of the same config"  # why a stage goes on from a checkpoint it found


def complete(checkpoint: Path) -> bool:
    """A checkpoint the Trainer finished writing: a kill during the save leaves one without its state."""
    return damage(checkpoint) is None


def damage(checkpoint: Path) -> str | None:
    """What keeps `checkpoint` from being resumed from (None: nothing found): a file a kill during the save left
    missing, or one cut short or overwritten since (weights, optimizer, schedule, trainer state)."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "cut while being saved: no readable trainer_state.json"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json holds no training state"
    for name in RESUME_FILES:
        if not (checkpoint / name).is_file():
            return f"{name} is missing"
    # every file the Trainer reads back: torch.save writes zip archives (a cut one has no central directory),
    # the configs are JSON
    for path in sorted(checkpoint.iterdir()):
        if path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
            return f"{path.name} is cut short or not what torch.save writes"
        if path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return f"{path.name} is not readable JSON"
    from safetensors import safe_open

    weights = list(checkpoint.glob("*.safetensors"))
    if not weights and not (checkpoint / "pytorch_model.bin").is_file():
        return "no weights file"
    for path in weights:
        try:
            with safe_open(str(path), "pt") as f:  # reads the header, which must fit the file
                f.keys()
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            return f"{path.name} is unreadable ({str(err).splitlines()[0][:80]})"
    return None


def last_checkpoint(work: Path, stage: str = "finetune") -> str | None:
    """The newest resumable `checkpoint-N` folder in `work`; newer damaged ones are skipped with a log line."""
    ckpts = sorted((p for p in work.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and p.is_dir()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for ckpt in ckpts:
        why = damage(ckpt)
        if why is None:
            return str(ckpt)
        log(f"{stage}: {ckpt.name} cannot be resumed from ({why}); skipped")
    return None


def start_point(out_dir: Path, stage: str, *, resume: bool = False, key: str | None = None,
                resumed_by: str | None = None, settings: dict | None = None) -> tuple[Path, str | None]:
    """The stage's work folder (`.<out>.work`) and the checkpoint to resume from (None: start afresh).

    `resume`: the user's `--resume`, any complete checkpoint is taken. `key`: the hash of what `deploykit run`
    is about to train; checkpoints written under the same key are resumed from, others are removed. Neither:
    the folder is emptied. Where it can be resumed from (a key, or `resumed_by`: "kept for <how the stage's
    own command resumes>"), the folder is registered in `KEPT_FOR_RESUME` so that an interrupted command
    names it and how to resume (`forget` when the stage is done). `settings`: what this training is (its
    model, data and stage sections), written beside the checkpoints; `resume` under other settings is refused.

    Raises:
        UserError: `resume` where the checkpoints were written with other settings (each would go on under a
            recipe its first steps did not run with, or fail to load and lose the checkpoint).
    """
    work = work_dir(out_dir, fresh=False)
    checkpoint = None
    if resume:
        checkpoint = last_checkpoint(work, stage)
        if checkpoint is None:
            log(f"{stage}: no checkpoint in {work}; starting from scratch")
        elif settings is not None:
            refuse_other_settings(work, stage, settings)
        if resumed_by:
            KEPT_FOR_RESUME[work] = resumed_by
        return work, checkpoint
    if claim(work, stage, key):
        checkpoint = last_checkpoint(work, stage)
        if checkpoint is None:
            discard_checkpoints(work)
    if settings is not None and checkpoint is None:
        work.mkdir(parents=True, exist_ok=True)
        (work / SETTINGS_FILE).write_text(json.dumps(settings, sort_keys=True, default=str))
    if key is None and resumed_by:
        KEPT_FOR_RESUME[work] = resumed_by
    return work, checkpoint


def refuse_other_settings(work: Path, stage: str, settings: dict) -> None:
    """One line naming the settings that differ from those the checkpoints in `work` were written with (nothing
    where they match, or where no record exists: checkpoints of an earlier deploykit)."""
    try:
        written = json.loads((work / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if shown := settings_diff(written, json.loads(json.dumps(settings, sort_keys=True, default=str))):
        raise UserError(f"{stage} --resume: the checkpoints in {work} were trained with other settings: {shown}; "
                        "resume with the recipe and --set values that wrote them, or drop --resume to start afresh")


def settings_diff(then: dict, now: dict) -> str | None:
    """The leaves that differ between two nested settings trees, up to three, as "finetune.learning_rate (0.0001
    then, 0.001 now)" (and "and N more"); None where none differ."""
    then, now = _flat(then), _flat(now)
    changed = sorted(k for k in then.keys() | now.keys() if then.get(k) != now.get(k))
    if not changed:
        return None
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return ", ".join(f"{k} ({then.get(k)!r} then, {now.get(k)!r} now)" for k in changed[:3]) + more


def _flat(tree, prefix: str = "") -> dict:
    """{"finetune.learning_rate": 1e-4, ...}: the leaves of nested dicts under dotted keys."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def claim(work: Path, stage: str, key: str | None) -> bool:
    """Make `work` this training's: True when it holds checkpoints written under `key` (kept to go on from),
    else it is emptied. With a key, the key is written there and the folder registered in `KEPT_FOR_RESUME`."""
    kept = key is not None and work.is_dir() and written_for(work) == key
    if not kept:
        if key is not None and any(work.rglob("checkpoint-*")):
            log(f"{stage}: the checkpoints in {work} were written for another config or input; starting afresh")
        shutil.rmtree(work, ignore_errors=True)
    if key is not None:
        work.mkdir(parents=True, exist_ok=True)
        (work / KEY_FILE).write_text(key + "\n")
        KEPT_FOR_RESUME[work] = BY_RUN
    return kept


@contextlib.contextmanager
def going_on_from(trainer, checkpoint: str | None, stage: str, why: str = BY_INTERRUPTED) -> Iterator[str | None]:
    """Around `trainer.train(resume_from_checkpoint=...)`: yields the checkpoint to go on from, and says in one
    line that (and `why`) training goes on from it, only once it is sure to.

    None where the trainer holds a hidden-state projection (a student of another width, prune.hidden_kd): it is
    trainer state no checkpoint saves, so going on would start it again from random; the checkpoints are removed.
    A checkpoint whose files pass `damage` yet fail to load (a valid archive of other contents) is removed and
    set aside (`checkpoint-N.unusable`, which no start takes) and named in one line, so that the next start goes on
    from the one before instead of failing the same way, and nothing the user may still want is deleted."""
    if checkpoint is not None and getattr(trainer, "projection", None) is not None:
        log(f"{stage}: a hidden-state projection cannot be resumed; starting afresh")
        discard_checkpoints(Path(checkpoint).parent)
        checkpoint = None
    if checkpoint is not None:
        log(f"{stage}: resuming from {Path(checkpoint).name}, {why}")
    try:
        yield checkpoint
    except Exception as err:
        step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else -1
        if checkpoint is None or isinstance(err, DeploykitError) or trainer.state.global_step > step:
            raise
        aside = Path(checkpoint).with_name(Path(checkpoint).name + ".unusable")
        shutil.rmtree(aside, ignore_errors=True)
        Path(checkpoint).rename(aside)
        first = (str(err).strip().splitlines() or [""])[0][:120]
        raise UserError(f"{stage}: {Path(checkpoint).name} could not be resumed from ({type(err).__name__}: "
                        f"{first}); it was set aside as {aside}, the same command goes on from the checkpoint "
                        "before it") from err


def written_for(work: Path) -> str | None:
    """The key the checkpoints in `work` were written under (None: none readable)."""
    try:
        return (work / KEY_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):  # missing, a folder, unreadable or not text: another run's, not ours
        return None


def discard_checkpoints(work: Path) -> None:
    """Remove the checkpoints in `work` (a training that cannot go on from them starts afresh beside its key)."""
    for ckpt in work.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True) if ckpt.is_dir() else ckpt.unlink(missing_ok=True)


def forget(work: Path) -> None:
    """The stage finished: its checkpoints are gone and nothing is left to resume."""
    shutil.rmtree(work, ignore_errors=True)
    KEPT_FOR_RESUME.pop(work, None)
