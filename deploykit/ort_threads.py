"""One thread or all of them, call by call: a one-thread ONNX Runtime session beside a multi-threaded one of the
same graph, and each call run on whichever ran calls of its size faster lately.

    choice = ThreadChoice.for_graph(onnx_path, session, threads=2, spinning=True)  # None: `session` alone
    predict = ort_predictor(session, choice=choice)

Why both, and why not chosen once: ONNX Runtime hands work to its other threads at every node, so a small graph
gains from a second thread only while handing over is cheap. SST-2's final graph ran single rows in 0.47 ms on one
thread against 0.53 ms on two on one machine, while batch 32 needed both (twenty-eighth session). And on a 2-vCPU
virtual machine whose host moves the vCPUs every few tens of seconds between cores that share a cache and cores that
do not, the same batch-32 call took 1.68x less time on two threads than on one in one minute and 1.2x more in the
next (bench/README.md, thirty-eighth session; bench/core_handoff.py). A choice made when the model loaded was right
half the time there. So every call is timed (per token, in classes of batch size), the faster session of the
class runs it, and every EXPLORE_EVERY-th call of a class runs on the other one, so a change is seen within a second
or two of batch-32 traffic at a cost of about 1% where nothing changes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

# the twin holds its own copy of the prepacked weights: only for graphs whose file is below this (a graph this large
# is slower on one thread at batch 1 anyway: its MatMuls are worth splitting)
TWIN_MAX_BYTES = 64 << 20
EXPLORE_EVERY = 64  # every 64th call of a batch-size class runs on the session not in use, to see whether it now wins
SMOOTHING = 0.5  # weight of the newest call in a session's running time per token: a change shows within 2 calls
CLASSES = 6  # batch-size classes: 1, 2-3, 4-7, 8-15, 16-31, 32 and more rows
# the session not in use takes over only when its time per token is below this share of the one in use: two sessions
# within a few % of each other (single rows on one thread or two) would otherwise trade places on noise
SWITCH_BELOW = 0.95


class ThreadChoice:
    """Two ORT sessions of one graph, `many` (its intra-op threads) and `one` (one thread), and the running time per
    token of each on calls of each batch-size class; `run` picks, times and records. Safe to call from several
    threads (ORT sessions are; the record is updated under a lock)."""

    def __init__(self, many, one):
        self.sessions = (many, one)
        self._lock = threading.Lock()
        # class -> [seconds per token on many (None: not yet timed), on one, calls so far, side in use]
        self._seen: dict[int, list] = {}

    @classmethod
    def for_graph(cls, onnx_path: str | Path, session, threads: int | None, spinning: bool) -> ThreadChoice | None:
        """`session` (of `threads` intra-op threads; None: ONNX Runtime's default, one per physical core) with a
        one-thread twin of `onnx_path`, or None where there is nothing to choose: one thread already, a one-core
        machine, or a file over TWIN_MAX_BYTES."""
        from deploykit.evaluate import ort_session

        if threads == 1 or (threads is None and (os.cpu_count() or 1) < 2):
            return None
        if Path(onnx_path).stat().st_size > TWIN_MAX_BYTES:
            return None
        return cls(session, ort_session(onnx_path, 1, spinning=spinning))

    def pick(self, rows: int) -> tuple[list, int]:
        """The record of `rows` rows' batch-size class, and the side for this call: 0 (many threads) or 1 (one
        thread). Each side once first, then the faster one (the one in use until the other is SWITCH_BELOW of it),
        and the other one every EXPLORE_EVERY-th call."""
        with self._lock:
            seen = self._seen.setdefault(min(max(rows, 1).bit_length(), CLASSES), [None, None, 0, 0])
            seen[2] += 1
            if seen[0] is None or seen[1] is None:
                return seen, 0 if seen[0] is None else 1
            used = seen[3]
            if seen[1 - used] < SWITCH_BELOW * seen[used]:
                used = seen[3] = 1 - used
            return seen, 1 - used if seen[2] % EXPLORE_EVERY == 0 else used

    def record(self, seen: list, side: int, seconds_per_token: float) -> None:
        with self._lock:
            was = seen[side]
            seen[side] = seconds_per_token if was is None else was + SMOOTHING * (seconds_per_token - was)

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's first output for `feed` (already the graph's inputs), from the session `pick` chose."""
        ids = feed["input_ids"]
        seen, side = self.pick(len(ids))
        start = time.perf_counter()
        out = self.sessions[side].run(None, feed)[0]
        self.record(seen, side, (time.perf_counter() - start) / max(ids.size, 1))
        return out
