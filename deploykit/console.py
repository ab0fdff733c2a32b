"""One place for what deploykit prints: rich status lines on stderr, silenced by `--quiet`; warnings, which
`--quiet` keeps (it drops progress, not what the user should act on: a data overlap, a model copied without its
manifest, a busy machine)."""

from __future__ import annotations

import contextlib
import os
import re
import sys

from rich.console import Console
from rich.text import Text

# emoji off: rich turned a path's ':ok:' / ':warning:' into emoji (run:ok:1 printed as run🆗1), markup=False or not
console = Console(stderr=True, highlight=False, emoji=False)
_quiet = {"on": bool(os.environ.get("DEPLOYKIT_QUIET"))}


def set_quiet(on: bool) -> None:
    _quiet["on"] = on
    if on:
        os.environ["DEPLOYKIT_QUIET"] = "1"
        # transformers/datasets progress bars and warnings go quiet too
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars


def quiet() -> bool:
    return _quiet["on"]


def log(message: str, style: str | None = None, head: str | None = None) -> None:
    """A status line (e.g. `finetune: epoch 2 accuracy 89.1`), unless --quiet; one line however wide, printed as
    written: never read as rich markup (a path's `[v2]` was eaten, and `[/b]` raised MarkupError).

    Args:
        message: the line.
        style: a rich style for the whole line (e.g. "dim").
        head: a rich style for its first word, up to the first space or colon (`finetune: wrote runs/x`).
    """
    if _quiet["on"]:
        return
    text = Text(message, style=style or "")
    if head and (match := re.match(r"[^\s:]+", message)):
        text.stylize(head, 0, match.end())
    console.print(text, soft_wrap=True)


def warn(message: str) -> None:
    """A `warning: ...` line on stderr, printed under --quiet too: quiet silences progress, not what needs acting on.

    `message` is the whole line, its `warning:` included; markup is off, so a path or `[x]` in it prints as written.
    """
    console.print(message, soft_wrap=True, markup=False, style="yellow")


def progress(iterable, total: int | None = None, description: str = ""):
    """A rich progress bar over `iterable`, or the bare iterable when quiet."""
    if _quiet["on"]:
        return iterable
    from rich.progress import track

    return track(iterable, total=total, description=description, console=console, transient=True)


@contextlib.contextmanager
def no_load_bars():
    """transformers' "Loading weights" bar off while a model for prediction loads (milliseconds, drawn on every
    `deploykit predict` / `serve` / `deploykit.load`); put back as it was after."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_load_report():
    """transformers' load report (a table of MISSING / UNEXPECTED weights) off while a model loads: deploykit's own
    line says what a fresh head means, or refuses the folder in one line; the verbosity is put back after."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


@contextlib.contextmanager
def foreign_output():
    """What a library draws on stdout while it works (NNCF's rich progress bars) goes to stderr beside deploykit's
    status lines, or nowhere under --quiet: stdout carries only what a command prints as its result."""
    target = open(os.devnull, "w", encoding="utf-8") if _quiet["on"] else sys.stderr  # noqa: SIM115 (closed below)
    try:
        with contextlib.redirect_stdout(target):
            yield
    finally:
        if target is not sys.stderr:
            target.close()


def end_progress_line() -> str:
    """A newline when a tqdm bar (the Trainer's) was cut mid-line, so an `error:` line starts its own line; the
    bar is closed first, or its `close()` at exit would draw it again after the error."""
    tqdm = sys.modules.get("tqdm")
    bars = list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or [])
    for bar in bars:
        with contextlib.suppress(Exception):
            bar.leave = False  # closed this way it blanks its line instead of drawing itself again
            bar.close()
    return "\n" if bars else ""
