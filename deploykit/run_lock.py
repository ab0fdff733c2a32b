"""One writer per run folder: `deploykit run` holds an exclusive lock on its --out folder while it works.

Two runs started on one folder used to interleave: one run's fine-tuned model beside the other's student, a
`pipeline.json` naming the first run's stage hashes, and a later run skipping "unchanged" stages that were not.
The lock is `flock(2)` on the folder itself, so nothing is written into a folder that may not be ours before
`check_out_dir` has looked at it, and the kernel lets go when the process ends (a killed run leaves no stale lock).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from deploykit.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not guarded there
    fcntl = None


@contextlib.contextmanager
def run_lock(out_dir: Path, scratch: tuple[str, ...] = ()):
    """Hold `out_dir` for this process (created when missing, and removed again, with any parents it needed, if
    the block ends with them still empty: a refused run leaves no folder behind). Files named in `scratch` (the
    run's state file, written as it starts) do not count where the block fails: a run refused before its first
    stage wrote anything leaves nothing.

    Raises:
        UserError: another process holds the folder (another `deploykit run` writing there now).
    """
    out_dir = Path(out_dir)
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        made = []  # a file in the way and the like: check_out_dir names it in its own line
    fd = None
    if fcntl is not None and out_dir.is_dir():
        fd = os.open(out_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{out_dir}: another deploykit run is writing to this folder now; wait for it to end, "
                            "or give another --out") from None
    failed = True
    try:
        yield out_dir
        failed = False
    finally:
        if failed and out_dir in made and out_dir.is_dir() and {p.name for p in out_dir.iterdir()} <= set(scratch):
            for name in scratch:
                (out_dir / name).unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty
