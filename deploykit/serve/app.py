"""The ASGI app of `deploykit serve`: KServe V2 REST endpoints, plain `/predict`, Prometheus `/metrics`.

    app = build_app(deploykit.predictor.load("runs/sst2-minilm/quantize"), max_batch=32, max_wait_ms=5)
    uvicorn.run(app)          # deploykit/serve/__init__.py binds, logs and handles signals

| method | path                          | answers                                                   |
| ------ | ----------------------------- | --------------------------------------------------------- |
| GET    | /v2/health/live, /ready       | 200 {"live": true} / {"ready": true} (503 when not ready) |
| GET    | /v2                           | server metadata: name, version, extensions                |
| GET    | /v2/models/NAME[/ready]       | model metadata (inputs, outputs, platform) / readiness    |
| POST   | /v2/models/NAME/infer         | V2 inference (deploykit/serve/protocol.py)                |
| POST   | /predict                      | {"predictions": [...]} shaped like a HF pipeline's        |
| GET    | /metrics                      | Prometheus text exposition                                |

Every error is `{"error": "<one line>"}`: 400 for a bad body, 404 for an unknown model or path, 413 past
--max-body-bytes or --max-request-rows, 500 when the model itself fails (logged with its traceback), 503 for
a request arriving or cut off while the server shuts down (counted in `app.state.cut_off`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import deploykit
from deploykit.runtimes import RUNTIMES
from deploykit.serve.batching import Batcher, ShuttingDown
from deploykit.serve.metrics import Metrics
from deploykit.serve.outputs import check_request, outputs_for
from deploykit.serve.protocol import (
    TEXT,
    TEXT_PAIR,
    ClientError,
    infer_response,
    parse_infer,
    parse_json,
    parse_predict,
)

log = logging.getLogger("deploykit.serve")
# runtime names as Triton spells its platforms
PLATFORMS = {name: rt.platform for name, rt in RUNTIMES.items()}

Handler = Callable[[Request], Awaitable[Response]]


def build_app(predictor, *, max_batch: int = 32, max_wait_ms: float = 5.0, max_request_rows: int = 256,
              max_body_bytes: int = 1_000_000, workers: int = 1) -> Starlette:
    """A Starlette app serving `predictor` (what deploykit.predictor.load gives for a text or token classifier).

    Args:
        predictor: has .name, .labels, .runtime, .max_length, .batch_invariant, and .logits(rows, batch_size)
            (a text classifier: label, score, logits) or is an EntityPredictor (entity groups per text).
        max_batch: most rows per model call; requests are combined only when predictor.batch_invariant.
        max_wait_ms: longest wait for more rows before a call, while other requests are arriving.
        max_request_rows: most texts in one request (more: 413).
        max_body_bytes: largest request body (more: 413).
        workers: model calls running at once (deploykit/serve/batching.py); above 1, each thread calls its own
            copy of the predictor (its own tokenizer, the one runtime session shared).
    """
    metrics = Metrics()
    combine = bool(predictor.batch_invariant)
    # a graph whose rows depend on their neighbours is scored one row at a time, inside one request too
    batch_size = max_batch if combine else 1
    served = outputs_for(predictor)  # what differs between text and token classifiers
    infer = _per_thread(predictor, batch_size) if workers > 1 else lambda rows: served.infer(rows, batch_size)
    batcher = Batcher(infer, max_batch=max_batch, max_wait_s=max_wait_ms / 1000, combine=combine, metrics=metrics,
                      workers=workers)
    name, labels = predictor.name, list(predictor.labels)

    def endpoint(path: str) -> Callable[[Handler], Handler]:
        """The HTTP edge: ClientError -> its status and {"error"}, anything else -> 500 logged; metrics for all."""

        def wrap(handler: Handler) -> Handler:
            @functools.wraps(handler)
            async def run(request: Request) -> Response:
                start = time.perf_counter()
                try:
                    response = await handler(request)
                except ClientError as err:
                    response = _error(str(err), err.status)
                except ShuttingDown as err:
                    response = _error(str(err), 503)
                except asyncio.CancelledError:
                    # uvicorn cancels what is left when --shutdown-timeout runs out or a second signal forces
                    # the exit: answered (when the client still listens), counted, no traceback
                    app.state.cut_off += 1
                    response = _error("the server is shutting down and stopped waiting for this request; "
                                      "send it again elsewhere", 503)
                except Exception as err:  # the edge: a model failure is a 500, logged, never a traceback
                    log.exception("%s %s failed", request.method, request.url.path)
                    first = (str(err).strip().splitlines() or [""])[0][:300]
                    response = _error(f"inference failed: {type(err).__name__}: {first}", 500)
                metrics.observe(path, response.status_code, time.perf_counter() - start)
                return response

            return run

        return wrap

    def _checked(parsed: tuple, with_top_k: bool = False) -> tuple:
        check_request(served, parsed[0], parsed[1] if with_top_k else 1)
        return parsed

    def model_or_404(request: Request) -> None:
        asked = request.path_params["model"]
        if asked != name:
            raise ClientError(f"unknown model {asked!r}; this server serves {name!r}", status=404)

    async def score(request: Request, parse: Callable[[dict], tuple]) -> tuple[tuple, dict, Any]:
        batcher.arriving += 1  # the worker waits for rows only while some request is on its way
        try:
            doc = parse_json(await _read_body(request, max_body_bytes))
            parsed = parse(doc)
        finally:
            batcher.arriving -= 1
        return parsed, doc, await batcher.submit(parsed[0])

    @endpoint("/v2/health/live")
    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    @endpoint("/v2/health/ready")
    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": batcher.running}, status_code=200 if batcher.running else 503)

    @endpoint("/v2")
    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "deploykit", "version": deploykit.__version__, "extensions": []})

    @endpoint("/v2/models/{model}")
    async def model_metadata(request: Request) -> Response:
        model_or_404(request)
        tensors = [{"name": TEXT, "datatype": "BYTES", "shape": [-1]}]
        if served.pairs:
            tensors.append({"name": TEXT_PAIR, "datatype": "BYTES", "shape": [-1], "optional": not served.needs_pairs})
        outputs = served.metadata()
        return JSONResponse({"name": name, "versions": [], "platform": PLATFORMS.get(predictor.runtime, predictor.runtime),
                             "inputs": tensors, "outputs": outputs,
                             "parameters": {"labels": labels, "max_length": predictor.max_length,
                                            "batching": combine}})

    @endpoint("/v2/models/{model}/ready")
    async def model_ready(request: Request) -> Response:
        model_or_404(request)
        return JSONResponse({"name": name, "ready": batcher.running}, status_code=200 if batcher.running else 503)

    @endpoint("/v2/models/{model}/infer")
    async def infer(request: Request) -> Response:
        model_or_404(request)
        (_, outputs), doc, results = await score(request, lambda d: _checked(parse_infer(d, max_request_rows,
                                                                                       served.names)))
        return JSONResponse(infer_response(name, doc.get("id"), served.tensors(results, outputs)))

    @endpoint("/predict")
    async def predict(request: Request) -> Response:
        (_, top_k), _, results = await score(request, lambda d: _checked(parse_predict(d, max_request_rows), True))
        return JSONResponse({"predictions": served.predictions(results, top_k)})

    @endpoint("/metrics")
    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Starlette's own 404 / 405, answered as JSON like every other error
        if exc.status_code == 404:
            message = f"no endpoint {request.url.path} (see GET /v2, POST /predict, GET /metrics)"
        else:
            message = f"{request.method} {request.url.path}: {exc.detail}"
        metrics.observe("other", exc.status_code, 0.0)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    routes = [Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
              Route("/v2/models/{model}", model_metadata), Route("/v2/models/{model}/ready", model_ready),
              Route("/v2/models/{model}/infer", infer, methods=["POST"]), Route("/predict", predict, methods=["POST"]),
              Route("/metrics", prometheus)]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.cut_off = batcher, metrics, 0
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (Content-Length first, then as it streams)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ClientError(f"the body is {int(declared)} bytes; this server takes at most {limit} (--max-body-bytes)", 413)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ClientError(f"the body is over {limit} bytes (--max-body-bytes)", 413)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientError("the client closed the connection before the body was complete") from None
    return b"".join(chunks)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _per_thread(predictor, batch_size: int) -> Callable[[list[Any]], Any]:
    """`infer` for several worker threads: each thread's first call copies the predictor with a tokenizer of its
    own. A Hugging Face fast tokenizer sets its truncation and padding on the shared Rust object for every call
    and refuses a second thread meanwhile ("Already borrowed", huggingface/tokenizers#537); the model's session
    is shared (deploykit.runtimes.Runtime.concurrent says which runtimes take that)."""
    import copy
    import threading

    local = threading.local()

    def infer(rows: list[Any]) -> Any:
        served = getattr(local, "served", None)
        if served is None:
            own = copy.copy(predictor)
            if getattr(predictor, "tokenizer", None) is not None:  # a predictor that tokenizes (all of deploykit's)
                own.tokenizer = copy.deepcopy(predictor.tokenizer)
            local.served = served = outputs_for(own)
        return served.infer(rows, batch_size)

    return infer
