"""Files an output folder holds, readable as the user's umask allows any new file to be.

    readable_as_umask(folder)   # model.safetensors 0600 -> 0644 under the usual umask 022

safetensors writes its file with mode 0600 whatever the umask (its Rust writer creates it private), so a model
saved by `save_pretrained` could not be read by a service running as another user (a container's non-root user, a
systemd unit) while every other file of the folder could. Stages give their outputs the modes the user asked for.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def current_umask() -> int:
    """The process's umask (POSIX has no call that reads it without setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_as_umask(folder: Path) -> list[str]:
    """Add the read bits the umask allows to every regular file under `folder` that lacks them; links are not
    followed and no other bit changes. Returns the paths changed, relative to `folder`."""
    wanted = 0o444 & ~current_umask()
    changed = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode) and (mode & wanted) != wanted:
                path.chmod(stat.S_IMODE(mode) | wanted)
                changed.append(str(path.relative_to(folder)))
    return changed
