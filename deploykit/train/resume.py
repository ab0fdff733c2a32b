"""Where a training stage starts: afresh, or from the checkpoints an interrupted run of it kept.

`deploykit finetune --resume` resumes from whatever `.finetune.work` holds (the user asked for it). `deploykit run`
resumes finetune and distill on its own when it is started again after a kill: the stage's work folder carries
the hash of the config and input that wrote it (`resume-key`), and only checkpoints of the same key are taken
(the Trainer restores weights, optimizer, schedule, data order and RNG, so the result equals an uninterrupted
run's); a changed recipe starts afresh and says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deploykit.artifact import KEPT_FOR_RESUME, work_dir
from deploykit.console import log

KEY_FILE = "resume-key"
# what the Trainer writes into a checkpoint before trainer_state.json, which it writes last
RESUME_FILES = ("optimizer.pt", "scheduler.pt")
# how `deploykit run` resumes, for the line an interrupted run ends with
BY_RUN = "kept: the same `deploykit run` command resumes from them"


def complete(checkpoint: Path) -> bool:
    """A checkpoint the Trainer finished writing: a kill during the save leaves one without its state."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return all((checkpoint / name).is_file() for name in RESUME_FILES)


def last_checkpoint(work: Path, stage: str = "finetune") -> str | None:
    """The newest complete `checkpoint-N` in `work`; newer incomplete ones are skipped with a log line."""
    ckpts = sorted((p for p in work.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for ckpt in ckpts:
        if complete(ckpt):
            return str(ckpt)
        log(f"{stage}: {ckpt.name} is incomplete (cut while being saved: no trainer state); skipped")
    return None


def start_point(out_dir: Path, stage: str, *, resume: bool = False, key: str | None = None,
                resumed_by: str | None = None) -> tuple[Path, str | None]:
    """The stage's work folder (`.<out>.work`) and the checkpoint to resume from (None: start afresh).

    `resume`: the user's `--resume`, any complete checkpoint is taken. `key`: the hash of what `deploykit run`
    is about to train; checkpoints written under the same key are resumed from, others are removed. Neither:
    the folder is emptied. Where it can be resumed from (a key, or `resumed_by`: "kept for <how the stage's own
    command resumes>"), the folder is registered in `KEPT_FOR_RESUME` so that an interrupted command names it and how to
    resume (`forget` when the stage is done).
    """
    work = work_dir(out_dir, fresh=False)
    checkpoint = None
    if resume:
        checkpoint = last_checkpoint(work, stage)
        if checkpoint is None:
            log(f"{stage}: no checkpoint in {work}; starting from scratch")
    elif key is not None and work.is_dir():
        written_for = (work / KEY_FILE).read_text().strip() if (work / KEY_FILE).is_file() else None
        if written_for == key:
            checkpoint = last_checkpoint(work, stage)
        elif any(work.glob("checkpoint-*")):
            log(f"{stage}: the checkpoints in {work} were written for another config or input; starting afresh")
        if checkpoint is not None:
            log(f"{stage}: resuming from {Path(checkpoint).name}, kept by an interrupted run of the same config")
    if checkpoint is None and not resume:
        shutil.rmtree(work, ignore_errors=True)
    if key is not None:
        work.mkdir(parents=True, exist_ok=True)
        (work / KEY_FILE).write_text(key + "\n")
    if key is not None or resumed_by:
        KEPT_FOR_RESUME[work] = BY_RUN if key is not None else resumed_by
    return work, checkpoint


def forget(work: Path) -> None:
    """The stage finished: its checkpoints are gone and nothing is left to resume."""
    shutil.rmtree(work, ignore_errors=True)
    KEPT_FOR_RESUME.pop(work, None)
