"""How the CLI process takes SIGTERM and SIGINT: both unwind (staging() removes its temporary folder on the way
out) and `deploykit.cli.edge` turns them into exit 143 / 130; forked children keep the default handlers."""

from __future__ import annotations

import contextlib
import os
import signal

from deploykit.errors import Terminated

received: dict[str, int | None] = {"signal": None}


def terminate(signum, frame) -> None:
    # SIGTERM (kill, a scheduler, torchrun stopping its workers) unwinds like Ctrl-C: staging() removes its
    # temporary folder on the way out. A second SIGTERM kills at once.
    received["signal"] = signum
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


def _interrupt(signum, frame) -> None:
    received["signal"] = signum  # remembered: a library may re-raise the KeyboardInterrupt as its own error
    signal.default_int_handler(signum, frame)


def _child_signals() -> None:
    # a forked child (a library's worker or telemetry sender) inherits our Python-level handlers, which never run
    # while it is blocked in C: multiprocessing's exit hook then SIGTERMs it in vain and waits for it forever
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if signal.getsignal(signal.SIGINT) is _interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def install_signal_handlers() -> None:
    """SIGTERM unwinds like Ctrl-C (staging removes its temporary folder); forked children keep the defaults."""
    signal.signal(signal.SIGTERM, terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where a shell made us ignore it
        signal.signal(signal.SIGINT, _interrupt)
    os.register_at_fork(after_in_child=_child_signals)  # once per process: main() runs once
