"""`deploykit serve`: one artifact behind an HTTP server (KServe V2 REST, `/predict`, Prometheus `/metrics`).

    deploykit serve runs/sst2-minilm/quantize --port 8000
    curl -s localhost:8000/predict -d '{"texts": ["a gorgeous, witty film"]}'

The model is loaded before the port is bound, so a bad folder fails in one line (exit 2) and a port that
answers is a server that is ready. Requests go through one micro-batching worker (deploykit/serve/batching.py);
the endpoints live in deploykit/serve/app.py. SIGTERM or Ctrl-C stops taking connections, lets the requests
in flight finish, and exits 0. Requests still unanswered after --shutdown-timeout seconds (a client sending
its body slowly), or when a second SIGTERM / Ctrl-C arrives, are cut off with a 503: the exit is then 143
(SIGTERM) or 130 (SIGINT), as for any interrupted deploykit command.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import socket
import threading
from pathlib import Path

from deploykit.errors import DeploykitError, UserError

log = logging.getLogger("deploykit.serve")


def serve(folder: Path, host: str = "127.0.0.1", port: int = 8000, *, max_batch: int = 32, max_wait_ms: float = 5.0,
          runtime: str = "auto", threads: int | None = None, workers: int | None = None, max_request_rows: int = 256,
          max_body_bytes: int = 1_000_000, access_log: bool = False, shutdown_timeout: float = 10.0) -> None:
    """Load `folder` with deploykit.predictor.load, then serve it on host:port until SIGTERM/SIGINT.

    Args:
        port: 0 lets the system pick a free port (the startup line names it).
        workers: model calls at once (None: `default_workers`); more than 1 only on a runtime that takes
            concurrent calls (deploykit.runtimes.Runtime.concurrent).
        threads: the runtime's intra-op threads per call (None: `default_threads` for that many workers).
        shutdown_timeout: seconds a SIGTERM waits for the requests in flight before cutting them off.
        other arguments: as `deploykit serve --help` describes them.

    Raises:
        UserError: a folder the predictor cannot load, an address that cannot be bound, or --workers above 1 for
            a runtime that runs one call at a time.
        Stopped: the shutdown cut requests off (timeout or a second signal); exit code 143 or 130.
    """
    import uvicorn

    from deploykit.artifact import load_artifact
    from deploykit.predictor import is_causal_lm, load
    from deploykit.serve.app import build_app
    from deploykit.serve.outputs import outputs_for

    artifact = load_artifact(folder)
    if is_causal_lm(artifact):
        raise UserError(f"{folder}: a causal LM; deploykit serve takes text and token classifiers "
                        "(answer prompts with `deploykit generate`)")
    from deploykit.load_checks import resolve_runtime

    chosen = resolve_runtime(artifact.format, runtime, None)
    workers = check_workers(workers, chosen) if workers is not None else default_workers(chosen)
    predictor = load(folder, runtime=runtime, threads=threads or default_threads(workers))
    # one row through the model before the port opens: a model that cannot answer (a config.json naming another
    # label count than a dynamic-width graph scores) is refused here in one line, not a 500 on every request
    served = outputs_for(predictor)
    served.infer([("a film", "a film") if served.needs_pairs else "a film"], 1)
    app = build_app(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms, max_request_rows=max_request_rows,
                    max_body_bytes=max_body_bytes, workers=workers)
    sock = _bind(host, port)
    # past the timeout uvicorn cancels the requests left; each answers 503 (app.py) and counts as cut off
    config = uvicorn.Config(app, log_level="warning", access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=shutdown_timeout)
    server = _server(config)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
    batching = (f"batching on (up to {max_batch} rows, {max_wait_ms:g} ms)" if predictor.batch_invariant
                else "batching off (row outputs depend on the batch: one row at a time)")
    calls = f"{workers} calls at once" if workers > 1 else "one call at a time"
    _say(f"serve: {predictor.name} on {predictor.runtime}, {batching}, {calls}, {url} ({_stack()})")
    with _graceful_signals(server):
        server.run(sockets=[sock])
    cut = app.state.cut_off
    if server.force_exit or cut:
        name = signal.Signals(server.stopped_by or signal.SIGTERM).name
        why = f"a second {name}" if server.force_exit else f"{name} and --shutdown-timeout {shutdown_timeout:g} s"
        raise Stopped(f"serve: stopped {url} on {why}, with {cut} request{'s' * (cut != 1)} cut off (503)",
                      130 if server.stopped_by == signal.SIGINT else 143)
    _say(f"serve: stopped {url}")


def default_threads(workers: int = 1) -> int:
    """The runtime's intra-op threads per call when --threads is not given: every core but one, shared by the
    `workers` calls that may run at once; the core left keeps the event loop receiving, parsing and tokenizing
    the next requests (measured on 2 cores, bench/README.md "Serving": 1 thread instead of 2 halved the batch-1
    gap to offline)."""
    from deploykit.hardware import cores

    return max(1, (cores() - 1) // workers)


def default_workers(runtime: str) -> int:
    """Model calls at once when --workers is not given: 2 on a runtime that takes concurrent calls on a machine
    with 2 cores or more, else 1. Under load one call's requests then queue while the other runs, instead of the
    clients settling into two halves that take turns on one core (measured on 2 cores, bench/README.md
    "Serving", "Two model calls at once")."""
    from deploykit.hardware import cores
    from deploykit.runtimes import RUNTIMES

    return 2 if cores() >= 2 and RUNTIMES[runtime].concurrent else 1


def check_workers(workers: int, runtime: str) -> int:
    """`workers` when the runtime can take that many calls at once; UserError naming the fix otherwise."""
    from deploykit.runtimes import RUNTIMES

    if workers < 1:
        raise UserError(f"--workers {workers}: give 1 or more")
    if workers > 1 and not RUNTIMES[runtime].concurrent:
        raise UserError(f"--workers {workers}: runtime {runtime} runs one model call at a time here; use --workers 1 "
                        f"(or a runtime that takes concurrent calls: "
                        f"{', '.join(n for n, r in RUNTIMES.items() if r.concurrent)})")
    return workers


class Stopped(DeploykitError):
    """The server stopped without answering every request: exit 143 (SIGTERM) or 130 (SIGINT)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _server(config):
    """uvicorn's server, where a second SIGTERM forces the exit as a second SIGINT does (uvicorn's: SIGINT only),
    and `stopped_by` names the first signal."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: int | None = None

        def handle_exit(self, sig: int, frame) -> None:
            self.stopped_by = self.stopped_by or sig
            if self.should_exit:
                self.force_exit = True
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None) -> None:
            await super().shutdown(sockets)
            if self.force_exit:
                # uvicorn stops waiting and skips the app's shutdown, whose lifespan task then dies with a
                # CancelledError traceback: cut the requests off (503) as the timeout does, and shut down
                for task in list(self.server_state.tasks):
                    task.cancel()
                await self.lifespan.shutdown()

    return Server(config)


def _stack() -> str:
    """uvicorn's event loop and HTTP parser as its "auto" settings pick them (uvloop and httptools when installed)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn on {loop} + {http}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named explicitly: asyncio sets TCP_NODELAY only on connections whose proto is IPPROTO_TCP, and with
    # the default 0 every response (headers and body written apart) waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(f"{host}:{port}: cannot listen there ({err.strerror or err}); "
                        "pick another --port or --host") from None
    # listening now, not when uvicorn starts: a client that connects as soon as the startup line names the URL
    # waits in the backlog instead of being refused
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _graceful_signals(server):
    """Let uvicorn's graceful shutdown be the whole answer to SIGTERM/SIGINT while it serves.

    uvicorn swaps in its own handlers while serving, restores the ones it found and then raises the
    signal it caught again. The CLI's SIGTERM handler would turn that into exit 143 after a clean
    shutdown; these handlers just ask the server to stop (also in the moment before uvicorn's own are in
    place), and the CLI's come back afterwards.
    """

    def stop(signum, frame) -> None:
        server.should_exit = True
        server.stopped_by = server.stopped_by or signum

    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        yield
        return
    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _say(line: str) -> None:
    # a status line on stderr even under --quiet: where the server listens is what the user asked for
    from deploykit.console import console

    console.print(line, soft_wrap=True, markup=False)


SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(text: str, option: str = "--max-body-bytes") -> int:
    """Bytes in `text`: 1048576, 512KB, 1MB (SI units), 1MiB (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in SIZE_UNITS or float(match.group(1)) * SIZE_UNITS[unit] < 1:
        raise UserError(f"{option} {text!r}: give a size such as 1048576, 512KB, 1MB or 1MiB")
    return int(float(match.group(1)) * SIZE_UNITS[unit])
