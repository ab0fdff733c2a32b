"""Dynamic micro-batching: one queue, up to `workers` model calls at a time, each caller gets its own rows.

    batcher = Batcher(lambda rows: predictor.logits(rows, batch_size=32), max_batch=32, max_wait_s=0.005, workers=2)
    batcher.start()                      # inside the running event loop (the app's lifespan)
    logits = await batcher.submit(rows)  # float32 [len(rows), labels]
    await batcher.stop()                 # answers what is queued, then ends the worker

With `combine=True` the worker gathers queued requests into one call of up to `max_batch` rows. It waits
up to `max_wait_s` for more only while another request is being received (`arriving`): a lone client
pays no waiting time, and under load the requests that queue up during one call form the next batch.
With `combine=False` (graphs whose row outputs depend on their batch neighbours, dynamic INT8) every
request is its own call, so a reply never depends on another client's request.

With `workers=2` a second call starts while the first runs, each on its own thread: under load the requests that
queue up during one call no longer wait for it to end. Measured on 2 cores (bench/README.md, "Serving"): with one
worker, 32 clients settled into two alternating halves of ~16 rows on one core; two single-threaded calls at once
use both. `infer` must then be safe to call from two threads at once (the server gives each thread its own
tokenizer; ONNX Runtime sessions and torch modules in inference are).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deploykit.serve.metrics import Metrics

log = logging.getLogger("deploykit.serve")


class ShuttingDown(RuntimeError):
    """A request arrived after the worker stopped taking new ones (the server is shutting down): 503."""


@dataclass
class _Job:
    rows: list[Any]
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Runs `infer(rows) -> np.ndarray [rows, ...]` in worker threads for requests queued from the loop.

    Args:
        infer: the model call; rows of several requests are concatenated when `combine`.
        max_batch: most rows per call when combining (one request larger than that is called alone).
        max_wait_s: longest wait for more rows once a request is queued, while others are arriving.
        combine: whether rows of different requests may share a call.
        workers: most calls running at once, each on its own thread (1: one call at a time).
        metrics: where batch sizes, inference time and queue depth go (a fresh `Metrics` by default).
    """

    def __init__(self, infer: Callable[[list[Any]], np.ndarray], max_batch: int = 32, max_wait_s: float = 0.005,
                 combine: bool = True, metrics: Metrics | None = None, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: at least one model call must be able to run")
        self.infer = infer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.combine = combine
        self.metrics = metrics or Metrics()
        self.arriving = 0  # requests being received and parsed: worth waiting for
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._worker: asyncio.Task | None = None
        self.workers = workers
        self._slots: asyncio.Semaphore | None = None  # a free worker: taken before a batch is gathered
        self._in_flight: set[asyncio.Task] = set()
        self._calling = 0  # calls started and not yet ended (a task still counts in _in_flight a moment longer)
        self._stopping = False
        # inference off the event loop, so that requests keep being received while a batch runs
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deploykit-infer")

    @property
    def running(self) -> bool:
        return not self._stopping and self._worker is not None and not self._worker.done()

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.workers)
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="deploykit-batcher")

    async def stop(self) -> None:
        """Answer every queued request, then end the worker and its thread."""
        alive = self.running  # (running reads False from here on: no new request is taken)
        self._stopping = True
        if alive:
            self._queue.put_nowait(None)
            await self._worker
        self._pool.shutdown(wait=True)

    async def submit(self, rows: list[Any]) -> np.ndarray:
        """The model's output for `rows`, computed alone or beside other requests' rows."""
        if self._stopping or not self.running:
            raise ShuttingDown("the server is shutting down; send the request again elsewhere")
        job = _Job(list(rows), asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        self.metrics.queue_depth.set(self._queue.qsize())
        return await job.future

    async def _work(self) -> None:
        carry: _Job | None = None
        loop = asyncio.get_running_loop()
        while True:
            # a batch is gathered only once a worker is free: what arrives while all are busy joins it
            await self._slots.acquire()
            first = carry or await self._queue.get()
            carry = None
            if first is None:
                self._slots.release()
                break
            jobs, stop = [first], False
            if self.combine:
                carry, stop = await self._gather(jobs)
            self.metrics.queue_depth.set(self._queue.qsize())
            # a lone one-row request with nothing else queued, arriving or running goes on the loop's own
            # thread: the hand-off to the worker thread and back is a share of a ~1.5 ms batch-1 reply, there is
            # nothing to overlap, and one row blocks the loop for one batch-1 call at most
            lone = (len(jobs) == 1 and len(jobs[0].rows) == 1 and self._queue.empty() and not self.arriving
                    and not self._calling)
            self._calling += 1
            task = loop.create_task(self._call_on_slot(jobs, lone))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            if stop:
                await asyncio.gather(*self._in_flight)
                await self._drain(carry)
                return
        await asyncio.gather(*self._in_flight)

    async def _call_on_slot(self, jobs: list[_Job], inline: bool) -> None:
        try:
            await self._call(jobs, inline=inline)
        finally:
            self._calling -= 1
            self._slots.release()

    async def _gather(self, jobs: list[_Job]) -> tuple[_Job | None, bool]:
        """Add queued requests to `jobs` up to max_batch rows; returns (the one that did not fit, stop seen)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        rows = len(jobs[0].rows)
        while rows < self.max_batch:
            if not self._queue.empty():
                job = self._queue.get_nowait()
            elif self.arriving and loop.time() < deadline:
                try:
                    job = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            else:
                break
            if job is None:
                return None, True
            # sentence pairs and single texts never share a call (a predictor takes one kind per call)
            if rows + len(job.rows) > self.max_batch or _paired(job) != _paired(jobs[0]):
                return job, False
            jobs.append(job)
            rows += len(job.rows)
        return None, False

    async def _drain(self, carry: _Job | None) -> None:
        pending = [carry] if carry else []
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not None:
                pending.append(job)
        for job in pending:
            await self._call([job])

    async def _call(self, jobs: list[_Job], inline: bool = False) -> None:
        rows = [row for job in jobs for row in job.rows]
        try:
            out = await self._timed(rows, inline)
        except Exception as err:  # noqa: BLE001 - one request's bad rows must not fail its batch neighbours
            if len(jobs) == 1:
                _settle(jobs[0].future, error=err)
                return
            log.warning("a batch of %d requests failed (%s: %s); calling each alone", len(jobs),
                        type(err).__name__, err)
            for job in jobs:
                await self._call([job])
            return
        self.metrics.batch_requests.observe(len(jobs))
        start = 0
        for job in jobs:
            _settle(job.future, result=out[start:start + len(job.rows)])
            start += len(job.rows)

    async def _timed(self, rows: list[Any], inline: bool = False) -> np.ndarray:
        start = time.perf_counter()
        if inline:
            out = self.infer(rows)
        else:
            out = await asyncio.get_running_loop().run_in_executor(self._pool, self.infer, rows)
        self.metrics.inference.observe(time.perf_counter() - start)
        self.metrics.batch_rows.observe(len(rows))
        if len(out) != len(rows):
            raise RuntimeError(f"the model answered {len(out)} rows for {len(rows)}")
        return out


def _paired(job: _Job) -> bool:
    return bool(job.rows) and isinstance(job.rows[0], tuple)


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away and its handler was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
